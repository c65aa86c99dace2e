"""CGGM: classifier-guided gradient modulation (Guo et al., NeurIPS 2024)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from miam._validation import Interval, OptionalOf
from miam.balance.methods.base import BalancingMethod
from miam.balance.methods.functional import local_sum, positive_scores, unimodal_scores


def cggm_coefficients(accuracy: Tensor, previous: Tensor, eps: float = 1e-8) -> Tensor:
    """B_m = (sum D + eps - D_m) / (sum D + eps), D_m = a_m(t) - a_m(t-1).

    A modality whose accuracy rose more than the others' gets a smaller B (its gradient
    shrinks); no clipping (the published code has none). With M = 2 and D = (0.3, 0.1):
    B = (0.1 / 0.4, 0.3 / 0.4).

    Examples:
        >>> b = cggm_coefficients(torch.tensor([0.5, 0.3]), torch.tensor([0.2, 0.2]), eps=0.0)
        >>> [round(v, 6) for v in b.tolist()]
        [0.25, 0.75]
    """
    d = accuracy.to(torch.float64) - previous.to(torch.float64)
    total = d.sum() + eps
    return ((total - d) / total).to(accuracy.dtype)


def cggm_direction_loss(coefficients: Tensor, cosines: Tensor) -> Tensor:
    """(1/M) sum_m (|B_m| - B_m cos_m): pulls each modality's fused-head block toward its
    auxiliary head's direction, in proportion to B_m."""
    return (coefficients.abs() - coefficients * cosines).mean()


def head_accuracy(logits: Tensor, target: Tensor, kind: str,
                  reduce_sum: Callable[[Tensor], Tensor] = local_sum) -> Tensor:
    """Batch accuracy of each auxiliary head ``[M]``; multilabel: the soft score (1 + s_m) / 2.
    ``reduce_sum`` sums the correct counts (or the score's sums) and the batch size over
    DDP ranks first."""
    if kind == "multiclass":
        correct = (logits.argmax(dim=-1) == target.unsqueeze(0)).float().sum(dim=1)
        totals = reduce_sum(torch.cat([correct, correct.new_tensor([logits.shape[1]])]))
        return totals[:-1] / totals[-1]
    return positive_scores(unimodal_scores(logits, target, kind, reduce_sum), kind)


class CGGM(BalancingMethod):
    """CGGM: auxiliary classifiers measure each modality's progress and steer its gradients.

    An auxiliary linear classifier per modality reads the *detached* encoder feature
    (its loss trains only itself). Per batch, a_m is its batch accuracy (multi-label:
    (1 + s_m)/2), D_m = a_m(t) - a_m(t-1) (a(-1) = 0) and B_m = (sum D + eps - D_m) /
    (sum D + eps). After backward, every gradient of modality m's encoder is scaled by
    rho B_m, then the model's gradients are clipped to norm ``clip``. The next batch's
    loss adds lambda (1/M) sum_m (|B_m| - B_m cos(W_aux,m, W_fused,m)), the cosine
    between the auxiliary head's weights and the fused head's block reading modality m
    (the weights themselves, not their gradients: maintainer, zrguo/CGGM#3).

    M modalities: the published rule is already written for ``num_mod`` modalities.

    Departures from the published code (zrguo/CGGM): the auxiliary classifiers are
    linear heads (published: small transformers) in a separate parameter group of the
    run's optimiser (published: their own optimiser); the direction term is computed at
    the next step from the current weights with the last B (published: a graph built
    from the previous step's weight clones); the fused head's block m is our late-fusion
    head (published: one output layer after a fusion transformer, shared by all
    modalities). No clamp on B unless ``clamp`` is set (our deviation, off by default):
    when the accuracies barely move (sum D near 0), B and the logged loss can be very
    large for a step (the |B_m| part of the loss carries no gradient).

    Under DDP: a_m is the accuracy on the whole global batch (correct counts and batch
    sizes all-reduced), so every rank has the same B_m; the auxiliary heads' gradients
    are synchronised like the model's, so their weights and the cosines agree too.

    Args:
        rho: gradient scale (1.3).
        lam: weight of the direction loss (0.2).
        clip: gradient-norm clip of the model's parameters (0.8; None: none).
        eps: stabiliser of B (1e-8).
        clamp: optional bound |B_m| <= clamp (not in the published code).
    """

    name = "cggm"
    fusions = ("sum", "concat", "mean")
    _parameter_constraints = {
        "rho": Interval(0, None, closed="neither"),
        "lam": Interval(0, None),
        "clip": OptionalOf(Interval(0, None, closed="neither")),
        "eps": Interval(0, None, closed="neither"),
        "clamp": OptionalOf(Interval(0, None, closed="neither")),
    }

    def __init__(self, modalities: Sequence[str], *, rho: float = 1.3, lam: float = 0.2,
                 clip: float | None = 0.8, eps: float = 1e-8, clamp: float | None = None) -> None:
        self.rho = rho
        self.lam = lam
        self.clip = clip
        self.eps = eps
        self.clamp = clamp
        super().__init__(modalities)

    def setup(self, model):
        super().setup(model)
        self.aux_heads = nn.ModuleList([nn.Linear(model.d_model, model.task.n_outputs) for _ in self.modalities])
        self.previous_accuracy_ = torch.zeros(self.n_modalities)
        self.coefficients_: Tensor | None = None
        return self.aux_heads

    def param_groups(self, model, parts):
        return [{"params": list(model.parameters())}, {"params": list(parts.parameters())}]

    def training_loss(self, model, batch, visible, loss_fn, ctx):
        out = model.forward_unimodal(batch, visible)
        loss = loss_fn(out.logits, batch.target)
        if self.coefficients_ is not None and self.lam > 0:
            cos = torch.stack([
                F.cosine_similarity(head.weight.detach().flatten(), model.head_weight(m).flatten(), dim=0)
                for head, m in zip(self.aux_heads, self.modalities)
            ])
            loss = loss + self.lam * cggm_direction_loss(self.coefficients_.to(cos), cos)
        aux = torch.stack([head(h.detach()) for head, h in zip(self.aux_heads, out.features)])
        aux_loss = sum(loss_fn(z, batch.target) for z in aux)
        accuracy = head_accuracy(aux.detach(), batch.target, model.task.kind, ctx.reduce_sum).cpu()
        b = cggm_coefficients(accuracy, self.previous_accuracy_, self.eps)
        self.coefficients_ = b if self.clamp is None else b.clamp(-self.clamp, self.clamp)
        self.previous_accuracy_ = accuracy
        self._stats = {f"B_{m}": float(v) for m, v in zip(self.modalities, self.coefficients_)}
        return loss + aux_loss

    @torch.no_grad()
    def after_backward(self, model, ctx):
        for m, b in zip(self.modalities, self.coefficients_.tolist()):
            for p in model.encoders[m].parameters():
                if p.grad is not None:
                    p.grad.mul_(self.rho * b)
        if self.clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), self.clip)
