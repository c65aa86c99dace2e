"""Run by tests/test_ddp.py: a 2-process CPU DDP (gloo) training that records, per rank,
the masking weights and the step's p after every validation epoch.

Lightning's ``ddp`` strategy relaunches this script for rank 1, so it must be a script.
"""

import json
import sys
from pathlib import Path

import lightning as L

from miam.config import from_dict
from miam.data.synthetic import make_dataset
from miam.training.run import train


class RecordRho(L.Callback):
    def __init__(self, out: Path) -> None:
        self.out, self.rows = out, []

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        self.rows.append({
            "epoch": trainer.current_epoch,
            "weights": pl_module.strategy.current_weights().tolist(),
            "history": pl_module.tracker.history_.tolist(),
            "p_next_step": pl_module.strategy.sample(2, pl_module._generator(0)).tolist(),
            "n_val": len(trainer.val_dataloaders.dataset),
            "n_val_shard": len(trainer.val_dataloaders.sampler),
        })
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.rows))


def main(out: str) -> None:
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = from_dict({
        "model": {"d_model": 32, "depth": 1, "heads": 4},
        "data": {"batch_size": 64},
        "trainer": {"max_epochs": 3, "progress_bar": False, "accelerator": "cpu", "devices": 2,
                    "strategy": "ddp", "patience": 50},
        "out_dir": str(out_dir / "run"),
    })
    train(cfg, dataset=make_dataset(seed=0, n_sites=600, n_species=6), extra_callbacks=[RecordRho(out_dir)])


if __name__ == "__main__":
    main(sys.argv[1])
