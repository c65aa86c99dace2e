"""Datasets by name, as configs name them; the benchmarks also by the raw source ``miam prepare`` decodes.

This module sits above the data sub-packages (contract, benchmarks, files, synthetic) and
wires them to names; none of them imports it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from miam._validation import check_keys
from miam.data.contract.dataset import MultimodalDataset
from miam.errors import ConfigError

_BUILDERS: dict[str, Callable[..., MultimodalDataset]] = {}
#: dataset name -> the raw source class its cache is prepared from (published benchmarks only)
_SOURCES: dict[str, type] = {}


def register_dataset(name: str, source: type | None = None) -> Callable:
    """Decorator: make a builder ``f(**params) -> MultimodalDataset`` available as ``name``.

    Args:
        name: the dataset's name in configs (``data.name``).
        source: for a published benchmark, its :class:`~miam.data.benchmarks.raw.RawSource`
            subclass, so ``miam prepare`` can build the cache without a second list of names.
    """
    def deco(fn: Callable[..., MultimodalDataset]) -> Callable[..., MultimodalDataset]:
        _BUILDERS[name] = fn
        if source is not None:
            _SOURCES[name] = source
        return fn
    return deco


def list_datasets() -> list[str]:
    _load_builtins()
    return sorted(_BUILDERS)


def builder(name: str) -> Callable[..., MultimodalDataset]:
    """The builder registered as ``name``.

    Raises:
        ConfigError: an unknown name (listing the valid ones).
    """
    _load_builtins()
    if name not in _BUILDERS:
        raise ConfigError(f"Unknown dataset {name!r}; valid names are {sorted(_BUILDERS)}.")
    return _BUILDERS[name]


def raw_source(name: str) -> type:
    """The raw source class of the benchmark ``name`` (what ``miam prepare`` decodes).

    Raises:
        ConfigError: ``name`` is not a benchmark with a raw source (listing those that are).
    """
    _load_builtins()
    if name not in _SOURCES:
        raise ConfigError(f"{name!r} has no published files to prepare; the benchmarks that do are "
                          f"{sorted(_SOURCES)}.")
    return _SOURCES[name]


def build_dataset(name: str, **params: Any) -> MultimodalDataset:
    """Build the dataset ``name`` with its parameters.

    Raises:
        ConfigError: an unknown name, or a parameter the builder does not take (naming the
            dataset and listing the valid names or parameters).
    """
    fn = builder(name)
    arguments = inspect.signature(fn).parameters.values()
    if all(a.kind != a.VAR_KEYWORD for a in arguments):
        check_keys(f"dataset {name!r} (data.params)", params, [a.name for a in arguments], what="parameter")
    return fn(**params)


def _load_builtins() -> None:
    if "synthetic" not in _BUILDERS:
        from miam.data.synthetic.generator import make_dataset
        from miam.data.synthetic.pool import synthetic_pool
        register_dataset("synthetic")(make_dataset)
        register_dataset("synthetic_pool")(synthetic_pool)
    if "geoplant" not in _BUILDERS:
        from miam.data.benchmarks import geoplant, satbird, taxabench
        register_dataset("geoplant", geoplant.GeoPlantSource)(geoplant.load_geoplant)
        register_dataset("taxabench", taxabench.TaxaBenchSource)(taxabench.load_taxabench)
        register_dataset("satbird", satbird.SatBirdSource)(satbird.load_satbird)
    if "files" not in _BUILDERS:
        from miam.data.files.loader import load_files
        register_dataset("files")(load_files)
