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

import hashlib
import json
import shutil
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from miam.data.benchmarks.raw import RawSource
from miam.data.contract.report import Report
from miam.data.contract.spec import ModalitySpec

#: bump when the cache layout changes: older caches are then rebuilt
CACHE_VERSION = 1
#: a prepare chunk holds about this many bytes of tokens
CHUNK_BYTES = 64 << 20


def cache_root_of(source: RawSource, cache_root: str | Path | None) -> Path:
    """Where ``source``'s caches live: ``cache_root``, or ``miam_cache`` inside the dataset's folder."""
    return Path(cache_root) if cache_root else source.root / "miam_cache"


def cache_key(source: RawSource) -> str:
    """The folder name of ``source``'s cache: dataset name + hash of its options."""
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
    cache_root: str | Path | None = None,
    force: bool = False,
    workers: int = 1,
    progress: bool = True,
    chunk_rows: int | None = None,
    stop_after: int | None = None,
) -> Path:
    """Build (or finish, or reuse) the cache of ``source`` under ``cache_root``.

    Args:
        source: the raw dataset.
        cache_root: folder holding one sub-folder per dataset and option set (default
            ``miam_cache`` inside the dataset's folder).
        force: rebuild even if a complete, up-to-date cache exists.
        workers: processes decoding files in parallel (fork; 1 = in this process).
        progress: show a tqdm bar.
        chunk_rows: rows per flushed chunk (default: about 64 MB of tokens).
        stop_after: stop after this many chunks, leaving a resumable cache (for tests).

    Returns:
        the cache folder.
    """
    global _WORKER_SOURCE
    cdir = cache_root_of(source, cache_root) / cache_key(source)
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
