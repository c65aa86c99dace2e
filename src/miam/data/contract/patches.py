"""Images as tokens: square patches, row-major over the grid, named by their grid cell.

The benchmarks' images, the user's rasters and image folders and the synthetic images all
become tokens this one way, so a patch's name (``r0c1``) means the same cell everywhere.
"""

from __future__ import annotations

import numpy as np

from miam.errors import DataFormatError


def patchify(images: np.ndarray, patch: int) -> np.ndarray:
    """``[N, C, H, W]`` -> ``[N, (H/p)(W/p), C, p, p]`` patch tokens, row-major over the grid.

    Examples:
        >>> patchify(np.arange(16).reshape(1, 1, 4, 4), 2)[0, 1, 0].tolist()
        [[2, 3], [6, 7]]
    """
    n, c, h, w = images.shape
    if h % patch or w % patch:
        raise DataFormatError(f"image size {h}x{w} is not a multiple of patch_size={patch}.")
    g, k = h // patch, w // patch
    x = images.reshape(n, c, g, patch, k, patch).transpose(0, 2, 4, 1, 3, 5)
    return x.reshape(n, g * k, c, patch, patch)


def patch_names(rows: int, cols: int) -> tuple[str, ...]:
    """``"r{row}c{col}"`` for every patch of a grid, row-major."""
    return tuple(f"r{r}c{c}" for r in range(rows) for c in range(cols))
