"""Write a small landscape as an ecologist would have it: GeoTIFF rasters, a survey table, a soil table.

The covariates are spatially autocorrelated random fields (random Fourier features, as in
``miam.data.synthetic.generator``); twelve species respond to them, each mostly through a few:

* ``climate/bio1.tif``, ``climate/bio12.tif``: mean temperature (deg C) and annual
  precipitation (mm) on a 0.01 deg lon/lat grid (EPSG:4326), nodata over a lake;
* ``landcover.tif``: 5 land-cover classes, 250 m pixels in UTM 31N (EPSG:32631), 0 = nodata;
* ``aerial.tif``: a 4-band 50 m image (UTM 31N) whose fine texture marks a habitat that some
  species need (only visible in patches around the site, not in any single value);
* ``surveys.csv``: 1,500 surveyed sites (x, y in UTM 31N), presence/absence of 12 species,
  monthly NDVI ``ndvi_01``..``ndvi_12`` (some months cloudy: empty);
* ``soil.csv``: pH (some empty) and a text soil type, for most but not all sites.

The species' responses are niches (a Gaussian in temperature), class effects (land cover,
soil type), the aerial texture and a spring NDVI anomaly, so each modality carries part of
the signal and a site missing one still says something.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

UTM = "EPSG:32631"
#: the landscape's south-west corner and size in UTM 31N (around 2.5 deg E, 45 deg N)
X0, Y0, EXTENT = 460_000.0, 4_980_000.0, 40_000.0
LANDCOVER = ("forest", "grassland", "cropland", "wetland", "urban")
SOILS = ("clay", "loam", "sand", "peat")


class Field:
    """A standardised Gaussian random field (random Fourier features of an RBF kernel), metres."""

    def __init__(self, rng: np.random.Generator, lengthscale: float, n_features: int = 64) -> None:
        self.omega = rng.normal(0.0, 1.0 / lengthscale, size=(2, n_features))
        self.phase = rng.uniform(0, 2 * np.pi, n_features)
        self.amp = rng.normal(size=n_features) / np.sqrt(n_features / 2)

    def __call__(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        xy = np.stack([np.ravel(x), np.ravel(y)], 1)
        return (np.cos(xy @ self.omega + self.phase) @ self.amp).reshape(np.shape(x))


class Landscape:
    """The fields behind every file, evaluated anywhere (x, y in UTM 31N, metres)."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        scales = {"temperature": 8000.0, "precipitation": 10000.0, "landcover": 3000.0, "habitat": 1500.0,
                  "spring": 5000.0}
        self.f = {k: Field(np.random.default_rng([seed, i]), s) for i, (k, s) in enumerate(scales.items())}

    def temperature(self, x, y):
        return 11.0 - 6.0 * (y - Y0) / EXTENT + 1.5 * self.f["temperature"](x, y)

    def precipitation(self, x, y):
        return 900.0 + 150.0 * self.f["precipitation"](x, y)

    def landcover(self, x, y):
        f = self.f["landcover"](x, y)
        return np.digitize(f, [-0.9, -0.2, 0.5, 1.2]).astype(np.int64)          # 0..4

    def habitat(self, x, y):
        return self.f["habitat"](x, y)

    def lake(self, x, y):
        return (x - X0 - 0.3 * EXTENT) ** 2 + (y - Y0 - 0.7 * EXTENT) ** 2 < 3000.0 ** 2

    def ndvi(self, x, y):
        months = np.arange(12)
        season = 0.25 + 0.35 * np.exp(-((months - 6.0) / 2.5) ** 2)
        spring = 0.15 * self.f["spring"](x, y)
        bump = np.exp(-((months - 4.0) / 1.2) ** 2)
        return season[None] + spring[:, None] * bump[None], spring


def write_geotiff(path: Path, bands: np.ndarray, crs: str, transform, nodata, names=()) -> None:
    import rasterio

    with rasterio.open(path, "w", driver="GTiff", height=bands.shape[1], width=bands.shape[2],
                       count=bands.shape[0], dtype=bands.dtype.name, crs=crs, transform=transform,
                       nodata=nodata, compress="deflate") as dst:
        dst.write(bands)
        for i, name in enumerate(names, start=1):
            dst.set_band_description(i, name)


