"""Shared pieces of the ``files`` dataset: reading tables, site ids, column choice, encoders.

An *encoder* turns one source (a table's columns, raster layers, an image folder) into
the tokens of one modality for any set of :class:`Sites`: ``raw`` reads the values
(NaN where missing), ``fit`` learns the statistics or levels on training rows only, and
``transform`` standardises or maps levels. Prediction calls ``raw`` and ``transform``
on new sites with the state learned in training.
"""

from __future__ import annotations

import csv
import fnmatch
import re
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from miam.data.contract.spec import ModalitySpec
from miam.errors import DataFormatError, DatasetNotFoundError

PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass
class Sites:
    """Places to read data at.

    Attributes:
        ids: ``[N]`` site ids as text, or None for points with no id (raster grid cells):
            table and image sources then give hidden tokens.
        x: ``[N]`` x coordinates in ``crs``.
        y: ``[N]`` y coordinates in ``crs``.
        crs: anything pyproj reads (``"EPSG:4326"``), or None for no CRS.
    """

    ids: np.ndarray | None
    x: np.ndarray
    y: np.ndarray
    crs: str | None

    def __len__(self) -> int:
        return len(self.x)


def read_table(path: Path) -> pd.DataFrame:
    """A CSV (``.tsv``: tab-separated) or Parquet (``.parquet``, ``.pq``) file as a DataFrame.

    Raises:
        DatasetNotFoundError: the file does not exist.
        DataFormatError: the file cannot be parsed (the message names it).
    """
    if not path.is_file():
        raise DatasetNotFoundError("files dataset", path.parent, path.name, "Check the path in the YAML description.")
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        if path.suffix.lower() in PARQUET_SUFFIXES:
            return pd.read_parquet(path)
        with open(path, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f, delimiter=sep), [])
        df = pd.read_csv(path, sep=sep)
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as e:
        raise DataFormatError(f"{path}: not a readable {'Parquet' if path.suffix in PARQUET_SUFFIXES else 'CSV'} "
                              f"table ({e}).") from e
    seen: dict[str, int] = {}
    for i, name in enumerate(header):
        if name and name in seen:
            raise DataFormatError(f"{path}: column {name!r} appears twice in the header (columns {seen[name] + 1} "
                                  f"and {i + 1}; pandas would read the second as {name + '.1'!r}); rename one of them.")
        seen.setdefault(name, i)
    return df


#: how pandas names a column whose header cell is empty
UNNAMED = re.compile(r"Unnamed: \d+")


def resolve_column(df: pd.DataFrame, name: str, path: Path, what: str) -> str:
    """The column ``name`` of ``df``; ``""`` names the column with an empty header (pandas' ``Unnamed: k``).

    Raises:
        DataFormatError: no such column (listing the columns), or ``""`` with no or several empty headers.

    Examples:
        >>> resolve_column(pd.DataFrame({"Unnamed: 0": [1], "ph": [6.5]}), "", Path("s.csv"), "id")
        'Unnamed: 0'
    """
    if name == "" and "" not in df.columns:
        empty = [str(c) for c in df.columns if UNNAMED.fullmatch(str(c))]
        if len(empty) != 1:
            raise DataFormatError(f"{path}: {what} column '' names the column with an empty header, but the file has "
                                  f"{len(empty)} such columns {empty}; give each a header.")
        return empty[0]
    need_columns(df, [name], path, what)
    return name


