"""An in-memory (or memory-mapped) multimodal dataset that hands out whole batches."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from miam.data.contract.batch import MultimodalBatch, nan_to_present
from miam.data.contract.spec import ModalitySpec, TaskSpec, check_unique_names
from miam.errors import InvalidParameterError, ShapeError


class MultimodalDataset(Dataset):
    """Arrays per modality, with presence, targets, coordinates and named splits.

    Indexing with a list of indices (``__getitems__``) returns a ready
    :class:`MultimodalBatch` in one fancy-indexing call per array, so a
    DataLoader never loops over samples in Python.

    Args:
        tokens: ``{modality: array [N, T_m, *token_shape]}``; NaN/inf marks missing tokens.
        target: ``[N, n_species]`` (multilabel, 0/1) or ``[N]`` (multiclass, int).
        specs: one :class:`ModalitySpec` per modality, in model order.
        task: the :class:`TaskSpec`.
        present: optional ``{modality: bool [N, T_m]}``; missing where False, on top of NaN.
        ids: optional ``[N]`` integer sample ids.
        coords: optional ``[N, 2]`` (x, y) or (lon, lat) per sample, for spatial splits and maps.
        splits: optional ``{name: indices}``.
        info: free-form metadata (ground truth, source, counts of missing data).
    """

    def __init__(
        self,
        tokens: Mapping[str, Any],
        target: Any,
        specs: Sequence[ModalitySpec],
        task: TaskSpec,
        present: Mapping[str, Any] | None = None,
        ids: Any = None,
        coords: Any = None,
        splits: Mapping[str, Any] | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> None:
        check_unique_names(specs)
        self.specs = list(specs)
        self.task = task
        self.tokens: dict[str, np.ndarray] = {}
        self.present: dict[str, np.ndarray] = {}
        n = len(target)
        for s in self.specs:
            if s.name not in tokens:
                raise ShapeError(f"No tokens given for modality {s.name!r}; got {list(tokens)}.")
            raw = tokens[s.name]
            want = (n, s.n_tokens, *s.token_shape)
            if tuple(raw.shape) != want:
                raise ShapeError(f"Expected tokens[{s.name!r}] of shape {list(want)}, got {list(raw.shape)}.")
            if isinstance(raw, np.memmap) and present is not None and s.name in present:
                values, pres = raw, np.asarray(present[s.name], dtype=bool)
            else:
                v, p = nan_to_present(torch.as_tensor(np.asarray(raw, dtype=np.float32)), len(s.token_shape))
                values, pres = v.numpy(), p.numpy()
                if present is not None and s.name in present:
                    pres = pres & np.asarray(present[s.name], dtype=bool)
            if pres.shape != (n, s.n_tokens):
                raise ShapeError(f"Expected present[{s.name!r}] of shape {[n, s.n_tokens]}, got {list(pres.shape)}.")
            self.tokens[s.name] = values
            self.present[s.name] = pres
        self.target = np.asarray(target, dtype=np.float32 if task.per_output else np.int64)
        want_t = (n, task.n_outputs) if task.per_output else (n,)
        if self.target.shape != want_t:
            raise ShapeError(f"Expected target of shape {list(want_t)} for a {task.kind} task, "
                             f"got {list(self.target.shape)}.")
        self.ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
        self.coords = None if coords is None else np.asarray(coords, dtype=np.float64)
        self.splits = {k: np.asarray(v, dtype=np.int64) for k, v in (splits or {}).items()}
        self.info = dict(info or {})

    def __len__(self) -> int:
        return len(self.target)

    @property
    def modalities(self) -> list[str]:
        return [s.name for s in self.specs]

    def spec(self, name: str) -> ModalitySpec:
        for s in self.specs:
            if s.name == name:
                return s
        raise InvalidParameterError(f"Unknown modality {name!r}; valid names are {self.modalities}.")

    def select(self, modalities: Sequence[str]) -> MultimodalDataset:
        """The same samples, targets and splits with only ``modalities`` (a unimodal reference, an ablation)."""
        specs = [self.spec(m) for m in modalities]
        return MultimodalDataset({s.name: self.tokens[s.name] for s in specs}, self.target, specs, self.task,
                                 present={s.name: self.present[s.name] for s in specs}, ids=self.ids,
                                 coords=self.coords, splits=self.splits, info=self.info)

    def __getitems__(self, indices: Sequence[int]) -> MultimodalBatch:
        idx = np.asarray(indices, dtype=np.int64)
        return MultimodalBatch(
            {m: torch.from_numpy(np.ascontiguousarray(a[idx])) for m, a in self.tokens.items()},
            {m: torch.from_numpy(np.ascontiguousarray(a[idx])) for m, a in self.present.items()},
            torch.from_numpy(self.target[idx]),
            torch.from_numpy(self.ids[idx]),
        )

    def __getitem__(self, index: int) -> dict[str, Any]:
        batch = self.__getitems__([index])
        return {
            "tokens": {m: t[0] for m, t in batch.tokens.items()},
            "present": {m: p[0] for m, p in batch.present.items()},
            "target": batch.target[0],
            "id": batch.ids[0],
        }

    def split(self, name: str) -> SplitView:
        """The samples of split ``name`` (``"train"``, ``"val"``, ``"test"``)."""
        if name not in self.splits:
            raise InvalidParameterError(f"Unknown split {name!r}; this dataset has {sorted(self.splits)}.")
        return SplitView(self, self.splits[name])

    def positive_counts(self, indices: Any = None) -> Tensor:
        """Presences per species (multilabel) or samples per class (multiclass)."""
        t = self.target if indices is None else self.target[np.asarray(indices)]
        if self.task.per_output:
            return torch.from_numpy(t.sum(axis=0).astype(np.float64))
        return torch.bincount(torch.from_numpy(t), minlength=self.task.n_outputs).double()

    def missing_report(self) -> dict[str, float]:
        """Share of missing tokens per modality."""
        return {m: float(1.0 - p.mean()) for m, p in self.present.items()}


class SplitView(Dataset):
    """A split of a :class:`MultimodalDataset`: same arrays, a subset of rows."""

    def __init__(self, base: MultimodalDataset, indices: np.ndarray) -> None:
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        self.specs = base.specs
        self.task = base.task

    def __len__(self) -> int:
        return len(self.indices)

    def __getitems__(self, indices: Sequence[int]) -> MultimodalBatch:
        return self.base.__getitems__(self.indices[np.asarray(indices, dtype=np.int64)])

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.base[int(self.indices[index])]

    def positive_counts(self) -> Tensor:
        return self.base.positive_counts(self.indices)


