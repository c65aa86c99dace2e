"""OPM on features: on-the-fly prediction modulation by dropping leading modalities' features
(Wei, Hu et al., "On-the-fly modulation for balanced multimodal learning", TPAMI 2024)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from miam._validation import Interval
from miam.balance.methods.base import BalancingMethod
from miam.balance.methods.functional import positive_scores, ratio_to_others, unimodal_scores


def opm_drop_probabilities(rho: Tensor, q_base: float, lam: float) -> Tensor:
    """q_m = q_base (1 + lambda tanh(rho_m - 1)) if rho_m > 1 else 0, clipped to [0, 1].

    Examples:
        >>> opm_drop_probabilities(torch.tensor([2.0, 0.5]), 0.5, 0.5).tolist()  # 0.5 (1 + 0.5 tanh 1)
        [0.6903985738754272, 0.0]
    """
    q = q_base * (1 + lam * torch.tanh(rho - 1))
    return torch.where(rho > 1, q, torch.zeros_like(q)).clamp(0.0, 1.0)


class OPMFeature(BalancingMethod):
    """OPM (feature version): drop the features of leading modalities before the fusion.

    Per batch, rho_m = mean_{j != m} s_m / s_j from the unimodal logits (as
    :class:`~miam.balance.methods.ogm_ge.OGMGE`), q_m = q_base (1 + lambda tanh(rho_m -
    1)) for rho_m > 1, else 0. With probability ``p_exe`` per batch, each sample keeps
    modality m's feature with probability 1 - q_m; kept features are rescaled by
    1 / (1 - theta), theta = sum_m d_m q_m / sum_m d_m (d_m the feature sizes, all equal
    here, so theta is the mean q_m), which scales the gradient the same way; samples
    with no feature left leave the loss. The loss is the fused task loss. Epochs before
    ``warmup`` are not modulated; evaluation never drops anything (this only acts in
    :meth:`training_loss`).

    M modalities: the published two-modality ratios become mean ratios to the others,
    and one Bernoulli per (sample, modality); with M = 2 it is the published rule.

    Departures from the published code (GeWu-Lab/BML_TPAMI2024, ``Modality_drop``):
    the per-batch execution draw and the Bernoulli masks use torch's generators (seeded
    per step by the trainer) instead of numpy's; a drop that would leave no sample at
    all falls back to the unmodulated batch (the published loop skips the batch);
    unimodal logits are our late-fusion heads' z_m (published: the concat head's block
    plus half its bias).

    Under DDP: rho comes from the score sums of the whole global batch (all-reduced), and
    the execution draw from the step's generator seeded alike on every rank, so every
    rank modulates the same batches with the same q_m; the per-sample Bernoulli masks
    are drawn per rank (each rank drops features of its own samples).

    Args:
        q_base: base drop probability (0.5).
        lam: the drop probability's slope in the modality's lead (0.5).
        p_exe: probability that a batch is modulated (0.7).
        warmup: epochs without modulation (6: epochs 0-5).
    """

    name = "opm_feature"
    _parameter_constraints = {
        "q_base": Interval(0, 1),
        "lam": Interval(0, None),
        "p_exe": Interval(0, 1),
        "warmup": Interval(0, None, integer=True),
    }

    def __init__(self, modalities: Sequence[str], *, q_base: float = 0.5, lam: float = 0.5,
                 p_exe: float = 0.7, warmup: int = 6) -> None:
        self.q_base = q_base
        self.lam = lam
        self.p_exe = p_exe
        self.warmup = warmup
        super().__init__(modalities)

    def training_loss(self, model, batch, visible, loss_fn, ctx):
        out = model.forward_unimodal(batch, visible)
        self._stats = {}
        if ctx.epoch < self.warmup or float(torch.rand((), generator=ctx.generator, device=out.logits.device)) >= self.p_exe:
            return loss_fn(out.logits, batch.target)
        kind = model.task.kind
        s = unimodal_scores(out.unimodal, batch.target, kind, ctx.reduce_sum)
        rho = ratio_to_others(positive_scores(s, kind))
        q = opm_drop_probabilities(rho, self.q_base, self.lam).to(out.features.device)
        keep = torch.rand(out.available.shape, device=q.device) >= q.unsqueeze(1)   # Bernoulli(1 - q_m)
        available = out.available & keep
        rows = available.any(dim=0)
        self._stats = {f"q_{m}": float(v) for m, v in zip(self.modalities, q)}
        if not bool(rows.any()):
            return loss_fn(out.logits, batch.target)
        theta = float(q.mean())
        scale = 1.0 / max(1.0 - theta, 1e-6)
        logits = model.fuse(model.unimodal_logits(out.features * scale), available)
        return loss_fn(logits[rows], batch.target[rows])
