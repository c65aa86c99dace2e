"""A map of one species' predicted probability (a band of a ``miam predict`` GeoTIFF), with
the observed presences on top (marked by split: training, validation, test), a colour bar and
coordinates."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from miam.errors import InvalidParameterError

#: the longer side of the drawn image, in raster pixels (larger rasters are read decimated)
MAX_SIDE = 2000
#: per split: its name in the legend, the marker's edge colour and shape
SPLIT_MARKERS = {"train": ("training", "white", "o"), "val": ("validation", "#ffb000", "s"),
                 "test": ("test", "#ff3030", "^")}


@dataclass
class Presences:
    """Where a species was observed present, per split (``{"train": (x, y), ...}``), in ``crs``."""

    points: Mapping[str, tuple[np.ndarray, np.ndarray]]
    crs: str | None

    def counts(self) -> str:
        """``12 training, 3 validation, 4 test``."""
        return ", ".join(f"{len(x)} {SPLIT_MARKERS.get(k, (k,))[0]}" for k, (x, _) in self.points.items())


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


def plot_species_map(prediction: str | Path, species: str, out: str | Path, presences: Presences | None = None,
                     title: str | None = None) -> Path:
    """Draw ``species``' band of ``prediction`` to a PNG.

    Args:
        prediction: a GeoTIFF written by :meth:`miam.predict.Predictor.predict_grid`.
        species: the band (its description: the species name, or ``richness``).
        out: the PNG to write.
        presences: optional observed presences per split, reprojected onto the map, one marker
            and legend entry per split (``presences (training)``, ``(validation)``, ``(test)``).
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
    drawn = 0
    for split, (x, y) in (presences.points.items() if presences is not None else ()):
        if not len(x):
            continue
        name, colour, marker = SPLIT_MARKERS.get(split, (split, "white", "o"))
        x, y = _to_crs((x, y, presences.crs), crs)
        ax.scatter(x, y, s=16, marker=marker, facecolors="none", edgecolors=colour, linewidths=1.0,
                   label=f"presences ({name})")
        ax.scatter(x, y, s=3, c="black")
        drawn += 1
    if drawn:
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


def presences_by_split(dataset: object, species: str) -> Presences:
    """The sites of a ``files`` dataset where ``species`` is present, per split (train, val, test).

    Raises:
        InvalidParameterError: an unknown species (the message lists some).
    """
    names = list(dataset.task.output_names)
    if species not in names:
        raise InvalidParameterError(f"Unknown species {species!r}; the data has {names[:20]}"
                                    f"{' ...' if len(names) > 20 else ''}.")
    j = names.index(species)
    target = np.asarray(dataset.target)
    present = target == j if dataset.task.kind == "multiclass" else target[:, j] > 0
    points = {}
    for split, rows in dataset.splits.items():
        xy = dataset.coords[rows[present[rows]]]
        points[split] = (xy[:, 0], xy[:, 1])
    return Presences(points, dataset.info.get("crs"))


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
