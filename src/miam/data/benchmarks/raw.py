"""A published dataset as the cache sees it: its files, its options, and how to decode rows.

One :class:`RawSource` subclass per benchmark (:mod:`.geoplant`, :mod:`.satbird`,
:mod:`.taxabench`); :func:`~miam.data.benchmarks.prepare.prepare` drives it.
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from miam.data.benchmarks._download import sha256sum
from miam.data.contract.report import Report
from miam.data.contract.spec import ModalitySpec, TaskSpec


class RawSource(ABC):
    """A published dataset as the cache sees it; one subclass per benchmark.

    The constructor only checks paths (cheap, used on every load); :meth:`open` parses
    the tables (used by :func:`prepare` only); :meth:`fill` decodes a chunk of rows.

    Subclasses set :attr:`name` and, after :meth:`open`, :attr:`specs`, :attr:`task`,
    :attr:`n_rows` and :attr:`report`.
    """

    #: the dataset's name in the registry and in cache folder names
    name: str = ""
    #: the benchmark's name in messages and docstrings
    title: str = ""
    #: the split its loader makes by default, with the share of each part and the block side in km
    #: (``spatial``); :func:`~miam.data.benchmarks.cached.open_cache` documents the kinds
    default_split: str = "spatial"
    default_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    default_block_km: float = 10.0

    def __init__(self, root: str | Path) -> None:
        #: the folder holding the published files
        self.root = Path(root)
        self.specs: list[ModalitySpec] = []
        self.task: TaskSpec | None = None
        self.n_rows = 0
        self.report = Report()

    @abstractmethod
    def cache_params(self) -> dict[str, Any]:
        """The options that change the cache's content (JSON-serialisable)."""

    @abstractmethod
    def table_files(self) -> list[Path]:
        """Files checked by sha256 (tables, index files)."""

    @abstractmethod
    def sample_dirs(self) -> list[Path]:
        """Folders of per-sample files, checked by a digest of (path, size, mtime)."""

    @abstractmethod
    def open(self) -> None:
        """Parse the tables; set ``specs``, ``task``, ``n_rows``; record findings in ``report``."""

    @abstractmethod
    def fill(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Rows ``[start, stop)`` of every array of :meth:`layout` (``tokens/<m>``, ``present/<m>``, ``target``);
        :func:`prepare` zeroes the tokens that are not present."""

    @abstractmethod
    def rows(self) -> dict[str, np.ndarray]:
        """Per-row metadata known after :meth:`open`: ``ids`` [N] int64, ``names`` [N] str, ``coords`` [N, 2]
        (lon, lat) float64, and optionally ``official_split`` [N] str (train/val/test)."""

    def token_dtype(self, modality: str) -> np.dtype:
        """Storage dtype of a modality's tokens (images override this with uint8)."""
        return np.dtype(np.float32)

    def stat_axes(self, spec: ModalitySpec) -> tuple[int, ...]:
        """Axes of ``[T, *token_shape]`` that share one mean/std (default: one per token element)."""
        return ()

    def layout(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Per-row shape and dtype of every chunked array."""
        out: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        for s in self.specs:
            out[f"tokens/{s.name}"] = ((s.n_tokens, *s.token_shape), self.token_dtype(s.name))
            out[f"present/{s.name}"] = ((s.n_tokens,), np.dtype(bool))
        if self.task.kind == "multiclass":
            out["target"] = ((), np.dtype(np.int64))
        else:
            out["target"] = ((self.task.n_outputs,), np.dtype(np.float32))
        return out

    def input_digest(self) -> dict[str, str]:
        """sha256 of every table and (path, size, mtime) digest of every sample folder, keyed by their
        paths relative to :attr:`root` (so the dataset folder can move with its cache)."""
        digest = {}
        for f in self.table_files():
            digest[os.path.relpath(f, self.root)] = sha256sum(f)
        for d in self.sample_dirs():
            digest[os.path.relpath(d, self.root) + "/"] = dir_digest(d)
        return digest


def dir_digest(folder: Path) -> str:
    """A digest of the relative path, size and mtime of every file under ``folder``."""
    entries = []
    stack = [Path(folder)]
    while stack:
        here = stack.pop()
        if not here.is_dir():
            continue
        with os.scandir(here) as it:
            for e in it:
                if e.is_dir(follow_symlinks=True):
                    stack.append(Path(e.path))
                else:
                    st = e.stat()
                    entries.append(f"{os.path.relpath(e.path, folder)}\0{st.st_size}\0{st.st_mtime_ns}")
    entries.sort()
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()
