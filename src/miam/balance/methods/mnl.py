"""MNL: modality-aware negative learning for imbalanced multimodal classification."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from miam._validation import Interval
from miam.balance.methods.base import BalancingMethod


def negative_learning_term(unimodal: Tensor, fused: Tensor, target: Tensor, omega: float) -> tuple[Tensor, Tensor]:
    """(1/C) mean_b[mask_b sum_{w != d_b} (CE(z_w,b) - omega sum_{c != y} pbar_d,c log q_w,c)].

    Per sample b, j is the strongest wrong class of the fused prediction; modality m's
    margin is z_m[y] - z_m[j]. The dominant modality d has the largest margin; mask_b
    is 1 when d also has the largest p_m[y] (both criteria agree), else 0. pbar_d is
    d's softmax over the wrong classes, renormalised to sum 1, detached; q_w,c = 1 -
    p_w,c is the complementary probability of negative learning, so the term pushes the
    other modalities' probability down on the classes the dominant one confuses.

    Returns the term and the mask ``[B]``. With omega = 0 the term is
    (1/C) mean_b[mask_b sum_{w != d} CE(z_w,b)].
    """
    m, b, c = unimodal.shape
    y = target.long()
    rows = torch.arange(b, device=unimodal.device)
    wrong = fused.detach().masked_fill(F.one_hot(y, c).bool(), float("-inf")).argmax(dim=-1)
    margin = unimodal[:, rows, y] - unimodal[:, rows, wrong]                           # [M, B]
    logp = F.log_softmax(unimodal, dim=-1)
    p = logp.exp()
    dominant = margin.argmax(dim=0)                                                    # [B]
    mask = (dominant == p[:, rows, y].argmax(dim=0)).to(unimodal.dtype)
    pbar = p[dominant, rows].detach().masked_fill(F.one_hot(y, c).bool(), 0.0)         # [B, C]
    pbar = pbar / pbar.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    ce = -logp[:, rows, y]                                                             # [M, B]
    log_q = torch.log1p(-p.clamp(max=1 - 1e-6))                                       # log(1 - p)
    negative = -(pbar.unsqueeze(0) * log_q).sum(dim=-1)                                # [M, B]
    others = (torch.arange(m, device=unimodal.device).unsqueeze(1) != dominant.unsqueeze(0)).to(unimodal.dtype)
    per_sample = ((ce + omega * negative) * others).sum(dim=0)
    return (mask * per_sample).mean() / c, mask


class MNL(BalancingMethod):
    """MNL: unimodal losses plus negative learning of the weak modalities from the dominant one.

    The model's fusion is ``mean`` (fused logits = mean of the z_m). The loss is
    L = CE(fused) + sum_m CE(z_m) + (1/C) mean_b[mask_b sum_{w != d} (CE(z_w) - omega
    sum_{c != y} pbar_d,c log q_w,c)] (see :func:`negative_learning_term`).

    M modalities: the dominant modality is the argmax of the margins, a sample counts
    when it is also the argmax of p[y], and every other modality gets the term; with
    M = 2 this is the two-modality rule.

    Undefined for multi-label tasks (it needs one true class and a strongest wrong class
    per sample): building it for one raises at config time. No reference code was
    available: q_w,c = 1 - p_w,c and the renormalised pbar are our reading of the rule.

    Under DDP: the rule has no batch-level coefficient (each sample's dominant modality
    is its own), so each rank's loss is its shard's and DDP averages the gradients; the
    logged share of samples where both criteria agree is over the global batch.

    Args:
        omega: weight of the negative-learning part (0.7).
    """

    name = "mnl"
    tasks = ("multiclass",)
    fusions = ("mean",)
    _parameter_constraints = {"omega": Interval(0, None)}

    def __init__(self, modalities: Sequence[str], *, omega: float = 0.7) -> None:
        self.omega = omega
        super().__init__(modalities)

    def training_loss(self, model, batch, visible, loss_fn, ctx):
        out = model.forward_unimodal(batch, visible)
        base = loss_fn(out.logits, batch.target) + sum(loss_fn(z, batch.target) for z in out.unimodal)
        term, mask = negative_learning_term(out.unimodal, out.logits, batch.target, self.omega)
        counts = ctx.reduce_sum(torch.stack([mask.sum(), mask.new_tensor(float(len(mask)))]))
        self._stats = {"dominant_share": float(counts[0] / counts[1])}
        return base + term
