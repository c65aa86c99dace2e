"""Write a small "own data" folder: a sites table, a Parquet soil table, GeoTIFFs and JPEGs.

Pixel values encode their position (``1000 * row + col``, plus a per-layer offset), so a
test can tell which pixel a token came from:

* ``bio.tif``: 2 bands (``bio1`` = pos, ``bio12`` = pos + 500_000), EPSG:4326, 0.01 deg
  pixels over lon [2, 3] x lat [45, 46] (100 x 100), nodata -9999 in rows 0-9, cols 0-9;
* ``elev.tif``: 1 band float32, EPSG:32631 (UTM 31N), 500 m pixels over only the eastern
  part of the sites' area (sites west of it are outside), NaN in its first row;
* ``nocrs.tif``: a raster without CRS (for the error test);
* ``sites.csv``: site_id, lon, lat, species columns sp_a..sp_c, ``habitat`` (text, one NaN),
  ``ph`` (one NaN), monthly ``tas_1``..``tas_12`` (one NaN), ``split``;
* ``soil.parquet``: site_id, ``clay`` (NaN for one site), ``texture`` (text), and one id
  that matches no site; one site has no row;
* ``photos/{site_id}.jpg`` for all sites but two; one file is corrupt.

Run ``python tests/data/files.py DIR`` to write one by hand.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

LON0, LAT1, RES = 2.0, 46.0, 0.01
SIZE = 100
UTM = "EPSG:32631"
BIO_NODATA = -9999.0


def write_geotiff(path: Path, bands: np.ndarray, crs: str | None, transform, nodata=None,
                  descriptions: tuple[str, ...] = ()) -> None:
    """``bands`` [B, H, W] as a GeoTIFF with rasterio (band descriptions name the layers)."""
    import rasterio

    profile = {"driver": "GTiff", "height": bands.shape[1], "width": bands.shape[2], "count": bands.shape[0],
               "dtype": bands.dtype.name, "transform": transform, "nodata": nodata}
    if crs is not None:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(bands)
        for i, d in enumerate(descriptions, start=1):
            dst.set_band_description(i, d)


def pixel_centre(row: float, col: float) -> tuple[float, float]:
    """lon/lat of the centre of bio.tif's pixel (row, col)."""
    return LON0 + (col + 0.5) * RES, LAT1 - (row + 0.5) * RES


def elev_grid() -> tuple[object, int, int]:
    """The transform, height and width of elev.tif (UTM 31N, 500 m)."""
    from pyproj import Transformer
    from rasterio.transform import from_origin

    t = Transformer.from_crs("EPSG:4326", UTM, always_xy=True)
    x0, y1 = t.transform(2.5, 45.95)
    x1, y0 = t.transform(3.1, 45.05)
    x0, y1 = np.floor(x0 / 500) * 500, np.ceil(y1 / 500) * 500
    w, h = int(np.ceil((x1 - x0) / 500)), int(np.ceil((y1 - y0) / 500))
    return from_origin(x0, y1, 500.0, 500.0), h, w


def write_rasters(root: Path) -> None:
    from rasterio.transform import from_origin

    pos = (1000 * np.arange(SIZE)[:, None] + np.arange(SIZE)[None, :]).astype(np.float32)
    bio = np.stack([pos, pos + 500_000])
    bio[:, :10, :10] = BIO_NODATA
    write_geotiff(root / "bio.tif", bio, "EPSG:4326", from_origin(LON0, LAT1, RES, RES), BIO_NODATA,
                  ("bio1", "bio12"))
    transform, h, w = elev_grid()
    elev = (1000 * np.arange(h)[:, None] + np.arange(w)[None, :]).astype(np.float32)[None]
    elev[:, 0, :] = np.nan
    write_geotiff(root / "elev.tif", elev, UTM, transform)
    write_geotiff(root / "nocrs.tif", pos[None], None, from_origin(LON0, LAT1, RES, RES))


def write(root: str | Path, seed: int = 0, n_sites: int = 80) -> dict:
    """Write the folder; return the sites table and what the tests check against."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    write_rasters(root)
    rng = np.random.default_rng(seed)
    rows = rng.integers(12, SIZE - 12, n_sites)
    cols = rng.integers(12, SIZE - 12, n_sites)
    rows[0], cols[0] = 3, 3            # on bio.tif's nodata corner
    lon, lat = pixel_centre(rows, cols)
    lon[1], lat[1] = 3.5, 45.5         # outside bio.tif (and elev.tif)
    ids = np.array([f"S{k:03d}" for k in range(n_sites)])
    habitat = rng.choice(["forest", "meadow", "wetland"], n_sites).astype(object)
    habitat[2] = None
    ph = rng.normal(6.5, 0.8, n_sites).round(2)
    ph[3] = np.nan
    tas = rng.normal(10, 5, (n_sites, 12)).round(2)
    tas[4, 6] = np.nan
    split = np.array(["train"] * n_sites, dtype=object)
    split[n_sites * 6 // 10: n_sites * 8 // 10] = "val"
    split[n_sites * 8 // 10:] = "test"
    sp = (rng.uniform(size=(n_sites, 3)) < 0.4).astype(int)
    sp[:3] = 1
    sp[3:6] = 0
    sites = pd.DataFrame({"site_id": ids, "lon": lon, "lat": lat, "sp_a": sp[:, 0], "sp_b": sp[:, 1],
                          "sp_c": sp[:, 2] * 3, "habitat": habitat, "ph": ph,
                          **{f"tas_{m}": tas[:, m - 1] for m in range(1, 13)}, "split": split})
    sites.to_csv(root / "sites.csv", index=False)
    soil = pd.DataFrame({"site_id": list(ids[1:]) + ["ZZZ"],
                         "clay": list(rng.uniform(5, 40, n_sites - 1).round(1)) + [1.0],
                         "texture": list(rng.choice(["sand", "loam", "clay"], n_sites - 1)) + ["silt"]})
    soil.loc[4, "clay"] = np.nan
    soil.to_parquet(root / "soil.parquet", index=False)
    photos = root / "photos"
    photos.mkdir(exist_ok=True)
    colours = rng.integers(0, 256, (n_sites, 3))
    for k, sid in enumerate(ids):
        if k in (5, 6):
            continue
        Image.new("RGB", (40, 40), tuple(int(c) for c in colours[k])).save(photos / f"{sid}.jpg", quality=95)
    (photos / f"{ids[7]}.jpg").write_bytes(b"not a jpeg at all")
    return {"sites": sites, "rows": rows, "cols": cols, "soil": soil, "colours": colours,
            "no_photo": [ids[5], ids[6]], "corrupt_photo": ids[7], "no_soil_row": ids[0]}


if __name__ == "__main__":
    write(sys.argv[1])
    print(f"wrote {sys.argv[1]}")
