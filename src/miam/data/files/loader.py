"""Your own data: a multimodal dataset described in a few lines of YAML, read from plain files.

Dataset card
------------
**Task.** Species presence at sites (multilabel, macro AUROC) from wide species columns,
a long occurrence table, or presence-only records with background points; or one class
per site (multiclass) from a label column.

**Inputs** (all paths relative to ``root``)::

    data:
      name: files
      params:
        root: my_survey
        sites: {path: sites.csv, id: site_id, x: lon, y: lat, crs: "EPSG:4326"}   # CSV or Parquet
        targets: {species: ["sp_*"]}          # or species: {path: counts.csv, columns: ["sp_*"]}
                                              # or occurrences: {path: occ.csv, species: species}
                                              # or label: habitat | presence_only: {path: gbif.csv, ...}
        tables:                               # joined on the site id; text columns are categorical
          - {name: soil, path: soil.parquet, columns: [ph, "clay_*", texture], exclude: ["*_qc"]}
        timeseries:                           # wide columns -> one token per segment of steps
          - {name: ndvi, variables: {ndvi: "ndvi_*"}, segment: 3}
        rasters:                              # GeoTIFFs in any CRS/resolution
          - {name: climate, paths: [bio1.tif, bio12.tif]}          # one token per layer
          - {name: landcover, paths: [landcover.tif], categorical: true}
          - {name: aerial, paths: [ortho.tif], patch: 16, token_size: 4}   # 16x16 px -> 16 image tokens
        images:
          - {name: photos, folder: photos, size: 64, token_size: 16}       # {site_id}.jpg / .png / .tif
        split: {method: spatial, block_km: 10, fractions: [0.7, 0.15, 0.15], seed: 0}

**Modalities and tokens.** A table gives ``<name>`` (numeric columns, one standardised
token each) and, when it also has text or declared-categorical columns, ``<name>_cat``
(one level per token; put both in one ``data.groups`` entry to mask them together). A
raster section gives one token per layer (every band of every file) at the site's
pixel, or with ``patch: N`` an N x N window centred on the site cut into
``token_size`` tokens (categorical layers: one channel per class). Time series give one token per segment of every variable;
image folders one token per patch.

**Missing data is hidden, counted and reported:** an empty cell, a site without a row in
a table, a site outside a raster or on its nodata, a missing or unreadable image, an
unseen category. Statistics (means, standard deviations, category levels) are learned
on the training split only.

**Splits.** ``spatial`` (square blocks of ``block_km``; geographic CRSs are projected to
km, projected CRSs use their unit), ``column`` (a sites-table column holding
train/val/test) or ``random``. Sites need coordinates only for rasters and the spatial split.

.. versionadded:: 0.1
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from miam.data.contract.dataset import MultimodalDataset
from miam.data.contract.report import Report
from miam.data.contract.spec import ModalitySpec, TaskSpec
from miam.data.contract.splits import lonlat_to_km, spatial_block_split
from miam.data.files.columns import TableReader, table_encoders, timeseries_encoder
from miam.data.files.images import ImageFolder
from miam.data.files.io import Encoder, Sites, few, read_table, resolve_column, site_ids
from miam.data.files.rasters import RasterLayers, raster_encoder
from miam.data.files.schema import FilesParams, SpeciesTableSection, parse_files_params
from miam.data.files.targets import (coord_columns, coordinates, drop_rare, label_targets, occurrence_targets,
                                     presence_only_sites, table_targets, wide_targets)
from miam.errors import ConfigError, DataFormatError

logger = logging.getLogger("miam.data")

SPLIT_NAMES = ("train", "val", "test")
#: values of a split column and the split they mean
SPLIT_VALUES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                "test": "test", "testing": "test"}


class FilesData:
    """A ``files`` dataset description, and after :meth:`build`, its fitted encoders.

    The fitted encoders turn any new sites (a table, or the cells of a raster grid) into
    tokens exactly as in training: :meth:`encode`, used by :mod:`miam.predict`.

    Args:
        **params: the sections of :class:`~miam.data.files.schema.FilesParams` (the
            ``data.params`` of a config).

    Raises:
        ConfigError: an unknown or missing key, listing the valid ones.
    """

    def __init__(self, **params: Any) -> None:
        self.params: FilesParams = parse_files_params(params)
        self.root = Path(self.params.root or ".")
        self.encoders: list[Encoder] = []
        self.report = Report()
        self.crs: str | None = None
        #: sources read from the sites table (a new sites table replaces them at prediction)
        self.sites_sources: list[str] = []
        self._site_ids: np.ndarray | None = None

    @property
    def specs(self) -> list[ModalitySpec]:
        return [e.spec for e in self.encoders]

    @property
    def sources(self) -> list[str]:
        """Names of the sections whose file ``--source NAME=PATH`` may replace."""
        return list(dict.fromkeys(e.source for e in self.encoders))

    # ---- sites and targets -------------------------------------------------------------
    def site_columns(self, df: pd.DataFrame, path: Path) -> tuple[str, tuple[str, str] | None]:
        """The id column and the (x, y) columns of a sites table; None when there are none and none are needed.

        Raises:
            DataFormatError: no coordinates while rasters or the spatial split need them,
                naming the file, the keys ``sites.x``/``sites.y`` and what needs them.
        """
        s, p = self.params.sites, self.params
        needed_by = (f"the raster modalities {[r.name for r in p.rasters]}" if p.rasters else
                     "the spatial split (split.method: spatial, the default; or use random or column)"
                     if p.split.method == "spatial" else None)
        return resolve_column(df, s.id, path, "id"), coord_columns(df, s.x, s.y, path, needed_by)

    def read_sites(self, path: str | Path | None = None) -> tuple[Sites, pd.DataFrame, Path]:
        """A sites table (default: the training one) with the training schema: id, x, y (NaN if none), CRS."""
        s = self.params.sites
        if s is None:
            raise ConfigError("This dataset was described by presence-only records: it has no sites table schema "
                              "(give new sites as a raster grid instead).")
        p = Path(path) if path is not None else self.root / s.path
        df = read_table(p)
        ids = site_ids(df, s.id, p)
        _, xy = self.site_columns(df, p)
        x, y = coordinates(df, *xy, p) if xy else (np.full(len(df), np.nan), np.full(len(df), np.nan))
        return Sites(ids, x, y, s.crs), df, p

    def _sites_and_targets(self, notes: list[str]) -> tuple[Sites, pd.DataFrame | None, np.ndarray, TaskSpec,
                                                             list[str], dict[str, Any]]:
        p, t = self.params, self.params.targets
        extra: dict[str, Any] = {}
        if t.mode == "presence_only":
            layers = [RasterLayers(r, self.root) for r in p.rasters]
            ref_name = t.presence_only.background.raster or p.rasters[0].name
            names = [r.name for r in p.rasters]
            if ref_name not in names:
                raise ConfigError(f"data.params.targets.presence_only.background.raster: unknown raster modality "
                                  f"{ref_name!r}; valid names are {names}.")
            ref = layers[names.index(ref_name)].files[0]
            sites, target, species, counts = presence_only_sites(t.presence_only, self.root, ref, layers, notes)
            extra["background"] = counts
            extra["is_background"] = np.char.startswith(sites.ids.astype(str), "background_")
            target, species, extra["dropped_species"] = drop_rare(target, species, t.min_presences, t.min_absences,
                                                                  notes)
            return sites, None, target, TaskSpec("multilabel", len(species), tuple(species)), [], extra
        sites, df, path = self.read_sites()
        id_col, xy = self.site_columns(df, path)
        reserved = [id_col, *(xy or ())] + ([p.split.column] if p.split.method == "column" else [])
        if t.mode == "label":
            labels, classes = label_targets(df, t.label, path)
            return sites, df, labels, TaskSpec("multiclass", len(classes), tuple(classes)), reserved + [t.label], extra
        if isinstance(t.species, SpeciesTableSection):
            target, species = table_targets(t.species, self.root, sites.ids, p.sites.id, path.name)
        elif t.mode == "species":
            target, species = wide_targets(df, t.species, path)
            reserved += species
        else:
            target, species = occurrence_targets(t.occurrences, self.root, sites.ids, p.sites.id, path.name)
        target, species, extra["dropped_species"] = drop_rare(target, species, t.min_presences, t.min_absences, notes)
        return sites, df, target, TaskSpec("multilabel", len(species), tuple(species)), reserved, extra

    # ---- splits ------------------------------------------------------------------------
    def _splits(self, sites: Sites, df: pd.DataFrame | None) -> dict[str, np.ndarray]:
        sec = self.params.split
        n = len(sites)
        if sec.method == "column":
            if df is None or sec.column not in df.columns:
                where = "the sites table" if df is not None else "presence-only data (no sites table)"
                raise DataFormatError(f"split.method 'column': no column {sec.column!r} in {where}.")
            raw = df[sec.column].astype(str).str.strip().str.lower()
            which = raw.map(SPLIT_VALUES)
            if which.isna().any():
                bad = sorted(set(df[sec.column][which.isna()].astype(str)))[:5]
                lines = (np.flatnonzero(which.isna().to_numpy()) + 2).tolist()[:10]
                raise DataFormatError(f"{self.params.sites.path}: split column {sec.column!r} holds {bad} on lines "
                                      f"{lines}; use train, val or test.")
            which = which.to_numpy()
            splits = {k: np.flatnonzero(which == k) for k in SPLIT_NAMES}
        elif sec.method == "random":
            perm = np.random.default_rng(sec.seed).permutation(n)
            cuts = np.round(np.cumsum(sec.fractions)[:-1] * n).astype(int)
            splits = {k: np.sort(v) for k, v in zip(SPLIT_NAMES, np.split(perm, cuts))}
        else:
            splits = spatial_block_split(coords_km(sites), sec.block_km, sec.fractions, SPLIT_NAMES, sec.seed)
        empty = [k for k in SPLIT_NAMES if not len(splits.get(k, []))]
        if empty:
            hint = (f"use smaller blocks (split.block_km is {sec.block_km})" if sec.method == "spatial"
                    else "give each split some sites")
            raise DataFormatError(f"The {sec.method} split leaves {empty} empty among {n} sites; {hint}.")
        return splits

    # ---- encoders ----------------------------------------------------------------------
    def _encoders(self, sites_path: Path | None, reserved: list[str]) -> list[Encoder]:
        p = self.params
        readers: dict[tuple[Path, str], TableReader] = {}
        out: list[Encoder] = []
        default_id = p.sites.id if p.sites else "site_id"

        def reader(sec: Any) -> TableReader:
            path = self.root / sec.path if sec.path else sites_path
            key = (path, default_id if sec.id is None else sec.id)
            if key not in readers:
                readers[key] = TableReader(*key)
                if sec.path:
                    readers[key].check_ids(self._site_ids, sites_path.name)
            if not sec.path:
                self.sites_sources.append(sec.name)
            return readers[key]

        for i, sec in enumerate(p.tables):
            out += table_encoders(sec, reader(sec), [] if sec.path else reserved, f"data.params.tables[{i}]")
        for i, sec in enumerate(p.timeseries):
            out.append(timeseries_encoder(sec, reader(sec), f"data.params.timeseries[{i}]"))
        out += [raster_encoder(r, self.root, p.progress) for r in p.rasters]
        out += [ImageFolder(im, self.root / im.folder, p.progress) for im in p.images]
        return out

    def build(self) -> MultimodalDataset:
        """Read every file, split, learn the statistics on the training split and make the dataset."""
        notes: list[str] = []
        sites, df, target, task, reserved, extra = self._sites_and_targets(notes)
        self.crs = sites.crs
        self._site_ids = sites.ids
        splits = self._splits(sites, df)
        sites_path = self.root / self.params.sites.path if self.params.sites else None
        self.encoders = self._encoders(sites_path, reserved)
        train = splits["train"]
        tokens: dict[str, np.ndarray] = {}
        for enc in self.encoders:
            raw = enc.raw(sites)
            enc.fit(raw[train])
            tokens[enc.name] = enc.transform(raw)
            note = enc.hidden_note(sites, raw)
            if note:
                notes.append(f"{enc.name}: {note}")
            enc.progress = False  # later reads are prediction windows, under their own bar
        for text in notes:
            self.report.note(text)
        ds = MultimodalDataset(
            tokens, target, self.specs, task, splits=splits,
            coords=np.stack([sites.x, sites.y], axis=1) if np.isfinite(sites.x).all() else None,
            info={"source": "miam.data.files", "site_ids": sites.ids, "crs": sites.crs, "files": self,
                  "report": self.report.to_dict(), **extra})
        self.report.hidden_tokens = {m: int((~p).sum()) for m, p in ds.present.items()}
        ds.info["report"] = self.report.to_dict()
        ds.info["summary"] = self.summary(ds)
        logger.info("%s", ds.info["summary"])
        return ds

    def summary(self, ds: MultimodalDataset) -> str:
        """What was read: sites per split, the outputs, and per modality its kind, tokens, source and hidden share.

        ``miam`` commands print it after reading the data (the ``miam.data`` logger, INFO).
        """
        task = ds.task
        outputs = f"{task.n_outputs} {'species' if task.kind == 'multilabel' else 'classes'}"
        dropped = ds.info.get("dropped_species") or {}
        head = (f"files dataset: {len(ds)} sites ({', '.join(f'{k} {len(v)}' for k, v in ds.splits.items())}); "
                f"{outputs} ({few(list(task.output_names), 6)})"
                + (f", {len(dropped)} dropped (see the notes)" if dropped else ""))
        rows = [{"modality": e.name, "kind": e.spec.kind, "tokens": e.spec.n_tokens, "read from": e.describe(),
                 "hidden": f"{100 * (1 - ds.present[e.name].mean()):.1f}%",
                 "sites without any": int((~ds.present[e.name].any(axis=1)).sum())} for e in self.encoders]
        lines = [head, pd.DataFrame(rows).to_string(index=False)]
        none = ~np.stack([p.any(axis=1) for p in ds.present.values()]).any(axis=0)
        if none.any():
            lines.append(f"{int(none.sum())} site(s) have no data in any modality (e.g. "
                         f"{list(ds.info['site_ids'][none][:3])}); they teach nothing and are predicted from nothing.")
        return "\n".join(lines)

    # ---- prediction --------------------------------------------------------------------
    def encode(self, sites: Sites, sources: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
        """Tokens (float32, NaN where hidden) of new ``sites`` with the statistics learned in :meth:`build`.

        Args:
            sites: where to predict (``ids`` None for raster cells: only rasters are read).
            sources: ``{section name: file, folder or list of raster files}`` replacing the
                training ones (new tables, future-climate rasters, another photo folder).

        Raises:
            ConfigError: not built yet, or an unknown source name (listing the valid ones).
        """
        if not self.encoders:
            raise ConfigError("FilesData.encode needs the statistics of training: call build() first.")
        sources = dict(sources or {})
        unknown = [k for k in sources if k not in self.sources]
        if unknown:
            raise ConfigError(f"unknown source(s) {unknown}; valid names are {self.sources}.")
        return {e.name: e.transform(e.raw(sites, sources.get(e.source))) for e in self.encoders}


def coords_km(sites: Sites) -> np.ndarray:
    """Site coordinates in km for spatial blocks: geographic CRSs projected, projected ones scaled by their unit.

    Examples:
        >>> coords_km(Sites(None, np.array([500_000.0]), np.array([2_000.0]), "EPSG:32631"))[0].tolist()
        [500.0, 2.0]
    """
    xy = np.stack([sites.x, sites.y], axis=1)
    if sites.crs is None:
        return xy
    from pyproj import CRS

    crs = CRS.from_user_input(sites.crs)
    if crs.is_geographic:
        return lonlat_to_km(xy)
    return xy * crs.axis_info[0].unit_conversion_factor / 1000.0


def load_files(**params: Any) -> MultimodalDataset:
    """The ``files`` dataset of a config (``data: {name: files, params: {...}}``).

    ``dataset.info["files"]`` keeps the fitted :class:`FilesData`, which encodes new sites
    for :mod:`miam.predict`; ``info["report"]`` counts what was hidden and why.
    """
    return FilesData(**params).build()
