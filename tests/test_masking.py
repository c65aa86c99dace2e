"""Statistical tests of every masking strategy (fixed seeds, tolerances from the sample size)."""

import math
import re
from pathlib import Path

import pytest
import torch

from miam.errors import InvalidParameterError, ShapeError
from miam.masking import expected_mean, get_strategy, list_strategies, token_mask
from miam.masking.functional import corner_probabilities, sample_corners, sample_gamma

N = 40_000
MODS = ["env", "climate", "satellite"]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def se_mean(var: float, n: int = N) -> float:
    return math.sqrt(var / n)


def draw(name: str, mods=MODS, **params) -> torch.Tensor:
    return get_strategy(name, mods, per_sample=True, **params).sample(N, gen())


def test_all_eight_strategies_registered():
    assert set(list_strategies()) == {"constant", "dropout", "uniform_line", "uniform_hypercube",
                                      "dirichlet", "corner_priority", "opm", "miam"}


@pytest.mark.parametrize("name", ["constant", "dropout", "uniform_line", "uniform_hypercube",
                                  "dirichlet", "corner_priority", "opm", "miam"])
def test_shape_range_and_per_step_default(name):
    s = get_strategy(name, MODS)
    p = s.sample(64, gen(1))
    assert p.shape == (64, 3)
    assert bool(((p >= 0) & (p <= 1)).all())
    # Default: one draw per step, shared by the batch (the reference behaviour).
    assert torch.equal(p, p[:1].expand(64, -1))
    # Same generator seed, same draw.
    assert torch.equal(p, s.sample(64, gen(1)))


def test_per_sample_flag_draws_rows_independently():
    p = get_strategy("uniform_hypercube", MODS, per_sample=True).sample(64, gen())
    assert len(torch.unique(p[:, 0])) == 64


def test_constant_and_dropout():
    assert torch.all(draw("constant", q=0.3) == 0.3)
    p = draw("dropout", q=0.2)
    assert set(p.unique().tolist()) <= {0.0, 1.0}
    assert abs(p.mean().item() - 0.2) < 5 * se_mean(0.2 * 0.8, N * 3)
    # the all-hidden draw is allowed: P = q^M
    all_hidden = (p == 1).all(dim=1).float().mean().item()
    assert abs(all_hidden - 0.2 ** 3) < 5 * se_mean(0.008 * 0.992)


def test_uniform_line_is_the_diagonal_and_hypercube_is_independent():
    p = draw("uniform_line")
    assert torch.equal(p[:, 0], p[:, 1]) and torch.equal(p[:, 1], p[:, 2])
    assert abs(p[:, 0].mean().item() - 0.5) < 5 * se_mean(1 / 12)
    q = draw("uniform_hypercube")
    assert abs(q.mean(0) - 0.5).max().item() < 5 * se_mean(1 / 12)
    corr = torch.corrcoef(q.T)[0, 1].item()
    assert abs(corr) < 5 / math.sqrt(N)


@pytest.mark.parametrize("alpha", [0.3, 1.0, 4.0])
def test_dirichlet_rows_sum_to_one_with_the_right_moments(alpha):
    p = draw("dirichlet", alpha=alpha)
    assert torch.allclose(p.sum(1), torch.ones(N), atol=1e-5)
    m = 3
    var = (1 / m) * (1 - 1 / m) / (m * alpha + 1)
    assert (p.mean(0) - 1 / m).abs().max().item() < 5 * se_mean(var)
    # variance: the sample variance's SE is about var * sqrt(2 / N) (a bit more for skewed laws)
    assert (p.var(0) - var).abs().max().item() < 8 * var * math.sqrt(2 / N)


def test_gamma_sampler_mean_and_variance():
    for a in (0.5, 2.0, 7.0):
        g = sample_gamma(torch.full((N,), a), gen(3))
        assert abs(g.mean().item() - a) < 5 * se_mean(a)
        assert abs(g.var().item() - a) < 10 * a * math.sqrt(2 / N) + 0.02 * a


def test_corner_frequencies_match_mixture_weights():
    m = 3
    corners = sample_corners(N, m, 0.25, gen(4))
    index = (corners.long() * (2 ** torch.arange(m))).sum(1)
    freq = torch.bincount(index, minlength=2 ** m).double() / N
    want = corner_probabilities(m, 0.25)
    assert want[0] == want[-1] == 0.25 and torch.allclose(want[1:-1], torch.full((6,), 0.5 / 6, dtype=torch.float64))
    se = torch.sqrt(want * (1 - want) / N)
    assert bool(((freq - want).abs() < 5 * se).all()), (freq, want)


def test_corner_priority_lands_near_its_corners():
    # With a large kappa every draw sits at its corner: classify p by rounding.
    p = draw("corner_priority", kappa=1e4)
    index = ((p > 0.5).long() * (2 ** torch.arange(3))).sum(1)
    freq = torch.bincount(index, minlength=8).double() / N
    want = corner_probabilities(3, 0.25)
    assert bool(((freq - want).abs() < 5 * torch.sqrt(want * (1 - want) / N)).all())


def test_miam_means_follow_the_closed_form_and_rise_with_w():
    s = get_strategy("miam", MODS, per_sample=True, kappa=10.0)
    w = torch.tensor([0.5, 1.0, 2.0])
    s.set_weights(w)
    p = s.sample(N, gen(5))
    want = expected_mean(w, 10.0)
    assert torch.allclose(want, torch.tensor([0.44, 0.50, 0.56], dtype=torch.float64), atol=0.005)
    assert (p.mean(0).double() - want).abs().max().item() < 5 * se_mean(0.25)
    # w > 1 is masked more than w < 1
    assert p[:, 2].mean() > p[:, 1].mean() > p[:, 0].mean()


