"""OGM-GE: on-the-fly gradient modulation with generalisation enhancement (Peng et al., CVPR 2022)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from miam._validation import BOOL, Interval, OptionalOf
from miam.balance.methods.base import BalancingMethod, StepContext
from miam.balance.methods.functional import positive_scores, ratio_to_others, unimodal_scores


def ogm_coefficients(rho: Tensor, alpha: float) -> Tensor:
    """k_m = 1 - tanh(alpha * rho_m) where rho_m > 1, else 1.

    Examples:
        >>> ogm_coefficients(torch.tensor([2.0, 0.5]), alpha=0.5).tolist()  # 1 - tanh(1)
        [0.23840582370758057, 1.0]
    """
    return torch.where(rho > 1, 1 - torch.tanh(alpha * rho), torch.ones_like(rho))


def modulate_gradient(grad: Tensor, k: float, noise: bool = True, generator: torch.Generator | None = None) -> Tensor:
    """g <- k g + N(0, std(g)^2): the noise std is the std of the *unscaled* gradient
    (plus 1e-8, as published); ``noise=False`` gives plain OGM (g <- k g)."""
    out = grad * k
    if noise:
        std = float(grad.std()) + 1e-8 if grad.numel() > 1 else 1e-8
        out = out + torch.randn(grad.shape, generator=generator, dtype=grad.dtype, device=grad.device) * std
    return out


class OGMGE(BalancingMethod):
    """OGM-GE: slow down the encoders of modalities that lead, with Gaussian noise for all.

    Per batch, s_m is the batch sum of the true-class probability of modality m's
    unimodal logits (multi-label: :func:`~miam.balance.methods.functional.unimodal_scores`,
    then (1 + s)/2 for the ratio); rho_m = mean_{j != m} s_m / s_j; k_m = 1 - tanh(alpha
    rho_m) if rho_m > 1 else 1. The loss is the fused task loss only. From epoch
    ``start`` to ``end`` (inclusive), after backward, every weight-matrix gradient of
    **every** encoder becomes k_m g + N(0, std(g)^2) (GE noise on all encoders, the
    scaled one included).

    M modalities: the published two-modality ratio s_a / s_v becomes the mean ratio to
    the others, so any number of leading modalities (rho > 1) are slowed; with M = 2 it
    is exactly the published rule.

    Departures from the published code (GeWu-Lab/OGM-GE_CVPR2022): the modulated
    tensors are the encoders' weight matrices (linear maps and attention projections of
    our transformer encoders) instead of 4-D conv kernels; the unimodal logits are our
    late-fusion heads' z_m (with ``fusion: concat``, the concat head's block m plus the
    full bias, where the published code adds half the bias); the published default
    optimiser is SGD with momentum and a step schedule, here the run's optimiser.

    Under DDP: s_m sums the true-class probabilities of the whole global batch (the
    per-rank sums are all-reduced before the ratio), so every rank has the same k_m; the
    GE noise is drawn after the gradients are synchronised, from the step's generator
    seeded alike on every rank, so every rank adds the same noise.

    Args:
        alpha: modulation strength (0.1; the paper uses 0.8 on CREMA-D).
        start: the first epoch with modulation.
        end: the last epoch with modulation (inclusive); None is half the run's ``max_epochs``.
        noise: add the GE noise (False: plain OGM).
    """

    name = "ogm_ge"
    _parameter_constraints = {
        "alpha": Interval(0, None),
        "start": Interval(0, None, integer=True),
        "end": OptionalOf(Interval(0, None, integer=True)),
        "noise": BOOL,
    }

    def __init__(self, modalities: Sequence[str], *, alpha: float = 0.1, start: int = 0,
                 end: int | None = None, noise: bool = True) -> None:
        self.alpha = alpha
        self.start = start
        self.end = end
        self.noise = noise
        super().__init__(modalities)

    def active(self, ctx: StepContext) -> bool:
        """Whether this epoch modulates."""
        end = self.end if self.end is not None else (ctx.max_epochs // 2 if ctx.max_epochs else ctx.epoch)
        return self.start <= ctx.epoch <= end

    def training_loss(self, model, batch, visible, loss_fn, ctx):
        out = model.forward_unimodal(batch, visible)
        kind = model.task.kind
        s = unimodal_scores(out.unimodal, batch.target, kind, ctx.reduce_sum)
        rho = ratio_to_others(positive_scores(s, kind))
        self._coefficients = ogm_coefficients(rho, self.alpha)
        self._stats = {f"k_{m}": float(k) for m, k in zip(self.modalities, self._coefficients)}
        self._stats.update({f"rho_{m}": float(r) for m, r in zip(self.modalities, rho)})
        return loss_fn(out.logits, batch.target)

    @torch.no_grad()
    def after_backward(self, model: nn.Module, ctx: StepContext) -> None:
        if not self.active(ctx):
            return
        for m, k in zip(self.modalities, self._coefficients.tolist()):
            for weight in model.encoder_weights(m):
                if weight.grad is not None:
                    weight.grad = modulate_gradient(weight.grad, k, self.noise, ctx.generator)
