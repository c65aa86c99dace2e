"""A raster grid (CRS, affine transform, size) and its windows: where maps are predicted and
unlabelled grid cells are read."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from miam.data.files.rasters import RasterFile, apply_affine
from miam.errors import InvalidParameterError


@dataclass(frozen=True)
class Grid:
    """A raster grid: CRS (WKT or None), affine transform and size in pixels."""

    crs: str | None
    transform: Any
    width: int
    height: int

    @classmethod
    def of_raster(cls, path: str | Path) -> Grid:
        """The grid of an existing GeoTIFF."""
        ds = RasterFile(Path(path)).ds
        return cls(None if ds.crs is None else ds.crs.to_wkt(), ds.transform, ds.width, ds.height)

    @classmethod
    def of_bbox(cls, bbox: Sequence[float], resolution: float, crs: str | None) -> Grid:
        """A north-up grid covering ``bbox`` = (xmin, ymin, xmax, ymax) with square ``resolution`` pixels.

        Examples:
            >>> g = Grid.of_bbox((0, 0, 1000, 500), 10, "EPSG:32631")
            >>> g.width, g.height, g.transform.c, g.transform.f
            (100, 50, 0.0, 500.0)
        """
        from rasterio.transform import from_origin

        xmin, ymin, xmax, ymax = (float(v) for v in bbox)
        if not (xmax > xmin and ymax > ymin and resolution > 0):
            raise InvalidParameterError(f"Expected a bbox xmin < xmax, ymin < ymax and resolution > 0, got "
                                        f"{list(bbox)} and {resolution}.")
        w, h = math.ceil((xmax - xmin) / resolution - 1e-9), math.ceil((ymax - ymin) / resolution - 1e-9)
        return cls(crs, from_origin(xmin, ymax, resolution, resolution), int(w), int(h))

    def cells(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """Row-major indices (``row * width + col``) of the pixels [r0, r1) x [c0, c1).

        Examples:
            >>> Grid(None, None, 4, 3).cells(1, 3, 2, 4).tolist()
            [6, 7, 10, 11]
        """
        rr, cc = np.meshgrid(np.arange(r0, r1), np.arange(c0, c1), indexing="ij")
        return (rr * self.width + cc).ravel()

    def cell_centres(self, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Coordinates of the centres of the pixels with row-major indices ``cells``."""
        rows, cols = np.divmod(cells, self.width)
        return apply_affine(self.transform, cols + 0.5, rows + 0.5)

    def centres(self, r0: int, r1: int, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray]:
        """Coordinates of the centres of pixels [r0, r1) x [c0, c1), row-major."""
        return self.cell_centres(self.cells(r0, r1, c0, c1))

    def windows(self, max_pixels: int) -> list[tuple[int, int, int, int]]:
        """(r0, r1, c0, c1) blocks of whole rows (or row pieces for very wide grids) of <= ``max_pixels``."""
        rows = max(1, max_pixels // self.width)
        cols = min(self.width, max_pixels)
        return [(r, min(r + rows, self.height), c, min(c + cols, self.width))
                for r in range(0, self.height, rows) for c in range(0, self.width, cols)]
