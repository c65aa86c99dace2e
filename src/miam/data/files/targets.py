"""What a ``files`` dataset predicts: wide species columns, a long occurrence table, one label
column, or presence-only records with background points."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from miam.data.files.io import (Sites, align_rows, id_text, need_columns, read_table, resolve_column, select_columns,
                                site_ids)
from miam.data.files.rasters import RasterFile, RasterLayers, draw_background
from miam.data.files.schema import OccurrencesSection, PresenceOnlySection, SpeciesTableSection
from miam.errors import DataFormatError

#: coordinate column pairs tried in order when x/y are not given
COORD_PAIRS = (("lon", "lat"), ("longitude", "latitude"), ("decimalLongitude", "decimalLatitude"), ("x", "y"))


def coord_columns(df: pd.DataFrame, x: str | None, y: str | None, path: Path,
                  needed_by: str | None) -> tuple[str, str] | None:
    """The x/y columns: as given, else the first pair of :data:`COORD_PAIRS` present.

    Args:
        needed_by: what needs coordinates, for the error when there are none (None: they
            are optional and None is returned).
    """
    if x is not None or y is not None:
        need_columns(df, [c for c in (x, y) if c is not None], path, "coordinate")
        if x is None or y is None:
            raise DataFormatError(f"{path}: give both x and y coordinate columns (got x={x!r}, y={y!r}).")
        return x, y
    for pair in COORD_PAIRS:
        if all(c in df.columns for c in pair):
            return pair
    if needed_by is None:
        return None
    raise DataFormatError(f"{path}: no coordinate columns, needed by {needed_by}; name them with x and y "
                          f"(tried {[list(p) for p in COORD_PAIRS]}; columns are {[str(c) for c in df.columns][:15]}).")


def coordinates(df: pd.DataFrame, x: str, y: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """x and y as float64; an empty or non-numeric coordinate raises, naming the line."""
    return (finite_column(df, x, path, "column", "coordinate(s)"),
            finite_column(df, y, path, "column", "coordinate(s)"))


def finite_column(df: pd.DataFrame, column: str, path: Path, label: str, unit: str, hint: str = "") -> np.ndarray:
    """``df[column]`` as float64; an empty or non-numeric cell raises, naming the column and the lines
    (``"{path}: {label} {column!r} has N empty or non-numeric {unit} (lines [...]){hint}."``)."""
    v = pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(v)
    if bad.any():
        lines = (np.flatnonzero(bad) + 2).tolist()
        raise DataFormatError(f"{path}: {label} {column!r} has {int(bad.sum())} empty or non-numeric {unit} "
                              f"(lines {lines[:10]}){hint}.")
    return v


def wide_targets(df: pd.DataFrame, patterns: Sequence[str], path: Path) -> tuple[np.ndarray, list[str]]:
    """Species columns (names or globs) -> 0/1 ``[N, S]``; a count > 0 is a presence.

    Raises:
        DataFormatError: an empty or non-numeric cell, naming the column and the lines.
    """
    columns = select_columns(df, patterns, [], [], path, "targets.species")
    out = np.zeros((len(df), len(columns)), dtype=np.float32)
    for j, c in enumerate(columns):
        out[:, j] = finite_column(df, c, path, "species column", "cell(s)", "; give 0 for an absence") > 0
    return out, columns


def table_targets(sec: SpeciesTableSection, root: Path, ids: np.ndarray, default_id: str,
                  sites_label: str) -> tuple[np.ndarray, list[str]]:
    """Wide species columns of another table -> 0/1 ``[N, S]`` in the order of the sites ``ids``.

    Raises:
        DataFormatError: a site without a row (naming how many and some ids), or a bad cell.
    """
    path = root / sec.path
    df = read_table(path)
    id_col = resolve_column(df, default_id if sec.id is None else sec.id, path, "id")
    rows = align_rows(site_ids(df, id_col, path), ids, path, sites_label, strict=True)
    if (rows < 0).any():
        lost = ids[rows < 0]
        raise DataFormatError(f"{path}: {len(lost)} site(s) of {sites_label} have no row in column {id_col!r} (e.g. "
                              f"{list(lost[:3])}); every site needs its species values (0 for an absence).")
    target, names = wide_targets(df.drop(columns=[id_col]), sec.columns, path)
    return target[rows], names


def occurrence_targets(sec: OccurrencesSection, root: Path, ids: np.ndarray, default_id: str,
                       sites_label: str) -> tuple[np.ndarray, list[str]]:
    """A long table of (site, species) presences -> 0/1 ``[N, S]`` over the sites ``ids``."""
    path = root / sec.path
    df = read_table(path)
    id_col = default_id if sec.id is None else sec.id
    occ_ids = site_ids(df, id_col, path, unique=False)
    need_columns(df, [sec.species], path, "species")
    species = df[sec.species]
    if species.isna().any():
        lines = (np.flatnonzero(species.isna().to_numpy()) + 2).tolist()
        raise DataFormatError(f"{path}: empty species in column {sec.species!r} on line(s) {lines[:10]}.")
    names = sorted(set(id_text(species)))
    align_rows(np.unique(occ_ids), ids, path, sites_label, strict=True)  # no match: error; some: warning
    site_row = pd.Index(ids).get_indexer(occ_ids)
    col = pd.Index(names).get_indexer(id_text(species))
    keep = site_row >= 0
    target = np.zeros((len(ids), len(names)), dtype=np.float32)
    target[site_row[keep], col[keep]] = 1.0
    return target, names


def label_targets(df: pd.DataFrame, column: str, path: Path) -> tuple[np.ndarray, list[str]]:
    """One class label per site -> class indices ``[N]`` and the sorted class names."""
    need_columns(df, [column], path, "label")
    if df[column].isna().any():
        lines = (np.flatnonzero(df[column].isna().to_numpy()) + 2).tolist()
        raise DataFormatError(f"{path}: empty label in column {column!r} on line(s) {lines[:10]}.")
    text = id_text(df[column])
    names = sorted(set(text))
    if len(names) < 2:
        raise DataFormatError(f"{path}: label column {column!r} holds one class ({names}); a classifier needs two.")
    return pd.Index(names).get_indexer(text).astype(np.int64), names


def drop_rare(target: np.ndarray, names: list[str], min_presences: int, min_absences: int,
              notes: list[str]) -> tuple[np.ndarray, list[str], dict[str, str]]:
    """Drop species with fewer than ``min_presences`` presences or ``min_absences`` absences.

    Returns:
        the kept targets and names, and ``{dropped species: why}`` (also summed up in ``notes``).

    Examples:
        >>> t = np.array([[1, 1, 0], [0, 1, 0], [0, 1, 1]], dtype=np.float32)
        >>> drop_rare(t, ["a", "b", "c"], 1, 1, [])[1:]
        (['a', 'c'], {'b': '0 absence(s)'})
    """
    presences = target.sum(axis=0).astype(int)
    absences = len(target) - presences
    few_p, few_a = presences < max(1, min_presences), absences < min_absences
    dropped = {n: f"{p} presence(s)" if fp else f"{a} absence(s)"
               for n, p, a, fp, fa in zip(names, presences, absences, few_p, few_a) if fp or fa}
    for mask, limit, what in ((few_p, max(1, min_presences), "presence"), (few_a & ~few_p, min_absences, "absence")):
        if mask.any():
            gone = [n for n, m in zip(names, mask) if m]
            notes.append(f"{len(gone)} species with fewer than {limit} {what}(s) dropped: {gone[:20]}"
                         f"{' ...' if len(gone) > 20 else ''}.")
    keep = ~(few_p | few_a)
    if not keep.any():
        raise DataFormatError(f"No species has {max(1, min_presences)} presence(s) and {min_absences} absence(s); "
                              f"nothing to learn (targets.min_presences, targets.min_absences).")
    return target[:, keep], [n for n, k in zip(names, keep) if k], dropped


def presence_only_sites(sec: PresenceOnlySection, root: Path, ref: RasterFile, layers: Sequence[RasterLayers],
                        notes: list[str]) -> tuple[Sites, np.ndarray, list[str], dict[str, int]]:
    """Presence cells of ``ref``'s grid (one site per cell holding a record) plus background cells.

    Records are snapped to the cell of ``ref`` they fall in; records outside it are
    dropped with a note. Background cells are drawn where every raster layer has data,
    never on a presence cell when ``background.exclude_presence_cells`` is set. Sites lie
    at cell centres, in the records' CRS.

    Returns:
        the sites (ids ``cell_<r>_<c>`` and ``background_<k>``), 0/1 targets ``[N, S]``
        (background rows all 0), species names, and the counts for the report.
    """
    path = root / sec.path
    df = read_table(path)
    x_col, y_col = coord_columns(df, sec.x, sec.y, path, "presence-only records")
    x, y = coordinates(df, x_col, y_col, path)
    need_columns(df, [sec.species], path, "species")
    species = id_text(df[sec.species])
    names = sorted(set(species))
    row, col = ref.pixel(x, y, sec.crs)
    h, w = ref.ds.height, ref.ds.width
    inside = np.isfinite(row) & np.isfinite(col) & (row >= 0) & (row < h) & (col >= 0) & (col < w)
    if not inside.any():
        raise DataFormatError(f"{path}: none of its {len(df)} records falls inside {ref.path} (check the CRS "
                              f"{sec.crs!r} and the coordinate columns {x_col!r}, {y_col!r}).")
    if not inside.all():
        notes.append(f"{path.name}: {int((~inside).sum())} of {len(df)} records lie outside {ref.path.name} "
                     f"and are dropped.")
    cell = np.floor(row[inside]).astype(np.int64) * w + np.floor(col[inside]).astype(np.int64)
    cells, site_of = np.unique(cell, return_inverse=True)
    target = np.zeros((len(cells), len(names)), dtype=np.float32)
    target[site_of.reshape(-1), pd.Index(names).get_indexer(species[inside])] = 1.0
    bg = sec.background
    exclude = cells if bg.exclude_presence_cells else np.empty(0, dtype=np.int64)
    br, bc, counts = draw_background(ref, layers, bg.count, bg.seed, exclude)
    counts = {"presence_records": int(len(df)), "records_outside": int((~inside).sum()),
              "presence_cells": int(len(cells)), **counts}
    notes.append(f"presence-only: {counts['presence_records']} records in {counts['presence_cells']} cells of "
                 f"{ref.path.name}; background: {counts['drawn']} of {counts['requested']} points drawn "
                 f"({counts['rejected_nodata']} draws on nodata, {counts['rejected_presence_cells']} on presence "
                 f"cells rejected).")
    all_r = np.concatenate([cells // w, br])
    all_c = np.concatenate([cells % w, bc])
    sx, sy = ref.centres(all_r, all_c, sec.crs)
    ids = np.array([f"cell_{r}_{c}" for r, c in zip(cells // w, cells % w)]
                   + [f"background_{k}" for k in range(len(br))], dtype=object)
    target = np.concatenate([target, np.zeros((len(br), len(names)), dtype=np.float32)])
    return Sites(ids, sx, sy, sec.crs), target, names, counts
