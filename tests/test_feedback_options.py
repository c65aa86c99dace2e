"""The tracker's options against noise: a chance level that follows the metric, a slope, a noise floor."""

from __future__ import annotations

import pytest
import torch

from miam.balance import ImbalanceTracker
from miam.balance import functional as F
from miam.data.contract.spec import TaskSpec
from miam.errors import ConfigError, InvalidParameterError
from miam.scores import EncounterTopK, MacroAUROC, Top1Accuracy, chance_level
from miam.training.module import score_baseline


def test_slope_reads_a_slow_climb_that_diff_reads_as_noise():
    # env climbs 0.01 an epoch, smoothly; climate climbs 0.01 an epoch under +-0.03 noise
    e = torch.arange(6, dtype=torch.float64)
    history = torch.stack([0.7 + 0.01 * e, 0.55 + 0.01 * e + 0.03 * torch.tensor([1, -1, 1, -1, 1, -1.0])], dim=1)
    diff = F.score_change(history, window=5, derivative="diff")
    slope = F.score_change(history, window=5, derivative="slope")
    assert diff.tolist() == pytest.approx([0.01, (0.05 + 0.07 + 0.05 + 0.07 + 0.05) / 5])
    # the alternating noise adds a slope of -0.03 * 3 / 17.5 over 6 points (sum t^2 = 17.5)
    assert slope.tolist() == pytest.approx([0.01, abs(0.01 - 0.09 / 17.5)])


def test_noise_floor_lifts_changes_inside_the_scores_own_noise():
    t = ImbalanceTracker(["env", "sat"], lambda_s=0.0, lambda_d=1.0, eps=1e-3, noise_floor=2.0)
    se = {"env": 0.01, "sat": 0.01}
    t.update({"env": 0.80, "sat": 0.60}, se)
    w = t.update({"env": 0.801, "sat": 0.64}, se)
    # d_env = max(0.001, 2 * sqrt(2) * 0.01) + eps; d_sat = 0.04 + eps: w = rho_d^-1 = G(d) / d
    d = torch.tensor([2 * 2 ** 0.5 * 0.01 + 1e-3, 0.04 + 1e-3], dtype=torch.float64)
    assert w.tolist() == pytest.approx((d.prod().sqrt() / d).tolist())
    # without the floor the 0.001 change reads as settled: w_env is 6.4 times larger
    paper = ImbalanceTracker(["env", "sat"], lambda_s=0.0, lambda_d=1.0, eps=1e-3)
    paper.update({"env": 0.80, "sat": 0.60})
    w_paper = paper.update({"env": 0.801, "sat": 0.64})
    assert float(w_paper[0] / w_paper[1]) == pytest.approx(0.041 / 0.002)
    assert float(w[0] / w[1]) == pytest.approx(0.041 / d[0].item())
    with pytest.raises(InvalidParameterError, match="noise_floor=2.0 needs the standard error of every score"):
        t.update({"env": 0.8, "sat": 0.6})
    with pytest.raises(InvalidParameterError, match="'derivative' parameter of ImbalanceTracker must be a str among"):
        ImbalanceTracker(["a", "b"], derivative="ema")


def test_metrics_report_a_standard_error_that_matches_the_bootstrap():
    g = torch.Generator().manual_seed(0)
    n = 600
    y = (torch.rand(n, 3, generator=g) < 0.3).long()
    p = torch.rand(n, 3, generator=g) + 0.6 * y
    auroc = MacroAUROC()
    auroc.update(p, y)
    score = float(auroc.compute())
    boot = []
    for _ in range(300):
        idx = torch.randint(0, n, (n,), generator=g)
        m = MacroAUROC()
        m.update(p[idx], y[idx])
        boot.append(float(m.compute()))
    boot_se = float(torch.tensor(boot).std())
    assert 0.7 < float(auroc.standard_error_) / boot_se < 1.4, (float(auroc.standard_error_), boot_se, score)
    acc = Top1Accuracy(num_classes=4)
    logits = torch.randn(400, 4, generator=g)
    target = torch.randint(0, 4, (400,), generator=g)
    a = float(acc(logits, target))
    assert float(acc.standard_error_) == pytest.approx((a * (1 - a) / 400) ** 0.5)
    topk = EncounterTopK()
    rates = torch.rand(50, 6, generator=g) * (torch.rand(50, 6, generator=g) < 0.5)
    topk.update(torch.rand(50, 6, generator=g), rates)
    topk.compute()
    assert float(topk.standard_error_) > 0


