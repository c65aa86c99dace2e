"""Unlabelled sites from the user's files, for pretraining: the sites of a table without targets,
or every cell of a raster grid, encoded with the statistics of the labelled training split."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from miam.data.contract.batch import MultimodalBatch
from miam.data.contract.unlabelled import Pool, UnlabelledDataset, encoded_pool, encoded_tensors, pool_splits
from miam.data.files.io import Sites

#: GDAL's raster block cache while a grid source reads (MB), as ``miam predict`` bounds it
GDAL_CACHE_MB = 64


def sites_pool(data: Any, path: str, sources: Mapping[str, Any] | None = None, val_fraction: float = 0.1,
               seed: int = 0) -> UnlabelledDataset:
    """A ``files`` dataset's modalities at the sites of the table ``path`` (no targets needed), encoded
    with the statistics ``data`` (a built :class:`~miam.data.files.FilesData`) learned on its labelled
    training split; ``sources`` replaces section files as ``miam predict --source`` does."""
    sites, _, table = data.read_sites(path)
    tokens = data.encode(sites, sources)
    return encoded_pool(data.specs, tokens, pool_splits(len(sites), val_fraction, seed),
                         {"source": f"files: {len(sites)} sites of {table.name}", "sites": len(sites)})


class GridPool(Pool):
    """Every cell of a raster grid (or ``sample`` of them) as an unlabelled site, read lazily.

    A batch reads only its own cells (:meth:`FilesData.encode` at their centres, tile by tile),
    and :meth:`windows` walks the grid in windows of at most ``window_pixels`` cells, as
    ``miam predict`` writes maps: memory follows the batch or the window, not the grid.
    Table and image modalities have no value on a grid cell: their tokens are hidden.

    Args:
        data: a built :class:`~miam.data.files.FilesData` (its rasters and statistics).
        grid: a :class:`~miam.data.files.grid.Grid` (``Grid.of_raster(path)`` or ``Grid.of_bbox(...)``).
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

        x, y = self.grid.cell_centres(cells)
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):   # GDAL's block cache would otherwise grow with the grid
            tokens = self.data.encode(Sites(None, np.asarray(x, float), np.asarray(y, float), self.grid.crs),
                                      self.sources)
        values, present = encoded_tensors(self.specs, tokens)
        return MultimodalBatch(values, present, torch.zeros(len(cells), 0), torch.from_numpy(cells))

    def __getitems__(self, indices: Sequence[int]) -> MultimodalBatch:
        return self._read(self.cells[np.asarray(indices, dtype=np.int64)])

    def windows(self) -> Iterator[MultimodalBatch]:
        """The grid's cells (of the sample) window by window, row-major; ``batch.ids`` are the cell indices."""
        for r0, r1, c0, c1 in self.grid.windows(self.window_pixels):
            cells = self.grid.cells(r0, r1, c0, c1)
            if len(self.cells) < self.grid.width * self.grid.height:
                cells = cells[np.isin(cells, self.cells, assume_unique=True)]
            if len(cells):
                yield self._read(cells)
