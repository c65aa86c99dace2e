"""Table columns as tokens: numbers (one token per column), categories (an embedding per level)
and wide time-series columns grouped into segment tokens."""

from __future__ import annotations

import fnmatch
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from miam.data.contract.spec import ModalitySpec
from miam.data.files.io import (Encoder, Sites, Standardizer, Vocabulary, align_rows, as_text, few, natural_key,
                                read_table, resolve_column, select_columns, site_ids)
from miam.data.files.schema import TableSection, TimeSeriesSection
from miam.errors import DataFormatError

#: characters that separate the parts of a column name (``ndvi_2019_q1``)
SEPARATORS = "_-. "


class TableReader:
    """A table joined on the site id, read once per file (a file given at prediction replaces it)."""

    def __init__(self, path: Path, id_column: str) -> None:
        self.path, self.id_column = path, id_column
        self._cache: dict[Path, tuple[pd.DataFrame, np.ndarray]] = {}

    def table(self, path: Path | None = None) -> tuple[pd.DataFrame, np.ndarray]:
        """The table at ``path`` (default: the training file) and its site ids."""
        path = Path(path or self.path)
        if path not in self._cache:
            df = read_table(path)
            self.id_column = resolve_column(df, self.id_column, path, "id")
            self._cache[path] = (df, site_ids(df, self.id_column, path))
        return self._cache[path]

    def check_ids(self, ids: np.ndarray, sites_label: str) -> None:
        """Training: every table must match some site; unmatched rows are counted in a warning."""
        align_rows(self.table()[1], ids, self.path, sites_label, strict=True)

    def rows(self, sites: Sites, columns: Sequence[str], path: Path | None = None) -> pd.DataFrame:
        """``columns`` at each site, in site order; all-NaN rows where the table has no such id."""
        if sites.ids is None:
            return pd.DataFrame(np.nan, index=range(len(sites)), columns=list(columns), dtype=object)
        df, ids = self.table(path)
        here = [c for c in columns if c in df.columns]
        if len(here) < len(columns):
            lost = [c for c in columns if c not in df.columns]
            warnings.warn(f"{path or self.path}: no column(s) {lost}; their tokens are hidden.", stacklevel=3)
        rows = pd.Index(ids).get_indexer(sites.ids)
        out = df[here].iloc[np.maximum(rows, 0)].reset_index(drop=True)
        out.loc[rows < 0, :] = np.nan
        return out.reindex(columns=list(columns))


class TableEncoder(Encoder):
    """An encoder reading columns of a :class:`TableReader`; reports sites without a row and empty cells."""

    reader: TableReader

    def hidden_note(self, sites: Sites, raw: np.ndarray) -> str | None:
        if sites.ids is None:
            return None
        no_row = int((pd.Index(self.reader.table()[1]).get_indexer(sites.ids) < 0).sum())
        cells = pd.isna(raw).reshape(len(raw), raw.shape[1], -1).any(axis=2)
        empty = int(cells.sum()) - no_row * raw.shape[1]
        parts = ([f"{no_row} site(s) without a row"] if no_row else []) + (
            [f"{empty} token(s) with empty cells"] if empty else [])
        return f"{self.reader.path.name}: " + ", ".join(parts) if parts else None

    def describe(self) -> str:
        return f"{self.reader.path.name}: {few(self.columns)}"


