"""MIAM's imbalance feedback as pure tensor functions (ALGORITHM.md, "Imbalance feedback")."""

from __future__ import annotations

import torch
from torch import Tensor


def geometric_mean(x: Tensor) -> Tensor:
    """exp(mean(log x)); x must be > 0."""
    return torch.exp(torch.log(x).mean(dim=-1, keepdim=True))


def score_ratio(scores: Tensor, floor: float = 1e-12) -> Tensor:
    """rho_s,m = s_m / G(s): above 1 for modalities stronger than the geometric mean.

    Examples:
        >>> [round(r, 6) for r in score_ratio(torch.tensor([0.9, 0.6])).tolist()]  # G = sqrt(0.54)
        [1.224745, 0.816497]
    """
    s = scores.to(torch.float64).clamp_min(floor)
    return s / geometric_mean(s)


#: how a modality's score speed is read from its history (:func:`score_change`)
DERIVATIVES = ("diff", "slope")


def score_change(history: Tensor, window: int = 1, derivative: str = "diff") -> Tensor:
    """|ds/d epoch| per modality [M] from a score history [E, M] (E >= 2).

    ``diff`` (the paper's "absolute derivative", our reading): the mean |one-epoch change|
    over the last ``window`` epochs; noise in each epoch's score adds up in it. ``slope``:
    |least-squares slope| over the last ``window + 1`` epochs; noise averages out, so a
    modality that still climbs slowly reads as moving, not as settled.

    Examples:
        >>> h = torch.tensor([[0.60], [0.66], [0.62], [0.68]])   # +0.02 an epoch, noisy
        >>> [round(float(score_change(h, 3, d)), 4) for d in DERIVATIVES]
        [0.0533, 0.02]
    """
    h = history.to(torch.float64)
    if derivative == "diff":
        return (h[1:] - h[:-1]).abs()[-window:].mean(dim=0)
    h = h[-(window + 1):]
    t = torch.arange(len(h), dtype=torch.float64)
    t = t - t.mean()
    return ((t[:, None] * (h - h.mean(dim=0))).sum(dim=0) / (t * t).sum()).abs()


def change_noise(standard_error: Tensor, n_epochs: int, window: int = 1, derivative: str = "diff") -> Tensor:
    """The sd of :func:`score_change` of a modality whose score does not move, from the
    standard error of one epoch's score [M] (independent epochs assumed).

    ``diff``: sqrt(2) SE (one difference of two noisy scores); ``slope`` over n points:
    SE sqrt(12 / (n (n^2 - 1))).

    Examples:
        >>> [round(float(change_noise(torch.tensor([0.01]), 10, 4, d)), 5) for d in DERIVATIVES]
        [0.01414, 0.00316]
    """
    se = standard_error.to(torch.float64)
    if derivative == "diff":
        return se * 2 ** 0.5
    n = min(n_epochs, window + 1)
    return se * (12.0 / (n * (n * n - 1))) ** 0.5


def change_ratio(history: Tensor, eps: float = 1e-3, window: int = 1, derivative: str = "diff",
                 floor: Tensor | None = None) -> Tensor:
    """rho_d,m = d_m / G(d), d_m = max(:func:`score_change`, floor_m) + eps.

    ``history`` is [E, M] (epochs x modalities), E >= 2; eps is added before the
    geometric mean, which would be 0 as soon as one d_m is 0. ``floor`` [M] (e.g. z times
    :func:`change_noise`) keeps a change that is within the score's own noise from
    reading as "settled" or "moving".
    """
    d = score_change(history, window, derivative)
    if floor is not None:
        d = torch.maximum(d, floor.to(torch.float64))
    d = d + eps
    return d / geometric_mean(d)


def imbalance_weights(
    rho_s: Tensor, rho_d: Tensor, lambda_s: float, lambda_d: float,
    clamp: tuple[float, float] | None = None,
) -> Tensor:
    """w_m = rho_s^lambda_s / rho_d^lambda_d (product 1 before any clamp).

    Examples:
        >>> imbalance_weights(torch.tensor([2.0, 0.5]), torch.tensor([0.5, 2.0]), 1.0, 1.0).tolist()
        [4.0, 0.25]
    """
    w = rho_s.pow(lambda_s) / rho_d.pow(lambda_d)
    if clamp is not None:
        w = w.clamp(clamp[0], clamp[1])
    return w
