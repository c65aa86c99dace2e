"""GeoTIFF layers read at sites: values (one token per layer) or N x N patches (image tokens).

Points are reprojected to each raster's own CRS (pyproj), so layers may differ in CRS and
resolution. Reads go by tiles: the points are grouped by the tile their window starts in
and each group reads one window covering its points, so memory depends on the tile size,
not on the raster's. Nodata, NaN and a window outside the raster are NaN, hence hidden.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from miam.data.contract.patches import patch_names, patchify
from miam.data.contract.spec import ModalitySpec
from miam.data.files.io import Encoder, Sites, Standardizer, Vocabulary, few
from miam.data.files.schema import RasterSection
from miam.errors import DataFormatError, DatasetNotFoundError

#: points are grouped by tiles of this many pixels a side; one read per group
TILE = 1024


def apply_affine(t: Any, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``t`` applied to points (u, v): (col, row) -> (x, y), or with ``~t`` (x, y) -> (col, row).

    Examples:
        >>> from affine import Affine
        >>> apply_affine(Affine(10.0, 0.0, 500.0, 0.0, -10.0, 900.0), np.array([0.5]), np.array([2.0]))
        (array([505.]), array([880.]))
    """
    u, v = np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64)
    return t.a * u + t.b * v + t.c, t.d * u + t.e * v + t.f


