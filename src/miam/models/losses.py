"""Task losses: the "full weighted loss" for species presence, cross-entropy for classes,
binary cross-entropy on soft targets for encounter rates (SatBird's default "CE" loss)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def presence_weights(positive_counts: Tensor, n_samples: int) -> Tensor:
    """w_j = N / (n_pos,j + 1e-5): rare species weigh more."""
    return n_samples / (positive_counts.to(torch.float64) + 1e-5)


def full_weighted_bce(logits: Tensor, target: Tensor, weights: Tensor) -> Tensor:
    """mean[w y (-log s)] + mean[w/(w-1) (1-y) (-log(1-s))], both means over batch x species.

    Written with logsigmoid, so it stays finite for any logit; computed in float32 whatever
    the logits' dtype, as the weights of species with no training positive (about N * 1e5)
    overflow float16.
    """
    logits, target, w = logits.float(), target.float(), weights.float()
    neg_w = w / (w - 1).clamp_min(1e-3)
    pos = w * target * -F.logsigmoid(logits)
    neg = neg_w * (1 - target) * -F.logsigmoid(-logits)
    return pos.mean() + neg.mean()


class TaskLoss(nn.Module):
    """Loss for a task kind; the species weights are a buffer, so they travel in checkpoints.

    ``"encounter"`` targets are rates in [0, 1]: the loss is SatBird's "CE",
    ``mean[-y log s - (1 - y) log(1 - s)]`` over hotspots x species (RolnickLab/SatBird
    ``src/losses/losses.py::CustomCrossEntropyLoss``), written with logits so it stays finite.
    """

    def __init__(self, kind: str, positive_counts: Tensor | None = None, n_samples: int = 1,
                 weighted: bool = True) -> None:
        super().__init__()
        self.kind = kind
        n_out = 1 if positive_counts is None else len(positive_counts)
        w = presence_weights(positive_counts, n_samples) if (positive_counts is not None and weighted) \
            else torch.full((n_out,), 2.0, dtype=torch.float64)
        self.register_buffer("weights", w.float())
        self.weighted = weighted

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """The loss in float32, also under mixed precision (half-precision logits)."""
        logits = logits.float()
        if self.kind == "multiclass":
            return F.cross_entropy(logits, target)
        if self.kind == "encounter":
            return F.binary_cross_entropy_with_logits(logits, target)
        if not self.weighted:
            return F.binary_cross_entropy_with_logits(logits, target)
        return full_weighted_bce(logits, target, self.weights)