def write_rasters(land: Landscape, root: Path) -> None:
    from pyproj import Transformer
    from rasterio.transform import from_origin

    (root / "climate").mkdir(parents=True, exist_ok=True)
    to_lonlat = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
    to_utm = Transformer.from_crs("EPSG:4326", UTM, always_xy=True)
    lon0, lat0 = to_lonlat.transform(X0 - 2000, Y0 - 2000)
    lon1, lat1 = to_lonlat.transform(X0 + EXTENT + 2000, Y0 + EXTENT + 2000)
    res = 0.01
    lons = np.arange(np.floor(lon0 / res) * res, lon1, res) + res / 2
    lats = np.arange(np.ceil(lat1 / res) * res, lat0, -res) - res / 2
    glon, glat = np.meshgrid(lons, lats)
    gx, gy = to_utm.transform(glon, glat)
    lake = land.lake(gx, gy)
    t = from_origin(lons[0] - res / 2, lats[0] + res / 2, res, res)
    for name, values in (("bio1", land.temperature(gx, gy)), ("bio12", land.precipitation(gx, gy))):
        band = np.where(lake, -9999.0, values).astype(np.float32)[None]
        write_geotiff(root / "climate" / f"{name}.tif", band, "EPSG:4326", t, -9999.0, (name,))
    for name, res_m in (("landcover", 250.0), ("aerial", 50.0)):
        n = int(EXTENT / res_m)
        centres = X0 + (np.arange(n) + 0.5) * res_m
        gx, gy = np.meshgrid(centres, Y0 + EXTENT - (np.arange(n) + 0.5) * res_m)
        t = from_origin(X0, Y0 + EXTENT, res_m, res_m)
        if name == "landcover":
            band = np.where(land.lake(gx, gy), 0, land.landcover(gx, gy) + 1).astype(np.uint8)[None]
            write_geotiff(root / "landcover.tif", band, UTM, t, 0, ("landcover",))
        else:
            amplitude = np.log1p(np.exp(1.5 * land.habitat(gx, gy)))
            checker = np.where((np.arange(n)[:, None] + np.arange(n)[None]) % 2 == 0, 1.0, -1.0)
            rng = np.random.default_rng([land.seed, 99])
            bands = np.stack([60 + 20 * g * amplitude * checker + 8 * rng.normal(size=(n, n))
                              for g in (0.6, 1.0, -0.8, 1.4)]).astype(np.float32)
            write_geotiff(root / "aerial.tif", bands, UTM, t, None, ("blue", "green", "red", "nir"))


def write(root: str | Path, seed: int = 0, n_sites: int = 1500, n_species: int = 12) -> dict:
    """Write every file under ``root``; return the species' true drivers for reference."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    land = Landscape(seed)
    write_rasters(land, root)
    rng = np.random.default_rng([seed, 1000])
    x = X0 + rng.uniform(500, EXTENT - 500, n_sites)
    y = Y0 + rng.uniform(500, EXTENT - 500, n_sites)
    temp, prec, lc = land.temperature(x, y), land.precipitation(x, y), land.landcover(x, y)
    soil = rng.integers(0, len(SOILS), n_sites)
    ph = 5.0 + 0.6 * soil + 0.5 * rng.normal(size=n_sites)
    ndvi, spring = land.ndvi(x, y)
    offsets = np.linspace(-400, 400, 8)                 # habitat texture around the site (aerial patches)
    hx, hy = np.meshgrid(offsets, offsets)
    texture = np.log1p(np.exp(1.5 * land.habitat(x[:, None] + hx.ravel(), y[:, None] + hy.ravel()))).mean(1)
    optimum = rng.uniform(6.0, 12.0, n_species)
    lc_effect = rng.normal(0, 1.0, (len(LANDCOVER), n_species))
    soil_effect = rng.normal(0, 0.8, (len(SOILS), n_species))
    weights = rng.normal(0, 1.0, (4, n_species))
    z = lambda v: (v - v.mean()) / v.std()              # noqa: E731
    logit = (-((temp[:, None] - optimum) / 2.0) ** 2 + 0.6 * weights[0] * z(prec)[:, None]
             + lc_effect[lc] + soil_effect[soil] + 0.9 * weights[1] * z(texture)[:, None]
             + 0.8 * weights[2] * z(spring)[:, None] + 0.4 * weights[3] * z(ph)[:, None])
    logit += np.log(rng.uniform(0.1, 0.4, n_species) / 0.75) - logit.mean(0)
    presence = rng.uniform(size=logit.shape) < 1 / (1 + np.exp(-logit))
    ndvi = ndvi + 0.02 * rng.normal(size=ndvi.shape)
    ndvi[rng.uniform(size=ndvi.shape) < 0.08] = np.nan   # cloudy months
    ids = np.array([f"plot{k:04d}" for k in range(n_sites)])
    surveys = pd.DataFrame({"plot_id": ids, "x": x.round(1), "y": y.round(1),
                            **{f"ndvi_{m + 1:02d}": ndvi[:, m].round(4) for m in range(12)},
                            **{f"sp{j:02d}": presence[:, j].astype(int) for j in range(n_species)}})
    surveys.to_csv(root / "surveys.csv", index=False)
    ph[rng.uniform(size=n_sites) < 0.1] = np.nan
    keep = rng.uniform(size=n_sites) > 0.15              # 15 % of plots have no soil sample
    pd.DataFrame({"plot_id": ids[keep], "ph": ph[keep].round(2),
                  "soil_type": np.asarray(SOILS)[soil[keep]]}).to_csv(root / "soil.csv", index=False)
    return {"optimum": optimum, "landcover_effect": lc_effect, "soil_effect": soil_effect}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", help="folder to write")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sites", type=int, default=1500)
    a = ap.parse_args()
    write(a.root, a.seed, a.sites)
    print(f"wrote {a.root}")
