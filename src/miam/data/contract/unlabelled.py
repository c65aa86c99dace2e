"""Unlabelled sites for self-supervised pretraining, from the sources users already have.

**The contract of an unlabelled source** (what :mod:`miam.training.pretrain` reads): like a
labelled dataset, it has ``.specs`` and ``.modalities``, named splits ``"train"`` and
``"val"`` (``.split(name)``, ``.splits``), ``len()`` and a whole-batch
``__getitems__(indices) -> MultimodalBatch`` whose ``target`` has shape ``[B, 0]``: no label
ever travels with it. Four builders, each beside the data it reads:

* :func:`from_dataset` (here): rows of a labelled dataset, inputs only (a labelled dataset's
  training sites may join any pool; their labels never do);
* :func:`~miam.data.synthetic.pool.synthetic_pool` (``data.name: synthetic_pool``): one synthetic landscape drawn for
  ``n_labelled + n_unlabelled`` training sites; a few keep their labels, the rest are the pool
  in ``info["unlabelled"]`` (their labels are dropped before anything reads them);
* :func:`~miam.data.files.pools.sites_pool`: a ``files`` dataset's sources read at the sites of another table
  without targets, with the statistics learned on the labelled training split;
* :class:`~miam.data.files.pools.GridPool`: every cell (or a sample of cells) of a raster grid, read lazily: a
  batch reads only its cells, and :meth:`~miam.data.files.pools.GridPool.windows` walks the grid window by window
  as ``miam predict`` does, so memory does not grow with the grid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from miam.data.contract.batch import MultimodalBatch, nan_to_present
from miam.data.contract.dataset import MultimodalDataset
from miam.data.contract.spec import ModalitySpec
from miam.errors import InvalidParameterError

#: the splits of an unlabelled source
POOL_SPLITS = ("train", "val")


def pool_splits(n: int, val_fraction: float, seed: int, max_val: int | None = None) -> dict[str, np.ndarray]:
    """A random train/val partition of ``n`` sites (val: ``val_fraction`` of them, at most ``max_val``).

    Example:
        >>> s = pool_splits(100, 0.1, seed=0)
        >>> len(s["train"]), len(s["val"])
        (90, 10)
    """
    if not 0 < val_fraction < 1:
        raise InvalidParameterError(f"val_fraction must be in (0, 1), got {val_fraction}.")
    n_val = max(1, int(round(n * val_fraction)))
    n_val = min(n_val, max_val) if max_val else n_val
    perm = np.random.default_rng([seed, n]).permutation(n)
    return {"train": np.sort(perm[n_val:]), "val": np.sort(perm[:n_val])}


class PoolSplit(Dataset):
    """A split of an unlabelled source: the same source, a subset of rows."""

    def __init__(self, base: Any, indices: np.ndarray) -> None:
        self.base, self.indices = base, np.asarray(indices, dtype=np.int64)
        self.specs = base.specs

    def __len__(self) -> int:
        return len(self.indices)

    def __getitems__(self, indices: Sequence[int]) -> MultimodalBatch:
        return self.base.__getitems__(self.indices[np.asarray(indices, dtype=np.int64)])


class Pool(Dataset):
    """What every unlabelled source shares: specs, modalities, splits."""

    specs: list[ModalitySpec]
    splits: dict[str, np.ndarray]
    info: dict[str, Any]

    @property
    def modalities(self) -> list[str]:
        return [s.name for s in self.specs]

    def split(self, name: str) -> PoolSplit:
        if name not in self.splits:
            raise InvalidParameterError(f"Unknown split {name!r} of an unlabelled source; it has {list(POOL_SPLITS)}.")
        return PoolSplit(self, self.splits[name])


class UnlabelledDataset(Pool):
    """Token arrays and presence per modality, without targets (see the module's contract).

    Args:
        tokens: ``{modality: [N, T_m, *shape]}``.
        present: ``{modality: bool [N, T_m]}``.
        specs: the modalities, in model order.
        splits: ``{"train": indices, "val": indices}``.
        info: where the sites came from (``source``, counts), for the run's record.
    """

    def __init__(self, tokens: Mapping[str, np.ndarray], present: Mapping[str, np.ndarray],
                 specs: Sequence[ModalitySpec], splits: Mapping[str, np.ndarray],
                 info: Mapping[str, Any] | None = None) -> None:
        self.specs = list(specs)
        self.tokens = {s.name: tokens[s.name] for s in self.specs}
        self.present = {s.name: present[s.name] for s in self.specs}
        self.splits = {k: np.asarray(v, dtype=np.int64) for k, v in splits.items()}
        self.info = dict(info or {})

    def __len__(self) -> int:
        return len(next(iter(self.present.values())))

    def __getitems__(self, indices: Sequence[int]) -> MultimodalBatch:
        idx = np.asarray(indices, dtype=np.int64)
        return MultimodalBatch(
            {m: torch.from_numpy(np.ascontiguousarray(a[idx])) for m, a in self.tokens.items()},
            {m: torch.from_numpy(np.ascontiguousarray(a[idx])) for m, a in self.present.items()},
            torch.zeros(len(idx), 0), torch.from_numpy(idx))


def from_dataset(ds: MultimodalDataset, rows: np.ndarray | None = None, val_fraction: float = 0.1,
                 seed: int = 0, source: str = "dataset") -> UnlabelledDataset:
    """The inputs of ``ds``'s ``rows`` (default: its training split) as an unlabelled source; no target is kept."""
    rows = ds.splits["train"] if rows is None else np.asarray(rows, dtype=np.int64)
    return UnlabelledDataset({m: ds.tokens[m][rows] for m in ds.modalities},
                             {m: ds.present[m][rows] for m in ds.modalities}, ds.specs,
                             pool_splits(len(rows), val_fraction, seed), {"source": source, "sites": len(rows)})


def concat(pools: Sequence[UnlabelledDataset], val_fraction: float = 0.1, seed: int = 0) -> UnlabelledDataset:
    """One source holding every site of ``pools`` (same specs), split afresh."""
    specs = pools[0].specs
    names = [s.name for s in specs]
    for p in pools[1:]:
        if p.modalities != names:
            raise InvalidParameterError(f"Unlabelled sources with different modalities: {names} and {p.modalities}.")
    n = sum(len(p) for p in pools)
    return UnlabelledDataset({m: np.concatenate([p.tokens[m] for p in pools]) for m in names},
                             {m: np.concatenate([p.present[m] for p in pools]) for m in names}, specs,
                             pool_splits(n, val_fraction, seed),
                             {"source": " + ".join(str(p.info.get("source")) for p in pools), "sites": n})


def encoded_pool(specs: Sequence[ModalitySpec], tokens: Mapping[str, np.ndarray], splits: Mapping[str, np.ndarray],
                  info: Mapping[str, Any]) -> UnlabelledDataset:
    """Encoded tokens (NaN where hidden) as an :class:`UnlabelledDataset`."""
    values, present = encoded_tensors(specs, tokens)
    return UnlabelledDataset({m: v.numpy() for m, v in values.items()}, {m: p.numpy() for m, p in present.items()},
                             specs, splits, info)


def encoded_tensors(specs: Sequence[ModalitySpec], tokens: Mapping[str, np.ndarray]) -> tuple[dict, dict]:
    """Encoded tokens (NaN where hidden) -> zero-filled values and presence, as tensors per modality."""
    values, present = {}, {}
    for s in specs:
        values[s.name], present[s.name] = nan_to_present(
            torch.from_numpy(np.ascontiguousarray(tokens[s.name], dtype=np.float32)), len(s.token_shape))
    return values, present
