"""AMSS: adaptive mask subnetwork sampling (Yang et al., TPAMI; njustkmg/TPAMI-AMSS)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from miam._validation import BOOL, Interval
from miam.balance.methods.base import BalancingMethod
from miam.balance.methods.functional import local_sum
from miam.models.late_fusion import output_entropy


def label_entropy(target: Tensor, kind: str, n_outputs: int,
                  reduce_sum: Callable[[Tensor], Tensor] = local_sum) -> Tensor:
    """H(Y) of the batch's labels: the entropy of the class frequencies (multiclass) or the
    mean binary entropy of each species' prevalence (multilabel). ``reduce_sum`` sums the
    label counts and the batch size over DDP ranks first."""
    counts = torch.bincount(target.long(), minlength=n_outputs) if kind == "multiclass" else target.sum(dim=0)
    totals = reduce_sum(torch.cat([counts.double(), counts.new_tensor([len(target)]).double()]))
    p = totals[:-1] / totals[-1]
    if kind == "multiclass":
        return -(p * torch.log(p.clamp_min(1e-300))).sum()
    return -(p * torch.log(p.clamp_min(1e-300)) + (1 - p) * torch.log((1 - p).clamp_min(1e-300))).mean()


def amss_keep_fractions(label_h: Tensor, unimodal_ce: Tensor, feature_h: Tensor, temperature: float) -> Tensor:
    """k_m = clamp(1 - softmax(r / T)_m, 0.1, 0.9), r_m = (H(Y) - CE_m + 0.5) / H(softmax h_m);
    if any numerator is <= 0 (or a value is not finite), every k_m = 0.5.

    Examples:
        >>> k = amss_keep_fractions(torch.tensor(1.0), torch.tensor([0.2, 1.0]), torch.tensor([1.0, 1.0]), 1.0)
        >>> [round(v, 4) for v in k.tolist()]  # r = (1.3, 0.5): the stronger modality keeps less
        [0.31, 0.69]
    """
    numerator = label_h - unimodal_ce + 0.5
    r = numerator / feature_h
    keep = (1 - torch.softmax(r.double() / temperature, dim=0)).clamp(0.1, 0.9)
    if bool((numerator <= 0).any()) or not bool(torch.isfinite(keep).all()):
        return torch.full_like(keep, 0.5)
    return keep


def channel_mask(grad: Tensor, keep: float, unbiased: bool = False, generator: torch.Generator | None = None) -> Tensor:
    """A mask over the output channels (rows) of a weight gradient: ceil(C k) channels sampled
    without replacement with probability pi_c ∝ their squared gradient norm; kept
    channels get 1, or 1 / (pi_c + 1/C) with ``unbiased`` (AMSS+), the others 0."""
    c = grad.shape[0]
    importance = grad.detach().reshape(c, -1).double().pow(2).sum(dim=1)
    pi = importance / importance.sum() if float(importance.sum()) > 0 else torch.full_like(importance, 1 / c)
    n_keep = min(c, math.ceil(c * keep))
    # a floor keeps multinomial valid when fewer channels than n_keep have a gradient
    idx = torch.multinomial(pi + 1e-12, n_keep, replacement=False, generator=generator)
    mask = torch.zeros(c, dtype=grad.dtype, device=grad.device)
    mask[idx] = (1 / (pi[idx] + 1 / c)).to(grad.dtype) if unbiased else 1.0
    return mask


class AMSS(BalancingMethod):
    """AMSS: update only a sampled share of each encoder's channels, fewer for strong modalities.

    Per batch, each modality's significance r_m = (H(Y) - CE_m + 0.5) / H(softmax h_m),
    with H(Y) the batch label entropy, CE_m the (unweighted) task loss of z_m and
    H(softmax h_m) the batch-mean entropy of the softmax of its encoder feature; the keep
    fraction is k_m = clamp(1 - softmax(r / T)_m, 0.1, 0.9) (0.5 for all if a numerator
    is <= 0). The loss is the fused task loss. After backward, for every weight matrix of
    modality m's encoder, ceil(C k_m) of its C output channels are sampled without
    replacement with probability ∝ their squared gradient norm; the other channels'
    gradients are zeroed. AMSS+ (``unbiased=True``) scales each kept channel by
    1 / (pi_c + 1/C).

    M modalities: the published two-modality coefficient exp(t_v) / (exp(t_a) + exp(t_v))
    is 1 - softmax(t)_a, which is how it generalises; the keep fractions then no longer
    sum to 1 (they sum to M - 1 before clamping).

    Multi-label: H(Y) is the mean binary entropy of the species' batch prevalences and
    CE_m the mean binary cross-entropy, so both stay on the same scale.

    Departures from the published code (njustkmg/TPAMI-AMSS, ``train_test.py``): the
    sampled tensors are the encoders' weight matrices (linear maps and attention
    projections) instead of the residual stages' conv kernels; H(Y) is the true entropy
    of the batch label frequencies (the published ``CrossEntropyLoss(p, p)`` treats the
    frequencies as logits); sampling uses torch's generator, seeded per step by the
    trainer.

    Under DDP: H(Y), CE_m and the feature entropies are means over the whole global
    batch (per-rank sums and counts all-reduced), so every rank has the same k_m; the
    channels are sampled from the synchronised gradients with the step's generator,
    seeded alike on every rank, so every rank keeps the same channels.

    Args:
        temperature: T of the softmax over significances (0.2).
        unbiased: AMSS+ (scale kept channels by 1 / (pi_c + 1/C)).
    """

    name = "amss"
    _parameter_constraints = {
        "temperature": Interval(0, None, closed="neither"),
        "unbiased": BOOL,
    }

    def __init__(self, modalities: Sequence[str], *, temperature: float = 0.2, unbiased: bool = False) -> None:
        self.temperature = temperature
        self.unbiased = unbiased
        super().__init__(modalities)

    def training_loss(self, model, batch, visible, loss_fn, ctx):
        out = model.forward_unimodal(batch, visible)
        kind, y = model.task.kind, batch.target
        with torch.no_grad():
            if kind == "multiclass":
                ce = torch.stack([F.cross_entropy(z, y, reduction="sum") for z in out.unimodal])
            else:   # the per-sample mean over species, summed over samples
                ce = torch.stack([F.binary_cross_entropy_with_logits(z, y.float(), reduction="sum")
                                  for z in out.unimodal]) / model.task.n_outputs
            feature_h = output_entropy(out.features, "multiclass").sum(dim=1)
            sums = ctx.reduce_sum(torch.cat([ce, feature_h, ce.new_tensor([len(y)])]).double())
            n_mod, n = self.n_modalities, sums[-1]
            label_h = label_entropy(y, kind, model.task.n_outputs, ctx.reduce_sum)
            self._keep = amss_keep_fractions(label_h, sums[:n_mod] / n, sums[n_mod:2 * n_mod] / n, self.temperature)
        self._stats = {f"keep_{m}": float(k) for m, k in zip(self.modalities, self._keep)}
        return loss_fn(out.logits, y)

    @torch.no_grad()
    def after_backward(self, model, ctx):
        for m, keep in zip(self.modalities, self._keep.tolist()):
            for weight in model.encoder_weights(m):
                if weight.grad is not None:
                    mask = channel_mask(weight.grad, keep, self.unbiased, ctx.generator)
                    weight.grad.mul_(mask.view(-1, *([1] * (weight.grad.ndim - 1))))
