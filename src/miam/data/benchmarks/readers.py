"""Readers for published raw files whose errors name the file, the column and the row.

Rows are reported as file *lines* (1 = the header), so a user can open the CSV and go
straight to the culprit.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from miam.data.contract.report import Report
from miam.errors import DataFormatError


class CorruptFileError(Exception):
    """A per-sample file that exists but cannot be decoded (caught, counted and hidden)."""


def read_csv(path: Path, required: Sequence[str], **kwargs) -> pd.DataFrame:
    """Read a CSV and check that its ``required`` columns are there.

    Raises:
        DataFormatError: a required column is missing (the message lists what was found).
    """
    try:
        df = pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataFormatError(f"{path}: not a readable CSV ({e}).") from e
    missing = [c for c in required if c not in df.columns]
    if missing:
        found = list(df.columns)
        raise DataFormatError(f"{path}: missing column(s) {missing}; the published layout has {list(required)}; "
                              f"found {found[:12]}{' ...' if len(found) > 12 else ''}.")
    return df


def numeric(df: pd.DataFrame, columns: Sequence[str], path: Path) -> np.ndarray:
    """The ``columns`` as float64 ``[rows, len(columns)]``; empty cells become NaN, ``inf`` stays inf.

    Raises:
        DataFormatError: a cell that is not a number, naming the file, line and column.
    """
    out = np.empty((len(df), len(columns)), dtype=np.float64)
    for j, c in enumerate(columns):
        raw = df[c]
        values = pd.to_numeric(raw, errors="coerce")
        bad = values.isna() & raw.notna()
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataFormatError(f"{path}, line {i + 2}, column {c!r}: {raw.iloc[i]!r} is not a number "
                                  f"({int(bad.sum())} such cells in this column).")
        out[:, j] = values.to_numpy(dtype=np.float64)
    return out


def integer_ids(values: np.ndarray, path: Path, column: str) -> np.ndarray:
    """Float or int ids (``6310.0``) as int64; NaN or fractional ids raise, naming the line."""
    bad = ~np.isfinite(values) | (values != np.round(values))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataFormatError(f"{path}, line {i + 2}, column {column!r}: {values[i]!r} is not an integer id "
                              f"({int(bad.sum())} such rows).")
    return values.astype(np.int64)


def check_unique(ids: np.ndarray, path: Path, column: str) -> None:
    """Raise if an id appears on two lines of a one-row-per-id table."""
    _, first, counts = np.unique(ids, return_index=True, return_counts=True)
    if (counts > 1).any():
        dup = ids[first[counts > 1][0]]
        lines = (np.flatnonzero(ids == dup) + 2).tolist()
        raise DataFormatError(f"{path}: {column} {dup} appears on lines {lines}; this table has one row per "
                              f"{column} ({int((counts > 1).sum())} repeated ids).")


def align(table_ids: np.ndarray, wanted: np.ndarray, path: Path, column: str, report: Report) -> np.ndarray:
    """Row of ``table_ids`` for each of ``wanted`` (-1 where absent); ids in one table only are reported.

    Examples:
        >>> align(np.array([5, 3, 9]), np.array([3, 4, 5]), Path("t.csv"), "id", Report()).tolist()
        [1, -1, 0]
    """
    order = np.argsort(table_ids, kind="stable")
    pos = np.searchsorted(table_ids[order], wanted)
    pos = np.minimum(pos, len(order) - 1)
    rows = order[pos] if len(order) else np.zeros(len(wanted), dtype=np.int64)
    found = (table_ids[rows] == wanted) if len(order) else np.zeros(len(wanted), dtype=bool)
    rows = np.where(found, rows, -1)
    if (~found).any():
        lost = wanted[~found]
        report.note(f"{path}: {len(lost)} {column}(s) of the metadata have no row here (e.g. {lost[:5].tolist()}); "
                    f"their tokens from this table are hidden.")
    extra = np.setdiff1d(table_ids, wanted)
    if len(extra):
        lines = (np.flatnonzero(np.isin(table_ids, extra[:5])) + 2).tolist()
        report.note(f"{path}: {len(extra)} {column}(s) are not in the metadata (e.g. {extra[:5].tolist()} "
                    f"on lines {lines}); those rows are ignored.")
    return rows


def read_image(path: Path, mode: str, size: tuple[int, int] | None = None) -> np.ndarray | None:
    """Decode an image to ``[H, W, C]`` uint8 in ``mode`` (``"RGB"``, ``"L"``); None if the file is absent.

    Raises:
        CorruptFileError: truncated or undecodable file, wrong mode or size.
    """
    if not path.is_file():
        return None
    try:
        with Image.open(path) as im:
            im.load()
            if size is not None and im.size != size[::-1]:
                raise CorruptFileError(f"size {im.size[1]}x{im.size[0]}, expected {size[0]}x{size[1]}")
            if im.mode != mode:
                im = im.convert(mode)
            arr = np.asarray(im)
    except (OSError, SyntaxError, ValueError) as e:
        raise CorruptFileError(str(e)) from e
    return arr.reshape(arr.shape[0], arr.shape[1], -1)


