"""Masked self-supervised pretraining: the loss, unlabelled sources, checkpoints, fine-tuning and resume."""

from __future__ import annotations

import warnings

import lightning as L
import numpy as np
import pytest
import torch

from data import files as fixture
from miam.config import from_dict
from miam.data.contract.unlabelled import from_dataset
from miam.data.files.grid import Grid
from miam.data.files.loader import FilesData
from miam.data.files.pools import GridPool, sites_pool
from miam.data.synthetic import make_dataset
from miam.data.synthetic.pool import synthetic_pool
from miam.errors import ConfigError
from miam.masking import list_strategies
from miam.models import TokenModel
from miam.models.reconstruction import ReconstructionHeads, reconstruction_errors
from miam.training.pretrain import PretrainModule, describe_pretrained, pretrain
from miam.training.run import train

SMALL = {"d_model": 16, "depth": 1, "heads": 2, "dropout": 0.0, "collapse_hidden": "always", "n_frequencies": 8}


def config(tmp_path, name, **sections):
    base = {"data": {"name": "synthetic_pool", "batch_size": 64,
                     "params": {"n_labelled": 120, "n_unlabelled": 400, "n_species": 6, "n_test": 60,
                                "covariate_correlation": 0.5}},
            "model": SMALL, "trainer": {"max_epochs": 2, "progress_bar": False, "patience": 50, "accelerator": "cpu"},
            "out_dir": str(tmp_path / name)}
    for k, v in sections.items():
        base[k] = {**base.get(k, {}), **v}
    return from_dict(base)


@pytest.fixture(scope="module")
def labelled():
    return synthetic_pool(120, 400, seed=0, n_species=6, n_test=60, covariate_correlation=0.5)


@pytest.fixture(scope="module")
def pretrained(labelled, tmp_path_factory):
    return pretrain(config(tmp_path_factory.mktemp("pre"), "pre"), dataset=labelled)


def test_loss_counts_hidden_present_tokens_only_and_weighs_modalities_equally():
    ds = make_dataset(seed=1, n_sites=64, token_missing={"env": 0.2})
    batch = ds.__getitems__(list(range(32)))
    model = TokenModel(ds.specs, ds.task, **{k: v for k, v in SMALL.items()})
    heads = ReconstructionHeads(ds.specs, 16)
    visible = torch.rand(32, model.n_tokens, generator=torch.Generator().manual_seed(0)) < 0.5
    pred = {m: p.detach() for m, p in heads(model.token_states(batch, visible)).items()}
    base = reconstruction_errors(heads, pred, batch, ~visible)
    present = batch.present_flat(model.modalities)
    env_vis, env_hid = visible[:, :12] & present[:, :12], ~visible[:, :12] & present[:, :12]
    changed = ds.__getitems__(list(range(32)))
    changed.tokens["env"][env_vis] += 100.0                    # visible tokens' targets move: no loss moves
    changed.tokens["env"][~present[:, :12]] += 100.0           # nor do the tokens missing in the data
    again = reconstruction_errors(heads, pred, changed, ~visible)
    assert torch.equal(again.error, base.error) and torch.equal(again.count, base.count)
    assert torch.isclose(again.loss(), base.loss())
    changed.tokens["env"][env_hid] += 1.0                      # a hidden token's target does move it
    assert reconstruction_errors(heads, pred, changed, ~visible).loss() > base.loss()
    # each modality's mean over its own hidden tokens, then the plain mean over modalities
    assert base.count[0] == env_hid.sum()
    assert torch.isclose(base.loss(), (base.error / base.count).mean())
    assert torch.isclose(base.skill(), 1 - base.error / base.baseline).all()


@pytest.mark.parametrize("strategy", list_strategies())
def test_every_strategy_hides_tokens_for_a_finite_reconstruction_step(strategy, labelled):
    module = PretrainModule([s.to_dict() for s in labelled.specs], SMALL, {"strategy": strategy})
    batch = labelled.info["unlabelled"].__getitems__(list(range(32)))
    visible = module.draw_visible(batch)
    loss = module.errors(batch, visible).loss()
    loss.backward()
    assert torch.isfinite(loss) and module.model.tokenizers["env"].weight.grad is not None


def test_unlabelled_pool_holds_no_label_and_no_labelled_site(labelled):
    pool = labelled.info["unlabelled"]
    batch = pool.split("train").__getitems__([0, 1, 2])
    assert batch.target.shape == (3, 0)
    assert pool.modalities == labelled.modalities and len(pool) == 400
    assert len(labelled.split("train")) == 120
    labelled_inputs = {tuple(np.round(r, 5)) for r in labelled.tokens["env"][:, :, 0]}
    assert not any(tuple(np.round(r, 5)) in labelled_inputs for r in pool.tokens["env"][:, :, 0])


