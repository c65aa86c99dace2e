"""Every balancing method trains for real in the one trainer, with 3 and 4 modalities, and acts there."""

import math

import lightning as L
import pandas as pd
import pytest
import torch
import yaml

from miam.balance import list_methods
from miam.balance.methods.miles import miles_lr_scales
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
    s = summarize(result, test_subsets(result))   # every subset scored, none NaN (a model broken by the method)
    assert {*dataset.modalities, "full"} <= set(s) and all(math.isfinite(v) for v in s.values()), s
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


class Gradients(L.Callback):
    """Per optimiser step: the model's gradients as backward left them (the callbacks' hook runs
    before the module's, where the method modulates) and as the optimiser used them, and the
    method's stats of the step."""

    def __init__(self) -> None:
        self.before, self.after, self.stats = [], [], []

    @staticmethod
    def _grads(module):
        return {n: p.grad.clone() for n, p in module.model.named_parameters() if p.grad is not None}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.before.append(self._grads(pl_module))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.after.append(self._grads(pl_module))
        self.stats.append(pl_module.balance.stats())


def _run_recording(three, tmp_path, method, params, **sections):
    record = Gradients()
    result = train(config(tmp_path, method, params, **sections), dataset=three, extra_callbacks=[record])
    model = result.module.model
    names = {id(p): n for n, p in model.named_parameters()}
    encoder = {m: {names[id(w)] for w in model.encoder_weights(m)} for m in three.modalities}
    head = {names[id(p)] for p in model.head_parameters()}
    assert len(record.before) == len(record.after) == 3
    return record, encoder, head


def test_ogm_ge_scales_the_leading_encoders_gradients_by_k(three, tmp_path):
    record, encoder, head = _run_recording(three, tmp_path, "ogm_ge", {"alpha": 0.5, "noise": False})
    slowed = 0
    for before, after, stats in zip(record.before, record.after, record.stats):
        for m, names in encoder.items():
            for n in names:
                torch.testing.assert_close(after[n], before[n] * stats[f"k_{m}"], rtol=1e-5, atol=1e-12)
            slowed += stats[f"k_{m}"] < 0.99
        for n in head:
            assert torch.equal(after[n], before[n])
    assert slowed > 0


def test_amss_drops_output_channels_of_the_encoders_gradients(three, tmp_path):
    record, encoder, head = _run_recording(three, tmp_path, "amss", {})
    dropped = 0
    for before, after, stats in zip(record.before, record.after, record.stats):
        for m, names in encoder.items():
            for n in names:
                kept = (after[n] != 0).flatten(1).any(dim=1)
                assert torch.equal(after[n][kept], before[n][kept])   # a channel is kept whole or dropped
                dropped += int((before[n][~kept] != 0).any(dim=-1).sum())
            assert stats[f"keep_{m}"] < 1
        for n in head:
            assert torch.equal(after[n], before[n])
    assert dropped > 0


def test_cggm_scales_each_encoder_by_rho_b_then_clips(three, tmp_path):
    rho, clip = 1.3, 0.05
    record, encoder, head = _run_recording(three, tmp_path, "cggm", {"rho": rho, "clip": clip})
    for before, after, stats in zip(record.before, record.after, record.stats):
        n_head = sorted(head)[0]
        c = float(after[n_head].norm() / before[n_head].norm())   # the clip's factor, alike for every parameter
        assert c < 1
        for n in head:
            torch.testing.assert_close(after[n], before[n] * c, rtol=1e-4, atol=1e-10)
        for m, names in encoder.items():
            for n in names:
                torch.testing.assert_close(after[n], before[n] * rho * stats[f"B_{m}"] * c, rtol=1e-4, atol=1e-10)
        total = torch.cat([g.flatten() for g in after.values()]).norm()
        torch.testing.assert_close(total, torch.tensor(clip), rtol=1e-4, atol=0)


def test_miles_slows_the_leading_encoder_for_the_next_epoch(three, tmp_path):
    lrs, scores = [], []

    class LearningRates(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            scores.append(dict(pl_module.val_scores_))
            lrs.append({g["modality"]: g["lr"] for g in trainer.optimizers[0].param_groups})

    train(config(tmp_path, "miles", {"tau": 0.0, "mu": 0.5}, trainer={"max_epochs": 2}), dataset=three,
          extra_callbacks=[LearningRates()])
    assert lrs[0] == {"env": 1e-3, "climate": 1e-3, "satellite": 1e-3, None: 1e-3}
    # after epoch 0's validation: the rule on its scores, applied to the encoders' groups only
    scale = miles_lr_scales(scores[1]["full"], torch.tensor([scores[1][m] for m in three.modalities]), 0.0, 0.5)
    assert sorted(scale.tolist()) == [0.5, 1.0, 1.0]
    assert lrs[1] == {**{m: pytest.approx(1e-3 * float(k)) for m, k in zip(three.modalities, scale)}, None: 1e-3}


def test_opm_drops_features_only_after_the_warm_up(three, tmp_path):
    calls = []   # (epoch, modalities available to the fusion) of every training forward

    class SpyFusion(L.Callback):
        def on_fit_start(self, trainer, pl_module):
            fuse = pl_module.model.fuse

            def recording(unimodal, available):
                if torch.is_grad_enabled():
                    calls.append((trainer.current_epoch, int(available.sum())))
                return fuse(unimodal, available)
            pl_module.model.fuse = recording

    train(config(tmp_path, "opm_feature", {"warmup": 1, "p_exe": 1.0}, trainer={"max_epochs": 2}), dataset=three,
          extra_callbacks=[SpyFusion()])
    warm = [n for epoch, n in calls if epoch == 0]
    after = [n for epoch, n in calls if epoch == 1]
    assert len(warm) == 3 and len(after) == 6       # after warm-up: the fusion of all, then of what was kept
    for all_features, kept in zip(after[::2], after[1::2]):
        assert kept < all_features


def test_mla_alternates_one_encoder_per_update(three, tmp_path):
    order = []   # which encoders carry a gradient at each optimiser step

    class Updates(L.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            model = pl_module.model
            order.append([m for m in model.modalities
                          if any(p.grad is not None for p in model.encoders[m].parameters())])

    train(config(tmp_path, "mla"), dataset=three, extra_callbacks=[Updates()])
    assert order == [[m] for m in three.modalities] * 3     # 3 batches, each a step per modality in turn


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
