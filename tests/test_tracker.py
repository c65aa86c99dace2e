"""ImbalanceTracker formulas against hand-computed values."""

import math

import pytest
import torch

from miam.balance import ImbalanceTracker
from miam.errors import InvalidParameterError


def test_rho_is_one_before_two_epochs():
    t = ImbalanceTracker(["a", "b", "c"])
    w = t.update({"a": 0.9, "b": 0.7, "c": 0.6})
    assert torch.equal(w, torch.ones(3, dtype=torch.float64))
    assert torch.equal(t.rho_s_, torch.ones(3, dtype=torch.float64))


def test_two_modalities_by_hand():
    t = ImbalanceTracker(["env", "sat"], lambda_s=1.0, lambda_d=1.0, eps=1e-3)
    t.update({"env": 0.80, "sat": 0.50})
    w = t.update({"env": 0.82, "sat": 0.60})
    g_s = math.sqrt(0.82 * 0.60)
    d_env, d_sat = 0.02 + 1e-3, 0.10 + 1e-3
    g_d = math.sqrt(d_env * d_sat)
    rho_s = [0.82 / g_s, 0.60 / g_s]
    rho_d = [d_env / g_d, d_sat / g_d]
    assert t.rho_s_.tolist() == pytest.approx(rho_s, rel=1e-12)
    assert t.rho_d_.tolist() == pytest.approx(rho_d, rel=1e-12)
    assert w.tolist() == pytest.approx([rho_s[0] / rho_d[0], rho_s[1] / rho_d[1]], rel=1e-12)
    # strong and settled env is masked more
    assert w[0] > 1 > w[1]


@pytest.mark.parametrize("m", [2, 3, 4, 5, 6])
def test_product_of_weights_is_one_and_lambda_is_an_exponent(m):
    names = [f"m{i}" for i in range(m)]
    s0 = {n: 0.5 + 0.05 * i for i, n in enumerate(names)}
    s1 = {n: 0.55 + 0.07 * i * (-1) ** i for i, n in enumerate(names)}
    t1 = ImbalanceTracker(names, lambda_s=1.0)
    t3 = ImbalanceTracker(names, lambda_s=3.0)
    for s in (s0, s1):
        w1, w3 = t1.update(s), t3.update(s)
    assert math.prod(w1.tolist()) == pytest.approx(1.0, rel=1e-12)
    assert torch.allclose(w3, w1 ** 3, rtol=1e-12)
    # hand formula
    s = torch.tensor([s1[n] for n in names], dtype=torch.float64)
    d = (s - torch.tensor([s0[n] for n in names], dtype=torch.float64)).abs() + 1e-3
    gm = lambda x: math.exp(torch.log(x).mean().item())  # noqa: E731
    want = (s / gm(s)) / (d / gm(d))
    assert torch.allclose(w1, want, rtol=1e-12)


def test_zero_change_in_a_score_is_finite():
    t = ImbalanceTracker(["a", "b", "c"])
    t.update({"a": 0.7, "b": 0.6, "c": 0.5})
    w = t.update({"a": 0.7, "b": 0.6, "c": 0.5})  # no change at all: d = eps for all
    assert torch.isfinite(w).all()
    assert torch.allclose(t.rho_d_, torch.ones(3, dtype=torch.float64))
    w = t.update({"a": 0.7, "b": 0.65, "c": 0.5})  # one modality moves, two are flat
    assert torch.isfinite(w).all() and w[0] > w[1]


def test_window_averages_changes_and_clamp_bounds_weights():
    t = ImbalanceTracker(["a", "b"], window=2)
    for s in ({"a": 0.5, "b": 0.5}, {"a": 0.6, "b": 0.5}, {"a": 0.6, "b": 0.7}):
        t.update(s)
    d = torch.tensor([(0.1 + 0.0) / 2 + 1e-3, (0.0 + 0.2) / 2 + 1e-3], dtype=torch.float64)
    assert torch.allclose(t.rho_d_, d / torch.sqrt(d.prod()), rtol=1e-9)
    c = ImbalanceTracker(["a", "b"], lambda_s=3.0, clamp=(0.5, 2.0))
    c.update({"a": 0.9, "b": 0.2})
    w = c.update({"a": 0.9, "b": 0.5})
    assert w.tolist() == [2.0, 0.5]


def test_score_baseline_sharpens_rho_s_and_leaves_rho_d():
    raw = ImbalanceTracker(["env", "sat"])
    above = ImbalanceTracker(["env", "sat"], baseline=0.5)
    for s in ({"env": 0.68, "sat": 0.58}, {"env": 0.70, "sat": 0.60}):
        raw.update(s)
        above.update(s)
    assert above.rho_s_.tolist() == pytest.approx([0.2 / math.sqrt(0.2 * 0.1), 0.1 / math.sqrt(0.2 * 0.1)], rel=1e-12)
    assert above.rho_s_[0] > raw.rho_s_[0] > 1 > raw.rho_s_[1] > above.rho_s_[1]
    assert torch.equal(above.rho_d_, raw.rho_d_)
    assert torch.equal(above.history_, raw.history_)               # raw scores are what is kept and logged
    below = ImbalanceTracker(["env", "sat"], baseline=0.5)          # a modality at or under chance
    below.update({"env": 0.7, "sat": 0.45})
    w = below.update({"env": 0.7, "sat": 0.45})
    assert below.rho_s_.tolist() == pytest.approx([0.2 / math.sqrt(0.2e-3), 1e-3 / math.sqrt(0.2e-3)], rel=1e-12)
    assert torch.isfinite(w).all()


def test_state_dict_round_trip_and_errors():
    t = ImbalanceTracker(["a", "b"])
    t.update({"a": 0.6, "b": 0.5})
    t.update({"a": 0.7, "b": 0.5})
    u = ImbalanceTracker(["a", "b"])
    u.load_state_dict(t.state_dict())
    assert torch.equal(u.update({"a": 0.7, "b": 0.6}), t.update({"a": 0.7, "b": 0.6}))
    with pytest.raises(InvalidParameterError, match=r"no score for \['b'\]"):
        t.update({"a": 0.5})
    with pytest.raises(InvalidParameterError, match=">= 2 modalities"):
        ImbalanceTracker(["a"])
    with pytest.raises(InvalidParameterError, match="eps"):
        ImbalanceTracker(["a", "b"], eps=0)
