"""From a :class:`~miam.config.RunConfig` to a trained, tested model: the whole path in one file.

config -> dataset (registry) -> MultimodalDataModule -> MiamModule (+ ImbalanceFeedback,
checkpoints, early stopping) -> Lightning Trainer.fit -> best checkpoint -> test subsets.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar

from miam.config import RunConfig, save_config
from miam.data.dataset import MultimodalDataset
from miam.data.registry import build_dataset
from miam.errors import ConfigError
from miam.explain.subsets import SubsetEvaluator, all_subsets, summarize_subsets
from miam.training.data import MultimodalDataModule
from miam.training.feedback import ImbalanceFeedback
from miam.training.module import MiamModule


@dataclass
class TrainResult:
    """What a training run leaves: the best model, where its files are, and its history."""

    module: MiamModule
    dataset: MultimodalDataset
    out_dir: Path
    best_checkpoint: str
    last_checkpoint: str
    seconds: float
    epochs: int
    #: where the model trained (``"cuda:0"``, ``"cpu"``): :func:`test_subsets` evaluates there
    device: str = "cpu"

    def trajectory(self) -> pd.DataFrame:
        """Per epoch and modality: score, rho_s, rho_d, w."""
        return pd.DataFrame(self.module.trajectory_)


def build_module(cfg: RunConfig, dataset: MultimodalDataset) -> MiamModule:
    train = dataset.split("train")
    return MiamModule(
        specs=[s.to_dict() for s in dataset.specs],
        task=dataset.task.to_dict(),
        model=vars(cfg.model),
        masking=vars(cfg.masking),
        optim=vars(cfg.optim),
        groups=cfg.data.groups,
        positive_counts=train.positive_counts().tolist(),
        n_train=len(train),
        seed=cfg.trainer.seed,
        balance=vars(cfg.balance) if cfg.balance.method else None,
    )


def _logger(cfg: RunConfig, out: Path) -> Any:
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    if cfg.trainer.logger == "csv":
        return CSVLogger(str(out), name="logs")
    if cfg.trainer.logger == "tensorboard":
        return TensorBoardLogger(str(out), name="logs")
    raise ConfigError(f"trainer.logger must be 'csv' or 'tensorboard', got {cfg.trainer.logger!r}.")


class PortableCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose saved state holds file names, not this machine's absolute paths.

    Lightning stores ``dirpath`` and ``best_model_path`` in every checkpoint; a run folder
    moved to another machine would then point nowhere. Paths are stored relative to the
    checkpoint folder and re-anchored on load.
    """

    _PATH_KEYS = ("best_model_path", "last_model_path", "kth_best_model_path")

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["dirpath"] = "."
        for key in self._PATH_KEYS:
            if state.get(key):
                state[key] = Path(state[key]).name
        state["best_k_models"] = {Path(k).name: v for k, v in state.get("best_k_models", {}).items()}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        base = Path(self.dirpath or ".")
        state["dirpath"] = self.dirpath
        for key in self._PATH_KEYS:
            if state.get(key):
                state[key] = str(base / state[key])
        state["best_k_models"] = {str(base / k): v for k, v in state.get("best_k_models", {}).items()}
        super().load_state_dict(state)


def make_trainer(cfg: RunConfig, out: Path, extra_callbacks: list | None = None) -> L.Trainer:
    t = cfg.trainer
    checkpoint = PortableCheckpoint(dirpath=str(out / "checkpoints"), filename="best", monitor="val/selection",
                                 mode="max", auto_insert_metric_name=False)
    # every epoch, for resume: Lightning's save_last only follows an improvement of the monitor
    last = PortableCheckpoint(dirpath=str(out / "checkpoints"), filename="last", save_top_k=1,
                              enable_version_counter=False)
    callbacks = [ImbalanceFeedback(), checkpoint, last,
                 EarlyStopping(monitor="val/selection", mode="max", patience=t.patience)]
    if t.progress_bar:
        callbacks.append(TQDMProgressBar(refresh_rate=max(1, t.log_every_n_steps)))
    return L.Trainer(
        max_epochs=t.max_epochs, accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes,
        strategy=t.strategy, precision=t.precision, default_root_dir=str(out), logger=_logger(cfg, out),
        callbacks=callbacks + list(extra_callbacks or []), enable_progress_bar=t.progress_bar,
        log_every_n_steps=t.log_every_n_steps, num_sanity_val_steps=0, enable_model_summary=False,
        limit_train_batches=t.limit_train_batches, use_distributed_sampler=False,
    )


def train(cfg: RunConfig, dataset: MultimodalDataset | None = None, resume: bool = False,
          extra_callbacks: list | None = None) -> TrainResult:
    """Train as ``cfg`` says; with ``resume``, continue from ``out_dir/checkpoints/last.ckpt``.

    Returns the best checkpoint's model (selected on validation only).
    """
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    dataset = dataset if dataset is not None else build_dataset(cfg.data.name, **cfg.data.params)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    module = build_module(cfg, dataset)
    data = MultimodalDataModule(dataset, cfg.data.batch_size, cfg.data.eval_batch_size,
                                cfg.data.num_workers, cfg.trainer.seed)
    trainer = make_trainer(cfg, out, extra_callbacks)
    last = out / "checkpoints" / "last.ckpt"
    ckpt_path = str(last) if resume and last.is_file() else None
    start = time.perf_counter()
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    seconds = time.perf_counter() - start
    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_path or str(last)
    best_module = MiamModule.load_from_checkpoint(best, map_location="cpu") if best and Path(best).is_file() else module
    # The best checkpoint was saved at its own epoch; keep the full trajectory of the run.
    best_module.trajectory_ = list(module.trajectory_)
    return TrainResult(best_module, dataset, out, best, str(last), seconds, trainer.current_epoch,
                       str(trainer.strategy.root_device))


def test_subsets(result: TrainResult, batch_size: int = 512) -> pd.DataFrame:
    """Test scores of the selected model on every non-empty modality subset, on the device it trained on."""
    module = result.module.to(torch.device(result.device))
    try:
        evaluator = SubsetEvaluator(module.model, module.task, module.hparams.get("groups"), batch_size=batch_size)
        return evaluator.evaluate(result.dataset.split("test"), all_subsets(evaluator.names))
    finally:
        module.cpu()                                  # the result's model stays on the CPU, as loaded


test_subsets.__test__ = False  # a library function, not a pytest test


def summarize(result: TrainResult, table: pd.DataFrame) -> dict[str, float]:
    return summarize_subsets(table, result.module.group_names)