def test_pretraining_scores_every_view_and_feeds_miam(pretrained):
    rec = pretrained.reconstruction
    assert set(rec) == {"skill_env", "skill_climate", "skill_satellite", "skill_masked", "error", "baseline"}
    assert pretrained.module.tracker.history_.shape == (2, 3)          # one row of unimodal skills per epoch
    assert "2 epochs" in describe_pretrained({"epoch": 1, "source": "x", "strategy": "miam"})


def test_finetuning_starts_from_the_pretrained_encoder(pretrained, labelled, tmp_path):
    seen = {}

    class Capture(L.Callback):
        def on_train_start(self, trainer, module):
            seen.update({k: v.clone() for k, v in module.model.state_dict().items()})

    cfg = config(tmp_path, "ft", pretrain={"init_from": pretrained.best_checkpoint, "finetune": "linear_probe"},
                 trainer={"max_epochs": 1})
    result = train(cfg, dataset=labelled, extra_callbacks=[Capture()])
    state = torch.load(pretrained.best_checkpoint, weights_only=False)["state_dict"]
    encoder = {k[len("model."):]: v for k, v in state.items()
               if k.startswith("model.") and not k.startswith("model.head.")}
    assert encoder and all(torch.equal(seen[k], v) for k, v in encoder.items())
    # linear probe: after training the encoder is still the pretrained one, the head moved
    after = result.module.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in encoder.items())
    assert not torch.equal(after["head.weight"], seen["head.weight"])
    assert result.module.hparams["pretrained"]["finetune"] == "linear_probe"
    assert "Pretrained (masking: miam" in describe_pretrained(result.module.hparams["pretrained"])


def test_checkpoint_of_other_specs_is_refused(pretrained, tmp_path):
    other = make_dataset(seed=0, n_sites=300, n_env=8, n_species=6)
    cfg = from_dict({"data": {"batch_size": 64}, "model": SMALL, "out_dir": str(tmp_path / "x"),
                     "trainer": {"max_epochs": 1, "progress_bar": False, "accelerator": "cpu"},
                     "pretrain": {"init_from": pretrained.best_checkpoint}})
    with pytest.raises(ConfigError, match=r"modality 'env': n_tokens 12 in the checkpoint, 8 in the data"):
        train(cfg, dataset=other)
    with pytest.raises(ConfigError, match=r"pretrain\.finetune must be one of \['full', 'linear_probe'\], got 'half'"):
        train(cfg.replace(pretrain={"finetune": "half"}), dataset=other)


def test_pretraining_resumes_exactly(labelled, tmp_path):
    full = pretrain(config(tmp_path, "a", trainer={"max_epochs": 3}), dataset=labelled)
    cfg = config(tmp_path, "b", trainer={"max_epochs": 1})
    pretrain(cfg, dataset=labelled)
    resumed = pretrain(cfg.replace(trainer={"max_epochs": 3}), dataset=labelled, resume=True)
    a = torch.load(full.last_checkpoint, weights_only=False)
    b = torch.load(resumed.last_checkpoint, weights_only=False)
    assert a["epoch"] == b["epoch"] == 2 and a["global_step"] == b["global_step"]
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    assert torch.equal(a["miam"]["tracker"]["history_"], b["miam"]["tracker"]["history_"])


def test_grid_cells_are_read_window_by_window_once_each(tmp_path):
    fixture.write(tmp_path)
    params = {"root": str(tmp_path), "sites": {"path": "sites.csv"}, "targets": {"species": ["sp_*"]},
              "rasters": [{"name": "climate", "paths": ["bio.tif"]}], "split": {"method": "column"},
              "progress": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = FilesData(**params)
        ds = data.build()
    grid = Grid.of_raster(tmp_path / "bio.tif")
    pool = GridPool(data, grid, window_pixels=1_500)
    windows = list(pool.windows())
    assert len(windows) == 7                                    # 15 rows of 100 cells a window, 100 rows
    cells = torch.cat([w.ids for w in windows])
    assert torch.equal(cells, torch.arange(100 * 100))         # every cell once, in order
    present = torch.cat([w.present["climate"] for w in windows])[:, 0].reshape(100, 100)
    assert not present[:10, :10].any() and present[10:].all()  # bio.tif's nodata corner is hidden, nothing else
    direct = pool.__getitems__(np.array([2_345, 9_999]))
    assert torch.equal(direct.tokens["climate"], torch.cat([w.tokens["climate"] for w in windows])[[2_345, 9_999]])
    assert direct.target.shape == (2, 0)
    sampled = GridPool(data, grid, sample=500, window_pixels=1_500)
    assert sum(len(w.ids) for w in sampled.windows()) == 500 == len(sampled)
    assert len(from_dataset(ds)) == len(ds.split("train"))
    # a files source without targets: the training sites table read again, encoded with the training statistics
    table = sites_pool(data, str(tmp_path / "sites.csv"))
    assert len(table) == len(ds) and table.__getitems__([0, 1]).target.shape == (2, 0)
    assert np.array_equal(table.tokens["climate"], ds.tokens["climate"])
