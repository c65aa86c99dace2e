"""``miam cv``: folds by spatial blocks, no test-fold site seen in its own fold, OOF predictions, resume."""

from __future__ import annotations

import warnings

import lightning as L
import numpy as np
import pandas as pd
import pytest
import yaml

from data import files as fixture
from miam.cli import main
from miam.config import from_dict
from miam.data.files.loader import load_files
from miam.data.synthetic import make_dataset
from miam.errors import ConfigError, InvalidParameterError
from miam.training.cv import assign_folds, cross_validate, fold_labels, fold_splits
from test_predict import PARAMS

CFG = {"data": {"name": "synthetic", "batch_size": 64,
                "params": {"n_sites": 360, "n_species": 5, "image_size": 8, "n_sat_informative": 2, "block_km": 10.0}},
       "model": {"d_model": 16, "depth": 1, "heads": 2, "n_frequencies": 8},
       "trainer": {"max_epochs": 2, "progress_bar": False, "accelerator": "cpu"},
       "evaluation": {"configs": [{"name": "env00-01", "tokens": {"env": ["env00", "env01"]}}]}}


class SeenIds(L.Callback):
    """Records the site ids of every batch that trains or validates."""

    def __init__(self) -> None:
        self.train: set[int] = set()
        self.val: set[int] = set()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.train.update(batch.ids.tolist())

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.val.update(batch.ids.tolist())


@pytest.fixture(scope="module")
def cv(tmp_path_factory):
    """A real 3-fold spatial cv with baselines; the ids each fold's trainer saw."""
    out = tmp_path_factory.mktemp("cv")
    seen: dict[int, SeenIds] = {}

    def callbacks(fold: int) -> list:
        seen[fold] = SeenIds()
        return [seen[fold]]

    cfg = from_dict({**CFG, "out_dir": str(out / "run")})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = cross_validate(cfg, n_folds=3, baselines=True, extra_callbacks=callbacks)
    (out / "cfg.yaml").write_text(yaml.safe_dump({**CFG, "out_dir": str(out / "run")}))
    return result, seen, out


def test_no_test_fold_site_trains_or_validates_in_its_own_fold(cv):
    result, seen, _ = cv
    ids = make_dataset(**CFG["data"]["params"]).ids
    assert sorted(seen) == [0, 1, 2]
    for fold, ids_seen in seen.items():
        test = set(ids[result.folds == fold].tolist())
        assert ids_seen.train and ids_seen.val and test
        assert not (ids_seen.train | ids_seen.val) & test
        assert not ids_seen.train & ids_seen.val
        saved = np.load(result.out_dir / f"fold{fold}" / "splits.npz")
        assert set(ids[saved["test"]].tolist()) == test
        assert set(ids[saved["train"]].tolist()) == ids_seen.train and set(ids[saved["val"]].tolist()) == ids_seen.val
        # the fold's run resolved its `auto` patience from its own training sites (2 steps an epoch: 30)
        run_cfg = yaml.safe_load((result.out_dir / f"fold{fold}" / "config.yaml").read_text())
        assert run_cfg["trainer"]["patience"] == 30 and run_cfg["model"]["d_model"] == 16


def test_oof_predictions_cover_every_site_exactly_once(cv):
    result, _, out = cv
    ds = make_dataset(**CFG["data"]["params"])
    for model in ("miam", "hgb", "logistic"):
        oof = pd.read_csv(out / "run" / f"cv_oof_{model}.csv")
        assert sorted(oof["site_id"]) == list(range(len(ds)))
        assert (oof["fold"].to_numpy() == result.folds).all()
        probs = oof[[f"prob_{s}" for s in ds.task.output_names]].to_numpy()
        assert np.isfinite(probs).all() and ((probs > 0) & (probs < 1)).all()
        truth = oof[[f"true_{s}" for s in ds.task.output_names]].to_numpy()
        assert (truth == ds.target).all()


def test_table_has_a_row_per_model_input_and_fold_and_the_plot(cv):
    result, _, out = cv
    folds = pd.read_csv(out / "run" / "cv_folds.csv")
    inputs = set(folds[folds["model"] == "miam"]["input"])
    assert inputs == {"full", "env", "climate", "satellite", "env+climate", "env+satellite", "climate+satellite",
                      "best", "best-per-species", "config:env00-01"}
    assert set(folds[folds["model"] != "miam"]["input"]) == {"full"}
    assert len(folds) == 3 * (len(inputs) + 2) and not folds.duplicated(["model", "input", "fold"]).any()
    summary = pd.read_csv(out / "run" / "cv_summary.csv").set_index(["model", "input"])
    hgb = folds[(folds["model"] == "hgb")]["score"]
    assert summary.loc[("hgb", "full"), "mean"] == pytest.approx(hgb.mean())
    assert summary.loc[("hgb", "full"), "sd"] == pytest.approx(hgb.std())
    assert (out / "run" / "cv_scores.png").stat().st_size > 10_000


