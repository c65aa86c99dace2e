"""Fixture writers: each ``<dataset>.write(root, seed)`` reproduces a published tree in miniature."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from miam.config import from_dict


def tiny_run(name: str, params: dict[str, Any], out: Path, **data: Any):
    """A short real training run (tiny model, 2 epochs) on dataset ``name``; returns the TrainResult."""
    from miam.training.run import train

    cfg = from_dict({
        "data": {"name": name, "params": params, "batch_size": 16, "eval_batch_size": 64, **data},
        "model": {"d_model": 16, "depth": 1, "heads": 2, "n_frequencies": 8},
        "trainer": {"max_epochs": 2, "progress_bar": False, "accelerator": "cpu", "patience": 5},
        "out_dir": str(out),
    })
    return train(cfg)
