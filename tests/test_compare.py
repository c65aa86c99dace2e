"""The comparison: one split and budget, selection on validation, test after training, resumable."""

import json

import lightning as L
import pandas as pd
import pytest
import yaml

from miam.cli import main
from miam.config import from_dict
from miam.data.synthetic import make_dataset
from miam.errors import ConfigError
from miam.training.compare import compare, default_names, run_config

BASE = {
    "model": {"d_model": 8, "depth": 1, "heads": 2, "dropout": 0.0},
    "data": {"name": "synthetic", "params": {"seed": 0, "n_sites": 160, "n_species": 5}, "batch_size": 32},
    "trainer": {"max_epochs": 1, "progress_bar": False, "accelerator": "cpu", "limit_train_batches": 2},
}


@pytest.fixture(scope="module")
def dataset():
    return make_dataset(seed=0, n_sites=160, n_species=5)


class Recorder(L.Callback):
    """Records when fitting starts and ends, and whether the test loader exists by then."""

    def __init__(self, events):
        self.events = events

    def on_fit_start(self, trainer, pl_module):
        self.events.append(("fit_start", trainer.datamodule.test_loader_built))

    def on_validation_epoch_end(self, trainer, pl_module):
        self.events.append(("val_end", trainer.datamodule.test_loader_built))

    def on_fit_end(self, trainer, pl_module):
        self.events.append(("fit_end", trainer.datamodule.test_loader_built))


class Interrupt(L.Callback):
    """Stops the run with an error at the end of its second epoch (after last.ckpt of epoch 0 exists)."""

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            raise RuntimeError("power cut")


def test_compare_selects_on_validation_tests_after_training_and_skips_finished_runs(dataset, tmp_path):
    events = []
    real_split = dataset.split

    def spy(name):   # the real split, with every access recorded in order
        events.append(("split", name))
        return real_split(name)

    dataset.split = spy
    lines = []
    try:
        result = compare(from_dict(BASE), ["uniform_hypercube", "ogm_ge"], seeds=2, dataset=dataset,
                         out_dir=tmp_path, extra_callbacks=[Recorder(events)], log=lines.append)
    finally:
        del dataset.split
    # progress says which run of how many
    assert [ln.split(":")[0] for ln in lines if "training" in ln] == [
        "[run 1 of 4] uniform_hypercube (seed 0)", "[run 2 of 4] uniform_hypercube (seed 1)",
        "[run 3 of 4] ogm_ge (seed 0)", "[run 4 of 4] ogm_ge (seed 1)"]
    # the test split is read only after each run's training has ended, and the trainer never built a test loader
    for i, (kind, value) in enumerate(events):
        if kind in ("fit_start", "val_end", "fit_end"):
            assert value is False
        if (kind, value) == ("split", "test"):
            before = [k for k, _ in events[:i] if k in ("fit_start", "fit_end")]
            assert before and before[-1] == "fit_end"
    assert sum(1 for e in events if e == ("split", "test")) >= 4     # each run's test, then the report's sizes
    assert sum(1 for k, _ in events if k == "fit_end") == 4
    # same split for every run, checkpoint selected on validation
    runs = result.runs
    assert list(runs["name"]) == ["uniform_hypercube"] * 2 + ["ogm_ge"] * 2 and list(runs["seed"]) == [0, 1, 0, 1]
    assert list(runs["architecture"]) == ["token", "token", "late_fusion", "late_fusion"]
    for name, seed in [("uniform_hypercube", 0), ("ogm_ge", 1)]:
        saved = yaml.safe_load((tmp_path / name / f"seed{seed}" / "config.yaml").read_text())
        assert saved["data"] == yaml.safe_load((tmp_path / "ogm_ge" / "seed0" / "config.yaml").read_text())["data"]
        assert saved["trainer"]["max_epochs"] == 1 and saved["trainer"]["seed"] == seed
        assert (tmp_path / name / f"seed{seed}" / "checkpoints" / "best.ckpt").is_file()
    assert yaml.safe_load((tmp_path / "ogm_ge" / "seed0" / "config.yaml").read_text())["masking"]["params"] == {"q": 0.0}
    # tables and plot
    summary = pd.read_csv(tmp_path / "summary.csv", index_col=0)
    assert list(summary.index) == ["uniform_hypercube", "ogm_ge"]
    for col in ["full", "env", "climate", "satellite", "avg_modality_subsets"]:
        assert summary[f"{col}_mean"].between(0, 1).all() and (summary[f"{col}_std"] >= 0).all()
    assert summary.loc["ogm_ge", "full_mean"] == pytest.approx(runs[runs["name"] == "ogm_ge"]["full"].mean())
    md = (tmp_path / "summary.md").read_text()
    assert "| ogm_ge | late_fusion |" in md and "selected on validation only" in md and " ± " in md
    assert (tmp_path / "comparison.png").stat().st_size > 5000
    # run again: everything is skipped, same table
    lines.clear()
    again = compare(from_dict(BASE), ["uniform_hypercube", "ogm_ge"], seeds=2, dataset=dataset, out_dir=tmp_path,
                    log=lines.append)
    assert sum("skipped" in ln for ln in lines) == 4
    pd.testing.assert_frame_equal(again.runs, runs)