def test_score_baseline_follows_the_metric_and_never_silently_half_for_accuracy():
    assert score_baseline("chance", TaskSpec("multilabel", 5)) == 0.5
    assert score_baseline("chance", TaskSpec("multiclass", 8)) == 1 / 8 == chance_level(TaskSpec("multiclass", 8))
    with pytest.raises(ConfigError, match="'chance': The 'topk' score of an 'encounter' task has no chance level"):
        score_baseline("chance", TaskSpec("encounter", 5))
    rates = torch.tensor([[0.9, 0.0, 0.1], [0.0, 0.5, 0.0], [0.3, 0.0, 0.0]])
    # with the training targets, SatBird's chance is the top-k of the mean rates (species 0, 1, 2 in order):
    # hotspot 0 (k = 2: {0, 2}) gets 1 of 2, hotspot 1 ({1}) none, hotspot 2 ({0}) its one
    assert score_baseline("chance", TaskSpec("encounter", 3), rates) == pytest.approx((0.5 + 0.0 + 1.0) / 3)
    with pytest.warns(UserWarning, match=r"score_baseline=0.5 is not the chance level of the multiclass score \(0.125\)"):
        assert score_baseline(0.5, TaskSpec("multiclass", 8)) == 0.5
    with pytest.raises(ConfigError, match="must be 'chance' or a number in \\[0, 1\\), got 'half'"):
        score_baseline("half", TaskSpec("multilabel", 5))


def test_a_real_run_logs_standard_errors_and_floors_rho_d_with_them(tmp_path):
    """The wiring: validation SEs reach the tracker, and rho_d is the formula on the logged values."""
    import pandas as pd

    from miam.config import from_dict
    from miam.data.synthetic import make_dataset
    from miam.training.run import train

    cfg = from_dict({"model": {"d_model": 16, "depth": 1, "heads": 2}, "data": {"batch_size": 64},
                     "masking": {"score_baseline": "chance", "derivative": "slope", "window": 3, "noise_floor": 2.0},
                     "trainer": {"max_epochs": 4, "patience": 50, "progress_bar": False, "accelerator": "cpu"},
                     "out_dir": str(tmp_path / "run")})
    result = train(cfg, dataset=make_dataset(seed=0, n_sites=600, n_species=6))
    metrics = pd.read_csv(next((tmp_path / "run" / "logs").rglob("metrics.csv")))
    names = ["env", "climate", "satellite"]
    val = metrics.dropna(subset=["val/score_env"]).groupby("epoch").last()
    se = val[[f"val/se_{m}" for m in names]].to_numpy()
    assert (se > 0.005).all() and (se < 0.1).all(), se        # 60 validation sites: a few points of AUROC
    traj = result.trajectory().pivot(index="epoch", columns="modality")
    scores = torch.tensor(traj["score"][names].to_numpy())
    floored = 0
    for e in range(1, 4):
        floor = 2.0 * F.change_noise(torch.tensor(se[e]), e + 1, 3, "slope")
        expected = F.change_ratio(scores[:e + 1], 1e-3, 3, "slope", floor)
        assert traj["rho_d"][names].iloc[e].tolist() == pytest.approx(expected.tolist(), rel=1e-6)
        floored += int((F.score_change(scores[:e + 1], 3, "slope") < floor).any())
    assert floored >= 1     # the floor decided some rho_d: without it these values would differ


def test_a_satbird_like_run_takes_chance_from_its_training_split(tmp_path):
    """'chance' on SatBird's top-k trains (it has no chance level before the data), with the
    uninformed predictor's score on the training split as the baseline."""
    from miam.config import from_dict
    from miam.data.synthetic import make_dataset
    from miam.scores import chance_score
    from miam.training.run import train

    data = make_dataset(preset="satbird", seed=0, n_sites=400)
    cfg = from_dict({"model": {"d_model": 16, "depth": 1, "heads": 2}, "data": {"batch_size": 64},
                     "masking": {"score_baseline": "chance"},
                     "trainer": {"max_epochs": 1, "patience": 50, "progress_bar": False, "accelerator": "cpu"},
                     "out_dir": str(tmp_path / "run")})
    result = train(cfg, dataset=data)
    train_target = torch.as_tensor(data.target[data.splits["train"]])
    expected = chance_score(data.task, train_target)
    assert 0.05 < expected < 0.9 and result.module.tracker.baseline == pytest.approx(expected)
