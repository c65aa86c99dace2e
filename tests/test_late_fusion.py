"""The late-fusion model: the token model's interface, unimodal logits, hidden modalities add nothing."""

import pytest
import torch

from miam.data.synthetic import make_dataset
from miam.errors import InvalidParameterError, ShapeError
from miam.evaluation.subsets import SubsetEvaluator
from miam.models import LateFusionModel, build_model
from miam.models.late_fusion import FUSIONS


@pytest.fixture(scope="module")
def ds():
    return make_dataset(seed=0, n_sites=120, n_species=6, with_coords=True, missing={"satellite": 0.3})


def _model(ds, **kw):
    torch.manual_seed(0)
    return LateFusionModel(ds.specs, ds.task, **{"d_model": 16, "depth": 1, "heads": 2, **kw})


def _modality_masks(model):
    return torch.stack([model.token_modality == i for i in range(len(model.modalities))])


@pytest.mark.parametrize("fusion, hidden", [(f, "replace") for f in FUSIONS] + [("sum", "drop")])
def test_forward_subsets_equals_one_pass_per_subset(ds, fusion, hidden):
    model = _model(ds, fusion=fusion, hidden=hidden).eval()
    batch = ds.__getitems__(list(range(10)))
    masks = torch.rand(4, model.n_tokens, generator=torch.Generator().manual_seed(1)) > 0.5
    masks[0] = False
    with torch.no_grad():
        together = model.forward_subsets(batch, masks)
        per_sample = model.forward_subsets(batch, masks.unsqueeze(1).expand(4, 10, -1))
    for s in range(4):
        one = model(batch, masks[s].expand(10, -1))
        assert torch.allclose(together[s], one, atol=1e-5)
        assert torch.allclose(per_sample[s], one, atol=1e-5)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_unimodal_logits_are_the_output_with_only_that_modality(ds, fusion):
    model = _model(ds, fusion=fusion).eval()
    batch = ds.__getitems__(list(range(12)))
    out = model.forward_unimodal(batch)
    with torch.no_grad():
        alone = model.forward_subsets(batch, _modality_masks(model))
    present = torch.stack([batch.present[m].any(dim=1) for m in model.modalities])
    assert torch.equal(out.available, present)
    for i in range(len(model.modalities)):
        rows = present[i]  # a sample missing the modality outputs nothing (0, or concat's bias)
        assert torch.allclose(alone[i][rows], out.unimodal[i][rows], atol=1e-5)
    assert out.logits.shape == (12, 6) and out.features.shape == (4, 12, 16)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_a_fully_hidden_modality_contributes_nothing(ds, fusion):
    model = _model(ds, fusion=fusion).eval()
    batch = ds.__getitems__(list(range(8)))
    keep = _modality_masks(model)[[0, 1]].any(dim=0)              # env + climate visible
    with torch.no_grad():
        base = model(batch, keep.expand(8, -1))
        # whatever the hidden modality's values, nothing changes
        batch.tokens["satellite"] = torch.randn_like(batch.tokens["satellite"]) * 100
        batch.tokens["coords"] = torch.randn_like(batch.tokens["coords"]) * 100
        again = model(batch, keep.expand(8, -1))
        none = model(batch, torch.zeros(8, model.n_tokens, dtype=torch.bool))
    assert torch.allclose(base, again, atol=1e-5)
    expected = model.head.bias.expand(8, -1) if fusion == "concat" else torch.zeros(8, 6)
    assert torch.allclose(none, expected)


@pytest.mark.parametrize("hidden, fusion", [("replace", "sum"), ("drop", "entropy")])
def test_finite_gradients_with_nothing_visible_and_batch_of_one(ds, hidden, fusion):
    model = _model(ds, hidden=hidden, fusion=fusion)
    batch = ds.__getitems__([3, 4])
    visible = batch.present_flat(model.modalities).clone()
    visible[0] = False                                       # one sample sees nothing at all
    out = model(batch, visible)
    assert out.shape == (2, 6) and torch.isfinite(out).all()
    out.sum().backward()
    assert model(ds.__getitems__([5])).shape == (1, 6)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_encode_modality_has_a_graph_of_its_own(ds):
    model = _model(ds, fusion="entropy").eval()
    batch = ds.__getitems__(list(range(6)))
    h, available = model.encode_modality(batch, "climate")
    model.modality_logits(h, "climate").sum().backward()
    assert all(p.grad is None for p in model.encoders["env"].parameters())
    assert any(p.grad is not None for p in model.encoders["climate"].parameters())
    assert available.all()
    with torch.no_grad():
        assert torch.allclose(model.forward_unimodal(batch).features[1], h, atol=1e-5)


def test_parts_for_the_balancing_methods(ds):
    for fusion in FUSIONS:
        model = _model(ds, fusion=fusion)
        heads = {id(p) for p in model.head_parameters()}
        encoders = {id(p) for m in model.modalities for p in model.encoders[m].parameters()}
        assert heads | encoders == {id(p) for p in model.parameters()} and not heads & encoders
        assert model.head_weight("climate").shape == (6, 16)
        weights = model.encoder_weights("env")
        assert weights and all(w.ndim == 2 and id(w) in encoders for w in weights)
    concat = _model(ds, fusion="concat")
    assert torch.equal(concat.head_weight("climate"), concat.head.weight[:, 16:32])


def test_subset_evaluator_and_build_model(ds):
    model = build_model(ds.specs, ds.task, architecture="late_fusion", d_model=16, depth=1, heads=2)
    assert isinstance(model, LateFusionModel)
    table = SubsetEvaluator(model, ds.task, batch_size=40).evaluate(ds.split("val"))
    assert len(table) == 15 and table["value"].between(0, 1).all()


def test_errors(ds):
    with pytest.raises(InvalidParameterError, match="'fusion' parameter of LateFusionModel"):
        _model(ds, fusion="gated")
    model = _model(ds)
    assert model.n_tokens == 41
    with pytest.raises(ShapeError, match=r"Expected `visible` \[2, 41\]"):
        model(ds.__getitems__([0, 1]), torch.ones(2, 40, dtype=torch.bool))
    with pytest.raises(ShapeError, match=r"Expected masks \[S, 41\]"):
        model.forward_subsets(ds.__getitems__([0, 1]), torch.ones(3, 40, dtype=torch.bool))
