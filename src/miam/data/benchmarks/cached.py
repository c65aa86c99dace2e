"""A prepared cache opened as a dataset: checked against its raw files, split, standardised per batch.

:func:`open_cache` is the one path from a benchmark's raw source to a
:class:`CachedDataset`: every loader (``load_geoplant``, ``load_satbird``,
``load_taxabench``) and ``miam prepare`` go through it. It prepares the cache on first use
(:func:`~miam.data.benchmarks.prepare.prepare`), refuses a stale one, and reads or writes
the split files that make a run reproducible.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import Dataset

from miam.data.benchmarks.prepare import cache_key, cache_root_of, prepare
from miam.data.benchmarks.raw import RawSource
from miam.data.contract.batch import MultimodalBatch
from miam.data.contract.dataset import MultimodalDataset
from miam.data.contract.spec import ModalitySpec, TaskSpec
from miam.data.contract.splits import SPLIT_NAMES, lonlat_to_km, spatial_block_split, stratified_split
from miam.errors import InvalidParameterError, StaleCacheError

logger = logging.getLogger("miam.data")

#: the options of every benchmark loader that shape its split or place its cache, not the cache's content
SPLIT_OPTIONS = ("split", "block_km", "fractions", "seed", "cache_dir", "workers")


def open_cache(
    source: RawSource,
    cache_root: str | Path | None = None,
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
        cache_root: where caches live (default ``miam_cache`` inside the dataset's folder).
        split: ``"official"`` (the dataset's own split files), ``"spatial"`` (blocks of
            ``block_km`` km, whole blocks per split) or ``"stratified"`` (by class, multiclass only).
        fractions: train/val/test shares for ``spatial`` and ``stratified``.
        seed: the split's seed.
        check: recompute the inputs' checksums and refuse a stale cache.
        prepare_if_missing: run :func:`prepare` when there is no complete cache.

    Raises:
        StaleCacheError: the raw files or options changed since the cache was built.
    """
    cdir = cache_root_of(source, cache_root) / cache_key(source)
    manifest_path = cdir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    if not manifest.get("complete"):
        if not prepare_if_missing:
            raise StaleCacheError(f"No complete cache in {cdir}; run `miam prepare {source.name} "
                                  f"--root {source.root}` first.")
        prepare(source, cache_root, workers=workers, progress=progress)
    elif check:
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


def benchmark_loader(source: type[RawSource]) -> Callable[..., CachedDataset]:
    """The ``load_<name>`` function of a benchmark: the parameters of ``source``, then
    :data:`SPLIT_OPTIONS` (with the source's default split), in one explicit signature, so that
    ``help()``, the registry's parameter check and ``miam prepare`` see every option; it opens
    the cache through :func:`open_cache`, the one path of the three benchmarks.

    Examples:
        >>> from miam.data.benchmarks.satbird import load_satbird
        >>> print(inspect.signature(load_satbird))  # doctest: +ELLIPSIS
        (root: ..., env_source: ...'csv', ..., *, split='official', block_km=5.0, fractions=(0.7, 0.15, 0.15), seed=0, cache_dir=None, workers=1) -> ...
    """
    options = {"split": source.default_split, "block_km": source.default_block_km,
               "fractions": source.default_fractions, "seed": 0, "cache_dir": None, "workers": 1}
    own = list(inspect.signature(source).parameters.values())
    signature = inspect.Signature([*own, *(inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v)
                                           for k, v in options.items())], return_annotation="CachedDataset")

    def load(*args: Any, **kwargs: Any) -> CachedDataset:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        params = dict(bound.arguments)
        split = {k: params.pop(k) for k in SPLIT_OPTIONS}
        return open_cache(source(**params), split["cache_dir"], split["split"], split["block_km"], split["fractions"],
                          split["seed"], workers=split["workers"])

    load.__signature__ = signature
    load.__name__ = load.__qualname__ = f"load_{source.name}"
    load.__module__ = source.__module__
    load.__doc__ = (f"{source.title} as a cached :class:`~miam.data.MultimodalDataset`, prepared on first use.\n\n"
                    f"Takes the parameters of :class:`~{source.__module__}.{source.__name__}`, then the split "
                    f"(``split``, default {source.default_split!r}; ``block_km``, ``fractions``, ``seed``: see "
                    f":func:`~miam.data.benchmarks.cached.open_cache`), ``cache_dir`` (default ``root/miam_cache``) "
                    f"and ``workers`` (processes decoding files while preparing).")
    return load


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
            info={"source": f"miam.data.benchmarks.{manifest['dataset']}", "cache_dir": str(cdir),
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
