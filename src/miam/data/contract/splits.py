"""Train/validation/test splits that keep nearby sites together, and the projection they need.

Spatially autocorrelated sites straddling train and test inflate every score, so the
default splits assign whole blocks of space (:func:`spatial_block_split`); classification
benchmarks without coordinates split by class (:func:`stratified_split`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from miam.errors import InvalidParameterError

#: the splits every dataset names
SPLIT_NAMES = ("train", "val", "test")


def spatial_block_split(
    coords: np.ndarray,
    block_size: float,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    names: Sequence[str] = ("train", "val", "test"),
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Assign whole square blocks of side ``block_size`` (coordinate units) to splits.

    No block is shared between two splits, so nearby, autocorrelated sites never
    straddle train and test.

    Examples:
        >>> xy = np.random.default_rng(0).uniform(0, 100, size=(500, 2))
        >>> s = spatial_block_split(xy, 10.0, seed=0)
        >>> sum(len(v) for v in s.values())
        500
    """
    if block_size <= 0:
        raise InvalidParameterError(f"block_size must be > 0, got {block_size}.")
    if len(fractions) != len(names) or abs(sum(fractions) - 1.0) > 1e-6:
        raise InvalidParameterError(f"fractions {list(fractions)} must sum to 1, one per split {list(names)}.")
    cell = np.floor(np.asarray(coords) / block_size).astype(np.int64)
    _, block = np.unique(cell, axis=0, return_inverse=True)
    block = block.reshape(-1)
    n_blocks = int(block.max()) + 1
    order = np.random.default_rng(seed).permutation(n_blocks)
    # Walk blocks in random order and fill each split up to its share of samples.
    sizes = np.bincount(block, minlength=n_blocks)[order]
    cum = np.cumsum(sizes) / len(block)
    bounds = np.cumsum(fractions)
    which = np.searchsorted(bounds[:-1], cum - sizes / (2 * len(block)), side="right")
    block_split = np.empty(n_blocks, dtype=np.int64)
    block_split[order] = which
    sample_split = block_split[block]
    return {name: np.flatnonzero(sample_split == i) for i, name in enumerate(names)}


def lonlat_to_km(coords: np.ndarray) -> np.ndarray:
    """(lon, lat) degrees -> (x, y) km on the sinusoidal (equal-area) projection.

    Examples:
        >>> lonlat_to_km(np.array([[0.0, 0.0], [1.0, 60.0]])).round(1).tolist()
        [[0.0, 0.0], [55.6, 6671.7]]
    """
    r = 6371.0088
    lon, lat = np.radians(coords[:, 0]), np.radians(coords[:, 1])
    return np.stack([r * lon * np.cos(lat), r * lat], axis=1)


def stratified_split(labels: np.ndarray, fractions: Sequence[float], names: Sequence[str],
                     seed: int = 0) -> dict[str, np.ndarray]:
    """Per class, shuffle and cut by ``fractions`` (every class keeps its share in every split).

    Examples:
        >>> s = stratified_split(np.repeat(np.arange(3), 10), (0.8, 0.1, 0.1), ("train", "val", "test"))
        >>> [len(s[k]) for k in ("train", "val", "test")]
        [24, 3, 3]
    """
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(labels))
    order = perm[np.argsort(labels[perm], kind="stable")]          # shuffled within each class
    cls = labels[order]
    first = np.searchsorted(cls, cls, side="left")
    count = np.bincount(cls)[cls]
    rank = (np.arange(len(cls)) - first) / count                    # position within its class in [0, 1)
    which = np.searchsorted(np.cumsum(fractions)[:-1], rank + 1e-9, side="right")
    return {name: np.sort(order[which == i]) for i, name in enumerate(names)}
