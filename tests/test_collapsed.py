"""Collapsed hidden tokens (``hidden="replace"``): one mask token per kind with its count gives
the full sequence's output, on every evaluation path, and the full sequence runs where it would not."""

import logging

import pandas as pd
import pytest
import torch
import yaml

from miam.cli import main
from miam.data.registry import build_dataset
from miam.data.synthetic import make_dataset
from miam.errors import InvalidParameterError
from miam.models import LateFusionModel, TokenModel
from miam.training import MiamModule

TOL = 1e-5


@pytest.fixture(scope="module")
def ds():
    return make_dataset(seed=0, n_sites=80)


def random_masks(s: int, b: int, t: int, seed: int = 0) -> torch.Tensor:
    """[S, B, T] masks with a random visible share per row, plus an all-hidden and an all-visible subset."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.rand(s, b, t, generator=g) < torch.rand(s, b, 1, generator=g)
    masks[0] = False
    masks[1] = True
    return masks


def both_ways(model: torch.nn.Module, fn):
    """``fn()`` with hidden tokens collapsed (the default) and as the full sequence."""
    collapsed = fn()
    for m in model.modules():
        if isinstance(m, TokenModel):
            m.collapse_hidden = "never"
    full = fn()
    for m in model.modules():
        if isinstance(m, TokenModel):
            m.collapse_hidden = "eval"
    return collapsed, full


def spy_lengths(monkeypatch) -> list[int]:
    """Sequence lengths that reached the collapsed encoder."""
    lengths = []
    run = TokenModel._encode_with_key_bias

    def spy(self, x, key_bias):
        lengths.append(x.shape[1])
        return run(self, x, key_bias)

    monkeypatch.setattr(TokenModel, "_encode_with_key_bias", spy)
    return lengths


@pytest.mark.parametrize("mask_token", ["shared", "per_modality"])
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_collapsed_equals_full_sequence(ds, mask_token, pooling, monkeypatch):
    torch.manual_seed(0)
    model = TokenModel(ds.specs, ds.task, d_model=32, depth=2, heads=4, mask_token=mask_token,
                       pooling=pooling).eval()
    batch = ds.__getitems__(list(range(24)))
    masks = random_masks(6, 24, model.n_tokens)
    lengths = spy_lengths(monkeypatch)
    with torch.no_grad():
        collapsed, full = both_ways(model, lambda: model.forward_subsets(batch, masks))
    assert lengths, "the collapsed path did not run"
    assert (collapsed - full).abs().max() <= TOL
    # all-hidden rows: CLS + one token per kind, whatever the number of tokens hidden
    with torch.no_grad():
        model(batch, torch.zeros(24, model.n_tokens, dtype=torch.bool))
    assert lengths[-1] == 1 + (1 if mask_token == "shared" else len(ds.specs))


def test_batch_of_one_and_per_row_masks(ds):
    torch.manual_seed(1)
    model = TokenModel(ds.specs, ds.task, d_model=32, depth=2, heads=4, mask_token="per_modality").eval()
    one = ds.__getitems__([3])
    visible = random_masks(3, 1, model.n_tokens, seed=2)[2]
    with torch.no_grad():
        collapsed, full = both_ways(model, lambda: model(one, visible))
        rows = ds.__getitems__(list(range(10)))
        vis = random_masks(3, 10, model.n_tokens, seed=3)[2]
        per_row, per_row_full = both_ways(model, lambda: model(rows, vis))
    assert collapsed.shape == (1, ds.task.n_outputs)
    assert (collapsed - full).abs().max() <= TOL
    assert (per_row - per_row_full).abs().max() <= TOL


def test_late_fusion_encoders_collapse(ds):
    torch.manual_seed(0)
    model = LateFusionModel(ds.specs, ds.task, d_model=16, depth=1, heads=2).eval()
    batch = ds.__getitems__(list(range(12)))
    masks = random_masks(4, 12, model.n_tokens, seed=4)
    with torch.no_grad():
        collapsed, full = both_ways(model, lambda: model.forward_subsets(batch, masks))
    assert (collapsed - full).abs().max() <= TOL


def test_training_with_dropout_runs_the_full_sequence_and_says_so_once(ds, monkeypatch, caplog):
    torch.manual_seed(0)
    model = TokenModel(ds.specs, ds.task, d_model=16, depth=1, heads=2, dropout=0.1).train()
    lengths = spy_lengths(monkeypatch)
    batch = ds.__getitems__(list(range(8)))
    visible = random_masks(3, 8, model.n_tokens)[2]
    with caplog.at_level(logging.INFO, logger="miam.models"):
        model(batch, visible)
        model(batch, visible)
    assert lengths == []
    said = [r.getMessage() for r in caplog.records if "full sequence" in r.getMessage()]
    assert len(said) == 1 and "training mode" in said[0]
    model.eval()
    with torch.no_grad():
        model(batch, visible)
    assert len(lengths) == 1


def test_readded_position_is_not_collapsed(ds, monkeypatch, caplog):
    model = TokenModel(ds.specs, ds.task, d_model=16, depth=1, heads=2, readd_position=True).eval()
    lengths = spy_lengths(monkeypatch)
    with caplog.at_level(logging.INFO, logger="miam.models"), torch.no_grad():
        for _ in range(2):
            model(ds.__getitems__([0, 1]), torch.zeros(2, model.n_tokens, dtype=torch.bool))
    assert lengths == []
    assert sum("readd_position=True" in r.getMessage() for r in caplog.records) == 1


def test_collapse_in_training_needs_no_dropout(ds):
    with pytest.raises(InvalidParameterError, match=r"collapse_hidden='always'.*dropout=0.1"):
        TokenModel(ds.specs, ds.task, d_model=16, depth=1, heads=2, dropout=0.1, collapse_hidden="always")
    with pytest.raises(InvalidParameterError, match="'collapse_hidden' parameter of TokenModel"):
        TokenModel(ds.specs, ds.task, d_model=16, depth=1, heads=2, collapse_hidden="train")
    # without dropout the collapsed training step has the full sequence's loss and gradients
    torch.manual_seed(0)
    model = TokenModel(ds.specs, ds.task, d_model=16, depth=2, heads=2, dropout=0.0, collapse_hidden="always")
    batch = ds.__getitems__(list(range(16)))
    visible = random_masks(3, 16, model.n_tokens, seed=5)[2]

    def grads():
        model.zero_grad()
        model(batch, visible).square().mean().backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    collapsed, full = both_ways(model.train(), grads)
    assert torch.allclose(collapsed, full, atol=TOL)


def test_trained_checkpoint_evaluate_output_is_unchanged(tmp_path, monkeypatch, capsys):
    cfg = {"data": {"name": "synthetic", "params": {"n_sites": 400, "n_species": 6}, "batch_size": 64},
           "model": {"d_model": 16, "depth": 2, "heads": 2, "mask_token": "per_modality"},
           "trainer": {"max_epochs": 2, "progress_bar": False, "accelerator": "cpu"}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", "--config", str(tmp_path / "cfg.yaml"), "--out", str(tmp_path / "run")]) == 0
    ckpt = str(tmp_path / "run" / "checkpoints" / "best.ckpt")
    assert main(["evaluate", "--checkpoint", ckpt, "--out", str(tmp_path / "collapsed.csv")]) == 0
    module = MiamModule.load_from_checkpoint(ckpt, map_location="cpu").eval()
    test = build_dataset("synthetic", **cfg["data"]["params"]).split("test")
    batch = test.__getitems__(list(range(len(test))))
    masks = random_masks(5, len(test), module.model.n_tokens, seed=6)
    with torch.no_grad():
        logits = module.model.forward_subsets(batch, masks)
    monkeypatch.setattr(TokenModel, "_collapses", lambda self: False)
    assert main(["evaluate", "--checkpoint", ckpt, "--out", str(tmp_path / "full.csv")]) == 0
    with torch.no_grad():
        assert (module.model.forward_subsets(batch, masks) - logits).abs().max() <= TOL
    collapsed, full = pd.read_csv(tmp_path / "collapsed.csv"), pd.read_csv(tmp_path / "full.csv")
    assert list(collapsed["subset"]) == list(full["subset"]) and len(full) == 7
    assert (collapsed["value"] - full["value"]).abs().max() <= TOL