class NumericColumns(TableEncoder):
    """Numeric columns, one standardised token each."""

    def __init__(self, name: str, source: str, reader: TableReader, columns: Sequence[str]) -> None:
        self.name, self.source, self.reader, self.columns = name, source, reader, list(columns)
        self.scaler = Standardizer()

    @property
    def spec(self) -> ModalitySpec:
        return ModalitySpec(self.name, "tabular", len(self.columns), (1,), tuple(self.columns))

    def raw(self, sites: Sites, path: Path | None = None) -> np.ndarray:
        frame = self.reader.rows(sites, self.columns, path)
        values = np.empty((len(sites), len(self.columns), 1), dtype=np.float64)
        for j, c in enumerate(self.columns):
            col = pd.to_numeric(frame[c], errors="coerce")
            bad = col.isna() & frame[c].notna()
            if bad.any():
                warnings.warn(f"{path or self.reader.path}: column {c!r} has {int(bad.sum())} cell(s) that are not "
                              f"numbers (e.g. {frame[c][bad].iloc[0]!r}); their tokens are hidden.", stacklevel=2)
            values[:, j, 0] = col.to_numpy(dtype=np.float64)
        return values

    def fit(self, raw: np.ndarray) -> None:
        self.scaler.fit(raw)

    def transform(self, raw: np.ndarray) -> np.ndarray:
        return self.scaler.transform(raw)


class CategoricalColumns(TableEncoder):
    """Text or declared-categorical columns: a level index per token, unseen levels hidden with a warning."""

    def __init__(self, name: str, source: str, reader: TableReader, columns: Sequence[str]) -> None:
        self.name, self.source, self.reader, self.columns = name, source, reader, list(columns)
        self.vocab = Vocabulary()
        self._path: Path | None = None

    @property
    def spec(self) -> ModalitySpec:
        return ModalitySpec(self.name, "categorical", len(self.columns), (1,), tuple(self.columns),
                            levels=self.vocab.sizes)

    def raw(self, sites: Sites, path: Path | None = None) -> np.ndarray:
        self._path = path or self.reader.path
        frame = self.reader.rows(sites, self.columns, path)
        return np.stack([as_text(frame[c]) for c in self.columns], axis=1)

    def fit(self, raw: np.ndarray) -> None:
        self.vocab.fit(raw)

    def transform(self, raw: np.ndarray) -> np.ndarray:
        def unseen(j: int, n: int, examples: list) -> None:
            warnings.warn(f"{self._path}: column {self.columns[j]!r} has {n} value(s) with a level unseen in "
                          f"training (e.g. {examples}); those tokens are hidden.", stacklevel=4)

        return self.vocab.transform(raw, unseen)[..., None]


