"""Declarative parameter constraints, checked once at construction (scikit-learn's way)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from miam.errors import InvalidParameterError, format_choices


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
    """One of a fixed set of values."""

    values: frozenset

    def accepts(self, value: Any) -> bool:
        try:
            return value in self.values
        except TypeError:
            return False

    def __str__(self) -> str:
        return f"a value among {format_choices(self.values)}"


@dataclass(frozen=True)
class OptionalOf:
    """None, or a value that ``inner`` accepts."""

    inner: Interval | Options

    def accepts(self, value: Any) -> bool:
        return value is None or self.inner.accepts(value)

    def __str__(self) -> str:
        return f"None or {self.inner}"


Constraint = Interval | Options | OptionalOf


def validate_params(owner: str, params: Mapping[str, Any], constraints: Mapping[str, Constraint]) -> None:
    """Check every parameter against its constraint; unknown names are errors too."""
    for name, value in params.items():
        if name not in constraints:
            raise InvalidParameterError(
                f"{owner} got an unexpected parameter {name!r}; valid parameters are {sorted(constraints)}."
            )
        if not constraints[name].accepts(value):
            raise InvalidParameterError(
                f"The {name!r} parameter of {owner} must be {constraints[name]}. Got {value!r} instead."
            )
