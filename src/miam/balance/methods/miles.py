"""MILES: modality-informed learning rate scheduler (Guerra-Manzanares & Shamout, 2024)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from miam._validation import Interval
from miam.balance.methods.base import BalancingMethod


def miles_lr_scales(v_full: float, v_single: Tensor, tau: float, mu: float) -> Tensor:
    """Each encoder's learning-rate factor for the next epoch, ``[M]``.

    u_m = (V_full - mean_{j != m} V_j) / V_full; delta = max u - min u. If delta <= tau
    or every u_m < 0: all factors 1. Otherwise the encoder with the largest u_m (the
    other modalities score far below the fused model: m leads) gets ``mu``, the others 1. Factors are set, never multiplied into the previous ones.

    Examples:
        >>> miles_lr_scales(0.9, torch.tensor([0.85, 0.55]), tau=0.2, mu=0.5).tolist()
        [0.5, 1.0]
    """
    v = v_single.to(torch.float64)
    m = len(v)
    others = (v.sum() - v) / (m - 1)
    u = (v_full - others) / v_full
    scales = torch.ones(m, dtype=torch.float64)
    if float(u.max() - u.min()) <= tau or bool((u < 0).all()):
        return scales
    scales[int(torch.argmax(u))] = mu
    return scales


class MILES(BalancingMethod):
    """MILES: after each epoch, lower the learning rate of the leading modality's encoder.

    The loss adds unimodal auxiliary losses, L = L_fused + sum_m L_m (each with the task
    loss). After each validation epoch, with V the validation score (AUROC or accuracy)
    of the full input and of each modality alone, u_m = (V_full - mean_{j != m} V_j) /
    V_full and delta = max u - min u; if delta <= tau or all u < 0 every encoder trains
    at the base learning rate, otherwise the encoder with the largest u_m trains at mu
    times it for the next epoch. The heads stay at the base rate.

    M modalities: u_m uses the mean score of the other modalities (for M = 2, the other
    one) and only the single most-leading encoder is slowed, as in the two-modality
    rule.

    There is no official code: this follows the paper's description (unverified against
    an implementation); V is the run's validation score.

    Under DDP nothing is per batch: the validation scores the rule reads are already
    computed over every rank's shard, so every rank sets the same learning rates.

    Args:
        tau: the imbalance threshold on delta (0.2).
        mu: the factor on the leading encoder's learning rate (0.5).
    """

    name = "miles"
    _parameter_constraints = {"tau": Interval(0, None), "mu": Interval(0, 1, closed="right")}

    def __init__(self, modalities: Sequence[str], *, tau: float = 0.2, mu: float = 0.5) -> None:
        self.tau = tau
        self.mu = mu
        super().__init__(modalities)

    def setup(self, model):
        parts = super().setup(model)
        self.lr_scale_ = torch.ones(self.n_modalities, dtype=torch.float64)
        return parts

    def param_groups(self, model, parts):
        groups = [{"params": list(model.encoders[m].parameters()), "modality": m} for m in self.modalities]
        rest = model.head_parameters() + ([] if parts is None else list(parts.parameters()))
        return groups + [{"params": rest, "modality": None}]

    def training_loss(self, model, batch, visible, loss_fn, ctx):
        out = model.forward_unimodal(batch, visible)
        self._stats = {f"lr_scale_{m}": float(v) for m, v in zip(self.modalities, self.lr_scale_)}
        return loss_fn(out.logits, batch.target) + sum(loss_fn(z, batch.target) for z in out.unimodal)

    def epoch_end(self, scores: Mapping[str, float], optimizer: torch.optim.Optimizer, ctx) -> None:
        single = torch.tensor([float(scores[m]) for m in self.modalities])
        self.lr_scale_ = miles_lr_scales(float(scores["full"]), single, self.tau, self.mu)
        base = optimizer.defaults["lr"]
        scale = dict(zip(self.modalities, self.lr_scale_.tolist()))
        for group in optimizer.param_groups:
            if group.get("modality") is not None:
                group["lr"] = base * scale[group["modality"]]
