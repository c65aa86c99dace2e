"""The benchmark-shaped presets of the synthetic generator: shapes, truth, determinism, signal."""

from __future__ import annotations

import fnmatch

import numpy as np
import pytest
import torch
import yaml

from miam.cli.common import packaged_config
from miam.config import load_config
from miam.data.synthetic import make_dataset
from miam.errors import InvalidParameterError
from miam.scores import encounter_topk, macro_auroc
from miam.training.run import summarize, test_subsets, train

PRESETS = ("geoplant", "taxabench", "satbird")


@pytest.fixture(scope="module")
def datasets():
    return {p: make_dataset(preset=p, seed=0, n_sites=800) for p in PRESETS}


def layout(ds):
    return {s.name: (s.kind, s.n_tokens, s.token_shape) for s in ds.specs}


def test_geoplant_layout(datasets):
    ds = datasets["geoplant"]
    assert layout(ds) == {"env": ("tabular", 23, (1,)), "climate": ("timeseries", 7, (4, 12)),
                          "landsat": ("timeseries", 6, (6, 4)), "sentinel": ("image", 9, (4, 4, 4))}
    env, climate, sentinel = ds.spec("env").token_names, ds.spec("climate").token_names, ds.spec("sentinel")
    assert env[:2] == ("bio1", "bio2") and {"bio19", "elevation", "landcover", "soil_phh2o"} <= set(env)
    assert climate == ("2000-2002", "2003-2005", "2006-2008", "2009-2011", "2012-2014", "2015-2017", "2018")
    assert sentinel.grid == (3, 3) and sentinel.token_names[4] == "r1c1"
    assert ds.task.kind == "multilabel" and ds.task.n_outputs == 120
    assert set(np.unique(ds.target)) == {0.0, 1.0} and ds.target.shape == (800, 120)
    assert ds.info["groups"] == {"tabular": ["env"], "timeseries": ["climate", "landsat"], "satellite": ["sentinel"]}


def test_taxabench_layout(datasets):
    ds = datasets["taxabench"]
    assert layout(ds) == {m: ("embedding", 1, (32,)) for m in ("location", "env", "image", "audio", "satellite")}
    assert ds.task.kind == "multiclass" and ds.task.n_outputs == 30
    assert ds.target.dtype == np.int64 and ds.target.min() >= 0 and ds.target.max() < 30
    assert len(np.unique(ds.target)) == 30


def test_satbird_layout(datasets):
    ds = datasets["satbird"]
    assert layout(ds) == {"env": ("tabular", 27, (1,)), "sentinel": ("image", 16, (4, 4, 4))}
    names = ds.spec("env").token_names
    assert names[0] == "bio_1" and names[18] == "bio_19" and names[19:] == (
        "bdticm", "bldfie", "cecsol", "clyppt", "orcdrc", "phihox", "sltppt", "sndppt")
    assert ds.task.kind == "encounter" and ds.task.n_outputs == 80
    rates = ds.target
    assert rates.min() == 0.0 and rates.max() <= 1.0
    assert ((rates > 0) & (rates < 1)).mean() > 0.2      # rates, not presences


@pytest.mark.parametrize("preset", PRESETS)
def test_truth_shares_sum_to_one(datasets, preset):
    ds = datasets[preset]
    truth = ds.info["truth"]
    assert list(truth["modality_importance"]) == ds.modalities
    assert sum(truth["modality_importance"].values()) == pytest.approx(1.0)
    for m in ds.modalities:
        shares = np.asarray(truth["token_importance"][m])
        assert shares.shape == (ds.spec(m).n_tokens,) and shares.sum() == pytest.approx(1.0)
        assert (shares >= 0).all()
    imp = truth["modality_importance"]
    assert truth["dominant_modality"] == max(imp, key=imp.get)
    if preset == "geoplant":
        groups = truth["group_importance"]
        assert groups["timeseries"] == pytest.approx(imp["climate"] + imp["landsat"])
        assert sum(groups.values()) == pytest.approx(1.0)


def test_geoplant_truth_has_partial_signal(datasets):
    """bio1, the 2018 climate year and the centre patch carry the documented shares."""
    ds = datasets["geoplant"]
    tok = ds.info["truth"]["token_importance"]
    env = dict(zip(ds.spec("env").token_names, tok["env"]))
    assert max(env, key=env.get) == "bio1" and env["bio1"] == pytest.approx(0.46, abs=0.01)
    assert sum(v for k, v in env.items() if k.startswith("bio")) > 0.8
    assert tok["climate"][-1] == pytest.approx(0.85, abs=0.01)           # the 2018 token
    sentinel = np.asarray(tok["sentinel"])
    assert sentinel.argmax() == 4 and sentinel[4] == pytest.approx(0.55, abs=0.01)
    assert sentinel[[0, 2, 6, 8]].sum() == 0.0                 # the corners carry nothing


