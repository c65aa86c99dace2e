"""Robustness curves: the score as a growing share of tokens is hidden at random.

For each scope (every token, or the tokens of one modality with the others visible),
share h and repeat r, every sample gets its own random set of exactly round(h * T_scope)
hidden tokens; data already missing stays hidden. All (scope, share, repeat) masks of a
data batch go through the model in batched forward passes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from miam.data.contract.spec import TaskSpec
from miam.errors import InvalidParameterError, check_names
from miam.evaluation.functional import batched_scores
from miam.evaluation.subsets import SubsetEvaluator
from miam.explain.shapley import n_samples
from miam.scores import METRIC_NAMES

#: the scope that hides among all tokens
OVERALL = "overall"


def random_hiding_masks(scope: Tensor, shares: Tensor, n: int, repeats: int,
                        generator: torch.Generator | None = None) -> Tensor:
    """Per-sample masks ``[len(shares) * repeats, n, T]`` hiding round(share * |scope|) scope tokens.

    ``scope`` is a bool ``[T]``; tokens outside it stay visible. Row ``i * repeats + r``
    is share ``i``, repeat ``r``.

    Examples:
        >>> m = random_hiding_masks(torch.tensor([True, True, True, False]), torch.tensor([0.0, 2 / 3]), 5, 2)
        >>> m.shape, (~m[2:]).sum(dim=2).unique().tolist(), bool(m[..., 3].all())
        (torch.Size([4, 5, 4]), [2], True)
    """
    t = scope.numel()
    idx = torch.nonzero(scope).flatten()
    k = torch.round(shares.double() * idx.numel()).long().repeat_interleave(repeats)       # [S]
    keys = torch.rand(len(k), n, idx.numel(), generator=generator)
    rank = keys.argsort(dim=2).argsort(dim=2)                                             # uniform random order
    masks = torch.ones(len(k), n, t, dtype=torch.bool)
    masks[..., idx] = rank >= k.view(-1, 1, 1)
    return masks


def robustness_curves(
    model: torch.nn.Module,
    data: Any,
    task: TaskSpec | None = None,
    shares: Sequence[float] = tuple(np.linspace(0.0, 1.0, 11)),
    repeats: int = 5,
    scopes: Sequence[str] | None = None,
    seed: int = 0,
    batch_size: int = 512,
    max_rows: int | None = None,
) -> pd.DataFrame:
    """Scores as tokens are hidden at random, per scope, share and repeat.

    Args:
        model: a miam model with ``forward_subsets``.
        data: a dataset, split or batch.
        task: defaults to ``model.task``.
        shares: shares of the scope's tokens to hide, in [0, 1].
        repeats: random draws per share (the spread of the curve).
        scopes: ``"overall"`` and/or modality names (default: overall and every modality).
        seed: seeds the draws.

    Returns:
        a tidy table ``scope, share, repeat, n_hidden, metric, value``.
    """
    task = task or model.task
    modalities = [s.name for s in model.specs]
    scopes = [OVERALL, *modalities] if scopes is None else list(scopes)
    if not scopes:
        raise InvalidParameterError("robustness_curves: no scopes; choose 'overall' and/or modalities "
                                    f"among {modalities}.")
    check_names("robustness_curves", "scope", scopes, [OVERALL, *modalities])
    share_t = torch.as_tensor(list(shares), dtype=torch.float64)
    if share_t.numel() == 0 or bool(((share_t < 0) | (share_t > 1)).any()):
        raise InvalidParameterError(f"robustness_curves: shares must be a non-empty list in [0, 1], got {list(shares)}.")
    if repeats < 1:
        raise InvalidParameterError(f"robustness_curves: repeats must be >= 1, got {repeats}.")
    evaluator = SubsetEvaluator(model, task, None, batch_size, max_rows)
    n = n_samples(data)
    gen = torch.Generator().manual_seed(seed)
    owner = evaluator.token_group                         # [T]: each token's modality index
    rows = []
    for scope in scopes:
        mask = torch.ones_like(owner, dtype=torch.bool) if scope == OVERALL else owner == modalities.index(scope)
        masks = random_hiding_masks(mask, share_t, n, repeats, gen)
        logits, target = evaluator.predict(data, masks)
        values = batched_scores(logits, target, task).reshape(len(share_t), repeats)
        size = int(mask.sum())
        for i, h in enumerate(share_t.tolist()):
            for r in range(repeats):
                rows.append({"scope": scope, "share": h, "repeat": r, "n_hidden": round(h * size),
                             "metric": METRIC_NAMES[task.kind], "value": float(values[i, r])})
    return pd.DataFrame(rows)


def summarize_curves(curves: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation, min and max over repeats, per scope and share."""
    g = curves.groupby(["scope", "share"], sort=False)["value"]
    out = g.agg(mean="mean", sd="std", min="min", max="max").reset_index()
    out["sd"] = out["sd"].fillna(0.0)
    return out


def area_under_curves(summary: pd.DataFrame) -> Mapping[str, float]:
    """Mean score over shares (trapezoid area over [0, 1]) per scope: one robustness number each."""
    out = {}
    for scope, part in summary.groupby("scope", sort=False):
        x, y = part["share"].to_numpy(), part["mean"].to_numpy()
        out[scope] = float(np.trapezoid(y, x) / (x.max() - x.min())) if x.max() > x.min() else float(y.mean())
    return out
