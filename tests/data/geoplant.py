"""Write a tiny GeoPlant (GLC24 Kaggle archive) tree: real CSVs, ``.pt`` cubes and JPEG patches.

The tree, headers, dtypes, cube shapes and strides follow ``miam.data.benchmarks.geoplant``'s card
(from plantnet/malpolon's loader and fixtures). Defects on purpose: empty and ``inf``
metadata cells, NaN environmental cells, a NaN in one climate cube, one survey without
an RGB patch, one 3-digit surveyId (``12/2/212.jpeg``).

Run ``python tests/data/geoplant.py DIR [N]`` to write one by hand.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

ENV = "EnvironmentalRasters/EnvironmentalRasters"
SOIL = ["bdod", "cec", "cfvo", "clay", "nitrogen", "phh2o", "sand", "silt", "soc"]
FOOTPRINT = ["Built1994", "Built2009", "croplands1992", "croplands2005", "Lights1994", "Lights2009", "NavWater1994",
             "NavWater2009", "Pasture1993", "Pasture2009", "Popdensity1990", "Popdensity2010", "Railways", "Roads",
             "HFP1993", "HFP2009"]
REGIONS = ["ALPINE", "ATLANTIC", "BOREAL", "CONTINENTAL", "MEDITERRANEAN"]


def patch_path(folder: Path, survey_id: int) -> Path:
    s = str(survey_id)
    return folder / s[-2:] / s[-4:-2] / f"{s}.jpeg"


def write(root: str | Path, seed: int = 0, n_surveys: int = 48, n_species: int = 12, n_images: int | None = None,
          species_per_survey: float | None = None, progress: bool = False) -> dict:
    """Write the tree under ``root``; return the truth the tests compare against.

    Args:
        n_images: write patches for the first ``n_images`` surveys only (the benchmark's shortcut).
        species_per_survey: mean species per survey with Zipf-like prevalences (GeoPlant: ~17 of
            5,016); default: prevalences spread evenly from 0.05 to 0.6.

    Returns:
        ``{"survey_ids", "species" (survey -> sorted species ids), "env" (DataFrame indexed by
        surveyId), "climate" / "landsat" ({surveyId: cube as saved}), "no_rgb", "nan_climate", "counts"}``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    ids = np.sort(1000 + rng.choice(3_919_655 - 1000, n_surveys - 1, replace=False))
    ids = np.concatenate([[212], ids])                               # a 3-digit id
    lon = rng.uniform(5.0, 6.5, n_surveys)
    lat = rng.uniform(45.0, 46.0, n_surveys)
    species_ids = np.sort(rng.choice(np.arange(2, 11255), n_species, replace=False))
    prevalence = np.linspace(0.05, 0.6, n_species)
    if species_per_survey is not None:
        zipf = 1.0 / np.arange(1, n_species + 1) ** 0.9
        prevalence = np.minimum(0.9, rng.permutation(zipf) * species_per_survey / zipf.sum())
    present = rng.uniform(size=(n_surveys, n_species)).astype(np.float32) < prevalence
    present[~present.any(1), -1] = True                              # every survey lists >= 1 species
    rows, cols = np.nonzero(present)
    meta = pd.DataFrame({
        "lon": lon[rows], "lat": lat[rows], "year": rng.integers(2017, 2022, n_surveys)[rows],
        "geoUncertaintyInM": np.where(rng.uniform(size=n_surveys) < 0.1, np.nan, 10.0)[rows],
        "areaInM2": np.where(rng.uniform(size=n_surveys) < 0.1, np.inf, 100.0)[rows],
        "region": np.array(REGIONS)[rng.integers(0, len(REGIONS), n_surveys)][rows],
        "country": "France", "speciesId": species_ids[cols].astype(float), "surveyId": ids[rows],
    })
    root.mkdir(parents=True, exist_ok=True)
    meta.to_csv(root / "GLC24_PA_metadata_train.csv", index=False)
    tables = {
        "Climate/Average 1981-2010/GLC24-PA-train-bioclimatic.csv":
            {f"Bio{i}": rng.integers(0, 3000, n_surveys) for i in range(1, 20)},
        "SoilGrids/GLC24-PA-train-soilgrids.csv":
            {f"Soilgrid-{k}": rng.uniform(0, 500, n_surveys).round(1) for k in SOIL},
        "Elevation/GLC24-PA-train-elevation.csv": {"Elevation": rng.uniform(0, 2500, n_surveys).round(2)},
        "Human Footprint/GLC24-PA-train-human_footprint.csv":
            {f"HumanFootprint-{k}": rng.uniform(0, 50, n_surveys).round(3) for k in FOOTPRINT},
        "LandCover/GLC24-PA-train-landcover.csv": {"LandCover": rng.integers(1, 18, n_surveys).astype(float)},
    }
    env = []
    for rel, columns in tables.items():
        df = pd.DataFrame({"surveyId": ids, **columns})
        value_cols = df.columns[1:]
        if len(value_cols) > 1:                                      # NaN cells, and an inf
            df = df.astype({c: float for c in value_cols})
            df.iloc[rng.integers(0, n_surveys, 3), rng.integers(1, len(df.columns), 3)] = np.nan
            df.iloc[int(rng.integers(n_surveys)), -1] = np.inf
        path = root / ENV / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        df.sample(frac=1.0, random_state=seed).to_csv(path, index=False)   # rows in another order
        env.append(df.set_index("surveyId"))
    cubes = root / "TimeSeries-Cubes/TimeSeries-Cubes"
    clim_dir, land_dir = cubes / "GLC24-PA-train-bioclimatic_monthly", cubes / "GLC24-PA-train-landsat_time_series"
    clim_dir.mkdir(parents=True, exist_ok=True)
    land_dir.mkdir(parents=True, exist_ok=True)
    rgb_dir = root / "PA_Train_SatellitePatches_RGB/pa_train_patches_rgb"
    nir_dir = root / "PA_Train_SatellitePatches_NIR/pa_train_patches_nir"
    climate, landsat = {}, {}
    no_rgb, nan_climate = int(ids[3]), int(ids[5])
    n_images = n_surveys if n_images is None else n_images
    gen = torch.Generator().manual_seed(seed)
    for i, sid in enumerate(ids.tolist()):
        # variable x year x month stored as a (year, month, variable) buffer: strides (1, 48, 4)
        clim = (torch.rand(19, 12, 4, generator=gen) * 4000).permute(2, 0, 1)
        if sid == nan_climate:
            clim[1, 3, :] = float("nan")
        # band x quarter x year stored as (band, year, quarter): strides (84, 1, 4)
        land = (torch.rand(6, 21, 4, generator=gen) * 255).permute(0, 2, 1)
        torch.save(clim, clim_dir / f"GLC24-PA-train-bioclimatic_monthly_{sid}_cube.pt")
        torch.save(land, land_dir / f"GLC24-PA-train-landsat-time-series_{sid}_cube.pt")
        if i < 3:
            climate[sid], landsat[sid] = clim, land
        if i < n_images:
            base = (np.add.outer(np.arange(128), np.arange(128)) + i * 7) % 256
            for folder, mode, chans in ((rgb_dir, "RGB", 3), (nir_dir, "L", 1)):
                if folder is rgb_dir and sid == no_rgb:
                    continue
                pix = np.stack([(base + 40 * c) % 256 for c in range(chans)], axis=-1).astype(np.uint8)
                path = patch_path(folder, sid)
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pix.squeeze(-1) if chans == 1 else pix, mode).save(path, quality=95)
        if progress and i % 2000 == 0:
            print(f"  wrote {i}/{n_surveys} surveys", flush=True)
    counts = dict(zip(species_ids.tolist(), present.sum(0).tolist()))
    return {
        "survey_ids": ids, "species": {int(s): sorted(species_ids[present[i]].tolist()) for i, s in enumerate(ids)},
        "env": pd.concat(env, axis=1), "climate": climate, "landsat": landsat, "no_rgb": no_rgb,
        "nan_climate": nan_climate, "counts": counts, "coords": np.stack([lon, lat], 1),
    }


if __name__ == "__main__":
    write(sys.argv[1], n_surveys=int(sys.argv[2]) if len(sys.argv) > 2 else 48, progress=True)
