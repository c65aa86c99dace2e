"""Shapley explainers, the subset evaluator and robustness curves on a toy model with closed forms."""

from __future__ import annotations

import inspect
import pydoc

import numpy as np
import pytest
import torch
from torch import nn

from miam.data.contract.dataset import MultimodalDataset
from miam.data.contract.spec import ModalitySpec, TaskSpec
from miam.errors import ConfigError, InvalidParameterError
from miam.explain import (
    ShapleyModalities,
    ShapleyTokens,
    SubsetEvaluator,
    check_model_data,
    robustness_curves,
    shapley_modalities,
    shapley_tokens,
)
from miam.explain.robustness import random_hiding_masks, summarize_curves

SPECS = [
    ModalitySpec("env", "tabular", 3, (1,), ("temp", "rain", "soil")),
    ModalitySpec("clim", "timeseries", 4, (1,), ("Q1", "Q2", "Q3", "Q4")),
    ModalitySpec("sat", "image", 4, (1,), ("r0c0", "r0c1", "r1c0", "r1c1"), grid=(2, 2)),
]
T = 11
PAIR = (1, 4)            # env 'rain' x clim 'Q2' interact
BETA = 0.7


class ToyModel(nn.Module):
    """logit_o = sum_t w[t, o] x_t v_t + BETA * x_i x_j v_i v_j (v: visible): Shapley values in closed form."""

    def __init__(self, task: TaskSpec, seed: int = 0) -> None:
        super().__init__()
        self.specs, self.task = SPECS, task
        g = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(T, task.n_outputs, generator=g))

    def values(self, batch) -> torch.Tensor:
        return torch.cat([batch.tokens[s.name].reshape(batch.batch_size, s.n_tokens) for s in self.specs], 1)

    def forward_subsets(self, batch, masks: torch.Tensor, max_rows: int | None = None) -> torch.Tensor:
        """One pass whatever ``max_rows``: the toy is small."""
        present = batch.present_flat([s.name for s in self.specs])
        vis = (present & (masks if masks.ndim == 3 else masks.unsqueeze(1))).float()   # [S, B, T]
        x = self.values(batch)
        i, j = PAIR
        pair = BETA * vis[..., i] * vis[..., j] * x[:, i] * x[:, j]
        return torch.einsum("sbt,bt,to->sbo", vis, x, self.w) + pair.unsqueeze(-1)


def toy_data(n: int = 80, seed: int = 0, kind: str = "multilabel") -> MultimodalDataset:
    rng = np.random.default_rng(seed)
    tokens = {s.name: rng.normal(size=(n, s.n_tokens, 1)) for s in SPECS}
    target = (rng.uniform(size=(n, 3)) < 0.4).astype(float) if kind == "multilabel" else rng.integers(0, 3, n)
    return MultimodalDataset(tokens, target, SPECS, TaskSpec(kind, 3))


def closed_form(model: ToyModel, ds: MultimodalDataset) -> np.ndarray:
    """Per-sample token Shapley values of the logits [N, T, O]."""
    batch = ds.__getitems__(list(range(len(ds))))
    x = model.values(batch).double()
    phi = x.unsqueeze(-1) * model.w.detach().double().unsqueeze(0)
    i, j = PAIR
    half = (BETA / 2 * x[:, i] * x[:, j]).unsqueeze(-1)
    phi[:, i] += half
    phi[:, j] += half
    return phi.numpy()


@pytest.fixture(scope="module")
def toy():
    ds = toy_data()
    return ToyModel(ds.task), ds


@pytest.mark.parametrize("batch_size,max_rows", [(7, 5), (32, 300), (1000, 100_000)])
def test_exact_modality_shapley_matches_the_closed_form_at_every_batching(toy, batch_size, max_rows):
    model, ds = toy
    explainer = ShapleyModalities(model, batch_size=batch_size, max_rows=max_rows)
    res = explainer.attribute(ds, value="local", output="logit")
    tokens = closed_form(model, ds)
    want = np.stack([tokens[:, 0:3].sum(1), tokens[:, 3:7].sum(1), tokens[:, 7:11].sum(1)], axis=1)
    assert res.values.shape == (len(ds), 3, 3)
    np.testing.assert_allclose(res.values, want, atol=1e-6, rtol=0)
    assert res.efficiency_gap() < 1e-6
    assert res.players == ["env", "clim", "sat"] and res.outputs == ["species_0", "species_1", "species_2"]


