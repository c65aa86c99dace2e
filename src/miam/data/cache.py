"""The ``prepare`` step: published raw files -> a memory-mapped numpy cache with a manifest.

Why numpy memmaps (one ``.npy`` per array) rather than zarr or parquet: a training batch
is one fancy-indexing read per array, with no decoding and no extra dependency; the
page cache does the rest. ``benchmarks/data_pipeline.py`` measures it against the
model's step rate.

Layout of a cache folder ``<cache_root>/<dataset>-<key>/`` (``key`` hashes the loader
options that change its content, so two option sets never clobber each other)::

    manifest.json          # complete cache: specs, task, normalisation, inputs' checksums, report
    progress.json          # only while preparing: rows done, running statistics (resume point)
    tokens/<modality>.npy  # [N, T_m, *token_shape], compact dtype (uint8 images, float32 values)
    present/<modality>.npy # bool [N, T_m]
    target.npy ids.npy coords.npy names.npy
    splits/<name>.csv      # id, name, split: the split each sample fell in, kept for reproducibility

Stale caches are detected: the manifest keeps the sha256 of every table (CSV/JSON/npy)
and a digest of (path, size, mtime) of every per-sample file; :func:`open_cache` recomputes
both and refuses a cache built from other files. An interrupted ``prepare`` resumes from
its last flushed chunk.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from miam.data._download import sha256sum
from miam.data.batch import MultimodalBatch
from miam.data.dataset import MultimodalDataset, spatial_block_split
from miam.data.spec import ModalitySpec, TaskSpec
from miam.errors import InvalidParameterError, StaleCacheError

logger = logging.getLogger("miam.data")

#: bump when the cache layout changes: older caches are then rebuilt
CACHE_VERSION = 1
#: a prepare chunk holds about this many bytes of tokens
CHUNK_BYTES = 64 << 20


@dataclass
class Report:
    """What preparation found: missing and corrupt files, table inconsistencies.

    Attributes:
        missing_files: ``{modality: count}`` of samples whose file is absent.
        corrupt_files: ``{modality: count}`` of samples whose file could not be decoded.
        examples: up to 20 ``"file (row): problem"`` lines, for the messages.
        notes: table-level findings (ids in one table only, NaN cells, dropped rows).
        hidden_tokens: ``{modality: count}`` of tokens hidden for any reason (filled at the end).
    """

    missing_files: dict[str, int] = field(default_factory=dict)
    corrupt_files: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    hidden_tokens: dict[str, int] = field(default_factory=dict)

    def missing(self, modality: str, n: int = 1) -> None:
        self.missing_files[modality] = self.missing_files.get(modality, 0) + n

    def corrupt(self, modality: str, where: str, problem: str) -> None:
        """Count a corrupt file and warn, naming the file and the row."""
        self.corrupt_files[modality] = self.corrupt_files.get(modality, 0) + 1
        line = f"{where}: {problem}"
        if len(self.examples) < 20:
            self.examples.append(line)
        warnings.warn(f"{line}; its {modality!r} tokens are hidden.", stacklevel=3)

    def note(self, text: str) -> None:
        """Record a table-level finding and warn."""
        self.notes.append(text)
        warnings.warn(text, stacklevel=3)

    def merge(self, other: Report) -> None:
        for k, v in other.missing_files.items():
            self.missing(k, v)
        for k, v in other.corrupt_files.items():
            self.corrupt_files[k] = self.corrupt_files.get(k, 0) + v
        self.examples.extend(other.examples[: max(0, 20 - len(self.examples))])
        self.notes.extend(n for n in other.notes if n not in self.notes)

    def to_dict(self) -> dict[str, Any]:
        return {"missing_files": self.missing_files, "corrupt_files": self.corrupt_files,
                "examples": self.examples, "notes": self.notes, "hidden_tokens": self.hidden_tokens}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Report:
        return cls(dict(d.get("missing_files", {})), dict(d.get("corrupt_files", {})),
                   list(d.get("examples", [])), list(d.get("notes", [])), dict(d.get("hidden_tokens", {})))


class RawSource(ABC):
    """A published dataset as the cache sees it; one subclass per benchmark.

    The constructor only checks paths (cheap, used on every load); :meth:`open` parses
    the tables (used by :func:`prepare` only); :meth:`fill` decodes a chunk of rows.

    Subclasses set :attr:`name` and, after :meth:`open`, :attr:`specs`, :attr:`task`,
    :attr:`n_rows` and :attr:`report`.
    """

    #: the dataset's name in the registry and in cache folder names
    name: str = ""

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
    import hashlib

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


def cache_key(source: RawSource) -> str:
    """The folder name of ``source``'s cache: dataset name + hash of its options."""
    import hashlib

    blob = json.dumps({"dataset": source.name, "version": CACHE_VERSION, "params": source.cache_params()},
                      sort_keys=True, default=str)
    return f"{source.name}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=_json_default))
    tmp.replace(path)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


