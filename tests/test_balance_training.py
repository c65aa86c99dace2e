"""Every balancing method trains for real in the one trainer, with 3 and 4 modalities."""

import pandas as pd
import pytest
import torch
import yaml

from miam.balance import list_methods
from miam.cli import main
from miam.config import from_dict
from miam.data.synthetic import make_dataset
from miam.errors import ConfigError, InvalidParameterError
from miam.training.run import build_module, summarize, test_subsets, train

TINY = {"architecture": "late_fusion", "d_model": 8, "depth": 1, "heads": 2, "dropout": 0.0}


def config(out, method, params=None, **sections):
    base = {"model": TINY, "masking": {"strategy": "constant", "params": {"q": 0.0}},
            "balance": {"method": method, "params": params or {}},
            "data": {"batch_size": 32},
            "trainer": {"max_epochs": 1, "progress_bar": False, "patience": 50, "accelerator": "cpu",
                        "log_every_n_steps": 1, "limit_train_batches": 3},
            "out_dir": str(out)}
    for k, v in sections.items():
        base[k] = {**base.get(k, {}), **v} if isinstance(v, dict) else v
    return from_dict(base)


@pytest.fixture(scope="module")
def three():
    """M = 3 (env, climate, satellite), species presence."""
    return make_dataset(seed=0, n_sites=160, n_species=5)


@pytest.fixture(scope="module")
def four():
    """M = 4 (with coords), one class per site."""
    return make_dataset(seed=1, n_sites=160, n_species=5, task="multiclass", with_coords=True)


#: parameters that let a 1-epoch run reach the method's modulated regime
ACTIVE = {"opm_feature": {"warmup": 0, "p_exe": 1.0}, "miles": {"tau": 0.0}}


def _check_trained(result, dataset, method):
    trained = result.module
    assert trained.balance is not None and trained.balance.name == method
    assert type(trained.model).__name__ == "LateFusionModel" and trained.model.modalities == dataset.modalities
    s = summarize(result, test_subsets(result))
    assert all(0 <= v <= 1 for v in s.values()), s
    metrics = pd.read_csv(next((result.out_dir / "logs").rglob("metrics.csv")))
    assert metrics["train/loss"].dropna().map(lambda v: abs(v) < float("inf")).all()   # finite (no NaN)
    assert any(c.startswith("balance/") for c in metrics.columns), metrics.columns
    return trained


@pytest.mark.parametrize("method", list_methods())
def test_trains_with_three_modalities(three, method, tmp_path):
    dataset = three if method != "mnl" else make_dataset(seed=0, n_sites=160, n_species=5, task="multiclass")
    result = train(config(tmp_path, method, ACTIVE.get(method)), dataset=dataset)
    assert len(dataset.modalities) == 3
    _check_trained(result, dataset, method)


@pytest.mark.parametrize("method", list_methods("multiclass"))
def test_trains_with_four_modalities(four, method, tmp_path):
    result = train(config(tmp_path, method, ACTIVE.get(method)), dataset=four)
    trained = _check_trained(result, four, method)
    assert len(trained.model.modalities) == 4
    state = trained.balance.state_dict()
    if method == "mla":
        assert state["n_updates_"] > 4 and not torch.equal(state["projector_"], torch.eye(8, dtype=torch.float64))
    if method == "cggm":
        assert state["previous_accuracy_"].shape == (4,) and state["coefficients_"] is not None
    if method == "miles":
        assert state["lr_scale_"].shape == (4,)
    if method == "arm":   # the fusion weights moved away from 1, the MI projection stayed fixed
        metrics = pd.read_csv(next((result.out_dir / "logs").rglob("metrics.csv")))
        weights = metrics[[f"balance/w_{m}" for m in four.modalities]].dropna()
        assert len(weights) >= 3 and ((weights - 1).abs() > 1e-3).any(axis=None)
        assert trained.balance_parts.weight.requires_grad is False


def test_learning_rate_groups_reach_the_optimiser(three, tmp_path):
    module = build_module(config(tmp_path, "miles"), three)
    groups = module.configure_optimizers().param_groups
    assert [g["modality"] for g in groups] == ["env", "climate", "satellite", None]
    assert sum(len(g["params"]) for g in groups) == len(list(module.parameters()))


def test_a_manual_method_resumes_its_state(three, tmp_path):
    first = train(config(tmp_path, "mla"), dataset=three)
    after_one = torch.load(first.last_checkpoint, weights_only=False)["miam"]["balance"]
    assert after_one["n_updates_"] == 3 * 3      # 3 batches x 3 modalities
    resumed = train(config(tmp_path, "mla", trainer={"max_epochs": 2}), dataset=three, resume=True)
    after_two = torch.load(resumed.last_checkpoint, weights_only=False)["miam"]["balance"]
    assert after_two["n_updates_"] == 2 * 3 * 3
    assert not torch.equal(after_two["projector_"], after_one["projector_"])


def test_config_section_and_errors(three, tmp_path):
    assert from_dict({"balance": "ogm_ge"}).balance.method == "ogm_ge"
    with pytest.raises(InvalidParameterError, match="Unknown balancing method 'ogm'"):
        from_dict({"balance": "ogm"})
    with pytest.raises(InvalidParameterError, match="The 'alpha' parameter of OGMGE must be"):
        from_dict({"balance": {"method": "ogm_ge", "params": {"alpha": -1}}})
    with pytest.raises(ConfigError, match="'mnl' is not defined for a multilabel task"):
        build_module(config(tmp_path, "mnl"), three)
    with pytest.raises(ConfigError, match="'cggm' needs model.architecture in"):
        build_module(config(tmp_path, "cggm", model={"architecture": "token"}), three)
    with pytest.raises(ConfigError, match="data.groups cannot be combined"):
        build_module(config(tmp_path, "cggm", data={"groups": {"a": ["env", "climate"], "b": ["satellite"]}}), three)
    with pytest.raises(ConfigError, match="model.fusion applies to the late_fusion architecture only"):
        build_module(from_dict({"model": {"fusion": "sum"}}), three)
    with pytest.warns(UserWarning, match="'ogm_ge' runs on top of masking strategy 'miam'"):
        build_module(config(tmp_path, "ogm_ge", masking={"strategy": "miam", "params": {}}), three)
    # M-SAM needs only forward_subsets: it runs on the token model too
    module = build_module(config(tmp_path, "msam", model={"architecture": "token"}), three)
    assert type(module.model).__name__ == "TokenModel" and not module.automatic_optimization


@pytest.mark.parametrize("method", ["arm"])
def test_a_new_method_has_its_row_in_miam_compare(method, tmp_path, capsys):
    config = tmp_path / "compare.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"d_model": 8, "depth": 1, "heads": 2, "dropout": 0.0},
        "data": {"name": "synthetic", "params": {"seed": 0, "n_sites": 160, "n_species": 5}, "batch_size": 32},
        "trainer": {"max_epochs": 1, "progress_bar": False, "accelerator": "cpu", "limit_train_batches": 2}}))
    assert main(["compare", "--config", str(config), "--methods", method, "--seeds", "1",
                 "--out", str(tmp_path / "out")]) == 0
    assert f"[run 1 of 1] {method} (seed 0)" in capsys.readouterr().out
    assert f"| {method} | late_fusion |" in (tmp_path / "out" / "summary.md").read_text()