@pytest.mark.parametrize("preset", PRESETS)
def test_same_seed_same_data(preset):
    a, b = (make_dataset(preset=preset, seed=3, n_sites=300) for _ in range(2))
    c = make_dataset(preset=preset, seed=4, n_sites=300)
    for m in a.modalities:
        np.testing.assert_array_equal(a.tokens[m], b.tokens[m])
    np.testing.assert_array_equal(a.target, b.target)
    assert a.info["truth"] == b.info["truth"]
    assert {k: v.tolist() for k, v in a.splits.items()} == {k: v.tolist() for k, v in b.splits.items()}
    assert not np.array_equal(a.tokens[a.modalities[0]], c.tokens[c.modalities[0]])


def test_preset_missing_rates():
    ds = make_dataset(preset="satbird", seed=0, n_sites=400, missing={"sentinel": 0.3}, token_missing={"env": 0.1})
    report = ds.missing_report()
    assert 0.2 < report["sentinel"] < 0.4 and 0.05 < report["env"] < 0.15


def test_preset_rejects_demo_parameters_and_unknown_names():
    with pytest.raises(InvalidParameterError, match=r"\['n_env', 'task'\] describe the demo landscape"):
        make_dataset(preset="geoplant", n_env=5, task="multiclass")
    with pytest.raises(InvalidParameterError, match="'preset' parameter of make_dataset must be a str among"):
        make_dataset(preset="geolife")
    with pytest.raises(InvalidParameterError, match="unknown modality \\['satellite'\\] in missing rates"):
        make_dataset(preset="satbird", n_sites=100, missing={"satellite": 0.1})


def _ridge_score(ds, modality: str) -> float:
    """Test score of a ridge fit from one modality's flattened tokens (train split)."""
    x = ds.tokens[modality].reshape(len(ds), -1).astype(np.float64)
    y = ds.target if ds.task.per_output else np.eye(ds.task.n_outputs)[ds.target]
    tr, te = ds.splits["train"], ds.splits["test"]
    w = np.linalg.solve(x[tr].T @ x[tr] + 10.0 * np.eye(x.shape[1]), x[tr].T @ (y[tr] - y[tr].mean(0)))
    pred = torch.from_numpy(x[te] @ w + y[tr].mean(0))
    if ds.task.kind == "multilabel":
        return float(macro_auroc(pred, torch.from_numpy(ds.target[te])))
    if ds.task.kind == "multiclass":
        return float((pred.argmax(1) == torch.from_numpy(ds.target[te])).double().mean())
    return float(encounter_topk(pred, torch.from_numpy(ds.target[te])).mean())


@pytest.mark.parametrize("preset", PRESETS)
def test_dominant_modality_is_identifiable(datasets, preset):
    """The dominant modality has the largest true share and a linear fit from it beats the others'."""
    ds = datasets[preset]
    imp = ds.info["truth"]["modality_importance"]
    dominant = {"geoplant": "env", "taxabench": "image", "satbird": "env"}[preset]
    assert max(imp, key=imp.get) == dominant
    scores = {m: _ridge_score(ds, m) for m in ds.modalities}
    assert all(scores[dominant] > scores[m] + 0.02 for m in ds.modalities if m != dominant), scores


@pytest.mark.parametrize("preset", PRESETS)
def test_evaluation_configs_name_real_tokens(datasets, preset):
    """Every configuration of synthetic_<preset>.yaml names modalities/groups and tokens the preset has."""
    raw = yaml.safe_load(packaged_config(f"synthetic_{preset}.yaml").read_text())
    ds = datasets[preset]
    assert raw["data"]["params"]["preset"] == preset
    groups = raw["data"].get("groups") or {}
    assert groups == ds.info["groups"]
    configs = raw["evaluation"]["configs"]
    assert len(configs) == {"geoplant": 12, "taxabench": 10, "satbird": 5}[preset]
    for c in configs:
        for unit, sel in c["tokens"].items():
            members = groups.get(unit, [unit])
            assert set(members) <= set(ds.modalities), (c["name"], unit)
            if sel != "all":
                names = [n for m in members for n in ds.spec(m).token_names]
                assert all(fnmatch.filter(names, pattern) for pattern in sel), (c["name"], sel)


def test_short_training_on_a_preset_beats_chance(tmp_path):
    """A real run through the config path (data: {name: synthetic, params: {preset: taxabench}})."""
    cfg = load_config(None, ["data.params={preset: taxabench, seed: 0, n_sites: 1500}", "model.d_model=32",
                             "model.depth=1", "model.heads=2", "trainer.max_epochs=4", "trainer.progress_bar=false",
                             "trainer.accelerator=cpu", "optim.lr=0.003", f"out_dir={tmp_path}"])
    result = train(cfg)
    summary = summarize(result, test_subsets(result))
    assert result.dataset.task.kind == "multiclass"
    assert summary["full"] > 3 / 30, summary                  # chance is 1/30
