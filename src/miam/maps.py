"""A map of one species' predicted probability (a band of a ``miam predict`` GeoTIFF), with
the training presences on top, a colour bar and coordinates."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from miam.errors import InvalidParameterError

#: the longer side of the drawn image, in raster pixels (larger rasters are read decimated)
MAX_SIDE = 2000


def read_band(path: str | Path, name: str, max_side: int = MAX_SIDE) -> tuple[np.ndarray, tuple[float, ...], object]:
    """The band described ``name`` as float ``[h, w]`` (NaN nodata), its (left, right, bottom, top) extent and CRS.

    Raises:
        InvalidParameterError: no band has this description (the message lists them).
    """
    import rasterio
    from rasterio.enums import Resampling

    with rasterio.open(path) as ds:
        names = list(ds.descriptions)
        if name not in names:
            raise InvalidParameterError(f"{path} has no band {name!r}; its bands are {names[:20]}"
                                        f"{' ...' if len(names) > 20 else ''}.")
        scale = max(1.0, max(ds.width, ds.height) / max_side)
        shape = (max(1, round(ds.height / scale)), max(1, round(ds.width / scale)))
        arr = ds.read(names.index(name) + 1, out_shape=shape, masked=True, resampling=Resampling.nearest)
        b = ds.bounds
        return np.ma.filled(arr.astype(np.float64), np.nan), (b.left, b.right, b.bottom, b.top), ds.crs


def axis_labels(crs: object) -> tuple[str, str]:
    """Axis titles for a CRS: longitude/latitude in degrees, else x/y in the CRS's unit."""
    if crs is None:
        return "x", "y"
    from pyproj import CRS

    c = CRS.from_wkt(crs.to_wkt()) if hasattr(crs, "to_wkt") else CRS.from_user_input(crs)
    if c.is_geographic:
        return "longitude (°)", "latitude (°)"
    unit = c.axis_info[0].unit_name if c.axis_info else ""
    return f"x ({unit})", f"y ({unit})"


def plot_species_map(prediction: str | Path, species: str, out: str | Path,
                     presences: tuple[np.ndarray, np.ndarray, str | None] | None = None,
                     title: str | None = None) -> Path:
    """Draw ``species``' band of ``prediction`` to a PNG.

    Args:
        prediction: a GeoTIFF written by :meth:`miam.predict.Predictor.predict_grid`.
        species: the band (its description: the species name, or ``richness``).
        out: the PNG to write.
        presences: optional (x, y, crs) of training presences, reprojected onto the map.
        title: default: the species name.

    Returns:
        ``out``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values, extent, crs = read_band(prediction, species)
    probability = species != "richness"
    fig, ax = plt.subplots(figsize=(7.5, 6.0))
    cmap = plt.get_cmap("viridis").copy()
    cmap.set_bad("#d9d9d9")  # nodata: light grey
    im = ax.imshow(values, extent=extent, origin="upper", cmap=cmap, interpolation="nearest",
                   vmin=0.0 if probability else None, vmax=1.0 if probability else None)
    fig.colorbar(im, ax=ax, shrink=0.85, label="predicted probability of presence" if probability
                 else "expected number of species")
    if presences is not None and len(presences[0]):
        x, y = _to_crs(presences, crs)
        ax.scatter(x, y, s=14, facecolors="none", edgecolors="white", linewidths=1.0, label="presences (training)")
        ax.scatter(x, y, s=3, c="black")
        ax.legend(loc="lower right", fontsize=8, framealpha=0.8)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.ticklabel_format(useOffset=False, style="plain")
    xl, yl = axis_labels(crs)
    ax.set_xlabel(xl)
    ax.set_ylabel(yl)
    ax.set_title(title or species)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def training_presences(dataset: object, species: str) -> tuple[np.ndarray, np.ndarray, str | None]:
    """(x, y, crs) of the sites where ``species`` is present in a ``files`` dataset (all splits).

    Raises:
        InvalidParameterError: an unknown species (the message lists some).
    """
    names = list(dataset.task.output_names)
    if species not in names:
        raise InvalidParameterError(f"Unknown species {species!r}; the data has {names[:20]}"
                                    f"{' ...' if len(names) > 20 else ''}.")
    j = names.index(species)
    target = np.asarray(dataset.target)
    rows = target == j if dataset.task.kind == "multiclass" else target[:, j] > 0
    xy = dataset.coords[rows]
    return xy[:, 0], xy[:, 1], dataset.info.get("crs")


def _to_crs(points: tuple[np.ndarray, np.ndarray, str | None], crs: object) -> tuple[np.ndarray, np.ndarray]:
    x, y, src = points
    if src is None or crs is None:
        return np.asarray(x), np.asarray(y)
    from pyproj import CRS, Transformer

    dst = CRS.from_wkt(crs.to_wkt())
    if CRS.from_user_input(src) == dst:
        return np.asarray(x), np.asarray(y)
    t = Transformer.from_crs(CRS.from_user_input(src), dst, always_xy=True)
    return t.transform(np.asarray(x), np.asarray(y))
