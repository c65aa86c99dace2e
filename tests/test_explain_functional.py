"""Pure Shapley maths and batched scores against closed forms and the one-set scorers."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from miam.data.contract.spec import TaskSpec
from miam.errors import InvalidParameterError, ShapeError
from miam.evaluation.functional import (
    all_coalitions,
    antithetic_permutations,
    batched_macro_auroc,
    batched_scores,
    chain_coalitions,
    chain_marginals,
    coalition_masks,
    exact_shapley,
    permutation_shapley,
    shapley_matrix,
)
from miam.scores import macro_auroc, task_score


def table(game, p: int) -> torch.Tensor:
    """Values of ``game`` (a function of a bool coalition [P]) over all 2^P coalitions."""
    return torch.stack([torch.as_tensor(game(c), dtype=torch.float64) for c in all_coalitions(p)])


def as_batched(values: torch.Tensor):
    """A batched game [K, P] -> [K, ...] reading a full value table."""
    p = int(math.log2(values.shape[0]))
    return lambda c: values[(c.long() * (2 ** torch.arange(p))).sum(dim=1)]


@pytest.mark.parametrize("p", [1, 2, 5, 9])
def test_shapley_matrix_is_efficient_and_weights_sum_to_one(p):
    c = shapley_matrix(p)
    want = torch.zeros(2**p, dtype=torch.float64)
    want[0], want[-1] = -1.0, 1.0
    assert torch.allclose(c.sum(0), want, atol=1e-12, rtol=0)
    assert torch.allclose(c.clamp(min=0).sum(1), torch.ones(p, dtype=torch.float64), atol=1e-12)


def test_exact_additive_game_gives_the_weights():
    a = torch.tensor([0.3, -1.2, 2.0, 0.05], dtype=torch.float64)
    v = table(lambda s: (a * s).sum(), 4)
    assert torch.allclose(exact_shapley(v), a, atol=1e-12, rtol=0)


def test_exact_one_interaction_term_is_split_in_half():
    a = torch.tensor([0.5, 1.0, -0.25], dtype=torch.float64)
    b = 0.8
    v = table(lambda s: (a * s).sum() + b * float(s[0] and s[2]), 3)
    assert torch.allclose(exact_shapley(v), a + torch.tensor([b / 2, 0.0, b / 2], dtype=torch.float64),
                          atol=1e-12, rtol=0)


def test_exact_unanimity_game_and_null_player():
    v = table(lambda s: float(s[1] and s[2] and s[4]), 5)   # players 0 and 3 never matter
    assert torch.allclose(exact_shapley(v), torch.tensor([0, 1 / 3, 1 / 3, 0, 1 / 3], dtype=torch.float64),
                          atol=1e-12, rtol=0)


def test_exact_efficiency_on_random_games_with_extra_dims():
    g = torch.Generator().manual_seed(0)
    for p in (2, 6, 10):
        v = torch.randn(2**p, 3, 2, generator=g, dtype=torch.float64)
        phi = exact_shapley(v)
        assert phi.shape == (p, 3, 2)
        assert torch.allclose(phi.sum(0), v[-1] - v[0], atol=1e-12, rtol=0)


def test_exact_rejects_a_table_that_is_not_2_to_the_p():
    with pytest.raises(ShapeError, match="2\\^P coalition values"):
        exact_shapley(torch.zeros(6))


def test_chains_reveal_one_player_at_a_time_and_telescope():
    perms = torch.tensor([[2, 0, 1], [1, 2, 0]])
    chains = chain_coalitions(perms)
    assert chains.shape == (2, 4, 3)
    assert chains[0, 1].tolist() == [False, False, True] and chains[0, 2].tolist() == [True, False, True]
    values = torch.randn(2, 4, dtype=torch.float64)
    marg = chain_marginals(values, perms)
    assert torch.allclose(marg.sum(1), values[:, -1] - values[:, 0], atol=1e-15, rtol=0)
    assert marg[0, 2] == values[0, 1] - values[0, 0]      # player 2 came first in the first chain


def test_antithetic_permutations_pair_each_with_its_reverse():
    perms = antithetic_permutations(50, 6, torch.Generator().manual_seed(1))
    assert torch.equal(perms[1::2], perms[0::2].flip(1))
    assert torch.equal(perms.sort(dim=1).values, torch.arange(6).expand(100, 6))


def test_permutation_estimate_is_exact_for_additive_plus_one_pair():
    a = torch.tensor([0.4, -0.3, 1.5, 0.2], dtype=torch.float64)
    v = table(lambda s: (a * s).sum() + 2.0 * float(s[1] and s[3]), 4)
    est = permutation_shapley(as_batched(v), 4, v[0], v[-1], tolerance=1e-9,
                              generator=torch.Generator().manual_seed(0))
    assert torch.allclose(est.values, exact_shapley(v), atol=1e-12, rtol=0)
    assert float(est.se.max()) < 1e-12 and est.stopped_by == "precision" and est.n_permutations == 16


def test_permutation_estimate_is_unbiased_with_calibrated_se_and_exactly_efficient():
    g = torch.Generator().manual_seed(3)
    v = torch.randn(2**7, generator=g, dtype=torch.float64)
    exact = exact_shapley(v)
    z = []
    for seed in range(40):
        est = permutation_shapley(as_batched(v), 7, v[0], v[-1], tolerance=1e-12, max_permutations=64,
                                  generator=torch.Generator().manual_seed(seed))
        assert est.stopped_by == "budget" and est.n_permutations == 64
        assert abs(float(est.values.sum()) - float(v[-1] - v[0])) < 1e-12
        z.append((est.values - exact) / est.se)
    z = torch.stack(z)
    assert abs(float(z.mean())) < 0.3 and 0.7 < float(z.std()) < 1.3


def test_permutation_stops_on_precision_with_local_values():
    g = torch.Generator().manual_seed(4)
    v = torch.randn(2**5, 10, generator=g, dtype=torch.float64) * 0.01
    est = permutation_shapley(as_batched(v), 5, v[0], v[-1], tolerance=5e-3, max_permutations=10_000,
                              generator=torch.Generator().manual_seed(0))
    assert est.stopped_by == "precision" and float(est.se.max()) < 5e-3 and est.values.shape == (5, 10)
    assert torch.allclose(est.values.sum(0), v[-1] - v[0], atol=1e-12, rtol=0)


def test_permutation_argument_errors():
    with pytest.raises(InvalidParameterError, match="at least one player"):
        permutation_shapley(lambda c: c.sum(1), 0, torch.tensor(0.0), torch.tensor(0.0))
    with pytest.raises(InvalidParameterError, match="pairs_per_round"):
        permutation_shapley(lambda c: c.sum(1), 2, torch.tensor(0.0), torch.tensor(2.0), pairs_per_round=0)


def test_coalition_masks_set_non_players_as_asked():
    player = torch.tensor([-1, 0, 0, 1, -1])
    c = torch.tensor([[False, True], [True, False]])
    assert coalition_masks(c, player, True).tolist() == [[True, False, False, True, True],
                                                        [True, True, True, False, True]]
    assert coalition_masks(c, player, False)[:, [0, 4]].any().item() is False


def test_batched_auroc_matches_macro_auroc_with_ties_and_degenerate_species():
    g = torch.Generator().manual_seed(0)
    y = (torch.rand(200, 6, generator=g) < 0.3).float()
    y[:, 2] = 0.0                                                  # no positive: left out
    scores = torch.randn(4, 200, 6, generator=g)
    scores[1] = scores[1].round()                                  # many ties
    scores[2] = 0.7                                                # constant: 0.5
    scores[3, :, 0] = y[:, 0]                                      # perfect on species 0
    got = batched_macro_auroc(scores, y)
    want = torch.tensor([float(macro_auroc(s, y)) for s in scores], dtype=torch.float64)
    assert torch.allclose(got, want, atol=1e-6, rtol=0)
    assert got[2].item() == 0.5
    assert batched_macro_auroc(scores, torch.zeros(200, 6)).tolist() == [0.5] * 4


@pytest.mark.parametrize("kind", ["multilabel", "multiclass", "encounter"])
def test_batched_scores_match_task_score(kind):
    g = torch.Generator().manual_seed(1)
    task = TaskSpec(kind, 5)
    logits = torch.randn(3, 60, 5, generator=g)
    if kind == "multiclass":
        target = torch.randint(0, 5, (60,), generator=g)
    elif kind == "multilabel":
        target = (torch.rand(60, 5, generator=g) < 0.4).float()
    else:
        target = torch.rand(60, 5, generator=g) * (torch.rand(60, 5, generator=g) < 0.5)
    got = batched_scores(logits, target, task)
    want = [task_score(lg, target, task) for lg in logits]
    assert got.dtype == torch.float64
    assert torch.allclose(got, torch.tensor(want, dtype=torch.float64), atol=1e-6, rtol=0)


def test_all_coalitions_enumerates_every_subset_once():
    c = all_coalitions(4)
    assert len({tuple(r.tolist()) for r in c}) == 16
    assert set(map(tuple, c.int().tolist())) == set(itertools.product([0, 1], repeat=4))
    with pytest.raises(InvalidParameterError, match="0..20 players"):
        all_coalitions(21)
