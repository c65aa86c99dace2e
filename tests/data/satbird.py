"""Write a tiny SatBird sub-dataset (``USA_summer`` layout): split CSVs, GeoTIFFs, env rasters, JSON targets.

Follows ``miam.data.benchmarks.satbird``'s card (RolnickLab/SatBird README, loader and processing
scripts). Images are 4-band (B02, B03, B04, B08) uint16 GeoTIFFs of varying size >= 128 px
written pixel-interleaved (GDAL's default) with GeoTIFF georeferencing tags; one image is
a float32 mosaic with NaN pixels, one hotspot has no image, one has no target file.

Run ``python tests/data/satbird.py DIR`` to write one by hand.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

BIOCLIM = [f"bio_{i}" for i in range(1, 20)]
SOIL = ["bdticm", "bldfie", "cecsol", "clyppt", "orcdrc", "phihox", "sltppt", "sndppt"]
#: ModelPixelScale, ModelTiepoint, GeoKeyDirectory (UTM 18N, EPSG:32618)
GEOKEYS = (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32618)


def write_geotiff(path: Path, hwc: np.ndarray, x0: float = 500_000.0, y0: float = 4_500_000.0) -> None:
    """A pixel-interleaved GeoTIFF with 10 m pixels."""
    tags = [(33550, "d", 3, (10.0, 10.0, 0.0), True), (33922, "d", 6, (0.0, 0.0, 0.0, x0, y0, 0.0), True),
            (34735, "H", len(GEOKEYS), GEOKEYS, True)]
    tifffile.imwrite(path, hwc, photometric="minisblack", planarconfig="contig", extratags=tags)


def write(root: str | Path, seed: int = 0, n_hotspots: int = 36, n_species: int = 20) -> dict:
    """Write the tree; return ``{"hotspots", "split", "probs", "images" (first 3, as written H x W x 4),
    "env", "no_image", "no_target", "nan_image"}``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    hotspots = np.array([f"L{n}" for n in 100_000 + rng.choice(9_899_999, n_hotspots, replace=False)])
    split = np.array(["train"] * n_hotspots, dtype=object)
    split[n_hotspots * 7 // 10: n_hotspots * 85 // 100] = "valid"
    split[n_hotspots * 85 // 100:] = "test"
    table = pd.DataFrame({
        "hotspot_id": hotspots, "lon": rng.uniform(-90, -80, n_hotspots), "lat": rng.uniform(35, 42, n_hotspots),
        "county": "Some County", "county_code": "US-XX-001", "state": "Somewhere", "state_code": "US-XX",
        "num_complete_checklists": rng.integers(50, 500, n_hotspots),
        "num_different_species": rng.integers(20, 200, n_hotspots),
        **{c: rng.normal(10, 5, n_hotspots).round(3) for c in BIOCLIM + SOIL},
    })
    table.loc[2, "bio_4"] = np.nan
    root.mkdir(parents=True, exist_ok=True)
    for name, file in (("train", "train_split.csv"), ("valid", "valid_split.csv"), ("test", "test_split.csv")):
        table[split == name].to_csv(root / file, index=False)
    for d in ("images", "environmental", "targets"):
        (root / d).mkdir(exist_ok=True)
    no_image, no_target, nan_image = hotspots[4], hotspots[6], hotspots[8]
    probs, images, env = {}, {}, {}
    for i, h in enumerate(hotspots):
        rates = np.where(rng.uniform(size=n_species) < 0.4, rng.uniform(0, 1, n_species).round(4), 0.0)
        probs[h] = rates
        if h != no_target:
            (root / "targets" / f"{h}.json").write_text(json.dumps(
                {"hotspot_id": h, "probs": rates.tolist(), "num_complete_checklists": int(rng.integers(50, 500))}))
        raster = rng.normal(size=(27, 50, 50)).astype(np.float32)
        np.save(root / "environmental" / f"{h}.npy", raster)
        env[h] = raster
        if h == no_image:
            continue
        hgt, wid = int(rng.integers(128, 140)), int(rng.integers(128, 140))
        img = rng.integers(0, 4000, size=(hgt, wid, 4)).astype(np.uint16)
        if h == nan_image:
            img = img.astype(np.float32)
            img[hgt // 2 - 4: hgt // 2 + 4, wid // 2 - 4: wid // 2 + 4] = np.nan   # a mosaic's gap
        write_geotiff(root / "images" / f"{h}.tif", img)
        if i < 3:
            images[h] = img
    return {"hotspots": hotspots, "split": split, "probs": probs, "images": images, "env": env,
            "table": table, "no_image": no_image, "no_target": no_target, "nan_image": nan_image}


if __name__ == "__main__":
    write(sys.argv[1])