class TimeSeriesColumns(TableEncoder):
    """Wide columns per variable (``tas_01``..``tas_12``) cut into segments of ``segment`` steps.

    A token is one segment of every variable, shape ``(n_variables,)`` (segment 1) or
    ``(n_variables, segment)``; a NaN anywhere in it hides it. Each variable is
    standardised over all its steps, so the seasonal shape is kept.
    """

    def __init__(self, name: str, source: str, reader: TableReader, variables: Mapping[str, Sequence[str]],
                 segment: int, step_names: Sequence[str]) -> None:
        self.name, self.source, self.reader = name, source, reader
        self.variables = {k: list(v) for k, v in variables.items()}
        self.segment = segment
        self.step_names = list(step_names)
        self.scaler = Standardizer((1, 3) if segment > 1 else (1,))

    def describe(self) -> str:
        return f"{self.reader.path.name}: " + ", ".join(f"{v} ({len(c)} columns)" for v, c in self.variables.items())

    @property
    def n_steps(self) -> int:
        return len(self.step_names)

    @property
    def spec(self) -> ModalitySpec:
        k, s = len(self.variables), self.segment
        names = [self.step_names[i] if s == 1 else f"{self.step_names[i]}-{self.step_names[i + s - 1]}"
                 for i in range(0, self.n_steps, s)]
        return ModalitySpec(self.name, "timeseries", self.n_steps // s, (k,) if s == 1 else (k, s), tuple(names))

    def raw(self, sites: Sites, path: Path | None = None) -> np.ndarray:
        columns = [c for cols in self.variables.values() for c in cols]
        frame = self.reader.rows(sites, columns, path)
        values = frame.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
        k, s = len(self.variables), self.segment
        x = values.reshape(len(sites), k, self.n_steps // s, s).transpose(0, 2, 1, 3)   # [N, T, k, s]
        return x[..., 0] if s == 1 else x

    def fit(self, raw: np.ndarray) -> None:
        self.scaler.fit(raw)

    def transform(self, raw: np.ndarray) -> np.ndarray:
        return self.scaler.transform(raw)


def table_encoders(sec: TableSection, reader: TableReader, reserved: Sequence[str], where: str) -> list[Encoder]:
    """The modalities of one table: ``name`` (numbers) and/or ``name`` / ``name_cat`` (categories).

    Text columns are categorical; ``categorical`` names numeric ones that are too (class codes).
    """
    df, _ = reader.table()
    columns = select_columns(df, sec.columns, sec.exclude, [reader.id_column, *reserved], reader.path, where)
    declared = select_columns(df, sec.categorical, [], [], reader.path, f"{where}.categorical") \
        if sec.categorical else []
    cat = [c for c in columns if c in declared or not pd.api.types.is_numeric_dtype(df[c])]
    num = [c for c in columns if c not in cat]
    for c in cat:
        if c not in declared:
            looks_numeric = pd.to_numeric(df[c], errors="coerce").notna().mean()
            if looks_numeric > 0.5:
                bad = df[c][pd.to_numeric(df[c], errors="coerce").isna() & df[c].notna()]
                warnings.warn(f"{reader.path}: column {c!r} is mostly numbers but has text cells (e.g. "
                              f"{bad.iloc[0]!r} on line {bad.index[0] + 2}); it is read as categorical. Fix "
                              f"the cells to read it as a number.", stacklevel=3)
    out: list[Encoder] = []
    if num:
        out.append(NumericColumns(sec.name, sec.name, reader, num))
    if cat:
        out.append(CategoricalColumns(sec.name if not num else f"{sec.name}_cat", sec.name, reader, cat))
    return out


def timeseries_encoder(sec: TimeSeriesSection, reader: TableReader, where: str) -> TimeSeriesColumns:
    """Match each variable's pattern, order the columns naturally and check the lengths agree."""
    df, _ = reader.table()
    names = [str(c) for c in df.columns]
    variables: dict[str, list[str]] = {}
    for var, pattern in sec.variables.items():
        hit = sorted((c for c in names if fnmatch.fnmatchcase(c, pattern)), key=natural_key)
        if not hit:
            raise DataFormatError(f"{reader.path}: {where}.variables.{var} pattern {pattern!r} matches no column; "
                                  f"its columns are {names[:15]}{' ...' if len(names) > 15 else ''}.")
        variables[var] = hit
    lengths = {v: len(c) for v, c in variables.items()}
    if len(set(lengths.values())) > 1:
        raise DataFormatError(f"{reader.path}: {where}: the variables have different numbers of time steps "
                              f"{lengths}; every variable needs one column per step.")
    n = next(iter(lengths.values()))
    if sec.segment < 1 or n % sec.segment:
        raise DataFormatError(f"{reader.path}: {where}: {n} time steps cannot be cut into segments of "
                              f"{sec.segment}.")
    steps = step_labels(variables[next(iter(variables))])
    return TimeSeriesColumns(sec.name, sec.name, reader, variables, sec.segment, steps)


def step_labels(columns: Sequence[str]) -> list[str]:
    """What differs between a variable's column names: ``tas_01``.. -> ``01``..

    Examples:
        >>> step_labels(["ndvi_2019_q1", "ndvi_2019_q2", "ndvi_2020_q1"])
        ['2019_q1', '2019_q2', '2020_q1']
    """
    if len(columns) == 1:
        return list(columns)
    prefix = os.path.commonprefix(list(columns))
    prefix = prefix[: max(prefix.rfind(sep) for sep in SEPARATORS) + 1]
    suffix = os.path.commonprefix([c[::-1] for c in columns])[::-1]
    starts = [suffix.find(sep) for sep in SEPARATORS if sep in suffix]
    suffix = suffix[min(starts):] if starts else ""
    cut = [c[len(prefix): len(c) - len(suffix)] for c in columns]
    if len(set(cut)) < len(cut) or not all(cut):
        return list(columns)
    return cut
