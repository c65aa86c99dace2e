"""MIAM's imbalance feedback as pure tensor functions (ALGORITHM.md, "Imbalance feedback")."""

from __future__ import annotations

import torch
from torch import Tensor


def geometric_mean(x: Tensor) -> Tensor:
    """exp(mean(log x)); x must be > 0."""
    return torch.exp(torch.log(x).mean(dim=-1, keepdim=True))


def score_ratio(scores: Tensor, floor: float = 1e-12) -> Tensor:
    """rho_s,m = s_m / G(s): above 1 for modalities stronger than the geometric mean.

    Example:
        >>> [round(r, 6) for r in score_ratio(torch.tensor([0.9, 0.6])).tolist()]  # G = sqrt(0.54)
        [1.224745, 0.816497]
    """
    s = scores.to(torch.float64).clamp_min(floor)
    return s / geometric_mean(s)


def change_ratio(history: Tensor, eps: float = 1e-3, window: int = 1) -> Tensor:
    """rho_d,m = d_m / G(d), d_m = mean |one-epoch change| over the last ``window`` epochs + eps.

    ``history`` is [E, M] (epochs x modalities), E >= 2; eps is added before the
    geometric mean, which would be 0 as soon as one d_m is 0.
    """
    h = history.to(torch.float64)
    steps = (h[1:] - h[:-1]).abs()[-window:]
    d = steps.mean(dim=0) + eps
    return d / geometric_mean(d)


def imbalance_weights(
    rho_s: Tensor, rho_d: Tensor, lambda_s: float = 1.0, lambda_d: float = 1.0,
    clamp: tuple[float, float] | None = None,
) -> Tensor:
    """w_m = rho_s^lambda_s / rho_d^lambda_d (product 1 before any clamp).

    Example:
        >>> imbalance_weights(torch.tensor([2.0, 0.5]), torch.tensor([0.5, 2.0])).tolist()
        [4.0, 0.25]
    """
    w = rho_s.pow(lambda_s) / rho_d.pow(lambda_d)
    if clamp is not None:
        w = w.clamp(clamp[0], clamp[1])
    return w
