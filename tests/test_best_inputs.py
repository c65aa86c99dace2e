"""Inputs the validation says to trust: a modality that hurts out of sample is dropped, and the
score of the model trained without it is recovered."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from miam.cli import main
from miam.config import from_dict
from miam.data.contract.dataset import MultimodalDataset
from miam.data.contract.spec import ModalitySpec
from miam.data.synthetic import make_dataset
from miam.errors import ConfigError
from miam.evaluation.subsets import SubsetEvaluator
from miam.training import MiamModule
from miam.training.inputs import (chosen_checkpoint, describe_inputs, load_inputs, species_auroc, store_inputs,
                                 subsets_for)
from miam.training.run import train
from test_predict import run  # noqa: F401  (the fixture: files and a model trained by `miam train`)


def with_flipped_proxy(ds: MultimodalDataset, strength: float = 1.5, seed: int = 0) -> MultimodalDataset:
    """``ds`` plus a modality ``proxy``: one token per species, ``strength * (2y - 1) + N(0, 1)`` at the
    training sites and the opposite sign at validation and test sites (spatial blocks), i.e. a
    covariate whose relationship to the labels flips out of the training area."""
    sign = np.ones(len(ds))
    sign[np.concatenate([ds.splits["val"], ds.splits["test"]])] = -1.0
    noise = np.random.default_rng(seed).normal(size=ds.target.shape)
    proxy = sign[:, None] * strength * (2 * ds.target - 1) + noise
    specs = [*ds.specs, ModalitySpec("proxy", "tabular", ds.task.n_outputs, (1,),
                                     tuple(f"proxy_{n}" for n in ds.task.output_names))]
    tokens = {**ds.tokens, "proxy": proxy[:, :, None].astype(np.float32)}
    return MultimodalDataset(tokens, ds.target, specs, ds.task, present={**ds.present}, coords=ds.coords,
                             splits=ds.splits)


def config(out, epochs=20):
    return from_dict({"data": {"batch_size": 64},
                      "model": {"d_model": 32, "depth": 1, "heads": 4},
                      "optim": {"lr": 3e-3},
                      "masking": {"score_baseline": 0.5},
                      "trainer": {"max_epochs": epochs, "patience": 50, "progress_bar": False, "accelerator": "cpu"},
                      "out_dir": str(out)})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = make_dataset(seed=1, n_sites=1500, n_species=8).select(["env", "climate"])
    harmful = with_flipped_proxy(base)
    root = tmp_path_factory.mktemp("best_inputs")
    return train(config(root / "with_proxy"), dataset=harmful), train(config(root / "without"), dataset=base)


def test_validation_drops_the_harmful_modality_and_recovers_the_score(runs):
    with_proxy, without = runs
    choice = with_proxy.inputs
    assert "proxy" in choice["dropped"]
    assert choice["scores"]["env+climate"] > choice["scores"]["env+climate+proxy"]
    test = with_proxy.dataset.split("test")
    chosen = MiamModule.load_from_checkpoint(chosen_checkpoint(with_proxy.best_checkpoint, choice),
                                             map_location="cpu")
    ev = SubsetEvaluator(chosen.model, chosen.task)
    full, best = ev.scores(test, [ev.names, choice["subset"]]).tolist()
    ev0 = SubsetEvaluator(without.module.model, without.module.task)
    reference = float(ev0.scores(without.dataset.split("test"), [ev0.names])[0])
    print(f"test macro AUROC: with the flipped proxy {full:.4f}, its best inputs ({choice['subset']}, "
          f"{choice['checkpoint']}) {best:.4f}, model trained without it {reference:.4f}")
    assert full < reference - 0.1                      # the proxy hurts out of sample
    # the chosen inputs recover the score, within about two standard errors of a macro AUROC on ~230 test sites
    assert best > reference - 0.04


def test_choice_is_stored_in_a_checkpoint_that_still_loads(runs):
    with_proxy, _ = runs
    module = MiamModule.load_from_checkpoint(with_proxy.best_checkpoint, map_location="cpu")
    assert load_inputs(with_proxy.best_checkpoint) == with_proxy.inputs
    line = describe_inputs(with_proxy.inputs)
    assert "dropped" in line and "proxy" in line.split("dropped")[1]
    per = subsets_for(with_proxy.inputs, "best-per-species", module.task.output_names)
    assert len(per) == module.task.n_outputs and all("proxy" not in s for s in per)


def test_a_checkpoint_without_a_choice_is_a_clear_error(runs, tmp_path):
    with_proxy, _ = runs
    state = torch.load(with_proxy.best_checkpoint, map_location="cpu", weights_only=False)
    del state["miam_inputs"]
    torch.save(state, tmp_path / "old.ckpt")
    with pytest.raises(ConfigError, match=r"old\.ckpt holds no validated choice of inputs"):
        load_inputs(tmp_path / "old.ckpt")


def test_species_auroc_leaves_out_species_without_both_classes():
    y = torch.tensor([[1, 0, 1], [0, 0, 1], [1, 0, 1], [0, 0, 1]])
    p = torch.tensor([[0.9, 0.1, 0.2], [0.1, 0.2, 0.3], [0.4, 0.3, 0.4], [0.5, 0.4, 0.5]])
    out = species_auroc(p, y)
    assert out[0] == pytest.approx(0.75) and np.isnan(out[1:]).all()


def test_predict_with_the_best_inputs_uses_and_reports_them(run, tmp_path, capsys):
    root, ckpt = run               # test_predict's files and tiny model, trained by `miam train` for this module
    choice = load_inputs(ckpt)
    # a known choice, so that the test tells which inputs the prediction used
    store_inputs(ckpt, {**choice, "subset": ["climate"], "dropped": ["site", "patch", "photos"]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["predict", "--checkpoint", str(ckpt), "--sites", str(root / "sites.csv"),
                     "--modalities", "best", "--out", str(tmp_path / "best.csv")]) == 0
    text = capsys.readouterr().out
    assert f"weights of {choice['checkpoint']}): climate (" in text and "dropped site, patch, photos" in text
    table = pd.read_csv(tmp_path / "best.csv")
    assert set(table["modalities"]) == {"climate", "none"}
