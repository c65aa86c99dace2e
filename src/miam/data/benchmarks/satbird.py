"""SatBird: bird encounter rates at eBird hotspots from Sentinel-2 and environmental data.

Dataset card
------------
**Task.** Per hotspot, the encounter rate of every species (the fraction of complete
checklists that report it, in [0, 1]): task kind ``encounter``, loss SatBird's default
"CE" (binary cross-entropy on soft targets), score SatBird's adaptive top-k (higher is
better; MAE/MSE/top-10/top-30 from :func:`miam.scores.encounter_scores`). 670 species in
USA-summer/winter, 1054 in Kenya (configs' ``total_species``).

**Source.** A Google Drive folder linked from the RolnickLab/SatBird README (no direct
URL, no checksums); licence CC BY-NC 4.0. ``root`` is one sub-dataset folder
(``USA_summer``, ``USA_winter`` or ``Kenya``).

**Layout read** (RolnickLab/SatBird ``README.md``; loader ``src/dataset/dataloader.py``)::

    train_split.csv valid_split.csv test_split.csv   # hotspot_id, lon, lat, ..., bio_1..bio_19 [+ soil]
    images/{hotspot_id}.tif                          # Sentinel-2 L2A B02, B03, B04, B08; H x W x 4
    environmental/{hotspot_id}.npy                   # (C, 50, 50) float32 ("environmental_data/" in the README)
    targets/{hotspot_id}.json                        # {"hotspot_id", "probs": [S], "num_complete_checklists"}
    range_maps.pkl, images_visual/, stats/           # not read

The split CSVs' ``bio_1``..``bio_19`` and (USA) ``bdticm, bldfie, cecsol, clyppt, orcdrc,
phihox, sltppt, sndppt`` columns are the point values SatBird's own environmental baseline
reads (``data_processing/environmental/env_baseline.py``); ``lon``/``lat`` come from the
hotspot table of ``data_processing/ebird/get_targets.py``. The published header was not
seen: only ``hotspot_id`` is required, the rest is read by name where present.

**Modalities and tokens.**

* ``sentinel`` (image): the 4-band GeoTIFF read with tifffile, bands reordered to
  R, G, B, NIR as SatBird's ``load_geotiff`` does, but *transposed* to C x H x W (their
  loader reshapes, which scrambles pixels), centre-cropped to ``crop`` px (SatBird
  trains on a 64 px centre crop; images are >= 128 px) and cut into ``patch_size``
  patches. NaN pixels (mosaicked tiles) hide their patch.
* ``env`` (tabular): with ``env_source="csv"`` (default) one token per environmental
  column of the split CSV; with ``"raster"``, the centre pixel of each channel of
  ``environmental/{hotspot_id}.npy`` (names ``bio_1``.. then the soil layers).

**Splits.** ``official`` (default): SatBird's train/valid/test files (5 km DBSCAN
clusters assigned whole, ``data_processing/utils/make_splits_by_distance.py``);
``spatial``: our blocks of ``block_km``. A hotspot without a target file cannot be
used: it is dropped with a warning naming the split file and line.

**Citation.** Teng et al., *SatBird: a Dataset for Bird Species Distribution Modeling
using Remote Sensing and Citizen Science Data*, NeurIPS 2023 Datasets and Benchmarks.

.. versionadded:: 0.1
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from miam._validation import check_choice
from miam.data.benchmarks._download import verify
from miam.data.benchmarks.cached import benchmark_loader
from miam.data.benchmarks.raw import RawSource
from miam.data.benchmarks.readers import CorruptFileError, check_unique, numeric, read_csv
from miam.data.contract.patches import patch_names, patchify
from miam.data.contract.spec import ModalitySpec, TaskSpec
from miam.errors import DataFormatError, check_names

#: split file -> our split name
SPLIT_FILES = {"train_split.csv": "train", "valid_split.csv": "val", "test_split.csv": "test"}
BIOCLIM = tuple(f"bio_{i}" for i in range(1, 20))
SOIL = ("bdticm", "bldfie", "cecsol", "clyppt", "orcdrc", "phihox", "sltppt", "sndppt")
#: configs name it "environmental", the README "environmental_data", one loader version "environmental_bounded"
ENV_FOLDERS = ("environmental", "environmental_data", "environmental_bounded")
MODALITIES = ("sentinel", "env")
#: tifffile band order B02, B03, B04, B08 -> R, G, B, NIR (SatBird ``load_geotiff``)
RGBNIR = [2, 1, 0, 3]


def read_geotiff(path: Path) -> np.ndarray | None:
    """A SatBird reflectance GeoTIFF as float32 ``[4, H, W]`` (R, G, B, NIR); None if absent.

    Raises:
        CorruptFileError: unreadable, or not 4 bands.
    """
    import tifffile

    if not path.is_file():
        return None
    try:
        arr = tifffile.imread(path)
    except Exception as e:  # tifffile raises many types on a bad file
        raise CorruptFileError(f"unreadable TIFF ({e})") from e
    if arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr.transpose(2, 0, 1)
    elif not (arr.ndim == 3 and arr.shape[0] == 4):
        raise CorruptFileError(f"expected 4 bands (B02, B03, B04, B08), got an array of shape {arr.shape}")
    return arr[RGBNIR].astype(np.float32)


class SatBirdSource(RawSource):
    """One SatBird sub-dataset folder.

    Args:
        root: ``USA_summer``, ``USA_winter`` or ``Kenya`` folder.
        modalities: any of ``("sentinel", "env")``.
        crop: centre crop of the images in pixels (SatBird: 64).
        patch_size: image patch token side (divides ``crop``).
        env_source: ``"csv"`` (split CSV columns) or ``"raster"`` (centre of the env rasters).

    Its loader keeps SatBird's ``official`` split files by default (or ``spatial``: 5 km blocks, 70/15/15).
    """

    name = "satbird"
    title = "SatBird"
    default_split = "official"
    default_fractions = (0.7, 0.15, 0.15)
    default_block_km = 5.0

    def __init__(self, root: str | Path, modalities: Sequence[str] = MODALITIES, crop: int = 64,
                 patch_size: int = 16, env_source: str = "csv", download: bool = False,
                 checksum: bool = False) -> None:
        super().__init__(root)
        check_names("SatBird", "modality", list(modalities), MODALITIES)
        check_choice("SatBird", "env_source", env_source, ("csv", "raster"))
        self.modalities = [m for m in MODALITIES if m in modalities]
        self.crop, self.patch_size, self.env_source = int(crop), int(patch_size), env_source
        self.env_dir = next((self.root / f for f in ENV_FOLDERS if (self.root / f).is_dir()),
                            self.root / ENV_FOLDERS[0])
        required = [*SPLIT_FILES, "targets"]
        if "sentinel" in self.modalities:
            required.append("images")
        if "env" in self.modalities and env_source == "raster":
            required.append(self.env_dir.name)
        verify("SatBird", self.root, required, download=download, checksum=checksum,
               manual="SatBird is shared as a Google Drive folder linked from the RolnickLab/SatBird README: "
                      "download one sub-dataset (USA_summer, USA_winter or Kenya) and pass its folder as root.")

    def cache_params(self) -> dict[str, Any]:
        return {"modalities": self.modalities, "crop": self.crop, "patch_size": self.patch_size,
                "env_source": self.env_source}

    def table_files(self) -> list[Path]:
        return [self.root / f for f in SPLIT_FILES]

    def sample_dirs(self) -> list[Path]:
        dirs = [self.root / "targets"]
        if "sentinel" in self.modalities:
            dirs.append(self.root / "images")
        if "env" in self.modalities and self.env_source == "raster":
            dirs.append(self.env_dir)
        return dirs

    def stat_axes(self, spec: ModalitySpec) -> tuple[int, ...]:
        return (0, 2, 3) if spec.name == "sentinel" else ()

    def open(self) -> None:
        frames = []
        for fname, split in SPLIT_FILES.items():
            path = self.root / fname
            df = read_csv(path, ["hotspot_id"], dtype={"hotspot_id": str})
            df["_split"], df["_line"], df["_file"] = split, np.arange(len(df)) + 2, fname
            frames.append(df)
        table = pd.concat(frames, ignore_index=True)
        check_unique(table["hotspot_id"].to_numpy(), self.root / "*_split.csv", "hotspot_id")
        has_target = np.array([(self.root / "targets" / f"{h}.json").is_file() for h in table["hotspot_id"]])
        if (~has_target).any():
            lost = table[~has_target]
            first = lost.iloc[0]
            self.report.note(f"{self.root / first['_file']}, line {first['_line']}: hotspot {first['hotspot_id']} has "
                             f"no targets/{first['hotspot_id']}.json; {len(lost)} such hotspots are dropped.")
            table = table[has_target].reset_index(drop=True)
        self.table = table
        self.n_rows = len(table)
        self.hotspots = table["hotspot_id"].to_numpy().astype(str)
        if {"lon", "lat"} <= set(table.columns):
            self.coords = numeric(table, ["lon", "lat"], self.root / "*_split.csv")
        else:
            self.coords = np.full((self.n_rows, 2), np.nan)
        first = self._target(0)
        self.n_species = len(first)
        self.specs = []
        if "sentinel" in self.modalities:
            g = self.crop // self.patch_size
            self.specs.append(ModalitySpec("sentinel", "image", g * g, (4, self.patch_size, self.patch_size),
                                           patch_names(g, g), grid=(g, g)))
        if "env" in self.modalities:
            self._open_env()
        self.task = TaskSpec("encounter", self.n_species, tuple(f"species_{j}" for j in range(self.n_species)))

    def _open_env(self) -> None:
        if self.env_source == "csv":
            names = [c for c in (*BIOCLIM, *SOIL) if c in self.table.columns]
            if not names:
                raise DataFormatError(f"{self.root / 'train_split.csv'}: no environmental column "
                                      f"({BIOCLIM[0]}..{BIOCLIM[-1]}, {', '.join(SOIL)}); use env_source='raster'.")
            self.env = numeric(self.table, names, self.root / "*_split.csv")
        else:
            first = np.load(self.env_dir / f"{self.hotspots[0]}.npy", mmap_mode="r")
            c = first.shape[0]
            names = list((*BIOCLIM, *SOIL)[:c]) if c in (19, 27) else [f"env_{i}" for i in range(c)]
            self.env = np.full((self.n_rows, c), np.nan)
            for i, h in enumerate(self.hotspots):
                path = self.env_dir / f"{h}.npy"
                if not path.is_file():
                    self.report.missing("env")
                    continue
                raster = np.load(path, mmap_mode="r")
                if raster.ndim != 3 or raster.shape[0] != c:
                    self.report.corrupt("env", f"{path} (hotspot {h})", f"shape {raster.shape}, expected ({c}, H, W)")
                    continue
                self.env[i] = raster[:, raster.shape[1] // 2, raster.shape[2] // 2]
        self.specs.append(ModalitySpec("env", "tabular", len(names), (1,), tuple(names)))

    def _target(self, i: int) -> np.ndarray:
        path = self.root / "targets" / f"{self.hotspots[i]}.json"
        try:
            probs = np.asarray(json.loads(path.read_text())["probs"], dtype=np.float64)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise DataFormatError(f"{path}: expected a JSON object with a list 'probs' of encounter rates ({e}).") from e
        if probs.ndim != 1 or (i and len(probs) != self.n_species):
            raise DataFormatError(f"{path}: 'probs' has {probs.shape} values, expected [{self.n_species}] "
                                  f"like {self.hotspots[0]}.json.")
        if not np.all((probs >= 0) & (probs <= 1)):
            j = int(np.flatnonzero(~((probs >= 0) & (probs <= 1)))[0])
            raise DataFormatError(f"{path}: probs[{j}] = {probs[j]} is not an encounter rate in [0, 1].")
        return probs

    def rows(self) -> dict[str, np.ndarray]:
        return {"ids": np.arange(self.n_rows), "names": self.hotspots, "coords": self.coords,
                "official_split": self.table["_split"].to_numpy().astype(str)}

    def _image(self, i: int) -> np.ndarray | None:
        path = self.root / "images" / f"{self.hotspots[i]}.tif"
        try:
            img = read_geotiff(path)
            if img is not None and min(img.shape[1:]) < self.crop:
                raise CorruptFileError(f"{img.shape[1]}x{img.shape[2]} px, smaller than the {self.crop} px crop")
        except CorruptFileError as e:
            self.report.corrupt("sentinel", f"{path} (hotspot {self.hotspots[i]})", str(e))
            return None
        if img is None:
            self.report.missing("sentinel")
            return None
        top, left = (img.shape[1] - self.crop) // 2, (img.shape[2] - self.crop) // 2
        return img[:, top:top + self.crop, left:left + self.crop]

    def fill(self, start: int, stop: int) -> dict[str, np.ndarray]:
        n = stop - start
        out: dict[str, np.ndarray] = {"target": np.stack([self._target(i) for i in range(start, stop)])
                                      .astype(np.float32)}
        if "sentinel" in self.modalities:
            img = np.full((n, 4, self.crop, self.crop), np.nan, dtype=np.float32)
            for k, i in enumerate(range(start, stop)):
                x = self._image(i)
                if x is not None:
                    img[k] = x
            tokens = patchify(img, self.patch_size)
            ok = np.isfinite(tokens).reshape(n, tokens.shape[1], -1).all(axis=2)
            out["tokens/sentinel"] = np.where(np.isfinite(tokens), tokens, 0)
            out["present/sentinel"] = ok
        if "env" in self.modalities:
            v = self.env[start:stop]
            out["tokens/env"] = np.where(np.isfinite(v), v, 0).astype(np.float32)[..., None]
            out["present/env"] = np.isfinite(v)
        return out


#: SatBird as a cached dataset: see :func:`~miam.data.benchmarks.cached.benchmark_loader`
load_satbird = benchmark_loader(SatBirdSource)
