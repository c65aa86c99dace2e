"""MLA: multimodal learning with alternating unimodal adaptation (Zhang et al., CVPR 2024)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from miam._validation import BOOL
from miam.balance.methods.base import BalancingMethod


def rls_projector_update(projector: Tensor, feature: Tensor, alpha: float) -> Tensor:
    """One recursive-least-squares update of the gradient projector with a mean feature r:

    k = P r, P <- P - k k^T / (alpha + r^T k), then P <- P / ||P||_F.

    After it, P r = alpha / (alpha + r^T P r) * P_old r (then rescaled): directions of
    the features seen so far are (almost, up to the regulariser alpha) projected out.

    Examples:
        >>> p = rls_projector_update(torch.eye(2), torch.tensor([1.0, 0.0]), alpha=0.0)
        >>> p.tolist()
        [[0.0, 0.0], [0.0, 1.0]]
    """
    r = feature.reshape(-1, 1).to(projector.dtype)
    k = projector @ r
    updated = projector - (k @ k.T) / (alpha + float(r.T @ k))
    return updated / torch.linalg.matrix_norm(updated)


def project_gradient(grad: Tensor, projector: Tensor) -> Tensor:
    """The head gradient ``[out, d]`` replaced by grad P^T."""
    return grad @ projector.T.to(grad.dtype)


class MLA(BalancingMethod):
    """MLA: train one modality at a time through a shared head, protecting the head.

    The model's fusion is ``entropy``: one head g shared by every modality's feature.
    Each batch, for each modality in turn (in the model's order): loss = task loss of
    g(h_m) on the samples where m is present, backward, then (``project``) update the
    projector P with r_m, the batch-mean feature of m (recursive least squares with
    alpha_t = 0.1^(1 + b / N_b), b the batch index in the epoch and N_b the batches per
    epoch; P renormalised to unit Frobenius norm) and **replace** the head's weight
    gradient by grad P^T, which projects it onto the orthogonal complement of the
    modalities' features seen before; then an optimiser step. As published, the very
    first update of the run is neither recorded nor projected, and P starts from the
    identity. At inference, the model fuses per-sample entropy-weighted logits,
    lambda_m ∝ exp(max_j e_j - e_m) (``fusion: entropy``).

    M modalities: the published loop over audio, visual (and text) runs over all M
    modalities, each with its own optimiser step (so M steps per batch).

    Departures from the published code
    (Cecile-hi/Multimodal-Learning-with-Alternating-Unimodal-Adaptation): ``project=False``
    reproduces the published runs, in which the projection never fires (its
    parameter-name lookup ``"module.weight"`` never matches); with ``project=True``
    (default) it does. The inference entropy is per sample over classes (the published
    ``calculate_entropy`` takes a softmax over the batch dimension and one entropy per
    batch). Published runs use SGD lr 1e-3; here the run's optimiser (set ``optim`` to
    reproduce). Samples missing modality m are left out of m's loss.

    Under DDP: r_m is the mean feature of the whole global batch (the per-rank feature
    sums and counts are all-reduced), so every rank updates the same projector and
    projects the (synchronised) head gradient alike; a modality is skipped only when no
    rank has it. Each per-modality update back-propagates through one encoder only, so
    DDP needs ``trainer.strategy: ddp_find_unused_parameters_true``.

    Args:
        project: apply the gradient projection (default True).
    """

    name = "mla"
    fusions = ("entropy",)
    manual_optimization = True
    partial_backward = True
    _parameter_constraints = {"project": BOOL}

    def __init__(self, modalities: Sequence[str], *, project: bool = True) -> None:
        self.project = project
        super().__init__(modalities)

    def setup(self, model):
        parts = super().setup(model)
        self.projector_ = torch.eye(model.d_model, dtype=torch.float64)
        self.n_updates_ = 0
        return parts

    def rls_alpha(self, ctx) -> float:
        """alpha_t = 0.1^(1 + b / N_b)."""
        frac = ctx.batch_index / ctx.n_batches if ctx.n_batches else 0.0
        return 0.1 ** (1.0 + frac)

    def manual_step(self, model, batch, visible, loss_fn, optimizer, backward, ctx):
        weight = model.head_weight(self.modalities[0])     # the shared head's weight
        losses = {}
        for m in self.modalities:
            features, rows = model.encode_modality(batch, m, visible)
            # the feature sum and the count of rows where m is present, over every rank
            totals = ctx.reduce_sum(torch.cat([features[rows].detach().sum(dim=0), rows.sum().reshape(1).to(features)]))
            if float(totals[-1]) == 0:
                continue
            optimizer.zero_grad()
            if bool(rows.any()):
                loss = loss_fn(model.modality_logits(features[rows], m), batch.target[rows])
            else:   # m is absent from this rank's shard only: a zero loss, so every rank back-propagates
                loss = model.modality_logits(features, m).sum() * 0.0
            backward(loss)
            if self.project and self.n_updates_ > 0 and weight.grad is not None:
                r = totals[:-1] / totals[-1]
                self.projector_ = rls_projector_update(self.projector_.to(r.device), r, self.rls_alpha(ctx))
                weight.grad = project_gradient(weight.grad, self.projector_)
            optimizer.step()
            self.n_updates_ += 1
            losses[m] = float(ctx.reduce_sum(loss.detach() * rows.sum()) / totals[-1])   # the global batch's
        optimizer.zero_grad()
        self._stats = {f"loss_{m}": v for m, v in losses.items()}
        return torch.tensor(sum(losses.values()) / max(1, len(losses)))
