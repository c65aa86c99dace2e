"""Declarative parameter constraints, checked once at construction (scikit-learn's way).

A class with parameters (:class:`~miam.masking.MaskingStrategy`,
:class:`~miam.balance.BalancingMethod`, :class:`~miam.balance.ImbalanceTracker`) writes
them as an explicit ``__init__`` signature, so ``help()`` and :func:`inspect.signature`
show every name and default, stores each argument unchanged as an attribute, and
declares the allowed values once in ``_parameter_constraints``; :class:`Parameterised`
reads the names from the signature and checks the stored values against the
constraints. Derived values end in ``_`` or are computed where they are used.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from miam.errors import ConfigError, InvalidParameterError, format_choices


@dataclass(frozen=True)
class Interval:
    """A real interval; ``closed`` is one of 'both', 'left', 'right', 'neither'."""

    low: float | None
    high: float | None
    closed: str = "both"
    integer: bool = False

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.integer and not float(value).is_integer():
            return False
        if math.isnan(value):
            return False
        lo_ok = self.low is None or (value >= self.low if self.closed in ("both", "left") else value > self.low)
        hi_ok = self.high is None or (value <= self.high if self.closed in ("both", "right") else value < self.high)
        return lo_ok and hi_ok

    def __str__(self) -> str:
        left = "[" if self.closed in ("both", "left") else "("
        right = "]" if self.closed in ("both", "right") else ")"
        low = "-inf" if self.low is None else self.low
        high = "inf" if self.high is None else self.high
        kind = "an int" if self.integer else "a float"
        return f"{kind} in the range {left}{low}, {high}{right}"


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values (``"a str among {...}"`` when they are all strings)."""

    values: frozenset

    def accepts(self, value: Any) -> bool:
        try:
            return value in self.values
        except TypeError:
            return False

    def __str__(self) -> str:
        kind = "str" if all(isinstance(v, str) for v in self.values) else "value"
        return f"a {kind} among {format_choices(self.values)}"


#: True or False
BOOL = Options(frozenset({True, False}))


@dataclass(frozen=True)
class Pair:
    """A (low, high) pair: two items that ``low`` and ``high`` accept."""

    low: Interval
    high: Interval

    def accepts(self, value: Any) -> bool:
        return (isinstance(value, (tuple, list)) and len(value) == 2
                and self.low.accepts(value[0]) and self.high.accepts(value[1]))

    def __str__(self) -> str:
        return f"a (low, high) pair with low {self.low} and high {self.high}"


@dataclass(frozen=True)
class OptionalOf:
    """None, or a value that ``inner`` accepts."""

    inner: Interval | Options | Pair

    def accepts(self, value: Any) -> bool:
        return value is None or self.inner.accepts(value)

    def __str__(self) -> str:
        return f"None or {self.inner}"


Constraint = Interval | Options | Pair | OptionalOf


def validate_params(owner: str, params: Mapping[str, Any], constraints: Mapping[str, Constraint]) -> None:
    """Check every parameter against its constraint; unknown names are errors too.

    Raises:
        InvalidParameterError: "The 'q' parameter of Constant must be a float in the range
            [0, 1]. Got 2.0 instead.", or "Constant got an unexpected parameter 'p'; valid
            parameters are ['q']."
    """
    for name, value in params.items():
        if name not in constraints:
            raise InvalidParameterError(
                f"{owner} got an unexpected parameter {name!r}; valid parameters are {sorted(constraints)}."
            )
        if not constraints[name].accepts(value):
            raise InvalidParameterError(
                f"The {name!r} parameter of {owner} must be {constraints[name]}. Got {value!r} instead."
            )


def check_choice(owner: str, name: str, value: Any, choices: Iterable[Any]) -> None:
    """Raise sklearn's message shape when ``value`` is not among ``choices``.

    Examples:
        >>> check_choice("TokenModel", "pooling", "max", ("mean", "cls"))
        Traceback (most recent call last):
        ...
        miam.errors.InvalidParameterError: The 'pooling' parameter of TokenModel must be a str among {'cls', 'mean'}. Got 'max' instead.
    """
    validate_params(owner, {name: value}, {name: Options(frozenset(choices))})


def check_keys(where: str, keys: Iterable[str], valid: Sequence[str], what: str = "key", context: str = "") -> None:
    """Raise when some of ``keys`` are not in ``valid``, naming them and listing the valid ones.

    ``context`` follows the unknown names (e.g. `` in section 'model'``).

    Examples:
        >>> check_keys("data.params.sites", ["path", "lat"], ["path", "id", "x", "y"])
        Traceback (most recent call last):
        ...
        miam.errors.ConfigError: data.params.sites: unknown key(s) ['lat']; valid keys are ['path', 'id', 'x', 'y'].
    """
    unknown = [k for k in keys if k not in valid]
    if unknown:
        raise ConfigError(f"{where}: unknown {what}(s) {unknown}{context}; valid {what}s are {list(valid)}.")


class Parameterised:
    """Parameters read from the ``__init__`` signature, checked against ``_parameter_constraints``.

    The parameter names are the signature's, less the base class's own arguments
    (``modalities``, ``per_sample``): :attr:`params` maps each to the attribute stored
    under its name, as given.
    """

    #: the allowed values of every parameter, by name
    _parameter_constraints: ClassVar[dict[str, Constraint]] = {}
    #: arguments of ``__init__`` that are not parameters of the subclass
    _base_arguments: ClassVar[tuple[str, ...]] = ("self", "modalities")

    @classmethod
    def _signature_parameters(cls) -> list[inspect.Parameter]:
        return [p for p in inspect.signature(cls.__init__).parameters.values()
                if p.name not in cls._base_arguments and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    @classmethod
    def param_names(cls) -> list[str]:
        """The parameter names, in the order of the signature."""
        return [p.name for p in cls._signature_parameters()]

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The parameters' defaults, as the signature writes them (the one place they are written)."""
        return {p.name: p.default for p in cls._signature_parameters()}

    @classmethod
    def check_params(cls, params: Mapping[str, Any]) -> None:
        """Check ``params`` (a subset of the parameters, e.g. a config's) without building anything.

        Raises:
            InvalidParameterError: an unknown name or a value outside its constraint.
        """
        validate_params(cls.__name__, {**cls.defaults(), **params}, cls._parameter_constraints)

    @property
    def params(self) -> dict[str, Any]:
        """The parameters as given to the constructor."""
        return {name: getattr(self, name) for name in self.param_names()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({self.modalities}{', ' if args else ''}{args})"

    def _validate_params(self) -> None:
        validate_params(type(self).__name__, self.params, self._parameter_constraints)
