"""Unlabelled sites for self-supervised pretraining, from the sources users already have.

**The contract of an unlabelled source** (what :mod:`miam.training.pretrain` reads): like a
labelled dataset, it has ``.specs`` and ``.modalities``, named splits ``"train"`` and
``"val"`` (``.split(name)``, ``.splits``), ``len()`` and a whole-batch
``__getitems__(indices) -> MultimodalBatch`` whose ``target`` has shape ``[B, 0]``: no label
ever travels with it. Four builders:

* :func:`from_dataset`: rows of a labelled dataset, inputs only (a labelled dataset's
  training sites may join any pool; their labels never do);
* :func:`synthetic_pool` (``data.name: synthetic_pool``): one synthetic landscape drawn for
  ``n_labelled + n_unlabelled`` training sites; a few keep their labels, the rest are the pool
  in ``info["unlabelled"]`` (their labels are dropped before anything reads them);
* :func:`sites_pool`: a ``files`` dataset's sources read at the sites of another table
  without targets, with the statistics learned on the labelled training split;
* :class:`GridPool`: every cell (or a sample of cells) of a raster grid, read lazily: a
  batch reads only its cells, and :meth:`GridPool.windows` walks the grid window by window
  as ``miam predict`` does, so memory does not grow with the grid.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from miam.data.batch import MultimodalBatch, nan_to_present
from miam.data.dataset import MultimodalDataset
from miam.data.spec import ModalitySpec
from miam.errors import InvalidParameterError

#: the splits of an unlabelled source
POOL_SPLITS = ("train", "val")
#: GDAL's raster block cache while a grid source reads (MB), as ``miam predict`` bounds it
GDAL_CACHE_MB = 64


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


class _Pool(Dataset):
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


class UnlabelledDataset(_Pool):
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


def synthetic_pool(n_labelled: int = 1000, n_unlabelled: int = 20_000, seed: int = 0, val_fraction: float = 0.1,
                   n_test: int | None = None, **params: Any) -> MultimodalDataset:
    """The ``synthetic_pool`` dataset of configs: a few labelled sites, many unlabelled ones in
    ``info["unlabelled"]`` (an :class:`UnlabelledDataset`), drawn from one ``make_dataset(seed, ...)``.

    The landscape (fields, species responses, spatial blocks) is the same for both parts.
    Labelled: ``n_labelled`` training sites drawn from the training blocks, validation sites in
    the proportion of the split fractions (at least 20), and the test split (``n_test`` of it,
    default all). Unlabelled: ``n_unlabelled`` other training-block sites; their labels are
    dropped here. Validation and test sites never enter the pool. ``miam pretrain`` with
    ``pretrain.source: {kind: dataset}`` reads the pool and the labelled training inputs.

    ``params`` go to :func:`miam.data.synthetic.make_dataset` (not ``n_sites``).
    """
    from miam.data.synthetic import make_dataset

    fractions = params.get("split_fractions", (0.7, 0.15, 0.15))
    n_sites = int(np.ceil((n_labelled + n_unlabelled) / fractions[0] * 1.05))
    ds = make_dataset(seed=seed, n_sites=n_sites, **params)
    rng = np.random.default_rng([seed, n_labelled, n_unlabelled])
    train = rng.permutation(ds.splits["train"])
    if len(train) < n_labelled + n_unlabelled:
        raise InvalidParameterError(f"synthetic_pool: the training blocks hold {len(train)} sites, fewer than "
                                    f"{n_labelled} + {n_unlabelled}; lower n_unlabelled.")
    n_val = max(20, int(round(n_labelled * fractions[1] / fractions[0])))
    val = rng.permutation(ds.splits["val"])[:n_val]
    test = ds.splits["test"] if n_test is None else rng.permutation(ds.splits["test"])[:n_test]
    rows = np.concatenate([np.sort(train[:n_labelled]), np.sort(val), np.sort(test)])
    splits = {"train": np.arange(n_labelled), "val": n_labelled + np.arange(len(val)),
              "test": n_labelled + len(val) + np.arange(len(test))}
    pool = from_dataset(ds, np.sort(train[n_labelled:n_labelled + n_unlabelled]), val_fraction, seed,
                        source=f"{n_unlabelled} unlabelled sites of the synthetic landscape (seed {seed})")
    return MultimodalDataset({m: ds.tokens[m][rows] for m in ds.modalities}, ds.target[rows], ds.specs, ds.task,
                             present={m: ds.present[m][rows] for m in ds.modalities}, ids=ds.ids[rows],
                             coords=ds.coords[rows], splits=splits, info={**ds.info, "unlabelled": pool})


def sites_pool(data: Any, path: str, sources: Mapping[str, Any] | None = None, val_fraction: float = 0.1,
               seed: int = 0) -> UnlabelledDataset:
    """A ``files`` dataset's modalities at the sites of the table ``path`` (no targets needed), encoded
    with the statistics ``data`` (a built :class:`~miam.data.files.FilesData`) learned on its labelled
    training split; ``sources`` replaces section files as ``miam predict --source`` does."""
    sites, _, table = data.read_sites(path)
    tokens = data.encode(sites, sources)
    return _encoded_pool(data.specs, tokens, pool_splits(len(sites), val_fraction, seed),
                         {"source": f"files: {len(sites)} sites of {table.name}", "sites": len(sites)})


def _encoded_pool(specs: Sequence[ModalitySpec], tokens: Mapping[str, np.ndarray], splits: Mapping[str, np.ndarray],
                  info: Mapping[str, Any]) -> UnlabelledDataset:
    """Encoded tokens (NaN where hidden) as an :class:`UnlabelledDataset`."""
    values, present = _tensors(specs, tokens)
    return UnlabelledDataset({m: v.numpy() for m, v in values.items()}, {m: p.numpy() for m, p in present.items()},
                             specs, splits, info)


def _tensors(specs: Sequence[ModalitySpec], tokens: Mapping[str, np.ndarray]) -> tuple[dict, dict]:
    """Encoded tokens (NaN where hidden) -> zero-filled values and presence, as tensors per modality."""
    values, present = {}, {}
    for s in specs:
        values[s.name], present[s.name] = nan_to_present(
            torch.from_numpy(np.ascontiguousarray(tokens[s.name], dtype=np.float32)), len(s.token_shape))
    return values, present


class GridPool(_Pool):
    """Every cell of a raster grid (or ``sample`` of them) as an unlabelled site, read lazily.

    A batch reads only its own cells (:meth:`FilesData.encode` at their centres, tile by tile),
    and :meth:`windows` walks the grid in windows of at most ``window_pixels`` cells, as
    ``miam predict`` writes maps: memory follows the batch or the window, not the grid.
    Table and image modalities have no value on a grid cell: their tokens are hidden.

    Args:
        data: a built :class:`~miam.data.files.FilesData` (its rasters and statistics).
        grid: a :class:`miam.predict.Grid` (``Grid.of_raster(path)`` or ``Grid.of_bbox(...)``).
        sample: how many cells to use (None: all), drawn at random with ``seed``.
        window_pixels: the largest window :meth:`windows` reads at once.
    """

    def __init__(self, data: Any, grid: Any, sample: int | None = None, val_fraction: float = 0.05,
                 seed: int = 0, window_pixels: int = 1 << 16, sources: Mapping[str, Any] | None = None) -> None:
        self.data, self.grid, self.sources = data, grid, dict(sources or {})
        self.specs = list(data.specs)
        n = grid.width * grid.height
        self.cells = (np.arange(n, dtype=np.int64) if sample is None or sample >= n
                      else np.sort(np.random.default_rng(seed).choice(n, size=int(sample), replace=False)))
        self.window_pixels = int(window_pixels)
        self.splits = pool_splits(len(self.cells), val_fraction, seed, max_val=5_000)
        self.info = {"source": f"raster grid {grid.width} x {grid.height}"
                               + (f", {len(self.cells)} sampled cells" if len(self.cells) < n else ""),
                     "sites": len(self.cells)}

    def __len__(self) -> int:
        return len(self.cells)

    def _read(self, cells: np.ndarray) -> MultimodalBatch:
        import rasterio

        from miam.data.files_io import Sites
        from miam.data.files_rasters import apply_affine

        rows, cols = np.divmod(cells, self.grid.width)
        x, y = apply_affine(self.grid.transform, cols + 0.5, rows + 0.5)
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):   # GDAL's block cache would otherwise grow with the grid
            tokens = self.data.encode(Sites(None, np.asarray(x, float), np.asarray(y, float), self.grid.crs),
                                      self.sources)
        values, present = _tensors(self.specs, tokens)
        return MultimodalBatch(values, present, torch.zeros(len(cells), 0), torch.from_numpy(cells))

    def __getitems__(self, indices: Sequence[int]) -> MultimodalBatch:
        return self._read(self.cells[np.asarray(indices, dtype=np.int64)])

    def windows(self) -> Iterator[MultimodalBatch]:
        """The grid's cells (of the sample) window by window, row-major; ``batch.ids`` are the cell indices."""
        for r0, r1, c0, c1 in self.grid.windows(self.window_pixels):
            rr, cc = np.meshgrid(np.arange(r0, r1), np.arange(c0, c1), indexing="ij")
            cells = (rr * self.grid.width + cc).ravel()
            if len(self.cells) < self.grid.width * self.grid.height:
                cells = cells[np.isin(cells, self.cells, assume_unique=True)]
            if len(cells):
                yield self._read(cells)
