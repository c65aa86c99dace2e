"""The balancing methods of the related work, each a plug-in of the one trainer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from miam.balance.methods.amss import AMSS
from miam.balance.methods.arm import ARM
from miam.balance.methods.base import BalancingMethod, StepContext
from miam.balance.methods.cggm import CGGM
from miam.balance.methods.miles import MILES
from miam.balance.methods.mla import MLA
from miam.balance.methods.mnl import MNL
from miam.balance.methods.msam import MSAM
from miam.balance.methods.ogm_ge import OGMGE
from miam.balance.methods.opm_feature import OPMFeature
from miam.data.contract.spec import TaskSpec
from miam.errors import ConfigError, InvalidParameterError

_METHODS: dict[str, type[BalancingMethod]] = {
    cls.name: cls for cls in (OGMGE, OPMFeature, MILES, MLA, CGGM, MNL, AMSS, MSAM, ARM)
}


def list_methods(task: str | None = None) -> list[str]:
    """The registered method names; with ``task`` (``multiclass``/``multilabel``), those defined for it.

    Examples:
        >>> list_methods("multilabel")
        ['ogm_ge', 'opm_feature', 'miles', 'mla', 'cggm', 'amss', 'msam', 'arm']
    """
    return [name for name, cls in _METHODS.items() if task is None or task in cls.tasks]


def method_class(name: str) -> type[BalancingMethod]:
    """The class registered under ``name``; an unknown name's error lists the valid ones."""
    if name not in _METHODS:
        raise InvalidParameterError(f"Unknown balancing method {name!r}; valid names are {list_methods()}.")
    return _METHODS[name]


def get_method(name: str, modalities: Sequence[str], **params: Any) -> BalancingMethod:
    """Build a balancing method by name for these modalities; ``params`` are its class's keyword arguments.

    Raises:
        InvalidParameterError: an unknown name, or a parameter the method does not take or
            with a value outside its constraint.

    Examples:
        >>> get_method("ogm_ge", ["env", "climate", "satellite"], alpha=0.3)
        OGMGE(['env', 'climate', 'satellite'], alpha=0.3, start=0, end=None, noise=True)
    """
    cls = method_class(name)
    cls.check_params(params)
    return cls(modalities, **params)


def configure_model(model_params: Mapping[str, Any], task: TaskSpec | str,
                    method: BalancingMethod | None = None) -> dict[str, Any]:
    """The model's keyword arguments for a run: the method's checks and fusion when there is
    one; without one, an unset ``fusion`` is dropped (the token model has none).

    Raises:
        ConfigError: the method is undefined for the task or architecture, or ``fusion``
            is set for an architecture without one.
    """
    if method is not None:
        return method.configure_model(model_params, task)
    params = dict(model_params)
    fusion = params.pop("fusion", None)
    if fusion is not None:
        if params.get("architecture", "token") != "late_fusion":
            raise ConfigError(f"model.fusion applies to the late_fusion architecture only; "
                              f"got {params.get('architecture', 'token')!r}.")
        params["fusion"] = fusion
    return params


__all__ = ["AMSS", "ARM", "CGGM", "MILES", "MLA", "MNL", "MSAM", "OGMGE", "OPMFeature", "BalancingMethod",
           "StepContext", "configure_model", "get_method", "list_methods", "method_class"]