@pytest.mark.parametrize("method", ["exact", "permutation"])
@pytest.mark.parametrize("batch_size", [5, 64])
def test_token_shapley_matches_the_closed_form(toy, method, batch_size):
    model, ds = toy
    res = ShapleyTokens(model, batch_size=batch_size, method=method, max_permutations=32, progress=False).attribute(
        ds, "env", others="visible", value="local", output="logit", outputs=["species_1"])
    want = closed_form(model, ds)[:, 0:3, 1:2]
    # 'Q2' is always visible, so 'rain' takes the whole interaction term, not half of it.
    want[:, 1, 0] += BETA / 2 * ds.tokens["env"][:, 1, 0] * ds.tokens["clim"][:, 1, 0]
    np.testing.assert_allclose(res.values, want, atol=1e-6, rtol=0)
    # Additive in the players: every chain gives the same marginals, so the SE is zero.
    assert float(res.se.max()) < 1e-6
    assert res.efficiency_gap() < 1e-6
    if method == "permutation":
        assert res.extra["stopped_by"] == "precision" and "antithetic" in res.estimator


def test_others_hidden_removes_the_cross_modal_interaction(toy):
    model, ds = toy
    res = shapley_tokens(model, ds, "env", value="local", output="logit", outputs=[0], method="exact",
                         others="hidden")
    batch = ds.__getitems__(list(range(len(ds))))
    want = (model.values(batch)[:, 0:3] * model.w[0:3, 0]).detach().double().numpy()   # 'Q2' is hidden
    np.testing.assert_allclose(res.values[..., 0], want, atol=1e-6, rtol=0)


def test_global_modality_shapley_is_efficient_with_v_none_one_half(toy):
    model, ds = toy
    res = shapley_modalities(model, ds, n_boot=50)
    assert res.value == "global" and res.metric == "auroc_macro"
    assert float(res.v_none) == 0.5
    assert res.efficiency_gap() < 1e-12
    assert (res.se > 0).all() and "bootstrap" in res.se_kind
    subset = SubsetEvaluator(model, ds.task).scores(ds, [["env", "clim", "sat"]])
    assert abs(float(res.v_all) - float(subset[0])) < 1e-6


def test_global_token_shapley_sampled_agrees_with_exact_and_adds_up(toy):
    model, ds = toy
    exact = ShapleyTokens(model, method="exact", n_boot=0).attribute(ds, "sat")
    sampled = ShapleyTokens(model, max_permutations=400, tolerance=1e-3, progress=False, seed=1).attribute(ds, "sat")
    assert exact.efficiency_gap() < 1e-12 and sampled.efficiency_gap() < 1e-12
    assert np.all(np.abs(sampled.values - exact.values) <= 4 * sampled.se + 1e-9)
    assert float(sampled.v_none) == 0.5          # every token hidden: no model call


def test_multiclass_v_none_is_scored(toy):
    model, _ = toy
    ds = toy_data(kind="multiclass")
    res = ShapleyModalities(model, ds.task, n_boot=0).attribute(ds)
    batch = ds.__getitems__(list(range(len(ds))))
    with torch.no_grad():   # every token hidden: one constant prediction, scored as top-1 on the targets
        hidden = model.forward_subsets(batch, torch.zeros(1, T, dtype=torch.bool))[0].argmax(dim=-1)
    want = float((hidden == batch.target).double().mean())
    shares = np.bincount(ds.target, minlength=3) / len(ds)
    assert float(res.v_none) == want == shares[int(hidden[0])] and np.sum(shares == want) == 1   # one class's share
    assert res.metric == "top1" and res.efficiency_gap() < 1e-12


def test_per_sample_masks_match_per_subset_masks(toy):
    model, ds = toy
    ev = SubsetEvaluator(model, ds.task, batch_size=9)
    masks = ev.masks([["env"], ["clim", "sat"]])
    shared, _ = ev.predict(ds, masks)
    per_sample, _ = ev.predict(ds, masks.unsqueeze(1).expand(2, len(ds), T).contiguous())
    torch.testing.assert_close(shared, per_sample)


def test_robustness_curves_end_at_the_subset_scores(toy):
    model, ds = toy
    curves = robustness_curves(model, ds, shares=[0.0, 0.5, 1.0], repeats=3)
    summary = summarize_curves(curves)
    ev = SubsetEvaluator(model, ds.task)
    full, no_env = ev.scores(ds, [["env", "clim", "sat"], ["clim", "sat"]]).tolist()
    at = summary.set_index(["scope", "share"])["mean"]
    assert abs(at[("overall", 0.0)] - full) < 1e-6
    assert abs(at[("env", 1.0)] - no_env) < 1e-6
    assert set(curves["scope"]) == {"overall", "env", "clim", "sat"} and len(curves) == 4 * 3 * 3