def need_columns(df: pd.DataFrame, columns: Sequence[str], path: Path, what: str) -> None:
    """Raise naming the file and listing its columns when one of ``columns`` is absent."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        found = [str(c) for c in df.columns]
        raise DataFormatError(f"{path}: no {what} column {missing[0]!r}; its columns are "
                              f"{found[:15]}{' ...' if len(found) > 15 else ''}.")


def site_ids(df: pd.DataFrame, column: str, path: Path, unique: bool = True) -> np.ndarray:
    """The ``column`` of ``df`` as text ids; empty or (with ``unique``) repeated ids raise, naming the lines.

    Examples:
        >>> site_ids(pd.DataFrame({"id": [3, 4]}), "id", Path("s.csv")).tolist()
        ['3', '4']
    """
    column = resolve_column(df, column, path, "id")
    raw = df[column]
    if raw.isna().any():
        lines = (np.flatnonzero(raw.isna().to_numpy()) + 2).tolist()
        raise DataFormatError(f"{path}: empty id in column {column!r} on line(s) {lines[:10]}.")
    ids = id_text(raw)
    if unique:
        dup = pd.Series(ids).duplicated(keep=False).to_numpy()
        if dup.any():
            first = ids[np.flatnonzero(dup)[0]]
            lines = (np.flatnonzero(ids == first) + 2).tolist()
            raise DataFormatError(f"{path}: duplicated site id {first!r} in column {column!r} on lines {lines} "
                                  f"({len(set(ids[dup]))} repeated ids); a site has one row.")
    return ids


def id_text(values: pd.Series) -> np.ndarray:
    """Ids as text; integral floats lose their ``.0`` (``12.0`` -> ``"12"``), so CSV and Parquet ids agree."""
    if pd.api.types.is_float_dtype(values):
        v = values.to_numpy()
        if np.all(np.isnan(v) | (v == np.round(v))):
            return np.array([str(int(a)) if a == a else "" for a in v], dtype=object)
    return values.astype(str).to_numpy(dtype=object)


def select_columns(df: pd.DataFrame, include: Sequence[str] | None, exclude: Sequence[str],
                   reserved: Sequence[str], path: Path, where: str) -> list[str]:
    """Columns named or matched (glob) by ``include`` (default: all), minus ``exclude`` and ``reserved``.

    Raises:
        DataFormatError: a name or pattern that matches no column, or nothing left.
    """
    names = [str(c) for c in df.columns]
    chosen: list[str] = []
    for pattern in include if include is not None else ["*"]:
        hit = [c for c in names if fnmatch.fnmatchcase(c, pattern)]
        if not hit:
            raise DataFormatError(f"{path}: {where} names column {pattern!r}, which matches no column; its columns "
                                  f"are {names[:15]}{' ...' if len(names) > 15 else ''}.")
        chosen += [c for c in hit if c not in chosen]
    drop = set(reserved) | {c for p in exclude for c in names if fnmatch.fnmatchcase(c, p)}
    chosen = [c for c in chosen if c not in drop]
    if not chosen:
        raise DataFormatError(f"{path}: {where} selects no column (after excluding {sorted(drop)[:10]}).")
    return chosen


def natural_key(name: str) -> list:
    """Sort key that orders ``tas_2`` before ``tas_10``.

    Examples:
        >>> sorted(["m10", "m2", "m1"], key=natural_key)
        ['m1', 'm2', 'm10']
    """
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def align_rows(table_ids: np.ndarray, ids: np.ndarray, path: Path, sites_label: str, strict: bool) -> np.ndarray:
    """Row of the table for each site id (-1 where the table has none).

    With ``strict`` (training), a table whose ids match no site is an error and ids
    matching no site are counted in a warning.

    Examples:
        >>> align_rows(np.array(["a", "b"]), np.array(["b", "c"]), Path("t.csv"), "sites.csv", False).tolist()
        [1, -1]
    """
    rows = pd.Index(table_ids).get_indexer(ids)
    if strict:
        matched = np.isin(table_ids, ids)
        if not matched.any():
            raise DataFormatError(f"{path}: none of its {len(table_ids)} site ids match a site of {sites_label} "
                                  f"(0 of {len(table_ids)} matched; e.g. {list(table_ids[:3])} here, "
                                  f"{list(ids[:3])} there). Check the id column and its type.")
        if not matched.all():
            warnings.warn(f"{path}: {int((~matched).sum())} of its {len(table_ids)} site ids match no site of "
                          f"{sites_label} (e.g. {list(table_ids[~matched][:3])}); those rows are ignored.",
                          stacklevel=3)
    return rows


class Standardizer:
    """Mean and standard deviation over present values, per feature, learned on training rows.

    Args:
        axes: axes of a ``[N, T, *token_shape]`` array that share one statistic (0, the
            rows, always does).
    """

    def __init__(self, axes: tuple[int, ...] = (0,)) -> None:
        self.axes = tuple(sorted({0, *axes}))
        self.mean_: np.ndarray | None = None
        self.std_: np.ndarray | None = None

    def fit(self, raw: np.ndarray) -> Standardizer:
        x = np.where(np.isfinite(raw), raw, np.nan).astype(np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN features keep mean 0, std 1
            mean = np.nanmean(x, axis=self.axes, keepdims=True)
            std = np.nanstd(x, axis=self.axes, keepdims=True)
        self.mean_ = np.nan_to_num(mean, nan=0.0).astype(np.float32)
        self.std_ = np.where(np.isfinite(std) & (std > 1e-8), std, 1.0).astype(np.float32)
        return self

    def transform(self, raw: np.ndarray) -> np.ndarray:
        return ((raw.astype(np.float32) - self.mean_) / self.std_).astype(np.float32)


class Vocabulary:
    """Levels of categorical variables learned on training rows; unseen levels become NaN (hidden).

    Examples:
        >>> v = Vocabulary().fit(np.array([["a"], ["b"], [None]], dtype=object))
        >>> v.levels_, v.transform(np.array([["b"], ["z"]], dtype=object), lambda j, n, e: None)[:, 0].tolist()
        ([['a', 'b']], [1.0, nan])
    """

    def __init__(self) -> None:
        self.levels_: list[list[str]] = []

    def fit(self, raw: np.ndarray) -> Vocabulary:
        """``raw`` [N, T] of text (None/NaN missing)."""
        self.levels_ = [sorted({v for v in raw[:, j] if isinstance(v, str)}) for j in range(raw.shape[1])]
        return self

    def transform(self, raw: np.ndarray, on_unseen) -> np.ndarray:
        """Level index per cell as float (NaN: missing or unseen); ``on_unseen(j, count, examples)`` reports."""
        out = np.full(raw.shape, np.nan, dtype=np.float32)
        for j, levels in enumerate(self.levels_):
            col = raw[:, j]
            codes = pd.Index(levels, dtype=object).get_indexer(col)
            out[:, j] = np.where(codes >= 0, codes, np.nan)
            unseen = pd.notna(col) & (codes < 0)
            if unseen.any():
                on_unseen(j, int(unseen.sum()), sorted(set(col[unseen]))[:3])
        return out

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(max(1, len(v)) for v in self.levels_)


def as_text(values: pd.Series) -> np.ndarray:
    """Categorical cells as text (missing -> None); integral numbers lose their ``.0``."""
    out = np.empty(len(values), dtype=object)
    na = values.isna().to_numpy()
    text = id_text(values)
    out[~na] = text[~na]
    out[na] = None
    return out


class Encoder(ABC):
    """One modality read from one source: ``raw`` -> ``fit`` (training rows) -> ``transform``."""

    #: the source's name in the YAML (``--source NAME=PATH`` replaces its file at prediction)
    source: str = ""
    #: show progress bars while reading (on while building the training data; prediction has its own)
    progress: bool = False

    @property
    @abstractmethod
    def spec(self) -> ModalitySpec:
        """The modality (valid once fitted)."""

    @abstractmethod
    def raw(self, sites: Sites, path: Path | None = None) -> np.ndarray:
        """Values at ``sites`` (NaN where missing); ``path`` replaces the source's file or folder."""

    @abstractmethod
    def fit(self, raw: np.ndarray) -> None:
        """Learn statistics or levels from the training rows' raw values."""

    @abstractmethod
    def transform(self, raw: np.ndarray) -> np.ndarray:
        """Float32 tokens ``[N, T, *token_shape]``, NaN where hidden."""

    def hidden_note(self, sites: Sites, raw: np.ndarray) -> str | None:
        """A line for the report on why tokens of ``sites`` are hidden (None: nothing to say)."""
        return None

    @abstractmethod
    def describe(self) -> str:
        """Where the tokens are read from, for the summary table (a file and its columns, rasters, a folder)."""


def few(names: Sequence[str], shown: int = 4) -> str:
    """``a, b, c, d +3 more``: a list short enough for a table cell."""
    return ", ".join(names[:shown]) + (f" +{len(names) - shown} more" if len(names) > shown else "")