class _RunningStats:
    """Per-modality sums of present token values, reduced to the modality's statistic shape."""

    def __init__(self, specs: Sequence[ModalitySpec], axes: Mapping[str, tuple[int, ...]],
                 state: Mapping[str, Any] | None = None) -> None:
        self.axes = {s.name: tuple(a + 1 for a in axes[s.name]) for s in specs}  # +1: the row axis
        self.sums: dict[str, list[np.ndarray]] = {}
        for s in specs:
            if state and s.name in state:
                self.sums[s.name] = [np.asarray(v, dtype=np.float64) for v in state[s.name]]
            else:
                shape = [1 if i + 1 in self.axes[s.name] else n for i, n in enumerate((s.n_tokens, *s.token_shape))]
                self.sums[s.name] = [np.zeros(shape), np.zeros(shape), np.zeros(shape)]

    def update(self, name: str, values: np.ndarray, present: np.ndarray) -> None:
        """Add a chunk whose absent tokens hold zeros."""
        axes = (0, *self.axes[name])
        x = values.astype(np.float32, copy=False)
        n, s1, s2 = self.sums[name]
        s1 += x.sum(axis=axes, keepdims=True, dtype=np.float64)[0]
        s2 += np.square(x).sum(axis=axes, keepdims=True, dtype=np.float64)[0]
        per_token = present.sum(axis=0).astype(np.float64).reshape(present.shape[1], *([1] * (x.ndim - 2)))
        if 1 in axes:
            per_token = per_token.sum(axis=0, keepdims=True)
        reduced = int(np.prod([x.shape[a] for a in axes if a >= 2]))
        n += np.broadcast_to(per_token * reduced, n.shape)

    def finish(self) -> dict[str, dict[str, Any]]:
        out = {}
        for name, (n, s1, s2) in self.sums.items():
            n = np.maximum(n, 1)
            mean = s1 / n
            std = np.sqrt(np.maximum(s2 / n - mean ** 2, 0))
            std = np.where(std > 1e-8, std, 1.0)
            out[name] = {"mean": mean.astype(np.float32), "std": std.astype(np.float32)}
        return out

    def state(self) -> dict[str, list]:
        return {k: [a.tolist() for a in v] for k, v in self.sums.items()}


_WORKER_SOURCE: RawSource | None = None


