"""Pure tensor draws behind the masking strategies; batched, seeded by a torch.Generator.

Beta components of the corner mixture are Beta(1, b) and Beta(a, 1), whose inverse
CDFs are closed-form, so they are drawn from uniforms and honour any generator
(``torch.distributions`` ignores generators).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from miam.errors import InvalidParameterError, ShapeError

#: the corner mixture's concentration and the mass of each of its two priority corners
#: (ALGORITHM.md: kappa 10, 1/4 as on the authors' poster)
KAPPA, PRIORITY = 10.0, 0.25

def _uniform(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    # Open interval (0, 1): keeps pow and log finite.
    u = torch.rand(shape, generator=generator, device=device)
    return u.clamp_(torch.finfo(u.dtype).tiny, 1.0 - torch.finfo(u.dtype).eps)


def corner_probabilities(n_modalities: int, priority: float = PRIORITY) -> Tensor:
    """Mixture weight of every corner, indexed by the corner's bits read as an integer.

    The all-zeros (index 0) and all-ones (index 2^M - 1) corners each get ``priority``;
    the others share ``1 - 2 * priority`` equally.

    Examples:
        >>> corner_probabilities(2).tolist()
        [0.25, 0.25, 0.25, 0.25]
    """
    if not 0.0 < priority <= 0.5:
        raise InvalidParameterError(f"priority must be in (0, 1/2], got {priority}.")
    k = 2**n_modalities
    probs = torch.full((k,), (1.0 - 2.0 * priority) / (k - 2), dtype=torch.float64)
    probs[0] = probs[-1] = priority
    return probs


def sample_corners(
    n: int, n_modalities: int, priority: float = PRIORITY,
    generator: torch.Generator | None = None, device: torch.device | str = "cpu",
) -> Tensor:
    """``n`` corners of {0,1}^M as a bool tensor [n, M] (bit m of the corner index is modality m)."""
    device = torch.device(device)
    if n_modalities > 62:
        raise InvalidParameterError(f"At most 62 modalities are supported, got {n_modalities}.")
    u = _uniform((n,), generator, device)
    # Interior corners: uniform integer in [1, 2^M - 2].
    interior = torch.randint(1, 2**n_modalities - 1, (n,), generator=generator, device=device)
    all_ones = 2**n_modalities - 1
    index = torch.where(u < priority, torch.zeros_like(interior),
                        torch.where(u < 2 * priority, torch.full_like(interior, all_ones), interior))
    bits = torch.arange(n_modalities, device=device)
    return ((index.unsqueeze(1) >> bits) & 1).bool()


def sample_beta_mixture(
    n: int, weights: Tensor, kappa: float = KAPPA, priority: float = PRIORITY,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Draw [n, M] masking probabilities from the corner-anchored product-Beta mixture.

    For corner bit 0: p ~ Beta(1, kappa / w); for bit 1: p ~ Beta(kappa * w, 1).
    ``weights`` is w (``[M]``, positive), on the device the draw lands on.
    """
    w = weights.to(torch.float32)
    m = w.shape[0]
    corner = sample_corners(n, m, priority, generator, w.device)
    u = _uniform((n, m), generator, w.device)
    low = 1.0 - u.pow(w / kappa)          # Beta(1, kappa/w): 1 - U^(w/kappa)
    high = u.pow(1.0 / (kappa * w))       # Beta(kappa*w, 1): U^(1/(kappa*w))
    return torch.where(corner, high, low)


def sample_gamma(alpha: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Gamma(alpha, 1) draws of ``alpha``'s shape (Marsaglia & Tsang, with the alpha < 1 boost)."""
    a = alpha.to(torch.float32)
    boost = a < 1
    d = torch.where(boost, a + 1, a) - 1.0 / 3.0
    c = 1.0 / torch.sqrt(9.0 * d)
    out = torch.empty_like(a)
    todo = torch.ones_like(a, dtype=torch.bool)
    while bool(todo.any()):
        z = torch.randn(a.shape, generator=generator, device=a.device)
        u = _uniform(tuple(a.shape), generator, a.device)
        v = (1 + c * z) ** 3
        ok = (v > 0) & (torch.log(u) < 0.5 * z * z + d - d * v + d * torch.log(v.clamp_min(1e-30)))
        take = todo & ok
        out = torch.where(take, d * v, out)
        todo = todo & ~ok
    u = _uniform(tuple(a.shape), generator, a.device)
    return torch.where(boost, out * u.pow(1.0 / a), out)


def sample_dirichlet(n: int, alpha: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """[n, M] Dirichlet(alpha) draws; each row sums to 1."""
    g = sample_gamma(alpha.to(torch.float32).expand(n, -1).contiguous(), generator)
    return g / g.sum(dim=1, keepdim=True).clamp_min(1e-30)


def token_mask(
    p: Tensor,
    present: Tensor | Mapping[str, Tensor],
    generator: torch.Generator | None = None,
    token_modality: Tensor | None = None,
) -> Tensor | dict[str, Tensor]:
    """Hide each token of modality m with probability ``p[:, m]``; missing tokens stay hidden.

    Args:
        p: ``[B, M]`` (or ``[M]``, shared by the batch) masking probabilities.
        present: either a dict ``{modality: bool [B, T_m]}`` whose i-th key is column i of
            ``p`` (a dict of visible masks is returned), or one bool ``[B, T]`` tensor over
            all tokens, with ``token_modality`` ``[T]`` giving each token's column of ``p``.
        generator: seeds the Bernoulli draws.

    Returns:
        the visible mask, in the same form as ``present``: True where the model sees the token.

    Examples:
        >>> present = {"env": torch.ones(2, 3, dtype=torch.bool), "sat": torch.ones(2, 4, dtype=torch.bool)}
        >>> vis = token_mask(torch.tensor([[0.0, 1.0], [0.0, 1.0]]), present)
        >>> vis["env"].all().item(), vis["sat"].any().item()
        (True, False)
    """
    if isinstance(present, Mapping):
        names = list(present)
        sizes = [present[k].shape[1] for k in names]
        flat = torch.cat([present[k] for k in names], dim=1)
        index = torch.repeat_interleave(torch.arange(len(names), device=flat.device),
                                        torch.tensor(sizes, device=flat.device))
        vis = token_mask(p, flat, generator, index)
        return dict(zip(names, vis.split(sizes, dim=1)))
    if token_modality is None:
        raise InvalidParameterError("token_mask on a [B, T] tensor needs token_modality ([T] column of p per token).")
    if p.ndim == 1:
        p = p.unsqueeze(0)
    b, t = present.shape
    if token_modality.shape != (t,):
        raise ShapeError(f"Expected `token_modality` [{t}], got {list(token_modality.shape)}.")
    if p.shape[0] not in (1, b):
        raise ShapeError(f"Expected `p` [{b}, M] or [1, M], got {list(p.shape)}.")
    p_token = p.to(present.device).index_select(1, token_modality)
    u = torch.rand((b, t), generator=generator, device=present.device)
    return present & (u >= p_token)
