"""GeoPlant (GeoLifeCLEF 2024): plant species presence-absence surveys across Europe.

Dataset card
------------
**Task.** Multi-label species presence (``multilabel``, macro AUROC) for 88,987
presence-absence (PA) surveys and 5,016 species; the MIAM paper keeps the species with
more than 20 presences (``presences_above=20``). Only the PA *train* files carry species,
so the train/val/test splits are spatial blocks cut from them (``block_km``, 10 km as
GeoPlant's own test hold-out); the published PA test file has no labels and is not read.

**Source.** Kaggle competition ``geolifeclef-2024`` (one ~3 GB zip, needs a Kaggle login)
and the GLC24 Seafile library ``lab.plantnet.org/seafile/d/bdb829337aa44a9489f6``; no
checksums are published. Licence: MIT for the GeoPlant release (plantnet/GeoPlant
``docs/license.md``).

**Layout read** (the Kaggle archive; ``{s}`` = ``train``), as in plantnet/malpolon
``malpolon/data/datasets/geolifeclef2024_pre_extracted.py`` and its test fixtures::

    GLC24_PA_metadata_train.csv                    # surveyId, lon, lat, year, geoUncertaintyInM,
                                                   # areaInM2, region, country, speciesId (one row
                                                   # per present species; speciesId as float)
    EnvironmentalRasters/EnvironmentalRasters/
      Climate/Average 1981-2010/GLC24-PA-train-bioclimatic.csv     # surveyId, Bio1..Bio19
      SoilGrids/GLC24-PA-train-soilgrids.csv                       # surveyId, Soilgrid-*
      Elevation/GLC24-PA-train-elevation.csv                       # surveyId, Elevation
      Human Footprint/GLC24-PA-train-human_footprint.csv           # surveyId, HumanFootprint-*
      LandCover/GLC24-PA-train-landcover.csv                       # surveyId, LandCover
    TimeSeries-Cubes/TimeSeries-Cubes/
      GLC24-PA-train-bioclimatic_monthly/GLC24-PA-train-bioclimatic_monthly_{surveyId}_cube.pt
      GLC24-PA-train-landsat_time_series/GLC24-PA-train-landsat-time-series_{surveyId}_cube.pt
    PA_Train_SatellitePatches_RGB/pa_train_patches_rgb/{CD}/{AB}/{surveyId}.jpeg
    PA_Train_SatellitePatches_NIR/pa_train_patches_nir/{CD}/{AB}/{surveyId}.jpeg

``CD`` = the last two digits of the surveyId, ``AB`` = the two before (malpolon's
``construct_patch_path``: 3018575 -> ``75/85/``). Only the train Landsat cube stem uses
hyphens (``landsat-time-series``), as in malpolon's loader and fixtures.

**Modalities and tokens.**

* ``env`` (tabular): every column but ``surveyId`` of the five environmental tables,
  one token per variable, named by its column (``Bio1``, ``Soilgrid-clay``,
  ``HumanFootprint-Roads``, ``Elevation``, ``LandCover`` ...). Column names are read,
  not assumed: the soil/footprint headers were only seen in third-party code.
  ``LandCover`` is kept as a number (as GLC baselines do), not as a category.
* ``climate`` (timeseries): the monthly cube, a float32 tensor ``(4, 19, 12)`` =
  variable x year (2000-2018) x month; one token per year, shape ``(4, 12)``, named
  ``"2000"`` ... ``"2018"``. The variable order (pr, tas, tasmax, tasmin) is inferred
  from malpolon's fixture values, not documented.
* ``landsat`` (timeseries): the quarterly cube ``(6, 4, 21)`` = band (R, G, B, NIR,
  SWIR1, SWIR2; plantnet/GeoPlant ``docs/environmental_predictors.md``) x quarter x year
  (2000-2020); one token per year, shape ``(6, 4)``.
* ``sentinel`` (image): the RGB and NIR 128 x 128 JPEGs stacked to 4 channels, cut into
  ``patch_size`` patches (default 16: an 8 x 8 grid named ``r{row}c{col}``).

Values are standardised per variable / band with the statistics of all surveys of the
file (inputs only, no labels). NaN or inf cells, NaN cube entries, missing files and
corrupt files become *hidden* tokens; each case is counted in the cache's report and
logged when the dataset loads; corrupt files and ids present in one table only raise a
warning naming the file and the row.

**Citation.** Picek et al., *GeoPlant: Spatial Plant Species Prediction Dataset*,
NeurIPS 2024 Datasets and Benchmarks; Botella et al., *Overview of GeoLifeCLEF 2024*.

.. versionadded:: 0.1
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from miam.data.benchmarks._download import RemoteFile, verify
from miam.data.benchmarks.cached import benchmark_loader
from miam.data.benchmarks.raw import RawSource
from miam.data.benchmarks.readers import (CorruptFileError, align, check_unique, integer_ids, numeric, read_csv,
                                          read_image)
from miam.data.contract.patches import patch_names, patchify
from miam.data.contract.spec import ModalitySpec, TaskSpec
from miam.errors import check_names

ENV = "EnvironmentalRasters/EnvironmentalRasters"
#: the environmental tables joined into the ``env`` modality, in token order
ENV_TABLES = {
    "bioclim": ENV + "/Climate/Average 1981-2010/GLC24-PA-{s}-bioclimatic.csv",
    "soil": ENV + "/SoilGrids/GLC24-PA-{s}-soilgrids.csv",
    "elevation": ENV + "/Elevation/GLC24-PA-{s}-elevation.csv",
    "human_footprint": ENV + "/Human Footprint/GLC24-PA-{s}-human_footprint.csv",
    "landcover": ENV + "/LandCover/GLC24-PA-{s}-landcover.csv",
}
METADATA = "GLC24_PA_metadata_{s}.csv"
CUBES = "TimeSeries-Cubes/TimeSeries-Cubes"
CLIMATE_DIR = CUBES + "/GLC24-PA-{s}-bioclimatic_monthly"
CLIMATE_FILE = "GLC24-PA-{s}-bioclimatic_monthly_{id}_cube.pt"
LANDSAT_DIR = CUBES + "/GLC24-PA-{s}-landsat_time_series"
LANDSAT_FILE = {"train": "GLC24-PA-train-landsat-time-series_{id}_cube.pt",
                "test": "GLC24-PA-test-landsat_time_series_{id}_cube.pt"}
PATCH_DIRS = {"rgb": "PA_{S}_SatellitePatches_RGB/pa_{s}_patches_rgb", "nir": "PA_{S}_SatellitePatches_NIR/pa_{s}_patches_nir"}
#: the modalities GeoPlant offers
MODALITIES = ("env", "climate", "landsat", "sentinel")
CLIMATE_SHAPE, CLIMATE_YEARS = (4, 19, 12), tuple(str(y) for y in range(2000, 2019))
LANDSAT_SHAPE, LANDSAT_YEARS = (6, 4, 21), tuple(str(y) for y in range(2000, 2021))
PATCH_SIZE = 128


def patch_path(folder: Path, survey_id: int) -> Path:
    """``folder/CD/AB/{surveyId}.jpeg`` with CD, AB the last and the previous two digits.

    Examples:
        >>> patch_path(Path("p"), 3018575).as_posix()
        'p/75/85/3018575.jpeg'
    """
    s = str(survey_id)
    return folder / s[-2:] / s[-4:-2] / f"{s}.jpeg"


class GeoPlantSource(RawSource):
    """The GeoPlant PA train files under ``root`` (the extracted Kaggle archive).

    Args:
        root: the folder holding ``GLC24_PA_metadata_train.csv``.
        modalities: any of ``("env", "climate", "landsat", "sentinel")``.
        presences_above: keep species with more than this many presence surveys (paper: 20).
        patch_size: side of the Sentinel-2 patch tokens (divides 128).
        download, checksum: the download ladder (see :mod:`miam.data.benchmarks._download`).

    Its loader splits ``spatial``ly by default, the only split: GeoPlant ships no labelled test split.
    """

    name = "geoplant"
    title = "GeoPlant"
    #: GLC24 Seafile library (malpolon ``download_struct``); the Kaggle zip needs a login instead
    url = "https://lab.plantnet.org/seafile/d/bdb829337aa44a9489f6/files/?p=/PresenceAbsenceSurveys/{}&dl=1"
    #: no checksum is published for the GLC24 files
    sha256: str | None = None
    subset = "train"

    def __init__(self, root: str | Path, modalities: Sequence[str] = MODALITIES, presences_above: int = 20,
                 patch_size: int = 16, download: bool = False, checksum: bool = False) -> None:
        super().__init__(root)
        check_names("GeoPlant", "modality", list(modalities), MODALITIES)
        self.modalities = [m for m in MODALITIES if m in modalities]
        self.presences_above = int(presences_above)
        self.patch_size = int(patch_size)
        s = self.subset
        self.paths = {
            "metadata": self.root / METADATA.format(s=s),
            **{k: self.root / v.format(s=s) for k, v in ENV_TABLES.items()},
            "climate": self.root / CLIMATE_DIR.format(s=s),
            "landsat": self.root / LANDSAT_DIR.format(s=s),
            **{k: self.root / v.format(s=s, S=s.capitalize()) for k, v in PATCH_DIRS.items()},
        }
        metadata = METADATA.format(s=s)
        verify("GeoPlant", self.root, [str(p.relative_to(self.root)) for p in self._needed()],
               [RemoteFile(self.url.format(metadata), metadata, self.sha256)], download, checksum,
               manual="Get the GeoLifeCLEF 2024 archive from Kaggle (`kaggle competitions download -c "
                      "geolifeclef-2024`) and extract it there.")

    def _needed(self) -> list[Path]:
        out = [self.paths["metadata"]]
        if "env" in self.modalities:
            out += [self.paths[k] for k in ENV_TABLES]
        out += [self.paths[m] for m in ("climate", "landsat") if m in self.modalities]
        if "sentinel" in self.modalities:
            out += [self.paths["rgb"], self.paths["nir"]]
        return out

    def cache_params(self) -> dict[str, Any]:
        return {"modalities": self.modalities, "presences_above": self.presences_above,
                "patch_size": self.patch_size, "subset": self.subset}

    def table_files(self) -> list[Path]:
        return [p for p in self._needed() if p.suffix == ".csv"]

    def sample_dirs(self) -> list[Path]:
        return [p for p in self._needed() if p.suffix != ".csv"]

    def token_dtype(self, modality: str) -> np.dtype:
        return np.dtype(np.uint8 if modality == "sentinel" else np.float32)

    def stat_axes(self, spec: ModalitySpec) -> tuple[int, ...]:
        # env: one mean/std per variable; cubes: per variable/band; images: per channel
        return {"env": (), "climate": (0, 2), "landsat": (0, 2), "sentinel": (0, 2, 3)}[spec.name]

    def open(self) -> None:
        path = self.paths["metadata"]
        meta = read_csv(path, ["surveyId", "lon", "lat", "speciesId"])
        values = numeric(meta, ["surveyId", "lon", "lat", "speciesId"], path)
        survey = integer_ids(values[:, 0], path, "surveyId")
        self.survey_ids, first = np.unique(survey, return_index=True)
        self.coords = values[first, 1:3]
        row_of = np.searchsorted(self.survey_ids, survey)
        has_species = np.isfinite(values[:, 3])
        if (~has_species).any():
            self.report.note(f"{path}: {int((~has_species).sum())} rows have no speciesId (e.g. line "
                             f"{int(np.flatnonzero(~has_species)[0]) + 2}); they add no presence.")
        species = integer_ids(np.where(has_species, values[:, 3], 0), path, "speciesId")
        pairs = np.unique(np.stack([row_of[has_species], species[has_species]], 1), axis=0)
        kinds, counts = np.unique(pairs[:, 1], return_counts=True)
        self.species = kinds[counts > self.presences_above]
        keep = np.isin(pairs[:, 1], self.species)
        self.pair_rows = pairs[keep, 0]                                # sorted by survey row
        self.pair_cols = np.searchsorted(self.species, pairs[keep, 1])
        self.n_rows = len(self.survey_ids)
        self.report.notes.append(f"{len(self.species)} of {len(kinds)} species have more than "
                                 f"{self.presences_above} presences and are kept.")
        self.specs = []
        if "env" in self.modalities:
            self._open_env()
        if "climate" in self.modalities:
            self.specs.append(ModalitySpec("climate", "timeseries", 19, (4, 12), CLIMATE_YEARS))
        if "landsat" in self.modalities:
            self.specs.append(ModalitySpec("landsat", "timeseries", 21, (6, 4), LANDSAT_YEARS))
        if "sentinel" in self.modalities:
            g = PATCH_SIZE // self.patch_size
            self.specs.append(ModalitySpec("sentinel", "image", g * g, (4, self.patch_size, self.patch_size),
                                           patch_names(g, g), grid=(g, g)))
        self.task = TaskSpec("multilabel", len(self.species), tuple(f"species_{s}" for s in self.species))

    def _open_env(self) -> None:
        blocks, names = [], []
        for key in ENV_TABLES:
            path = self.paths[key]
            table = read_csv(path, ["surveyId"])
            columns = [c for c in table.columns if c != "surveyId"]
            ids = integer_ids(numeric(table, ["surveyId"], path)[:, 0], path, "surveyId")
            check_unique(ids, path, "surveyId")
            rows = align(ids, self.survey_ids, path, "surveyId", self.report)
            block = numeric(table, columns, path)[np.maximum(rows, 0)]
            block[rows < 0] = np.nan
            blocks.append(block)
            names += columns
        self.env = np.concatenate(blocks, axis=1)
        self.specs.append(ModalitySpec("env", "tabular", len(names), (1,), tuple(names)))

    def rows(self) -> dict[str, np.ndarray]:
        return {"ids": self.survey_ids, "names": self.survey_ids.astype(str), "coords": self.coords}

    def _cube(self, modality: str, survey_id: int, shape: tuple[int, ...], order: tuple[int, ...]) -> np.ndarray | None:
        folder = self.paths[modality]
        name = (CLIMATE_FILE.format(s=self.subset, id=survey_id) if modality == "climate"
                else LANDSAT_FILE[self.subset].format(id=survey_id))
        path = folder / name
        if not path.is_file():
            self.report.missing(modality)
            return None
        try:
            cube = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(cube, torch.Tensor) or tuple(cube.shape) != shape:
                got = tuple(cube.shape) if isinstance(cube, torch.Tensor) else type(cube).__name__
                raise CorruptFileError(f"expected a tensor of shape {shape}, got {got}")
        except (CorruptFileError, RuntimeError, EOFError, OSError, ValueError) as e:
            self.report.corrupt(modality, f"{path} (surveyId {survey_id})", str(e))
            return None
        return cube.permute(*order).float().numpy()

    def _sentinel(self, survey_id: int) -> np.ndarray | None:
        planes = []
        for key, mode in (("rgb", "RGB"), ("nir", "L")):
            path = patch_path(self.paths[key], survey_id)
            try:
                img = read_image(path, mode, (PATCH_SIZE, PATCH_SIZE))
            except CorruptFileError as e:
                self.report.corrupt("sentinel", f"{path} (surveyId {survey_id})", str(e))
                return None
            if img is None:
                self.report.missing("sentinel")
                return None
            planes.append(img)
        return np.concatenate(planes, axis=2).transpose(2, 0, 1)

    def fill(self, start: int, stop: int) -> dict[str, np.ndarray]:
        n, ids = stop - start, self.survey_ids[start:stop]
        out: dict[str, np.ndarray] = {}
        if "env" in self.modalities:
            v = self.env[start:stop]
            out["tokens/env"] = np.where(np.isfinite(v), v, 0).astype(np.float32)[..., None]
            out["present/env"] = np.isfinite(v)
        for m, shape, order in (("climate", CLIMATE_SHAPE, (1, 0, 2)), ("landsat", LANDSAT_SHAPE, (2, 0, 1))):
            if m not in self.modalities:
                continue
            spec = next(s for s in self.specs if s.name == m)
            vals = np.full((n, spec.n_tokens, *spec.token_shape), np.nan, dtype=np.float32)
            for i, sid in enumerate(ids):
                cube = self._cube(m, int(sid), shape, order)
                if cube is not None:
                    vals[i] = cube
            ok = np.isfinite(vals).reshape(n, spec.n_tokens, -1).all(axis=2)
            out[f"tokens/{m}"] = np.where(np.isfinite(vals), vals, 0)
            out[f"present/{m}"] = ok
        if "sentinel" in self.modalities:
            img = np.zeros((n, 4, PATCH_SIZE, PATCH_SIZE), dtype=np.uint8)
            ok = np.zeros(n, dtype=bool)
            for i, sid in enumerate(ids):
                x = self._sentinel(int(sid))
                if x is not None:
                    img[i], ok[i] = x, True
            tokens = patchify(img, self.patch_size)
            out["tokens/sentinel"] = tokens
            out["present/sentinel"] = np.repeat(ok[:, None], tokens.shape[1], axis=1)
        target = np.zeros((n, len(self.species)), dtype=np.float32)
        a, b = np.searchsorted(self.pair_rows, [start, stop])
        target[self.pair_rows[a:b] - start, self.pair_cols[a:b]] = 1.0
        out["target"] = target
        return out


#: GeoPlant as a cached dataset: see :func:`~miam.data.benchmarks.cached.benchmark_loader`
load_geoplant = benchmark_loader(GeoPlantSource)
