"""The data contract: specs, batches, NaN -> hidden, and the synthetic generator."""

import numpy as np
import pytest
import torch

from miam.data import ModalitySpec, MultimodalBatch, MultimodalDataset, TaskSpec, collate, spatial_block_split
from miam.data.synthetic import make_dataset
from miam.errors import InvalidParameterError, ShapeError
from miam.models import TokenModel


@pytest.fixture(scope="module")
def small():
    return make_dataset(seed=1, n_sites=400, n_species=8, missing={"satellite": 0.2}, token_missing={"env": 0.1})


def test_spec_validation_messages():
    with pytest.raises(InvalidParameterError, match=r"'kind' parameter of ModalitySpec must be a str among .*'tabular'"):
        ModalitySpec("env", "tabluar", 3)
    with pytest.raises(InvalidParameterError, match="expected 3 token_names, got 2"):
        ModalitySpec("env", "tabular", 3, (1,), ("a", "b"))
    with pytest.raises(InvalidParameterError, match="grid"):
        ModalitySpec("sat", "image", 16, (3, 4, 4), grid=(3, 3))
    spec = ModalitySpec("clim", "timeseries", 12, (3,))
    assert ModalitySpec.from_dict(spec.to_dict()) == spec
    assert spec.token_names[0] == "clim[0]"


def test_dataset_shape_errors_name_the_field():
    spec = ModalitySpec("env", "tabular", 3, (1,))
    task = TaskSpec("multilabel", 2)
    with pytest.raises(ShapeError, match=r"Expected tokens\['env'\] of shape \[4, 3, 1\], got \[4, 2, 1\]"):
        MultimodalDataset({"env": np.zeros((4, 2, 1))}, np.zeros((4, 2)), [spec], task)
    with pytest.raises(ShapeError, match=r"Expected target of shape \[4, 2\]"):
        MultimodalDataset({"env": np.zeros((4, 3, 1))}, np.zeros((4, 5)), [spec], task)
    with pytest.raises(ShapeError, match="No tokens given for modality 'env'"):
        MultimodalDataset({"sat": np.zeros((4, 3, 1))}, np.zeros((4, 2)), [spec], task)


def test_batch_validate_names_both_shapes(small):
    batch = small.__getitems__([0, 1, 2])
    batch.validate(small.specs, small.task)
    bad = MultimodalBatch(dict(batch.tokens), dict(batch.present), batch.target)
    bad.present["env"] = bad.present["env"][:, :-1]
    with pytest.raises(ShapeError, match=r"Expected `present\['env'\]` \[3, 12\], got \[3, 11\]"):
        bad.validate(small.specs)
    bad = MultimodalBatch(dict(batch.tokens), dict(batch.present), batch.target)
    bad.tokens["satellite"] = bad.tokens["satellite"][..., :2]
    with pytest.raises(ShapeError, match=r"Expected `tokens\['satellite'\]` \[3, 16, 4, 4, 4\], got \[3, 16, 4, 4, 2\]"):
        bad.validate(small.specs)


def test_nan_becomes_hidden_and_zero(small):
    assert small.missing_report()["satellite"] > 0.1
    pres = small.present["env"]
    assert 0.05 < 1 - pres.mean() < 0.15
    assert np.all(small.tokens["env"][~pres] == 0)
    # a whole absent image hides all its patches
    sat = small.present["satellite"]
    assert np.all(sat.all(axis=1) | ~sat.any(axis=1))


def test_value_under_a_missing_token_changes_no_prediction(small):
    torch.manual_seed(0)
    model = TokenModel(small.specs, small.task, d_model=32, depth=1, heads=4).eval()
    for hidden in ("replace", "drop"):
        model.hidden = hidden
        batch = small.__getitems__(list(range(32)))
        before = model(batch)
        garbage = MultimodalBatch({m: t.clone() for m, t in batch.tokens.items()}, batch.present, batch.target)
        for m, t in garbage.tokens.items():
            miss = ~batch.present[m]
            t[miss] = torch.randn_like(t[miss]) * 1e3
        assert (~batch.present["env"]).any()
        assert torch.equal(model(garbage), before)


