"""Pure tensor maths shared by the balancing methods (ALGORITHM.md, "Balancing methods")."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def local_sum(tensor: Tensor) -> Tensor:
    """The sum (or maximum) over one process: the tensor itself, detached."""
    return tensor.detach()


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """The sum of a detached copy of ``tensor`` over every rank of the default process group
    (``torch.distributed.all_reduce``, SUM); every rank must call it in the same order."""
    out = tensor.detach().clone()
    torch.distributed.all_reduce(out, op=torch.distributed.ReduceOp.SUM)
    return out


def all_reduce_max(tensor: Tensor) -> Tensor:
    """The elementwise maximum of a detached copy of ``tensor`` over every rank (MAX)."""
    out = tensor.detach().clone()
    torch.distributed.all_reduce(out, op=torch.distributed.ReduceOp.MAX)
    return out


def unimodal_scores(unimodal: Tensor, target: Tensor, kind: str,
                    reduce_sum: Callable[[Tensor], Tensor] = local_sum) -> Tensor:
    """s_m per modality from unimodal logits ``[M, B, C]`` (detached), ``[M]``.

    * multiclass: the batch sum of the true-class probability, sum_b softmax(z_m,b)[y_b]
      (OGM-GE's score);
    * multilabel: for each species with at least one positive and one negative in the
      batch, mean sigmoid(z_m) over its positives minus over its negatives; then the
      mean over those species (0 if none). In [-1, 1], 0 at chance: a soft, per-species
      ("macro") discrimination score, the counterpart of the macro AUROC used for
      validation. Pooling all (sample, species) pairs instead would reward a modality
      that only learned each species' prevalence. Encounter rates (soft targets in
      [0, 1]) use the same formula with the rates as weights.

    ``reduce_sum`` sums the batch statistics over DDP ranks before the ratios are formed
    (:func:`all_reduce_sum`), so every rank gets the scores of the whole global batch.

    Examples:
        >>> z = torch.tensor([[[2.0, 0.0], [0.0, 2.0]]])       # one modality, 2 samples
        >>> round(float(unimodal_scores(z, torch.tensor([0, 1]), "multiclass")[0]), 4)
        1.7616
    """
    z = unimodal.detach().float()
    if kind == "multiclass":
        p = torch.softmax(z, dim=-1)
        idx = target.long().view(1, -1, 1).expand(z.shape[0], -1, 1)
        return reduce_sum(p.gather(-1, idx).squeeze(-1).sum(dim=1))
    y = target.float().unsqueeze(0)
    p = torch.sigmoid(z)
    sums = reduce_sum(torch.stack([(p * y).sum(dim=1), (p * (1 - y)).sum(dim=1),
                                   y.sum(dim=1).expand(len(z), -1), (1 - y).sum(dim=1).expand(len(z), -1)]))
    pos, neg, n_pos, n_neg = sums
    diff = pos / n_pos.clamp_min(1) - neg / n_neg.clamp_min(1)
    valid = ((n_pos > 0) & (n_neg > 0)).float()
    return (diff * valid).sum(dim=-1) / valid.sum(dim=-1).clamp_min(1)


def positive_scores(scores: Tensor, kind: str) -> Tensor:
    """Scores on a positive scale for ratios: per-output s in [-1, 1] -> (1 + s) / 2 in [0, 1]
    (chance 1/2, as AUROC); multiclass scores pass through."""
    return scores if kind == "multiclass" else (1 + scores) / 2


def ratio_to_others(scores: Tensor, floor: float = 1e-12) -> Tensor:
    """rho_m = mean_{j != m} s_m / s_j, ``[M]`` (M = 2: OGM-GE's ratio s_m / s_other).

    Examples:
        >>> ratio_to_others(torch.tensor([0.8, 0.4, 0.2])).tolist()  # (2 + 4) / 2, (0.5 + 2) / 2, ...
        [3.0, 1.25, 0.375]
    """
    s = scores.to(torch.float64).clamp_min(floor)
    ratio = s.unsqueeze(1) / s.unsqueeze(0)
    return ((ratio.sum(dim=1) - 1.0) / (len(s) - 1)).to(scores.dtype)


def global_norm(tensors: list[Tensor]) -> Tensor:
    """sqrt of the sum of squared entries of all tensors."""
    return torch.sqrt(sum((t.detach().float() ** 2).sum() for t in tensors))