class RasterFile:
    """One GeoTIFF, opened on first use; converts points in any CRS to its pixel coordinates.

    Args:
        path: the file.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._ds: Any = None
        self._transformers: dict[tuple[str | None, bool], Any] = {}

    def __getstate__(self) -> dict[str, Any]:  # open handles do not pickle
        return {"path": self.path, "_ds": None, "_transformers": {}}

    @property
    def ds(self) -> Any:
        if self._ds is None:
            import rasterio

            if not self.path.is_file():
                raise DatasetNotFoundError("files dataset", self.path.parent, self.path.name,
                                           "Check the raster paths in the YAML description.")
            try:
                self._ds = rasterio.open(self.path)
            except rasterio.errors.RasterioIOError as e:
                raise DataFormatError(f"{self.path}: not a readable raster ({e}).") from e
        return self._ds

    @property
    def crs(self) -> str | None:
        return None if self.ds.crs is None else self.ds.crs.to_wkt()

    def _transformer(self, crs: str | None, inverse: bool = False) -> Any:
        """pyproj transformer from ``crs`` to this raster's CRS (``inverse``: back); None when they agree."""
        if crs is None and self.crs is None:
            return None
        if self.crs is None:
            raise DataFormatError(f"{self.path} has no CRS but the points are in {crs!r}: add the CRS to the file "
                                  f"(e.g. gdal_edit.py -a_srs EPSG:XXXX {self.path.name}) or set the points' crs to "
                                  f"null if they use the raster's grid coordinates.")
        if crs is None:
            raise DataFormatError(f"The points have no CRS (crs: null) but {self.path} is in "
                                  f"{self.ds.crs.to_string()!r}: give the points' CRS (sites.crs).")
        key = (crs, inverse)
        if key not in self._transformers:
            from pyproj import CRS, Transformer
            from pyproj.exceptions import CRSError

            try:
                src = CRS.from_user_input(crs)
            except CRSError as e:
                raise DataFormatError(f"Unknown CRS {crs!r} ({e}); give an EPSG code such as 'EPSG:4326'.") from e
            dst = CRS.from_wkt(self.crs)
            self._transformers[key] = None if src == dst else Transformer.from_crs(
                *((dst, src) if inverse else (src, dst)), always_xy=True)
        return self._transformers[key]

    def pixel(self, x: np.ndarray, y: np.ndarray, crs: str | None) -> tuple[np.ndarray, np.ndarray]:
        """Continuous (row, col) of points given in ``crs`` (pixel (i, j) spans [i, i+1) x [j, j+1))."""
        t = self._transformer(crs)
        if t is not None:
            x, y = t.transform(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
        col, row = apply_affine(~self.ds.transform, x, y)
        return row, col

    def centres(self, rows: np.ndarray, cols: np.ndarray, crs: str | None) -> tuple[np.ndarray, np.ndarray]:
        """Coordinates in ``crs`` of the centres of pixels (rows, cols)."""
        x, y = apply_affine(self.ds.transform, cols + 0.5, rows + 0.5)
        t = self._transformer(crs, inverse=True)
        if t is not None:
            x, y = t.transform(x, y)
        return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)

    def read(self, bands: Sequence[int], r0: np.ndarray, c0: np.ndarray, size: int,
             progress: bool = False, desc: str = "") -> np.ndarray:
        """Windows ``[r0, r0+size) x [c0, c0+size)`` of ``bands`` -> float32 ``[N, B, size, size]``.

        Pixels outside the raster, on nodata (the dataset mask) or NaN are NaN.
        """
        from rasterio.windows import Window

        ds = self.ds
        h, w = ds.height, ds.width
        r0, c0 = np.asarray(r0, dtype=np.int64), np.asarray(c0, dtype=np.int64)
        out = np.full((len(r0), len(bands), size, size), np.nan, dtype=np.float32)
        idx = np.flatnonzero((r0 < h) & (r0 + size > 0) & (c0 < w) & (c0 + size > 0))
        if not len(idx):
            return out
        tiles = np.stack([r0[idx] // TILE, c0[idx] // TILE], axis=1)
        _, group = np.unique(tiles, axis=0, return_inverse=True)
        group = group.reshape(-1)
        order = np.argsort(group, kind="stable")
        bounds = np.flatnonzero(np.diff(group[order])) + 1
        step = np.arange(size)
        parts = np.split(idx[order], bounds)
        for gi in tqdm(parts, desc=desc or f"read {self.path.name}", unit="tile", leave=False,
                       disable=not progress or len(parts) < 4):
            ra, rb = max(0, int(r0[gi].min())), min(h, int(r0[gi].max()) + size)
            ca, cb = max(0, int(c0[gi].min())), min(w, int(c0[gi].max()) + size)
            block = ds.read(list(bands), window=Window(ca, ra, cb - ca, rb - ra), masked=True)
            block = np.ma.filled(block.astype(np.float32), np.nan)                       # [B, hb, wb]
            rr = r0[gi][:, None] + step - ra                                              # [n, size]
            cc = c0[gi][:, None] + step - ca
            ok = ((rr >= 0) & (rr < rb - ra))[:, :, None] & ((cc >= 0) & (cc < cb - ca))[:, None, :]
            vals = block[:, np.clip(rr, 0, rb - ra - 1)[:, :, None], np.clip(cc, 0, cb - ca - 1)[:, None, :]]
            out[gi] = np.where(ok[None], vals, np.nan).transpose(1, 0, 2, 3)
        return out


class RasterLayers:
    """The files and bands of one raster section, with a name per layer.

    A layer's name is the mapping key given for its file, else the band's description in
    the GeoTIFF, else the file stem (``_b2`` appended for band 2 of a multi-band file).
    """

    def __init__(self, sec: RasterSection, root: Path) -> None:
        items = sec.paths.items() if isinstance(sec.paths, dict) else [(None, p) for p in sec.paths]
        self.files: list[RasterFile] = []
        self.bands: list[list[int]] = []
        self.names: list[str] = []
        for name, p in items:
            f = RasterFile(root / p)
            count = f.ds.count
            bands = list(sec.bands) if sec.bands else list(range(1, count + 1))
            bad = [b for b in bands if not 1 <= b <= count]
            if bad:
                raise DataFormatError(f"{f.path}: band(s) {bad} do not exist; the file has bands 1..{count}.")
            base = name or f.path.stem
            self.files.append(f)
            self.bands.append(bands)
            for b in bands:
                described = f.ds.descriptions[b - 1] if name is None else None
                self.names.append(described or (base if len(bands) == 1 else f"{base}_b{b}"))
        dup = sorted({n for n in self.names if self.names.count(n) > 1})
        if dup:
            raise DataFormatError(f"raster {sec.name!r}: layer name(s) {dup} repeated; name the files with a "
                                  f"mapping {{name: file}}.")

    def with_files(self, paths: str | Path | Sequence[str | Path]) -> RasterLayers:
        """The same layers read from other files (future climate, another year), in the same order."""
        paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        if len(paths) != len(self.files):
            raise DataFormatError(f"Expected {len(self.files)} file(s) in place of "
                                  f"{[f.path.name for f in self.files]}, got {len(paths)}: {paths}.")
        new = copy.copy(self)
        new.files = [RasterFile(Path(p)) for p in paths]
        for f, bands in zip(new.files, self.bands):
            if max(bands) > f.ds.count:
                raise DataFormatError(f"{f.path} has {f.ds.count} band(s); the layers it replaces need band(s) "
                                      f"{bands}.")
        return new

    def values(self, sites: Sites, size: int = 1, progress: bool = False) -> np.ndarray:
        """``[N, L, size, size]`` windows centred on the sites (``size`` 1: the site's pixel)."""
        parts = []
        for f, bands in zip(self.files, self.bands):
            row, col = f.pixel(sites.x, sites.y, sites.crs)
            r0 = np.floor(row - size / 2 + 0.5)
            c0 = np.floor(col - size / 2 + 0.5)
            finite = np.isfinite(r0) & np.isfinite(c0)
            r0 = np.where(finite, r0, -10 * size - TILE).astype(np.int64)  # unprojectable points: outside
            c0 = np.where(finite, c0, -10 * size - TILE).astype(np.int64)
            parts.append(f.read(bands, r0, c0, size, progress, f"read {f.path.name}"))
        return np.concatenate(parts, axis=1)

    def describe(self) -> str:
        return few([f.path.name for f in self.files])

    def outside(self, sites: Sites) -> list[tuple[str, int]]:
        """Per file, how many sites fall outside it."""
        out = []
        for f in self.files:
            row, col = f.pixel(sites.x, sites.y, sites.crs)
            off = ~((row >= 0) & (row < f.ds.height) & (col >= 0) & (col < f.ds.width))
            out.append((f.path.name, int(off.sum())))
        return out


class RasterValues(Encoder):
    """The value of every layer at the site's pixel: one token per layer (numbers or classes)."""

    def __init__(self, sec: RasterSection, layers: RasterLayers, progress: bool = True) -> None:
        self.name, self.source, self.layers = sec.name, sec.name, layers
        self.categorical, self.progress = sec.categorical, progress
        self.scaler, self.vocab = Standardizer(), Vocabulary()
        self.replaced: dict[tuple[str, ...], RasterLayers] = {}

    @property
    def spec(self) -> ModalitySpec:
        n = len(self.layers.names)
        if self.categorical:
            return ModalitySpec(self.name, "categorical", n, (1,), tuple(self.layers.names), levels=self.vocab.sizes)
        return ModalitySpec(self.name, "tabular", n, (1,), tuple(self.layers.names))

    def raw(self, sites: Sites, path: Any = None) -> np.ndarray:
        return layers_for(self, path).values(sites, 1, self.progress)[:, :, :1, 0].astype(np.float64)

    def fit(self, raw: np.ndarray) -> None:
        if self.categorical:
            self.vocab.fit(class_text(raw[:, :, 0]))
        else:
            self.scaler.fit(raw)

    def transform(self, raw: np.ndarray) -> np.ndarray:
        if not self.categorical:
            return self.scaler.transform(raw)
        return self.vocab.transform(class_text(raw[:, :, 0]), unseen_classes(self.layers.names, "point"))[..., None]

    def describe(self) -> str:
        return self.layers.describe()

    def hidden_note(self, sites: Sites, raw: np.ndarray) -> str | None:
        outside = dict(self.layers.outside(sites))
        parts = []
        start = 0
        for f, bands in zip(self.layers.files, self.layers.bands):
            missing = int(np.isnan(raw[:, start:start + len(bands), 0]).any(axis=1).sum())
            start += len(bands)
            off = outside[f.path.name]
            if missing:
                parts.append(f"{f.path.name}: {off} site(s) outside the raster, {missing - off} on nodata/NaN")
        return "; ".join(parts) or None


class RasterPatches(Encoder):
    """An N x N pixel patch of every layer centred on the site, cut into image tokens.

    Categorical layers (land cover) become one channel per class seen in training, 1 where
    the pixel holds that class (one-hot); a pixel on nodata or of an unseen class hides its token.
    """

    def __init__(self, sec: RasterSection, layers: RasterLayers, progress: bool = True) -> None:
        self.name, self.source, self.layers, self.progress = sec.name, sec.name, layers, progress
        self.size = int(sec.patch)
        self.token = int(sec.token_size or sec.patch)
        self.categorical = sec.categorical
        self.scaler = Standardizer((1, 3, 4))  # one statistic per channel
        self.vocab = Vocabulary()
        self.replaced: dict[tuple[str, ...], RasterLayers] = {}

    @property
    def spec(self) -> ModalitySpec:
        g = self.size // self.token
        channels = sum(self.vocab.sizes) if self.categorical else len(self.layers.names)
        return ModalitySpec(self.name, "image", g * g, (channels, self.token, self.token), patch_names(g, g),
                            grid=(g, g))

    def raw(self, sites: Sites, path: Any = None) -> np.ndarray:
        return patchify(layers_for(self, path).values(sites, self.size, self.progress), self.token)

    @staticmethod
    def _pixels(raw: np.ndarray) -> np.ndarray:
        """``[N, T, L, t, t]`` -> every pixel's class of each layer ``[N * T * t * t, L]``."""
        return np.moveaxis(raw, 2, -1).reshape(-1, raw.shape[2])

    def fit(self, raw: np.ndarray) -> None:
        if self.categorical:
            self.vocab.fit(class_text(self._pixels(raw)))
        else:
            self.scaler.fit(raw)

    def transform(self, raw: np.ndarray) -> np.ndarray:
        if not self.categorical:
            return self.scaler.transform(raw)
        codes = self.vocab.transform(class_text(self._pixels(raw)), unseen_classes(self.layers.names, "pixel"))
        n, t, _, a, b = raw.shape
        return np.moveaxis(one_hot(codes, self.vocab.sizes).reshape(n, t, a, b, -1), -1, 2)

    def describe(self) -> str:
        return f"{self.layers.describe()}: {self.size} x {self.size} px" + (", one-hot" if self.categorical else "")

    def hidden_note(self, sites: Sites, raw: np.ndarray) -> str | None:
        hidden = np.isnan(raw).reshape(*raw.shape[:2], -1).any(axis=2)
        if not hidden.any():
            return None
        off = ", ".join(f"{name}: {n}" for name, n in self.layers.outside(sites) if n)
        return (f"{int(hidden.sum())} patch tokens touch nodata or the raster's edge"
                + (f" (sites outside: {off})" if off else ""))


def class_text(values: np.ndarray) -> np.ndarray:
    """Class codes ``[M, L]`` (NaN: missing) as text, ``3.0`` -> ``'3'``; None where missing."""
    return np.where(np.isfinite(values), np.char.mod("%g", np.nan_to_num(values)), None).astype(object)


def unseen_classes(names: Sequence[str], what: str):
    """The :meth:`Vocabulary.transform` callback warning about classes unseen in training, naming the layer."""
    def warn(j: int, n: int, examples: list) -> None:
        warnings.warn(f"raster {names[j]!r}: {n} {what}(s) with a class unseen in training (e.g. {examples}); "
                      f"those tokens are hidden.", stacklevel=5)
    return warn


def one_hot(codes: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """Level indices ``[M, L]`` (NaN: missing) -> float32 ``[M, sum(sizes)]``: one block of channels per layer,
    all NaN where its code is missing.

    Examples:
        >>> one_hot(np.array([[1.0, 0.0], [np.nan, 1.0]]), (3, 2)).tolist()
        [[0.0, 1.0, 0.0, 1.0, 0.0], [nan, nan, nan, 0.0, 1.0]]
    """
    out = np.zeros((len(codes), sum(sizes)), dtype=np.float32)
    start = np.cumsum([0, *sizes[:-1]])
    for j, (a, k) in enumerate(zip(start, sizes)):
        ok = np.isfinite(codes[:, j])
        out[np.flatnonzero(ok), a + codes[ok, j].astype(np.int64)] = 1.0
        out[~ok, a:a + k] = np.nan
    return out


def layers_for(enc: RasterValues | RasterPatches, paths: Any) -> RasterLayers:
    """The encoder's layers, or the same layers from replacement files (opened once per set of paths)."""
    if paths is None:
        return enc.layers
    key = tuple(str(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths))
    if key not in enc.replaced:
        enc.replaced[key] = enc.layers.with_files(key)
    return enc.replaced[key]


def raster_encoder(sec: RasterSection, root: Path, progress: bool = True) -> Encoder:
    """Values or patches, as the section asks."""
    layers = RasterLayers(sec, root)
    if sec.patch is not None:
        return RasterPatches(sec, layers, progress)
    return RasterValues(sec, layers, progress)


def draw_background(ref: RasterFile, layers: Sequence[RasterLayers], count: int, seed: int,
                    exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Cells of ``ref``'s grid drawn uniformly where every layer has data, avoiding ``exclude``.

    Args:
        ref: the raster whose cells are drawn.
        layers: every raster modality; a cell is valid when all their layers have a value at its centre.
        count: how many cells.
        seed: the draw's seed.
        exclude: flat cell indices (``row * width + col``) never drawn (presence cells).

    Returns:
        rows, cols of the drawn cells in ``ref``'s grid and counts ``{"requested", "drawn",
        "rejected_nodata", "rejected_presence_cells"}``.
    """
    rng = np.random.default_rng(seed)
    h, w = ref.ds.height, ref.ds.width
    total = h * w
    chosen = np.empty(0, dtype=np.int64)
    tested = np.asarray(exclude, dtype=np.int64)
    stats = {"requested": int(count), "drawn": 0, "rejected_nodata": 0, "rejected_presence_cells": 0}
    for _ in range(64):
        need = count - len(chosen)
        if need <= 0 or len(tested) + len(chosen) >= total:
            break
        cand = rng.integers(0, total, size=max(4 * need, 1024))
        _, first = np.unique(cand, return_index=True)
        cand = cand[np.sort(first)]
        at_presence = np.isin(cand, exclude)
        stats["rejected_presence_cells"] += int(at_presence.sum())
        cand = cand[~np.isin(cand, tested) & ~np.isin(cand, chosen)]
        if not len(cand):
            continue
        x, y = ref.centres(cand // w, cand % w, ref.crs)
        pts = Sites(None, x, y, ref.crs)
        ok = np.ones(len(cand), dtype=bool)
        for lay in layers:
            ok &= np.isfinite(lay.values(pts, 1)).reshape(len(cand), -1).all(axis=1)
        stats["rejected_nodata"] += int((~ok).sum())
        tested = np.concatenate([tested, cand[~ok]])
        chosen = np.concatenate([chosen, cand[ok][:need]])
    stats["drawn"] = len(chosen)
    if len(chosen) < count:
        warnings.warn(f"Background: drew {len(chosen)} of the {count} points asked for; the valid area of "
                      f"{ref.path.name}'s grid ({h} x {w} cells) holds no more free cells that were found.",
                      stacklevel=3)
    return chosen // w, chosen % w, stats
