"""Run by tests/test_ddp.py: 2-process CPU DDP (gloo) trainings that record, per rank,

* ``masking``: the masking weights, the step's p and the sites each rank scored after every
  validation epoch; then, with ``per_sample: true``, the p of every training step;
* ``balance``: for every balancing method in turn, its logged coefficients and learned
  state after every training step, and the final parameters.

Lightning's ``ddp`` strategy relaunches this script for rank 1, so it must be a script.
"""

import json
import os
import sys
from pathlib import Path

import lightning as L
import torch

from miam.balance import list_methods
from miam.config import from_dict
from miam.data.synthetic import make_dataset
from miam.errors import ConfigError
from miam.training.run import train


class RecordRho(L.Callback):
    """Per validation epoch: the weights, the synchronised score history, the next step's p and
    the ids of the sites this rank scored, with the count its full-view metric held before the sync."""

    def __init__(self, out: Path) -> None:
        self.out, self.rows, self.ids, self.n_scored = out, [], [], 0

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.ids += batch.ids.tolist()
        self.n_scored = sum(len(p) for p in pl_module.val_metrics[-1].preds)   # local state, not yet synced

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        self.rows.append({
            "epoch": trainer.current_epoch,
            "weights": pl_module.strategy.current_weights().tolist(),
            "history": pl_module.tracker.history_.tolist(),
            "p_next_step": pl_module.draw_p(2).tolist(),
            "n_val": len(trainer.val_dataloaders.dataset),
            "scored_ids": self.ids,
            "n_scored_before_sync": self.n_scored,
        })
        self.ids = []
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.rows))


class RecordP(L.Callback):
    """Per rank: the masking probabilities of every training step."""

    def __init__(self, out: Path) -> None:
        self.out, self.steps = out, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.steps.append(pl_module.draw_p(batch.batch_size).tolist())

    def on_fit_end(self, trainer, pl_module):
        (self.out / f"per_sample_rank{trainer.global_rank}.json").write_text(json.dumps(self.steps))


def _plain(value):
    return value.tolist() if isinstance(value, torch.Tensor) else value


class RecordBalance(L.Callback):
    """Per rank: the method's stats and learned state after each step, the final parameters."""

    def __init__(self, out: Path, method: str) -> None:
        self.out, self.method, self.steps = out, method, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append({"step": trainer.global_step, "stats": pl_module.balance.stats(),
                           "state": {k: _plain(v) for k, v in pl_module.balance.state_dict().items()}})

    def on_fit_end(self, trainer, pl_module):
        params = torch.cat([p.detach().flatten() for p in pl_module.parameters()])
        record = {"steps": self.steps, "params": params.tolist(), "n_batches": trainer.num_training_batches}
        (self.out / f"{self.method}_rank{trainer.global_rank}.json").write_text(json.dumps(record))


#: parameters that reach each method's modulated regime in 2 epochs, with a shared random draw
ACTIVE = {"opm_feature": {"warmup": 0, "p_exe": 0.5}, "miles": {"tau": 0.0}, "ogm_ge": {"end": 1}}


def masking(out_dir: Path) -> None:
    cfg = from_dict({
        "model": {"d_model": 32, "depth": 1, "heads": 4},
        "data": {"batch_size": 64},
        "trainer": {"max_epochs": 3, "progress_bar": False, "accelerator": "cpu", "devices": 2,
                    "strategy": "ddp", "patience": 50},
        "out_dir": str(out_dir / "run"),
    })
    dataset = make_dataset(seed=0, n_sites=600, n_species=6)
    train(cfg, dataset=dataset, extra_callbacks=[RecordRho(out_dir)])
    per_sample = cfg.replace(masking={"per_sample": True}, out_dir=str(out_dir / "per_sample"),
                             trainer={"max_epochs": 1, "limit_train_batches": 2})
    train(per_sample, dataset=dataset, extra_callbacks=[RecordP(out_dir)])


def _balance_config(out_dir: Path, method: str, strategy: str):
    return from_dict({
        "model": {"architecture": "late_fusion", "d_model": 8, "depth": 1, "heads": 2, "dropout": 0.0},
        "masking": {"strategy": "constant", "params": {"q": 0.0}},
        "balance": {"method": method, "params": ACTIVE.get(method, {})},
        "data": {"batch_size": 32},
        "trainer": {"max_epochs": 2, "progress_bar": False, "accelerator": "cpu", "devices": 2,
                    "strategy": strategy, "patience": 50, "limit_train_batches": 2},
        "out_dir": str(out_dir / method),
    })


def balance(out_dir: Path) -> None:
    presence = make_dataset(seed=0, n_sites=200, n_species=5)
    one_class = make_dataset(seed=0, n_sites=200, n_species=5, task="multiclass")
    for method in list_methods():
        # MLA back-propagates through one encoder at a time: DDP must look for unused parameters
        strategy = "ddp_find_unused_parameters_true" if method == "mla" else "ddp"
        dataset = one_class if method == "mnl" else presence
        train(_balance_config(out_dir, method, strategy), dataset=dataset,
              extra_callbacks=[RecordBalance(out_dir, method)])
    try:   # ... and plain ddp refuses it, naming the strategy to set
        train(_balance_config(out_dir / "refused", "mla", "ddp"), dataset=presence)
    except ConfigError as e:
        (out_dir / f"mla_refused_rank{os.environ['LOCAL_RANK']}.txt").write_text(str(e))


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    {"masking": masking, "balance": balance}[sys.argv[2] if len(sys.argv) > 2 else "masking"](out)