def _worker_fill(span: tuple[int, int]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    assert _WORKER_SOURCE is not None  # set before the fork
    _WORKER_SOURCE.report = Report()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        arrays = _WORKER_SOURCE.fill(*span)
    return arrays, _WORKER_SOURCE.report.to_dict()


def prepare(
    source: RawSource,
    cache_root: str | Path,
    force: bool = False,
    workers: int = 1,
    progress: bool = True,
    chunk_rows: int | None = None,
    stop_after: int | None = None,
) -> Path:
    """Build (or finish, or reuse) the cache of ``source`` under ``cache_root``.

    Args:
        source: the raw dataset.
        cache_root: folder holding one sub-folder per dataset and option set.
        force: rebuild even if a complete, up-to-date cache exists.
        workers: processes decoding files in parallel (fork; 1 = in this process).
        progress: show a tqdm bar.
        chunk_rows: rows per flushed chunk (default: about 64 MB of tokens).
        stop_after: stop after this many chunks, leaving a resumable cache (for tests).

    Returns:
        the cache folder.
    """
    global _WORKER_SOURCE
    cdir = Path(cache_root) / cache_key(source)
    manifest_path, progress_path = cdir / "manifest.json", cdir / "progress.json"
    inputs = source.input_digest()
    if manifest_path.is_file() and not force:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("complete") and manifest.get("inputs") == inputs:
            return cdir
    source.open()
    layout = source.layout()
    layout_json = {k: [list(shape), dt.str] for k, (shape, dt) in layout.items()}
    n = source.n_rows
    state = json.loads(progress_path.read_text()) if progress_path.is_file() and not force else None
    resume = state is not None and state.get("inputs") == inputs and state.get("layout") == layout_json
    if not resume:
        if cdir.exists():
            shutil.rmtree(cdir)
        (cdir / "tokens").mkdir(parents=True)
        (cdir / "present").mkdir()
        state = {"inputs": inputs, "layout": layout_json, "rows_done": 0, "stats": None, "report": {}}
    arrays = {k: np.lib.format.open_memmap(cdir / f"{k}.npy", mode="r+" if resume else "w+",
                                           dtype=dt, shape=(n, *shape))
              for k, (shape, dt) in layout.items()}
    stats = _RunningStats(source.specs, {s.name: source.stat_axes(s) for s in source.specs}, state["stats"])
    report = Report.from_dict(state["report"])
    report.merge(source.report)
    row_bytes = sum(int(np.prod(shape)) * dt.itemsize for (shape, dt) in layout.values())
    step = chunk_rows or int(min(4096, max(1, CHUNK_BYTES // max(row_bytes, 1))))
    spans = [(a, min(a + step, n)) for a in range(state["rows_done"], n, step)]
    if stop_after is not None:
        spans = spans[:stop_after]
    start = time.perf_counter()
    bar = tqdm(total=n, initial=state["rows_done"], unit="rows", desc=f"prepare {source.name}",
               disable=not progress)
    pool = None
    try:
        if workers > 1 and len(spans) > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            _WORKER_SOURCE = source
            pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("fork"))
            results = pool.map(_worker_fill, spans)
        else:
            results = (_local_fill(source, span) for span in spans)
        for (a, b), (chunk, chunk_report) in zip(spans, results):
            if pool is not None:
                _replay_warnings(Report.from_dict(chunk_report))
            report.merge(Report.from_dict(chunk_report))
            for s in source.specs:  # a hidden token holds zeros, never a partial value
                chunk[f"tokens/{s.name}"][~chunk[f"present/{s.name}"]] = 0
                stats.update(s.name, chunk[f"tokens/{s.name}"], chunk[f"present/{s.name}"])
            for k, arr in arrays.items():
                arr[a:b] = chunk[k]
            for arr in arrays.values():
                arr.flush()
            state.update(rows_done=b, stats=stats.state(), report=report.to_dict())
            _write_json(progress_path, state)
            bar.update(b - a)
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown()
            _WORKER_SOURCE = None
    if state["rows_done"] < n:
        return cdir
    for s in source.specs:
        report.hidden_tokens[s.name] = int((~arrays[f"present/{s.name}"]).sum())
    rows = source.rows()
    np.save(cdir / "ids.npy", np.asarray(rows["ids"], dtype=np.int64))
    np.save(cdir / "names.npy", np.asarray(rows["names"]).astype(str))
    np.save(cdir / "coords.npy", np.asarray(rows["coords"], dtype=np.float64))
    if "official_split" in rows:
        np.save(cdir / "official_split.npy", np.asarray(rows["official_split"]).astype(str))
    manifest = {
        "version": CACHE_VERSION, "dataset": source.name, "params": source.cache_params(), "inputs": inputs,
        "n_rows": n, "specs": [s.to_dict() for s in source.specs], "task": source.task.to_dict(),
        "norm": {k: {kk: vv.tolist() for kk, vv in v.items()} for k, v in stats.finish().items()},
        "token_dtypes": {s.name: source.token_dtype(s.name).str for s in source.specs},
        "report": report.to_dict(), "prepare_seconds": round(time.perf_counter() - start, 2), "complete": True,
    }
    _write_json(manifest_path, manifest)
    progress_path.unlink()
    return cdir


def _local_fill(source: RawSource, span: tuple[int, int]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    source.report = Report()
    arrays = source.fill(*span)
    return arrays, source.report.to_dict()


def _replay_warnings(report: Report) -> None:
    for line in report.examples:
        warnings.warn(f"{line}; its tokens are hidden.", stacklevel=3)


def open_cache(
    source: RawSource,
    cache_root: str | Path,
    split: str = "spatial",
    block_km: float = 10.0,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    check: bool = True,
    prepare_if_missing: bool = True,
    workers: int = 1,
    progress: bool = True,
) -> CachedDataset:
    """The cached dataset of ``source``: prepared on first use, refused when stale.

    Args:
        source: the raw dataset (its paths and options).
        cache_root: where caches live.
        split: ``"official"`` (the dataset's own split files), ``"spatial"`` (blocks of
            ``block_km`` km, whole blocks per split) or ``"stratified"`` (by class, multiclass only).
        fractions: train/val/test shares for ``spatial`` and ``stratified``.
        seed: the split's seed.
        check: recompute the inputs' checksums and refuse a stale cache.
        prepare_if_missing: run :func:`prepare` when there is no complete cache.

    Raises:
        StaleCacheError: the raw files or options changed since the cache was built.
    """
    cdir = Path(cache_root) / cache_key(source)
    manifest_path = cdir / "manifest.json"
    complete = manifest_path.is_file() and json.loads(manifest_path.read_text()).get("complete")
    if not complete:
        if not prepare_if_missing:
            raise StaleCacheError(f"No complete cache in {cdir}; run `miam prepare {source.name} "
                                  f"--root {source.root}` first.")
        prepare(source, cache_root, workers=workers, progress=progress)
    elif check:
        manifest = json.loads(manifest_path.read_text())
        now = source.input_digest()
        changed = sorted(k for k in set(now) | set(manifest["inputs"]) if now.get(k) != manifest["inputs"].get(k))
        if changed:
            raise StaleCacheError(
                f"The cache {cdir} was built from other files: {changed[:3]} changed since. "
                f"Run `miam prepare {source.name} --root {source.root} --force` to rebuild it.")
    ds = CachedDataset(cdir)
    ds.splits = resolve_splits(ds, cdir, split, block_km, fractions, seed)
    ds.log_report()
    return ds


class RawBatch(MultimodalBatch):
    """A batch as the cache stores it (compact dtypes, not standardised): what
    :meth:`CachedDataset.read` returns; :meth:`CachedDataset.finish` makes the model's batch.

    The training loaders carry it to the device (pinned on CUDA) and finish it there, so
    images cross the bus as uint8.
    """

    def pin_memory(self) -> RawBatch:
        pin = lambda t: t.pin_memory()  # noqa: E731
        return RawBatch({m: pin(t) for m, t in self.tokens.items()}, {m: pin(t) for m, t in self.present.items()},
                        pin(self.target), None if self.ids is None else pin(self.ids))


class RawSplit(Dataset):
    """Rows of a :class:`CachedDataset` read as :class:`RawBatch` (``__getitems__`` -> :meth:`CachedDataset.read`)."""

    def __init__(self, base: CachedDataset, indices: np.ndarray) -> None:
        self.base, self.indices = base, np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitems__(self, indices: Sequence[int]) -> RawBatch:
        return self.base.read(self.indices[np.asarray(indices, dtype=np.int64)])


class CachedDataset(MultimodalDataset):
    """A :class:`MultimodalDataset` read from a cache folder; every array is an ``np.memmap``.

    Tokens are stored compactly (uint8 images, float32 values) and standardised per batch
    with the statistics of the prepare step (means/stds over present values), so nothing
    is decoded per sample and memory does not grow with the number of samples.

    Args:
        cache_dir: a folder written by :func:`prepare`.
    """

    def __init__(self, cache_dir: str | Path) -> None:
        cdir = Path(cache_dir)
        manifest = json.loads((cdir / "manifest.json").read_text())
        specs = [ModalitySpec.from_dict(s) for s in manifest["specs"]]
        tokens = {s.name: np.load(cdir / "tokens" / f"{s.name}.npy", mmap_mode="r") for s in specs}
        present = {s.name: np.load(cdir / "present" / f"{s.name}.npy", mmap_mode="r") for s in specs}
        super().__init__(
            tokens, np.load(cdir / "target.npy", mmap_mode="r"), specs, TaskSpec.from_dict(manifest["task"]),
            present=present, ids=np.load(cdir / "ids.npy"), coords=np.load(cdir / "coords.npy"),
            info={"source": f"miam.data.{manifest['dataset']}", "cache_dir": str(cdir),
                  "params": manifest["params"], "report": manifest["report"],
                  "prepare_seconds": manifest.get("prepare_seconds")},
        )
        self.cache_dir = cdir
        self.names = np.load(cdir / "names.npy")
        official = cdir / "official_split.npy"
        self.official_split = np.load(official) if official.is_file() else None
        inv_std = {m: 1.0 / torch.tensor(v["std"]) for m, v in manifest["norm"].items()}
        self._norm = {m: (inv_std[m], -torch.tensor(v["mean"]) * inv_std[m]) for m, v in manifest["norm"].items()}

    def __getitems__(self, indices: Sequence[int]) -> MultimodalBatch:
        return self.finish(self.read(indices))

    def raw_split(self, name: str) -> RawSplit:
        """Split ``name`` read as :class:`RawBatch` (for loaders that finish batches on the device)."""
        return RawSplit(self, self.split(name).indices)

    def read(self, indices: Sequence[int]) -> RawBatch:
        """The rows ``indices`` as stored (uint8 images, raw values): one gather per array.

        Nothing is converted or standardised, so the read runs at the speed of a plain numpy
        read of the same bytes (``benchmarks/data_pipeline.py``); :meth:`finish` does the rest,
        on whatever device the batch is. ``np.take`` gathers straight into the batch's order:
        sorting the rows first and permuting back copies the bytes twice, for no gain on rows
        of kilobytes (an image) or on a page-cached file.
        """
        idx = np.asarray(indices, dtype=np.int64)
        take = lambda arr: torch.from_numpy(np.take(arr, idx, axis=0))  # noqa: E731
        return RawBatch({m: take(a) for m, a in self.tokens.items()}, {m: take(a) for m, a in self.present.items()},
                        take(self.target), torch.from_numpy(self.ids[idx]))

    def finish(self, raw: MultimodalBatch) -> MultimodalBatch:
        """The model's batch of a :meth:`read` batch: tokens as float32 standardised with the prepare
        step's statistics, 0 under missing tokens; computed on ``raw``'s device, in place where
        ``raw`` already holds float32 (a read batch is used once)."""
        tokens = {}
        for m, x in raw.tokens.items():
            scale, shift = (t.to(x.device) for t in self._norm[m])
            pres = raw.present[m].reshape(*raw.present[m].shape, *([1] * (x.ndim - 2)))
            x = x.to(torch.float32)                   # a new buffer for uint8, the read's own one for float32
            tokens[m] = torch.addcmul(shift, x, scale, out=x).masked_fill_(~pres, 0.0)   # in place: no new pages
        return MultimodalBatch(tokens, dict(raw.present), raw.target, raw.ids)

    def positive_counts(self, indices: Any = None) -> Tensor:
        """Per-output counts, summed in chunks so the target is never copied whole."""
        idx = np.arange(len(self)) if indices is None else np.sort(np.asarray(indices, dtype=np.int64))
        if self.task.kind == "multiclass":
            return torch.bincount(torch.from_numpy(np.asarray(self.target[idx])),
                                  minlength=self.task.n_outputs).double()
        total = np.zeros(self.task.n_outputs, dtype=np.float64)
        for a in range(0, len(idx), 8192):
            total += self.target[idx[a:a + 8192]].sum(axis=0, dtype=np.float64)
        return torch.from_numpy(total)

    def missing_report(self) -> dict[str, float]:
        """Share of hidden tokens per modality (from the manifest: no pass over the data)."""
        hidden = self.info["report"]["hidden_tokens"]
        return {s.name: hidden.get(s.name, 0) / (len(self) * s.n_tokens) for s in self.specs}

    def log_report(self) -> None:
        """Say what is hidden and why: missing files, corrupt files, NaN values."""
        rep = self.info["report"]
        share = self.missing_report()
        parts = [f"{m}: {rep['hidden_tokens'].get(m, 0)} tokens ({100 * share[m]:.1f}%)" for m in share]
        lines = [f"{self.info['source']}: {len(self)} samples; hidden tokens " + ", ".join(parts)]
        if rep["missing_files"]:
            lines.append(f"  missing files per modality: {rep['missing_files']}")
        if rep["corrupt_files"]:
            lines.append(f"  corrupt files per modality: {rep['corrupt_files']} (e.g. {rep['examples'][:2]})")
        level = logging.WARNING if any(rep["hidden_tokens"].values()) else logging.INFO
        logger.log(level, "\n".join(lines))


def lonlat_to_km(coords: np.ndarray) -> np.ndarray:
    """(lon, lat) degrees -> (x, y) km on the sinusoidal (equal-area) projection.

    Examples:
        >>> lonlat_to_km(np.array([[0.0, 0.0], [1.0, 60.0]])).round(1).tolist()
        [[0.0, 0.0], [55.6, 6671.7]]
    """
    r = 6371.0088
    lon, lat = np.radians(coords[:, 0]), np.radians(coords[:, 1])
    return np.stack([r * lon * np.cos(lat), r * lat], axis=1)


def stratified_split(labels: np.ndarray, fractions: Sequence[float], names: Sequence[str],
                     seed: int = 0) -> dict[str, np.ndarray]:
    """Per class, shuffle and cut by ``fractions`` (every class keeps its share in every split).

    Examples:
        >>> s = stratified_split(np.repeat(np.arange(3), 10), (0.8, 0.1, 0.1), ("train", "val", "test"))
        >>> [len(s[k]) for k in ("train", "val", "test")]
        [24, 3, 3]
    """
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(labels))
    order = perm[np.argsort(labels[perm], kind="stable")]          # shuffled within each class
    cls = labels[order]
    first = np.searchsorted(cls, cls, side="left")
    count = np.bincount(cls)[cls]
    rank = (np.arange(len(cls)) - first) / count                    # position within its class in [0, 1)
    which = np.searchsorted(np.cumsum(fractions)[:-1], rank + 1e-9, side="right")
    return {name: np.sort(order[which == i]) for i, name in enumerate(names)}


SPLIT_NAMES = ("train", "val", "test")
SPLITS = ("official", "spatial", "stratified")


def resolve_splits(ds: CachedDataset, cdir: Path, split: str, block_km: float, fractions: Sequence[float],
                   seed: int) -> dict[str, np.ndarray]:
    """The train/val/test indices, read from ``splits/<name>.csv`` if saved, else made and saved."""
    if split not in SPLITS:
        raise InvalidParameterError(f"The 'split' parameter must be a str among {list(SPLITS)}. Got {split!r} instead.")
    if split == "official":
        label = "official"
    elif split == "spatial":
        label = f"spatial_{block_km:g}km_{'-'.join(f'{f:g}' for f in fractions)}_seed{seed}"
    else:
        label = f"stratified_{'-'.join(f'{f:g}' for f in fractions)}_seed{seed}"
    path = cdir / "splits" / f"{label}.csv"
    if path.is_file():
        table = pd.read_csv(path)
        which = table["split"].to_numpy().astype(str)
    else:
        which = np.full(len(ds), "", dtype=object)
        if split == "official":
            if ds.official_split is None:
                raise InvalidParameterError(f"{ds.info['source']} ships no official split; use 'spatial' "
                                            f"or 'stratified'.")
            which = ds.official_split.astype(object)
        elif split == "spatial":
            made = spatial_block_split(lonlat_to_km(ds.coords), block_km, fractions, SPLIT_NAMES, seed)
            for k, v in made.items():
                which[v] = k
        else:
            if ds.task.kind != "multiclass":
                raise InvalidParameterError("A stratified split needs a multiclass task; use 'spatial'.")
            made = stratified_split(np.asarray(ds.target), fractions, SPLIT_NAMES, seed)
            for k, v in made.items():
                which[v] = k
        path.parent.mkdir(exist_ok=True)
        pd.DataFrame({"id": ds.ids, "name": ds.names, "split": which}).to_csv(path, index=False)
    return {k: np.flatnonzero(which == k) for k in SPLIT_NAMES if (which == k).any()}