def test_random_hiding_masks_hide_exact_counts_inside_the_scope():
    scope = torch.tensor([False, True, True, True, True, False])
    m = random_hiding_masks(scope, torch.tensor([0.0, 0.25, 0.5, 1.0]), 50, 2, torch.Generator().manual_seed(0))
    hidden = (~m).sum(dim=2)
    assert hidden[0::2].tolist() == [[0] * 50, [1] * 50, [2] * 50, [4] * 50]
    assert m[..., 0].all() and m[..., 5].all()
    first_hidden = (~m[2]).float().argmax(dim=1)
    assert len(first_hidden.unique()) > 1                   # not the same token for every sample


def test_clear_errors_for_bad_requests(toy):
    model, ds = toy
    ev = SubsetEvaluator(model, ds.task)
    with pytest.raises(InvalidParameterError, match="No subsets to evaluate"):
        ev.masks([])
    with pytest.raises(InvalidParameterError, match="Unknown modality \\['landsat'\\]"):
        ev.masks([["env", "landsat"]])
    explainer = ShapleyTokens(model)
    with pytest.raises(InvalidParameterError, match="unknown modality \\['landsat'\\]"):
        explainer.attribute(ds, "landsat")
    with pytest.raises(InvalidParameterError, match="unknown token of modality 'env' \\['wind'\\]"):
        explainer.attribute(ds, "env", tokens=["temp", "wind"])
    with pytest.raises(InvalidParameterError, match="no tokens of 'env' to explain"):
        explainer.attribute(ds, "env", tokens=[])
    with pytest.raises(InvalidParameterError, match="unknown output \\['owl'\\]"):
        explainer.attribute(ds, "env", value="local", outputs=["owl"])
    with pytest.raises(InvalidParameterError, match="output index \\[7\\] out of range"):
        explainer.attribute(ds, "env", value="local", outputs=[7])
    with pytest.raises(InvalidParameterError, match="'others' parameter"):
        explainer.attribute(ds, "env", others="some")
    with pytest.raises(InvalidParameterError, match="'method' parameter of ShapleyTokens"):
        ShapleyTokens(model, method="kernel")
    with pytest.raises(InvalidParameterError, match="ShapleyTokens: tolerance must be > 0, got 0"):
        ShapleyTokens(model, tolerance=0)
    with pytest.raises(InvalidParameterError, match="unknown scope \\['landsat'\\]"):
        robustness_curves(model, ds, scopes=["landsat"])


def test_estimation_settings_in_the_constructor_the_question_in_attribute(toy):
    model, ds = toy
    assert list(inspect.signature(ShapleyTokens.attribute).parameters) == [
        "self", "data", "modality", "tokens", "others", "value", "outputs", "output"]
    assert list(inspect.signature(ShapleyModalities.attribute).parameters) == ["self", "data", "value", "outputs",
                                                                               "output"]
    settings = {"method": "permutation", "tolerance": None, "max_permutations": 256, "pairs_per_round": 8,
                "n_boot": 200, "seed": 0, "progress": True}
    for cls, names in ((ShapleyTokens, settings), (ShapleyModalities, ["n_boot", "seed"])):
        params = inspect.signature(cls).parameters
        assert {n: params[n].default for n in names} == {n: settings[n] for n in names}
        page = pydoc.render_doc(cls, renderer=pydoc.plaintext)           # what help() prints
        assert all(f"{n}: " in page.split("Args:")[1] for n in names)   # each one documented
    explainer = ShapleyTokens(model, method="exact", tolerance=None, seed=3)      # stored unchanged, sklearn-style
    assert (explainer.method, explainer.tolerance, explainer.seed) == ("exact", None, 3)
    # the settings act: two seeds draw different permutations, the same seed the same values
    draws = [ShapleyTokens(model, max_permutations=8, tolerance=1e-9, progress=False, seed=s).attribute(ds, "sat")
             for s in (0, 0, 1)]
    assert np.array_equal(draws[0].values, draws[1].values) and not np.array_equal(draws[0].values, draws[2].values)
    assert draws[0].extra == {"stopped_by": "budget", "n_permutations": 8}


def test_model_and_data_from_different_specs_are_refused():
    other = [ModalitySpec("env", "tabular", 4), *SPECS[1:]]
    with pytest.raises(ConfigError, match="another dataset's specs: modality 'env' has 3 tokens in the model, "
                                          "4 in the data"):
        check_model_data(SPECS, other, TaskSpec("multilabel", 3), TaskSpec("multilabel", 3))
    with pytest.raises(ConfigError, match="another dataset's specs: task multilabel with 3 outputs"):
        check_model_data(SPECS, SPECS, TaskSpec("multilabel", 3), TaskSpec("multilabel", 5))
