"""Checkpoints a crash cannot cut short; resume falls back to the readable checkpoint that trained furthest."""

import os

import pytest
import torch

from miam.config import from_dict
from miam.data.synthetic import make_dataset
from miam.training.checkpoints import AtomicCheckpointIO
from miam.training.run import train


def config(out, max_epochs):
    return from_dict({"model": {"d_model": 8, "depth": 1, "heads": 2, "dropout": 0.0},
                      "data": {"batch_size": 64},
                      "trainer": {"max_epochs": max_epochs, "progress_bar": False, "accelerator": "cpu",
                                  "patience": 50},
                      "out_dir": str(out)})


@pytest.fixture(scope="module")
def dataset():
    return make_dataset(seed=0, n_sites=300, n_species=5)


def test_a_crash_during_the_write_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"epoch": 1, "w": torch.ones(1000)}, path)

    def crash(fd):
        raise OSError("the machine went down")

    monkeypatch.setattr(os, "fsync", crash)   # the new bytes are written, but the write never completes
    with pytest.raises(OSError, match="went down"):
        io.save_checkpoint({"epoch": 2, "w": torch.zeros(1000)}, path)
    assert torch.load(path, weights_only=False)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]   # no partial file left behind


def test_resume_skips_a_truncated_last_checkpoint_naming_it(dataset, tmp_path, capsys):
    train(config(tmp_path, 2), dataset=dataset)
    folder = tmp_path / "checkpoints"
    last = folder / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])   # a write cut short by a crash
    capsys.readouterr()
    resumed = train(config(tmp_path, 3), dataset=dataset, resume=True)
    printed = capsys.readouterr().out
    assert f"resume: {last} cannot be read (PytorchStreamReader failed reading zip archive" in printed
    assert f"resume: continuing from {folder / 'best.ckpt'} (step " in printed
    # it continued from best.ckpt's epoch: the epochs after it were trained again, up to the budget
    after = torch.load(last, weights_only=False)
    assert resumed.epochs == 3 and after["epoch"] == 2
    assert after["global_step"] == 3 * 4   # 210 training sites in batches of 64


def test_resume_without_any_checkpoint_says_it_trains_from_scratch(dataset, tmp_path, capsys):
    result = train(config(tmp_path, 1), dataset=dataset, resume=True)
    assert f"resume: no readable checkpoint in {tmp_path / 'checkpoints'}; training from scratch." \
        in capsys.readouterr().out
    assert result.epochs == 1
