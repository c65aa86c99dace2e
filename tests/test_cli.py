"""The CLI and configs: the command is the integration test; bad input gets a clear error."""

import pytest
import torch
import yaml

from miam.cli import main
from miam.cli.common import packaged_config
from miam.config import load_config
from miam.errors import ConfigError

TINY = {
    "data": {"name": "synthetic", "params": {"n_sites": 300, "n_species": 6}, "batch_size": 64},
    "model": {"d_model": 16, "depth": 1, "heads": 2},
    "trainer": {"max_epochs": 1, "progress_bar": False, "accelerator": "cpu"},
}


def write(tmp_path, cfg):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_train_command_writes_checkpoint_logs_and_tables(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["train", "--config", write(tmp_path, TINY), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "env+climate+satellite" in printed and "mean over all non-empty modality subsets" in printed
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert (out / "test_subsets.csv").is_file() and (out / "config.yaml").is_file()
    assert list((out / "logs").rglob("metrics.csv"))
    # --resume continues from last.ckpt up to the new epoch budget, and ends with the weights of an
    # uninterrupted 2-epoch run
    assert main(["train", "--config", write(tmp_path, TINY), "--out", str(out), "--resume",
                 "--set", "trainer.max_epochs=2"]) == 0
    assert f"resume: continuing from {out / 'checkpoints' / 'last.ckpt'}" in capsys.readouterr().out
    straight = tmp_path / "straight"
    assert main(["train", "--config", write(tmp_path, TINY), "--out", str(straight),
                 "--set", "trainer.max_epochs=2"]) == 0
    resumed, uninterrupted = (torch.load(d / "checkpoints" / "last.ckpt", weights_only=False) for d in (out, straight))
    assert resumed["epoch"] == uninterrupted["epoch"] == 1
    assert resumed["state_dict"].keys() == uninterrupted["state_dict"].keys()
    for key, value in uninterrupted["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key


def test_packaged_demo_config_loads():
    cfg = load_config(packaged_config("demo.yaml"))
    assert cfg.masking.strategy == "miam" and cfg.masking.params["kappa"] == 10.0
    # the paper's feedback, the one the development sweep kept (docs/masking.md)
    m = cfg.masking
    assert (m.score_baseline, m.derivative, m.window, m.noise_floor) == (0.0, "diff", 1, 0.0)


@pytest.mark.parametrize("cfg, message", [
    ({"trainr": {}}, r"unknown section\(s\) \['trainr'\]; valid sections are \['data', 'model'"),
    ({"model": {"widht": 3}}, r"unknown key\(s\) \['widht'\] in section 'model'; valid keys are \['architecture'"),
    ({"masking": {"strategy": "mima"}}, r"Unknown masking strategy 'mima'; valid names are \['constant'"),
    ({"data": {"name": "geoplnt"}}, r"Unknown dataset 'geoplnt'; valid names are"),
    ({"data": {"groups": {"env": ["env"], "rest": ["climate", "sentinel"]}}}, r"unknown modality 'sentinel'; valid names are \['env'"),
    ({"masking": {"strategy": "miam"}, "data": {"groups": {"all": ["env", "climate", "satellite"]}}},
     r"needs at least 2 modalities, got 1"),
    ({"data": {"params": {"n_sites": 300, "missing": {"landsat": 0.1}}}}, r"unknown modality \['landsat'\]"),
])
def test_bad_configs_fail_with_a_clear_message(tmp_path, capsys, cfg, message):
    merged = {**TINY, **{k: {**TINY.get(k, {}), **v} for k, v in cfg.items()}}
    assert main(["train", "--config", write(tmp_path, merged), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("miam train: error:")
    assert __import__("re").search(message, err), err


def test_overrides_and_missing_file(tmp_path):
    cfg = load_config(None, ["trainer.max_epochs=7", "masking.params={kappa: 5}"])
    assert cfg.trainer.max_epochs == 7 and cfg.masking.params == {"kappa": 5}
    with pytest.raises(ConfigError, match="unknown key 'max_epoch'"):
        load_config(None, ["trainer.max_epoch=7"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["trainer"])