def test_miam_before_feedback_equals_corner_priority_in_distribution():
    a = draw("miam")
    b = get_strategy("corner_priority", MODS, per_sample=True).sample(N, gen(9))
    # two-sample Kolmogorov-Smirnov per modality, 1% critical value
    crit = 1.63 * math.sqrt(2 / N)
    for j in range(3):
        xa, xb = a[:, j].sort().values, b[:, j].sort().values
        grid = torch.linspace(0, 1, 201)
        fa = torch.searchsorted(xa, grid).double() / N
        fb = torch.searchsorted(xb, grid).double() / N
        assert (fa - fb).abs().max().item() < crit
    # and, being unweighted, it draws the same thing from the same seed
    assert torch.equal(draw("miam"), get_strategy("corner_priority", MODS, per_sample=True).sample(N, gen()))


def test_opm_drops_the_strong_modality_only():
    s = get_strategy("opm", MODS, per_sample=True, q=0.5, lam=0.5)
    p = s.sample(N, gen())
    assert torch.all(p == 0.5)  # before any score: p = q
    s.set_scores(torch.tensor([0.9, 0.6, 0.6]))
    rho = torch.tensor([(0.9 / 0.6 + 0.9 / 0.6) / 2, (0.6 / 0.9 + 1) / 2, (0.6 / 0.9 + 1) / 2])
    q = 0.5 * (1 + 0.5 * torch.tanh(rho - 1)) * (rho > 1)
    assert torch.allclose(s.drop_probabilities(), q)
    p = s.sample(N, gen(2))
    assert set(p.unique().tolist()) <= {0.0, 1.0}
    assert abs(p[:, 0].mean().item() - q[0].item()) < 5 * se_mean(q[0].item() * (1 - q[0].item()))
    assert p[:, 1:].sum() == 0


def test_token_mask_respects_p_and_never_reveals_missing():
    b, t = 2000, 50
    present = torch.rand(b, t, generator=gen(1)) > 0.2
    idx = torch.tensor([0] * 20 + [1] * 30)
    p = torch.tensor([0.3, 0.8])
    vis = token_mask(p, present, gen(2), idx)
    assert not bool((vis & ~present).any())
    rate0 = vis[:, :20][present[:, :20]].float().mean().item()
    rate1 = vis[:, 20:][present[:, 20:]].float().mean().item()
    assert abs(rate0 - 0.7) < 5 * math.sqrt(0.21 / (present[:, :20].sum().item()))
    assert abs(rate1 - 0.2) < 5 * math.sqrt(0.16 / (present[:, 20:].sum().item()))


def test_token_mask_dict_form():
    present = {"a": torch.ones(4, 2, dtype=torch.bool), "b": torch.ones(4, 3, dtype=torch.bool)}
    vis = token_mask(torch.tensor([1.0, 0.0]), present, gen())
    assert not vis["a"].any() and vis["b"].all()


def test_errors_name_what_is_wrong():
    with pytest.raises(InvalidParameterError, match=r"Unknown masking strategy 'mima'.*'miam'"):
        get_strategy("mima", MODS)
    with pytest.raises(InvalidParameterError, match="at least 2 modalities"):
        get_strategy("miam", ["env"])
    with pytest.raises(InvalidParameterError, match=r"'kappa' parameter of Miam must be a float in the range \(0"):
        get_strategy("miam", MODS, kappa=-1.0)
    with pytest.raises(InvalidParameterError, match="unexpected parameter 'kapa'"):
        get_strategy("miam", MODS, kapa=3.0)
    with pytest.raises(InvalidParameterError, match="priority"):
        get_strategy("corner_priority", MODS, priority=0.7)
    with pytest.raises(ShapeError, match=r"Expected weights \[3\]"):
        get_strategy("miam", MODS).set_weights(torch.ones(2))
    with pytest.raises(InvalidParameterError, match="finite and > 0"):
        get_strategy("miam", MODS).set_weights(torch.tensor([1.0, 0.0, 1.0]))
    with pytest.raises(ShapeError, match="token_modality"):
        token_mask(torch.tensor([0.5]), torch.ones(2, 3, dtype=torch.bool), None, torch.zeros(4, dtype=torch.long))


@pytest.mark.parametrize("name", ["constant", "dropout", "dirichlet", "corner_priority", "opm", "miam"])
def test_every_parameter_constraint_rejects_bad_values(name):
    s = get_strategy(name, MODS)
    for param in s.params:
        for bad in (-1.0, float("nan"), "x"):
            with pytest.raises(InvalidParameterError, match=repr(param)):
                get_strategy(name, MODS, **{param: bad})


def test_state_dict_round_trip():
    s = get_strategy("miam", MODS)
    s.set_weights(torch.tensor([2.0, 1.0, 0.5]))
    t = get_strategy("miam", MODS)
    t.load_state_dict(s.state_dict())
    assert torch.equal(s.sample(8, gen()), t.sample(8, gen()))


def test_docs_label_the_constant_row_with_the_q_it_ran_with():
    """benchmarks/strategies.py trains every strategy but MIAM with its defaults: docs/masking.md names that q."""
    text = (Path(__file__).parents[1] / "docs" / "masking.md").read_text()
    assert float(re.search(r"\| constant \(q = ([0-9.]+)", text).group(1)) == get_strategy("constant", MODS).q
