"""Scores of a trained model on many token subsets at once (no Lightning here)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from miam.data.contract.batch import MultimodalBatch
from miam.data.contract.spec import ModalitySpec, TaskSpec
from miam.errors import InvalidParameterError, ShapeError
from miam.evaluation.configs import InputConfig
from miam.scores import METRIC_NAMES, samples_f1_topk, task_score

Subset = Sequence[str] | Tensor


def token_groups(specs: Sequence[ModalitySpec], groups: Mapping[str, Sequence[str]] | None = None
                 ) -> tuple[list[str], Tensor]:
    """Group names and each token's group index [T] (one group per modality by default)."""
    names = [s.name for s in specs]
    if not groups:
        groups = {n: [n] for n in names}
    owner = {}
    for g, members in groups.items():
        for m in members:
            if m not in names:
                raise InvalidParameterError(f"Group {g!r} names unknown modality {m!r}; valid names are {names}.")
            if m in owner:
                raise InvalidParameterError(f"Modality {m!r} is in two groups: {owner[m]!r} and {g!r}.")
            owner[m] = g
    left = [n for n in names if n not in owner]
    if left:
        raise InvalidParameterError(f"Modalities {left} belong to no group; every modality needs one.")
    group_names = list(groups)
    index = torch.cat([torch.full((s.n_tokens,), group_names.index(owner[s.name])) for s in specs])
    return group_names, index


def all_subsets(names: Sequence[str], include_empty: bool = False) -> list[tuple[str, ...]]:
    """Every subset of ``names`` by increasing size (2^M - 1 without the empty one).

    Examples:
        >>> all_subsets(["a", "b"])
        [('a',), ('b',), ('a', 'b')]
    """
    start = 0 if include_empty else 1
    return [c for k in range(start, len(names) + 1) for c in itertools.combinations(names, k)]


def subset_label(subset: Sequence[str]) -> str:
    return "+".join(subset) if len(subset) else "none"


class SubsetEvaluator:
    """Evaluate a model on modality subsets or arbitrary token masks, batched.

    Each data batch goes through the model's ``forward_subsets``, which embeds it once and
    runs the encoder on many masks per forward pass. Missing data stays hidden in every
    subset.

    Args:
        model: a miam model (``TokenModel`` or one with the same ``forward_subsets(batch, masks, max_rows)``).
        task: the task, for the metric.
        groups: optional modality grouping; subsets are then named by group.
        batch_size: samples per data batch.
        max_rows: most (subset x sample) rows in one forward pass; None picks
            :func:`miam.models.token_model.device_max_rows` for the model's device (256 on CPU,
            where the cost per row grows with the rows of a pass; measured once on a GPU).

    Masks are scored in order of their number of visible tokens, so that with
    ``hidden="drop"`` the packed sequences of one pass have similar lengths.
    """

    def __init__(self, model: torch.nn.Module, task: TaskSpec, groups: Mapping[str, Sequence[str]] | None = None,
                 batch_size: int = 512, max_rows: int | None = None,
                 device: str | torch.device | None = None) -> None:
        self.model = model
        self.task = task
        self.names, self.token_group = token_groups(model.specs, groups)
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.batch_size, self.max_rows = batch_size, max_rows

    def masks(self, subsets: Iterable[Subset]) -> Tensor:
        """Token masks [S, T] for subsets given by names (or as bool [T] masks)."""
        subsets = list(subsets)
        if not subsets:
            raise InvalidParameterError("No subsets to evaluate: pass at least one subset of "
                                        f"{self.names} (or a token mask).")
        t = self.token_group.numel()
        rows = []
        for sub in subsets:
            if isinstance(sub, Tensor):
                if sub.shape != (t,) or sub.dtype != torch.bool:
                    raise ShapeError(f"Expected a bool token mask [{t}], got {sub.dtype} {list(sub.shape)}.")
                rows.append(sub)
                continue
            if isinstance(sub, str):
                sub = [sub]
            bad = [m for m in sub if m not in self.names]
            if bad:
                raise InvalidParameterError(f"Unknown modality {bad} in subset {list(sub)}; valid names are {self.names}.")
            idx = torch.tensor([self.names.index(m) for m in sub], dtype=torch.long)
            rows.append(torch.isin(self.token_group, idx))
        return torch.stack(rows)

    def _batches(self, data: Any) -> Iterable[MultimodalBatch]:
        if isinstance(data, MultimodalBatch):
            yield data
        elif hasattr(data, "__getitems__"):
            for start in range(0, len(data), self.batch_size):
                yield data.__getitems__(list(range(start, min(start + self.batch_size, len(data)))))
        else:
            yield from data

    @torch.no_grad()
    def predict(self, data: Any, masks: Tensor) -> tuple[Tensor, Tensor]:
        """Logits [S, N, n_outputs] under each mask, and the targets [N...].

        ``masks`` is [S, T] (one token mask per subset, shared by all samples) or
        [S, N, T] (one mask per subset and sample, in the order of ``data``).
        """
        was_training = self.model.training
        self.model.eval()
        masks = masks.to(self.device)
        order = masks.flatten(start_dim=1).sum(dim=1).argsort(stable=True)   # by visible tokens
        masks = masks[order]
        out, targets = [], []
        offset = 0
        try:
            for batch in self._batches(data):
                batch = batch.to(self.device)
                rows = masks[:, offset:offset + batch.batch_size] if masks.ndim == 3 else masks
                offset += batch.batch_size
                if rows.ndim == 3 and rows.shape[1] != batch.batch_size:
                    raise ShapeError(f"Expected per-sample masks [S, N, T] with N >= {offset}, "
                                     f"got {list(masks.shape)}.")
                out.append(self.model.forward_subsets(batch, rows, self.max_rows).float().cpu())
                targets.append(batch.target.cpu())
        finally:
            self.model.train(was_training)
        if masks.ndim == 3 and masks.shape[1] != offset:
            raise ShapeError(f"Expected per-sample masks [S, {offset}, T] for {offset} samples, got {list(masks.shape)}.")
        logits = torch.cat(out, dim=1)
        return logits[order.argsort().cpu()], torch.cat(targets)

    def scores(self, data: Any, subsets: Iterable[Subset]) -> Tensor:
        """The task score under each subset, [S] (float64, unrounded)."""
        logits, target = self.predict(data, self.masks(subsets))
        return torch.tensor([task_score(lg, target, self.task) for lg in logits], dtype=torch.float64)

    def evaluate(self, data: Any, subsets: Iterable[Subset] | None = None, configs: Sequence[InputConfig] = (),
                 top_k_f1: int | None = None) -> pd.DataFrame:
        """A tidy table, one row per subset and then one per named configuration.

        Columns: ``kind`` (``subset``, ``mask`` or ``config``), ``subset`` (the modality
        subset's label, or the configuration's name), ``n_modalities`` (modalities with a
        visible token), ``n_tokens`` (visible tokens), ``metric``, ``value``, ``n`` and, with
        ``top_k_f1`` on a multilabel task, ``f1_top<k>`` (:func:`miam.scores.samples_f1_topk`).
        All masks run in one batched sweep. Default subsets: every non-empty one.
        """
        subsets = all_subsets(self.names) if subsets is None else list(subsets)
        masks = self.masks([*subsets, *[c.mask for c in configs]])
        logits, target = self.predict(data, masks)
        f1_column = None
        if top_k_f1 is not None:
            if self.task.kind != "multilabel":
                raise InvalidParameterError(f"top_k_f1 scores species lists of a multilabel task; this task is "
                                            f"{self.task.kind!r} (set evaluation.top_k_f1: null).")
            f1_column = f"f1_top{top_k_f1}"
        metric = METRIC_NAMES[self.task.kind]
        n = len(data) if hasattr(data, "__len__") and not isinstance(data, MultimodalBatch) else None
        labels = [("subset", subset_label([sub] if isinstance(sub, str) else sub)) if not isinstance(sub, Tensor)
                  else ("mask", "mask") for sub in subsets] + [("config", c.name) for c in configs]
        rows = []
        for (kind, label), mask, lg in zip(labels, masks, logits):
            row = {"kind": kind, "subset": label,
                   "n_modalities": int(self.token_group[mask.cpu()].unique().numel()),
                   "n_tokens": int(mask.sum()), "metric": metric, "value": task_score(lg, target, self.task), "n": n}
            if f1_column:
                row[f1_column] = float(samples_f1_topk(torch.sigmoid(lg), target, top_k_f1))
            rows.append(row)
        return pd.DataFrame(rows)


