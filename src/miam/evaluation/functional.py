"""Pure Shapley maths and batched scores: no model, no data loading.

Coalitions of ``P`` players are bool rows ``[K, P]``; a full table of values over all
``2^P`` coalitions is indexed by the coalition's bits read as an integer (bit ``p`` set =
player ``p`` in the coalition), so ``values[0]`` is v(none) and ``values[-1]`` is v(all).

* :func:`shapley_matrix` / :func:`exact_shapley`: exact Shapley values as one linear map
  of the ``2^P`` values (efficient to rounding error by construction).
* :func:`antithetic_permutations`, :func:`chain_coalitions`, :func:`chain_marginals` and
  :func:`permutation_shapley`: permutation sampling. Each permutation reveals the players
  one at a time, so its marginal contributions telescope to v(all) - v(none) *exactly*;
  each permutation is paired with its reverse (antithetic), which cancels every pairwise
  interaction exactly and lowers the variance; the standard error comes from the spread
  of the pair means, and sampling stops once the largest SE is below a tolerance.
* :func:`batched_scores`: the task score of many prediction sets at once (rank-based
  macro AUROC, top-1, SatBird's top-k), equal to :func:`miam.scores.task_score` per set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from miam.data.contract.spec import TaskSpec
from miam.errors import InvalidParameterError, ShapeError
from miam.scores import encounter_topk

#: the most players an exact Shapley computation accepts (2^20 coalitions)
MAX_EXACT_PLAYERS = 20


def n_players_of(n_values: int) -> int:
    """P for a table of ``2^P`` values; raises if ``n_values`` is not a power of two."""
    p = n_values.bit_length() - 1
    if n_values < 1 or 2**p != n_values:
        raise ShapeError(f"Expected 2^P coalition values, got {n_values}.")
    return p


def all_coalitions(n_players: int, device: torch.device | str = "cpu") -> Tensor:
    """Every coalition as a bool ``[2^P, P]`` table, row k = the bits of k.

    Examples:
        >>> all_coalitions(2).int().tolist()
        [[0, 0], [1, 0], [0, 1], [1, 1]]
    """
    if not 0 <= n_players <= MAX_EXACT_PLAYERS:
        raise InvalidParameterError(f"Exact Shapley handles 0..{MAX_EXACT_PLAYERS} players, got {n_players}.")
    index = torch.arange(2**n_players, device=device)
    return ((index.unsqueeze(1) >> torch.arange(n_players, device=device)) & 1).bool()


def shapley_matrix(n_players: int) -> Tensor:
    """The ``[P, 2^P]`` float64 matrix C with phi = C @ v for any game v over all coalitions.

    C[p, S + p] = +w(|S|) and C[p, S] = -w(|S|) for every S without p, where
    w(s) = s! (P - 1 - s)! / P!. Each row's weights sum to 1 over the S, and the columns
    of ``C.sum(0)`` are +1 at v(all), -1 at v(none) and 0 elsewhere: efficiency.

    Examples:
        >>> shapley_matrix(2).tolist()
        [[-0.5, 0.5, -0.5, 0.5], [-0.5, -0.5, 0.5, 0.5]]
    """
    coalitions = all_coalitions(n_players)
    size = coalitions.sum(dim=1)                                      # |S| of each column
    lgamma = lambda x: torch.lgamma(x.double())                       # noqa: E731
    p = torch.tensor(float(n_players), dtype=torch.float64)
    # Column S: players in S gain w(|S| - 1), players out of S lose w(|S|).
    w_in = torch.exp(lgamma(size) + lgamma(p - size + 1) - lgamma(p + 1))        # (s-1)! (P-s)! / P!
    w_out = torch.exp(lgamma(size + 1) + lgamma(p - size) - lgamma(p + 1))       # s! (P-s-1)! / P!
    inside = coalitions.T                                             # [P, 2^P]
    return torch.where(inside, w_in.unsqueeze(0), -w_out.unsqueeze(0))


def exact_shapley(values: Tensor) -> Tensor:
    """Exact Shapley values ``[P, *rest]`` from the values ``[2^P, *rest]`` of every coalition.

    Computed in float64 from unrounded values; ``phi.sum(0)`` equals
    ``values[-1] - values[0]`` to rounding error.

    Examples:
        >>> v = torch.tensor([0.0, 1.0, 2.0, 3.0 + 4.0])   # additive 1 and 2, interaction 4
        >>> exact_shapley(v).tolist()
        [3.0, 4.0]
    """
    p = n_players_of(values.shape[0])
    flat = values.to(torch.float64).reshape(values.shape[0], -1)
    return (shapley_matrix(p).to(flat.device) @ flat).reshape(p, *values.shape[1:])


def coalition_masks(coalitions: Tensor, player_of_token: Tensor, others_visible: bool) -> Tensor:
    """Token masks ``[K, T]`` for player coalitions ``[K, P]``.

    ``player_of_token`` ``[T]`` gives each token's player (``-1``: not a player); a
    player's tokens are visible when it is in the coalition, and the tokens of no
    player are all visible (``others_visible``) or all hidden.

    Examples:
        >>> coalition_masks(torch.tensor([[True, False]]), torch.tensor([0, 0, 1, -1]), False).tolist()
        [[True, True, False, False]]
    """
    chosen = coalitions[:, player_of_token.clamp_min(0)]
    return torch.where(player_of_token >= 0, chosen, torch.tensor(others_visible, device=chosen.device))


def antithetic_permutations(n_pairs: int, n_players: int, generator: torch.Generator | None = None) -> Tensor:
    """``[2 n_pairs, P]`` permutations: row 2k is uniform at random, row 2k + 1 is its reverse.

    Examples:
        >>> perms = antithetic_permutations(2, 4, torch.Generator().manual_seed(0))
        >>> bool((perms[1] == perms[0].flip(0)).all()), perms.shape
        (True, torch.Size([4, 4]))
    """
    forward = torch.rand(n_pairs, n_players, generator=generator).argsort(dim=1)
    return torch.stack([forward, forward.flip(1)], dim=1).reshape(2 * n_pairs, n_players)


def chain_coalitions(perms: Tensor) -> Tensor:
    """The coalitions ``[R, P + 1, P]`` of each permutation's chain: step k holds its first k players.

    Examples:
        >>> chain_coalitions(torch.tensor([[1, 0]])).int().tolist()
        [[[0, 0], [0, 1], [1, 1]]]
    """
    position = perms.argsort(dim=1)                                     # [R, P]: where each player comes
    steps = torch.arange(perms.shape[1] + 1, device=perms.device)
    return position.unsqueeze(1) < steps.view(1, -1, 1)


def chain_marginals(chain_values: Tensor, perms: Tensor) -> Tensor:
    """Each player's marginal contribution ``[R, P, *rest]`` along each chain.

    ``chain_values`` ``[R, P + 1, *rest]`` are the values of :func:`chain_coalitions`;
    a row's marginals sum to ``chain_values[:, -1] - chain_values[:, 0]`` (they telescope).
    """
    steps = chain_values.to(torch.float64).diff(dim=1)                 # [R, P, *rest]: step k adds perms[:, k]
    position = perms.argsort(dim=1)
    index = position.reshape(*position.shape, *([1] * (steps.ndim - 2))).expand_as(steps)
    return steps.gather(1, index)


@dataclass
class PermutationEstimate:
    """Running mean and standard error of the antithetic pair means.

    Attributes:
        values: ``[P, *rest]`` Shapley estimates.
        se: ``[P, *rest]`` standard errors (spread of pair means / sqrt(pairs)).
        n_permutations: permutations used (twice the number of pairs).
        stopped_by: ``"precision"`` (max SE below the tolerance) or ``"budget"``.
    """

    values: Tensor
    se: Tensor
    n_permutations: int
    stopped_by: str


def permutation_shapley(
    value_fn: Callable[[Tensor], Tensor],
    n_players: int,
    v_none: Tensor,
    v_all: Tensor,
    tolerance: float = 1e-3,
    max_permutations: int = 256,
    pairs_per_round: int = 8,
    min_pairs: int = 4,
    generator: torch.Generator | None = None,
    on_round: Callable[[int, float], None] | None = None,
) -> PermutationEstimate:
    """Shapley values by antithetic permutation sampling with a precision stopping rule.

    Each round draws ``pairs_per_round`` permutations and their reverses, asks
    ``value_fn`` for the values of their interior chain coalitions in one call
    (``[K, P]`` bool -> ``[K, *rest]``; the empty and full coalitions are ``v_none`` and
    ``v_all``, computed once by the caller), and adds the pair means to running sums.
    Sampling stops when the largest standard error is below ``tolerance`` (after at least
    ``min_pairs`` pairs) or when ``max_permutations`` permutations have run.

    Every permutation's marginals sum to ``v_all - v_none`` exactly, so the estimate does too.

    Example (a pairwise interaction is cancelled exactly by the antithetic pair):
        >>> game = lambda c: c[:, 0] * 1.0 + c[:, 1] * 2.0 + 4.0 * (c[:, 0] & c[:, 1])
        >>> est = permutation_shapley(game, 3, torch.tensor(0.0), torch.tensor(7.0),
        ...                           generator=torch.Generator().manual_seed(0))
        >>> est.values.tolist(), float(est.se.max()), est.stopped_by
        ([3.0, 4.0, 0.0], 0.0, 'precision')
    """
    if n_players < 1:
        raise InvalidParameterError("permutation_shapley needs at least one player.")
    if pairs_per_round < 1 or max_permutations < 2:
        raise InvalidParameterError(f"pairs_per_round must be >= 1 and max_permutations >= 2, got "
                                    f"{pairs_per_round} and {max_permutations}.")
    v_none, v_all = v_none.to(torch.float64), v_all.to(torch.float64)
    mean = m2 = None                                  # running mean and sum of squared deviations
    n_pairs, max_pairs = 0, max(1, max_permutations // 2)
    while True:
        k = min(pairs_per_round, max_pairs - n_pairs)
        perms = antithetic_permutations(k, n_players, generator)
        chains = chain_coalitions(perms)                                       # [2k, P + 1, P]
        rest = v_all.shape
        parts = [v_none.expand(2 * k, 1, *rest)]
        if n_players > 1:
            inner = value_fn(chains[:, 1:-1].reshape(-1, n_players))
            parts.append(inner.to(torch.float64).reshape(2 * k, n_players - 1, *rest))
        parts.append(v_all.expand(2 * k, 1, *rest))
        marg = chain_marginals(torch.cat(parts, dim=1), perms)
        pair_means = marg.reshape(k, 2, *marg.shape[1:]).mean(dim=1)           # [k, P, *rest]
        # Chan et al.'s update of (mean, M2) by a batch of k pair means.
        batch_mean = pair_means.mean(dim=0)
        batch_m2 = (pair_means - batch_mean).square().sum(dim=0)
        if mean is None:
            mean, m2 = batch_mean, batch_m2
        else:
            delta = batch_mean - mean
            mean = mean + delta * (k / (n_pairs + k))
            m2 = m2 + batch_m2 + delta.square() * (n_pairs * k / (n_pairs + k))
        n_pairs += k
        se = (m2 / max(n_pairs - 1, 1) / n_pairs).sqrt()
        worst = float(se.max()) if se.numel() else 0.0
        if on_round is not None:
            on_round(2 * n_pairs, worst)
        if n_pairs >= min(min_pairs, max_pairs) and worst < tolerance:
            return PermutationEstimate(mean, se, 2 * n_pairs, "precision")
        if n_pairs >= max_pairs:
            return PermutationEstimate(mean, se, 2 * n_pairs, "budget")


def batched_macro_auroc(scores: Tensor, target: Tensor) -> Tensor:
    """Macro AUROC ``[K]`` (float64) of K prediction sets ``[K, N, O]`` against ``target`` ``[N, O]``.

    The Mann-Whitney form with average ranks for ties, over the outputs with at least
    one positive and one negative (0.5 when none qualifies), as
    :func:`miam.scores.macro_auroc` computes it for one set.

    Examples:
        >>> p = torch.tensor([[[0.9, 0.1], [0.2, 0.8], [0.8, 0.3]]])
        >>> y = torch.tensor([[1, 0], [0, 1], [1, 0]])
        >>> batched_macro_auroc(p, y).tolist()
        [1.0]
    """
    if scores.ndim != 3 or scores.shape[1:] != target.shape:
        raise ShapeError(f"Expected scores [K, {', '.join(map(str, target.shape))}], got {list(scores.shape)}.")
    y = target.to(scores.device) > 0.5
    n = y.shape[0]
    n_pos = y.sum(dim=0)
    valid = (n_pos > 0) & (n_pos < n)
    if not bool(valid.any()):
        return torch.full((scores.shape[0],), 0.5, dtype=torch.float64)
    s, y, n_pos = scores[..., valid], y[:, valid], n_pos[valid].double()
    ordered, order = s.sort(dim=1)
    position = torch.arange(n, device=s.device).view(1, n, 1).expand_as(ordered)
    differs = ordered[:, 1:] != ordered[:, :-1]
    edge = torch.ones_like(differs[:, :1])
    first = torch.where(torch.cat([edge, differs], 1), position, 0).cummax(dim=1).values
    last = torch.where(torch.cat([differs, edge], 1), position, n - 1).flip(1).cummin(dim=1).values.flip(1)
    ranks = torch.empty_like(ordered, dtype=torch.float64).scatter_(1, order, (first + last).double() / 2 + 1)
    rank_sum = (ranks * y.unsqueeze(0)).sum(dim=1)                                 # [K, O']
    auc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * (n - n_pos))
    return auc.mean(dim=1)


def batched_scores(logits: Tensor, target: Tensor, task: TaskSpec) -> Tensor:
    """The task score ``[K]`` (float64, unrounded) of each of K logit sets ``[K, N, O]``.

    Matches :func:`miam.scores.task_score` set by set: macro AUROC of sigmoid outputs
    (multilabel), top-1 accuracy (multiclass), SatBird's adaptive top-k (encounter).
    """
    k = logits.shape[0]
    if task.kind == "multilabel":
        return batched_macro_auroc(torch.sigmoid(logits.float()), target)
    if task.kind == "multiclass":
        return (logits.argmax(dim=-1) == target.to(logits.device).unsqueeze(0)).double().mean(dim=1)
    n = logits.shape[1]
    per = encounter_topk(torch.sigmoid(logits.float()).reshape(k * n, -1), target.repeat(k, 1))
    return per.reshape(k, -1).mean(dim=1)
