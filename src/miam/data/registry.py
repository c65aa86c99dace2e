"""Datasets by name, as configs name them."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from miam._validation import check_keys
from miam.data.dataset import MultimodalDataset
from miam.errors import ConfigError

_BUILDERS: dict[str, Callable[..., MultimodalDataset]] = {}


def register_dataset(name: str) -> Callable:
    """Decorator: make a builder ``f(**params) -> MultimodalDataset`` available as ``name``."""
    def deco(fn: Callable[..., MultimodalDataset]) -> Callable[..., MultimodalDataset]:
        _BUILDERS[name] = fn
        return fn
    return deco


def list_datasets() -> list[str]:
    _load_builtins()
    return sorted(_BUILDERS)


def build_dataset(name: str, **params: Any) -> MultimodalDataset:
    """Build the dataset ``name`` with its parameters.

    Raises:
        ConfigError: an unknown name, or a parameter the builder does not take (naming the
            dataset and listing the valid names or parameters).
    """
    _load_builtins()
    if name not in _BUILDERS:
        raise ConfigError(f"Unknown dataset {name!r}; valid names are {sorted(_BUILDERS)}.")
    builder = _BUILDERS[name]
    arguments = inspect.signature(builder).parameters.values()
    if all(a.kind != a.VAR_KEYWORD for a in arguments):
        check_keys(f"dataset {name!r} (data.params)", params, [a.name for a in arguments], what="parameter")
    return builder(**params)


def _load_builtins() -> None:
    if "synthetic" not in _BUILDERS:
        from miam.data import synthetic
        register_dataset("synthetic")(synthetic.make_dataset)
        from miam.data.unlabelled import synthetic_pool
        register_dataset("synthetic_pool")(synthetic_pool)
    if "geoplant" not in _BUILDERS:
        from miam.data import geoplant, satbird, taxabench
        register_dataset("geoplant")(geoplant.load_geoplant)
        register_dataset("taxabench")(taxabench.load_taxabench)
        register_dataset("satbird")(satbird.load_satbird)
    if "files" not in _BUILDERS:
        from miam.data import files
        register_dataset("files")(files.load_files)
