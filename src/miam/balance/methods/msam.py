"""M-SAM: modality-aware sharpness-aware minimisation, SAM on the dominant modality's share."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from miam._validation import Interval
from miam.balance.methods.base import BalancingMethod
from miam.balance.methods.functional import global_norm, local_sum
from miam.evaluation.functional import all_coalitions, coalition_masks, exact_shapley


def sam_gradient(params: Sequence[nn.Parameter], closure: Callable[[], Tensor], weight: float,
                 radius: float) -> Tensor:
    """Leave in ``p.grad`` the M-SAM update direction for a loss L = weight L + (1 - weight) L:

    grad(weight L)(theta + eps) + grad((1 - weight) L)(theta), eps = radius g / ||g||,
    g = grad(weight L)(theta): the SAM ascent step is taken on the dominant term only.
    ``closure`` computes L at the current parameters and back-propagates it; the
    parameters are restored to theta. Returns L(theta).
    """
    params = [p for p in params if p.requires_grad]
    for p in params:
        p.grad = None
    loss = closure()
    g0 = [None if p.grad is None else p.grad.detach().clone() for p in params]
    norm = float(global_norm([weight * g for g in g0 if g is not None]))
    eps = [None if g is None else radius * weight * g / (norm + 1e-12) for g in g0]
    with torch.no_grad():
        for p, e in zip(params, eps):
            if e is not None:
                p.add_(e)
    for p in params:
        p.grad = None
    closure()
    with torch.no_grad():
        for p, e, g in zip(params, eps, g0):
            if e is not None:
                p.sub_(e)
            if p.grad is not None and g is not None:
                p.grad = weight * p.grad + (1 - weight) * g
            elif g is not None:
                p.grad = (1 - weight) * g
    return loss


def batch_shapley(model: nn.Module, batch, loss_fn, kind: str,
                  reduce_sum: Callable[[Tensor], Tensor] = local_sum) -> Tensor:
    """Exact Shapley values of the modalities on the batch, ``[M]``, from 2^M masked passes
    (one ``forward_subsets`` call): the game is the batch accuracy (multiclass) or minus
    the task loss (multilabel). ``reduce_sum`` sums the per-subset totals (correct counts,
    or losses times the batch size) and the batch size over DDP ranks first."""
    subsets = all_coalitions(len(model.modalities), model.token_modality.device)
    masks = coalition_masks(subsets, model.token_modality, others_visible=False)         # [2^M, T]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            n = batch.batch_size
            logits = model.forward_subsets(batch, masks, max_rows=len(masks) * n)      # [2^M, B, C], one pass
            if kind == "multiclass":
                total = (logits.argmax(dim=-1) == batch.target.unsqueeze(0)).double().sum(dim=1)
            else:
                total = -torch.stack([loss_fn(lg, batch.target) for lg in logits]).double() * n
    finally:
        model.train(was_training)
    totals = reduce_sum(torch.cat([total, total.new_tensor([n])]))
    return exact_shapley(totals[:-1] / totals[-1])


def normalise_shares(phi: Tensor) -> Tensor:
    """phi / sum(phi) when the sum is > 0, else the uniform 1/M (our assumption)."""
    total = float(phi.sum())
    return phi / total if total > 0 else torch.full_like(phi, 1 / len(phi))


class MSAM(BalancingMethod):
    """M-SAM: a sharpness-aware step on the dominant modality's share of the loss.

    Per batch: exact Shapley values phi_m of the modalities on the batch accuracy
    (multi-label: minus the task loss), from the 2^M subset passes of
    ``forward_subsets``, normalised to sum 1 (our assumption); the dominant modality is
    d = argmax phi. The update direction is grad(phi_d L)(theta + eps) +
    grad(sum_{m != d} phi_m L)(theta), with eps = r grad(phi_d L) / ||grad(phi_d L)||:
    the SAM ascent is taken on the dominant term only (:func:`sam_gradient`); the
    optimiser then steps from theta.

    M modalities: Shapley values are exact over all 2^M subsets, so the rule is the
    same for any M. It needs only ``forward_subsets``, so it also runs on the token
    model.

    The authors' code is unreleased: the normalisation of phi and r = 0.05 (SAM's
    default) are assumptions. Costs two forward/backward passes and 2^M evaluation
    passes per step.

    Under DDP: the subset values are over the whole global batch (per-rank totals
    all-reduced), so every rank has the same phi and the same dominant modality; both
    gradients of the step are synchronised, so every rank takes the same SAM step.

    Args:
        radius: the SAM neighbourhood radius r (0.05).
    """

    name = "msam"
    architectures = ("late_fusion", "token")
    fusions = ("sum", "concat", "mean", "entropy")
    manual_optimization = True
    _parameter_constraints = {"radius": Interval(0, None, closed="neither")}

    def __init__(self, modalities: Sequence[str], *, radius: float = 0.05) -> None:
        self.radius = radius
        super().__init__(modalities)

    def manual_step(self, model, batch, visible, loss_fn, optimizer, backward, ctx):
        phi = normalise_shares(batch_shapley(model, batch, loss_fn, model.task.kind, ctx.reduce_sum))
        dominant = int(torch.argmax(phi))

        def closure() -> Tensor:
            loss = loss_fn(model(batch, visible), batch.target)
            backward(loss)
            return loss.detach()

        loss = sam_gradient(list(model.parameters()), closure, float(phi[dominant]), self.radius)
        optimizer.step()
        optimizer.zero_grad()
        self._stats = {f"phi_{m}": float(v) for m, v in zip(self.modalities, phi)}
        return loss