def headline_columns(names: Sequence[str], summary: Mapping[str, Any] | Iterable[str]) -> list[str]:
    """The scores every table leads with: ``full``, each modality (group) alone,
    ``avg_modality_subsets`` and, where the summary has it, ``avg_paper_configs``.

    Examples:
        >>> headline_columns(["env", "sat"], {"full": 0.8, "avg_paper_configs": 0.7})
        ['full', 'env', 'sat', 'avg_modality_subsets', 'avg_paper_configs']
    """
    return ["full", *names, "avg_modality_subsets", *[k for k in ("avg_paper_configs",) if k in summary]]


def headline(summary: Mapping[str, float]) -> str:
    """One line: the full-input score and both averages (the second only with named configurations)."""
    line = (f"full input {summary['full']:.4f} | mean over all non-empty modality subsets "
            f"(avg_modality_subsets) {summary['avg_modality_subsets']:.4f}")
    if "avg_paper_configs" in summary:
        n = sum(k.startswith("config:") and "/" not in k for k in summary)
        line += f" | mean over the {n} named configurations (avg_paper_configs) {summary['avg_paper_configs']:.4f}"
    return line


def summarize_subsets(table: pd.DataFrame, names: Sequence[str]) -> dict[str, float]:
    """Full-input score, each single modality, the mean over all non-empty modality subsets and,
    when the table holds named configurations, their plain mean ``avg_paper_configs`` and each
    one as ``config:<name>``. Extra metric columns (``f1_top<k>``) are summarised the same way,
    as ``<key>/<column>``."""
    subsets = table[table["kind"] == "subset"]
    configs = table[table["kind"] == "config"]
    extra = [c for c in table.columns if c.startswith("f1_top")]
    out: dict[str, float] = {}
    for column, suffix in [("value", ""), *[(c, f"/{c}") for c in extra]]:
        by = dict(zip(subsets["subset"], subsets[column]))
        out[f"full{suffix}"] = float(by[subset_label(names)])
        out.update({f"{m}{suffix}": float(by[m]) for m in names})
        out[f"avg_modality_subsets{suffix}"] = float(subsets[column].mean())
        if len(configs):
            out[f"avg_paper_configs{suffix}"] = float(configs[column].mean())
            out.update({f"config:{c}{suffix}": float(v) for c, v in zip(configs["subset"], configs[column])})
    return out