def test_an_interrupted_comparison_resumes_from_the_last_checkpoint(dataset, tmp_path):
    base = from_dict({**BASE, "trainer": {**BASE["trainer"], "max_epochs": 2}})
    with pytest.raises(RuntimeError, match="power cut"):
        compare(base, ["late_fusion", "miles"], seeds=1, dataset=dataset, out_dir=tmp_path,
                extra_callbacks=[Interrupt()], log=lambda s: None)
    assert (tmp_path / "late_fusion" / "seed0" / "checkpoints" / "last.ckpt").is_file()
    assert not (tmp_path / "late_fusion" / "seed0" / "result.json").exists()
    lines = []
    result = compare(base, ["late_fusion", "miles"], seeds=1, dataset=dataset, out_dir=tmp_path, log=lines.append)
    assert lines[0] == "[run 1 of 2] late_fusion (seed 0): training (resuming)"
    first = json.loads((tmp_path / "late_fusion" / "seed0" / "result.json").read_text())
    assert first["resumed"] is True and first["epochs"] == 2
    assert list(result.runs["resumed"]) == [True, False]


def test_names_are_checked_before_any_training(dataset, tmp_path):
    with pytest.raises(ConfigError, match="'mnl' is not defined for a multilabel task"):
        compare(from_dict(BASE), ["miam", "mnl"], seeds=1, dataset=dataset, out_dir=tmp_path)
    with pytest.raises(ConfigError, match="Unknown name 'ogm'"):
        compare(from_dict(BASE), ["ogm"], seeds=1, dataset=dataset, out_dir=tmp_path)
    assert not any(tmp_path.iterdir())
    assert "mnl" not in default_names("multilabel") and "mnl" in default_names("multiclass")
    # a balancing method gets its own fusion; the base config's params go to the name it names
    cfg, kind = run_config(from_dict({**BASE, "balance": {"method": "miles", "params": {"tau": 0.1}}}), "mla")
    assert kind == "balance" and cfg.balance.params == {} and cfg.model.fusion is None
    cfg, _ = run_config(from_dict({**BASE, "balance": {"method": "miles", "params": {"tau": 0.1}}}), "miles")
    assert cfg.balance.params == {"tau": 0.1} and cfg.model.architecture == "late_fusion"


def test_cli_compare(tmp_path, capsys):
    config = tmp_path / "compare.yaml"
    config.write_text(yaml.safe_dump(BASE))
    code = main(["compare", "--config", str(config), "--methods", "dropout,amss", "--seeds", "1",
                 "--out", str(tmp_path / "out")])
    assert code == 0
    out = capsys.readouterr().out
    assert "[run 2 of 2] amss (seed 0)" in out and "Test scores, mean ± sd over 1 seed(s)" in out
    assert (tmp_path / "out" / "summary.md").is_file()
    assert main(["compare", "--config", str(config), "--methods", "nope", "--out", str(tmp_path / "bad")]) == 2
    assert "Unknown name 'nope'" in capsys.readouterr().err