def test_cli_resumes_finished_folds_and_retrains_an_unfinished_one(cv, capsys):
    result, _, out = cv
    before = dict(np.load(out / "run" / "fold1" / "miam_probs.npz"))
    (out / "run" / "fold1" / "miam_probs.npz").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["cv", "--config", str(out / "cfg.yaml"), "--folds", "3", "--baselines"]) == 0
    text = capsys.readouterr().out
    assert text.count("exists: skipped") == 5                      # 3 baselines + folds 0 and 2
    assert "fold 2/3 done" in text and "test macro AUROC out of fold" in text
    after = dict(np.load(out / "run" / "fold1" / "miam_probs.npz"))
    # fold 1 resumed from its last.ckpt (training was over): the same model, the same probabilities
    assert all(np.allclose(before[k], after[k]) for k in before)
    table = pd.read_csv(out / "run" / "cv_folds.csv")
    pd.testing.assert_frame_equal(table, result.scores, check_exact=False)


def test_spatial_folds_keep_blocks_whole_and_validation_out_of_the_test_fold():
    xy = np.random.default_rng(0).uniform(0, 100, size=(2000, 2))
    folds = assign_folds(len(xy), 5, "spatial", xy, 10.0)
    block = np.unique(np.floor(xy / 10.0), axis=0, return_inverse=True)[1].reshape(-1)
    assert all(len(np.unique(folds[block == b])) == 1 for b in np.unique(block))
    assert np.bincount(folds).min() > 0.1 * len(xy)
    for f in range(5):
        s = fold_splits(folds, f, 0.2, xy, 10.0)
        assert set(s["test"].tolist()) == set(np.flatnonzero(folds == f).tolist())
        assert not set(s["val"].tolist()) & set(s["test"].tolist())
        assert not set(block[s["val"]].tolist()) & set(block[s["train"]].tolist())   # validation by whole blocks
        assert len(s["train"]) + len(s["val"]) + len(s["test"]) == len(xy)


def test_random_and_column_folds():
    folds = assign_folds(10, 3, "random", seed=0)
    assert sorted(np.bincount(folds).tolist()) == [3, 3, 4]
    labels = ["north", "south", "north", "east"]
    assert assign_folds(4, 0, "column", labels=labels).tolist() == [1, 2, 1, 0]


def test_fold_errors_name_the_problem(tmp_path):
    xy = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    with pytest.raises(InvalidParameterError, match=r"leave 2 of 3 folds empty among 3 sites; use smaller blocks"):
        assign_folds(3, 3, "spatial", xy, 100.0)
    with pytest.raises(InvalidParameterError, match="at least 2 folds, got 1"):
        assign_folds(3, 1, "random")
    with pytest.raises(InvalidParameterError, match=r"val_fraction must be in \(0, 1\), got 1.5"):
        fold_splits(np.array([0, 1, 1]), 0, 1.5)
    cfg = from_dict({**CFG, "out_dir": str(tmp_path)})
    with pytest.raises(ConfigError, match="fold column .'region'. is read from the sites table of a 'files' dataset"):
        cross_validate(cfg, method="column", fold_column="region")
    multiclass = make_dataset(n_sites=100, task="multiclass")
    with pytest.raises(ConfigError, match="multilabel task.*'multiclass'"):
        cross_validate(cfg, dataset=multiclass)


def test_fold_column_of_a_files_dataset(tmp_path):
    fixture.write(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = load_files(root=str(tmp_path), **PARAMS)
    sites = pd.read_csv(tmp_path / "sites.csv").set_index("site_id")
    labels = fold_labels(ds, "split")
    assert labels.tolist() == sites.loc[ds.info["site_ids"], "split"].tolist()
    folds = assign_folds(len(ds), 0, "column", labels=labels)
    assert len(set(folds.tolist())) == 3 and all(len(set(labels[folds == f])) == 1 for f in range(3))
    with pytest.raises(ConfigError, match=r"sites\.csv: no fold column 'region'; columns are \['site_id'"):
        fold_labels(ds, "region")
