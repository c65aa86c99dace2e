"""Errors that say what is wrong, what was expected and what was got.

Every error subclasses a builtin, so ``except ValueError`` in user code keeps working.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


class MiamError(Exception):
    """Base class of every error raised by miam."""


class InvalidParameterError(MiamError, ValueError, TypeError):
    """A constructor or function argument outside its allowed values."""


class ShapeError(MiamError, ValueError):
    """A tensor whose shape or dtype does not match the data contract."""


class ConfigError(MiamError, ValueError):
    """A configuration file or key that miam cannot use."""


class DatasetNotFoundError(MiamError, FileNotFoundError):
    """A dataset whose files are not where the loader was told to look."""

    def __init__(self, dataset: str, root: Any, missing: Any, hint: str = "") -> None:
        msg = f"{dataset} not found: expected {missing} under root={str(root)!r}."
        if hint:
            msg += " " + hint
        super().__init__(msg)


class DataFormatError(MiamError, ValueError):
    """A published file whose content does not have the published layout; names the file and row."""


class StaleCacheError(MiamError, RuntimeError):
    """A prepared cache built from other raw files or options than those on disk now."""


def format_choices(choices: Iterable[Any]) -> str:
    return "{" + ", ".join(repr(c) for c in sorted(choices, key=str)) + "}"


def check_names(owner: str, what: str, names: Sequence[str], known: Sequence[str]) -> None:
    """Raise if any of ``names`` is not in ``known``, listing the valid names."""
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InvalidParameterError(
            f"{owner}: unknown {what} {unknown}; valid names are {list(known)}."
        )