def test_getitems_equals_collated_samples(small):
    idx = [5, 0, 17]
    a = small.__getitems__(idx)
    b = collate([small[i] for i in idx])
    for m in small.modalities:
        assert torch.equal(a.tokens[m], b.tokens[m]) and torch.equal(a.present[m], b.present[m])
    assert torch.equal(a.target, b.target)


def test_synthetic_is_deterministic_and_records_truth():
    a = make_dataset(seed=3, n_sites=150)
    b = make_dataset(seed=3, n_sites=150)
    c = make_dataset(seed=4, n_sites=150)
    assert all(np.array_equal(a.tokens[m], b.tokens[m]) for m in a.modalities)
    assert not np.array_equal(a.tokens["env"], c.tokens["env"])
    truth = a.info["truth"]
    assert set(truth["modality_importance"]) == {"env", "climate", "satellite"}
    assert sum(truth["modality_importance"].values()) == pytest.approx(1.0)
    env = np.array(truth["token_importance"]["env"])
    assert env[:6].min() > 0 and np.all(env[6:] == 0)          # informative vs pure-noise variables
    for m in ("env", "climate", "satellite"):
        assert sum(truth["token_importance"][m]) == pytest.approx(1.0)
    np.testing.assert_allclose(env[:6], np.linspace(1, 0.25, 6) ** 2 / (np.linspace(1, 0.25, 6) ** 2).sum(), rtol=1e-6)
    climate = np.array(truth["token_importance"]["climate"])
    assert np.all(climate[2:7] > 0) and np.all(climate[[0, 1, 7, 8, 9, 10, 11]] == 0)  # Mar-Jul only
    sat = np.array(truth["token_importance"]["satellite"]).reshape(4, 4)
    assert (sat > 0).sum() == 5 and sat[1:3, 1:3].min() > 0    # five patches around the site carry signal
    assert np.all(sat[[0, 0, 3, 3], [0, 3, 0, 3]] == 0)          # the image's corners carry none
    assert a.target.shape == (150, 24)
    mc = make_dataset(seed=0, n_sites=200, task="multiclass", n_species=5)
    assert mc.task.kind == "multiclass" and set(np.unique(mc.target)) <= set(range(5))


def test_spatial_block_split_is_disjoint_by_block():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, size=(3000, 2))
    s = spatial_block_split(xy, 10.0, seed=1)
    assert sorted(np.concatenate(list(s.values())).tolist()) == list(range(3000))
    blocks = {k: {tuple(c) for c in np.floor(xy[v] / 10).astype(int)} for k, v in s.items()}
    assert not (blocks["train"] & blocks["test"]) and not (blocks["train"] & blocks["val"])
    assert 0.6 < len(s["train"]) / 3000 < 0.8
    with pytest.raises(InvalidParameterError, match="must sum to 1"):
        spatial_block_split(xy, 10.0, fractions=(0.5, 0.2, 0.2))


def test_missing_rate_errors():
    with pytest.raises(InvalidParameterError, match=r"unknown modality \['sentinel'\].*valid names are"):
        make_dataset(n_sites=50, missing={"sentinel": 0.1})


def test_select_keeps_samples_targets_and_splits():
    ds = make_dataset(seed=1, n_sites=120, missing={"satellite": 0.3})
    sat = ds.select(["satellite"])
    assert sat.modalities == ["satellite"] and len(sat) == len(ds)
    assert np.array_equal(sat.target, ds.target) and np.array_equal(sat.present["satellite"], ds.present["satellite"])
    assert all(np.array_equal(sat.splits[k], ds.splits[k]) for k in ds.splits)
    with pytest.raises(InvalidParameterError, match=r"Unknown modality 'radar'; valid names are \['env'"):
        ds.select(["radar"])
