"""From a :class:`~miam.config.RunConfig` to a trained, tested model: the whole path in one file.

config -> dataset (registry) -> MultimodalDataModule -> MiamModule (+ ImbalanceFeedback,
checkpoints, early stopping) -> Lightning Trainer.fit -> best checkpoint -> test subsets.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, ProgressBar, TQDMProgressBar

from miam.config import EvaluationConfig, RunConfig, check_masking_units, resolve_auto, save_config
from miam.data.contract.dataset import MultimodalDataset
from miam.data.registry import build_dataset
from miam.errors import ConfigError
from miam.evaluation.configs import resolve_configs
from miam.evaluation.subsets import SubsetEvaluator, all_subsets, summarize_subsets
from miam.training.checkpoints import AtomicCheckpointIO, resume_checkpoint
from miam.training.data import MultimodalDataModule
from miam.training.feedback import ImbalanceFeedback
from miam.training.inputs import choose_checkpoint_inputs, describe_inputs, store_inputs
from miam.training.module import MiamModule, score_baseline
from miam.training.pretrain import finetune_config, init_from_pretrained


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
    #: False when the run reached ``trainer.max_epochs`` without early stopping (still improving)
    stopped_early: bool = False
    #: the inputs the validation says to trust (:func:`miam.training.inputs.choose_inputs`), also in the checkpoint
    inputs: dict[str, Any] | None = None
    #: where the model trained (``"cuda:0"``, ``"cpu"``): :func:`test_subsets` evaluates there
    device: str = "cpu"

    def trajectory(self) -> pd.DataFrame:
        """Per epoch and modality: score, rho_s, rho_d, w."""
        return pd.DataFrame(self.module.trajectory_)


def build_module(cfg: RunConfig, dataset: MultimodalDataset) -> MiamModule:
    train = dataset.split("train")
    masking = vars(cfg.masking)
    if masking["score_baseline"] == "chance" and dataset.task.kind == "encounter":   # known from the data only
        masking = {**masking, "score_baseline": score_baseline("chance", dataset.task, train.base.target[train.indices])}
    return MiamModule(
        specs=[s.to_dict() for s in dataset.specs],
        task=dataset.task.to_dict(),
        model=vars(cfg.model),
        masking=masking,
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


class EpochLines(ProgressBar):
    """The progress bar for output that is not a terminal (a log file, a pipe): one line per epoch.

    Example line: ``epoch 3/40: train/loss 1.432, val/selection 0.553 (2.1 s)``.
    """

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._start = 0.0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._enabled or not trainer.is_global_zero:
            return
        metrics = {k: v for k, v in self.get_metrics(trainer, pl_module).items() if k != "v_num"}
        shown = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
        print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}: {shown} "
              f"({time.perf_counter() - self._start:.1f} s)", flush=True)


#: Lightning's log lines and warnings that say nothing about this run: an advert, a deprecation inside
#: Lightning itself, and a note that an epoch holds fewer steps than ``log_every_n_steps`` (miam logs per epoch)
ADVERT = r"💡 Tip"
NOISE = (r".*isinstance\(treespec, LeafSpec\)", r"The number of training batches .* is smaller than the logging "
         r"interval")


class _DropAdvert(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not re.match(ADVERT, record.getMessage())


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Within: neither Lightning's :data:`ADVERT` nor its :data:`NOISE`; every other warning and log line as usual."""
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    drop = _DropAdvert()
    log.addFilter(drop)
    try:
        with warnings.catch_warnings():
            for pattern in NOISE:
                warnings.filterwarnings("ignore", message=pattern)
            yield
    finally:
        log.removeFilter(drop)


def make_trainer(cfg: RunConfig, out: Path, extra_callbacks: list | None = None) -> L.Trainer:
    t = cfg.trainer
    # best.ckpt is replaced, never versioned (best-v1.ckpt): the name the docs' commands use stays this run's
    checkpoint = PortableCheckpoint(dirpath=str(out / "checkpoints"), filename="best", monitor="val/selection",
                                    mode="max", auto_insert_metric_name=False, enable_version_counter=False)
    # every epoch, for resume: Lightning's save_last only follows an improvement of the monitor
    last = PortableCheckpoint(dirpath=str(out / "checkpoints"), filename="last", save_top_k=1,
                              enable_version_counter=False)
    callbacks = [ImbalanceFeedback(), checkpoint, last,
                 EarlyStopping(monitor="val/selection", mode="max", patience=t.patience)]
    if t.progress_bar:  # bars in a terminal, else one line per epoch
        callbacks.append(TQDMProgressBar(refresh_rate=max(1, t.log_every_n_steps)) if sys.stdout.isatty()
                         else EpochLines())
    return L.Trainer(
        max_epochs=t.max_epochs, accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes,
        strategy=t.strategy, precision=t.precision, default_root_dir=str(out), logger=_logger(cfg, out),
        callbacks=callbacks + list(extra_callbacks or []), enable_progress_bar=t.progress_bar,
        log_every_n_steps=t.log_every_n_steps, num_sanity_val_steps=0, enable_model_summary=False,
        plugins=[AtomicCheckpointIO()],
        limit_train_batches=None if t.limit_train_batches == 1.0 else t.limit_train_batches,  # no note on 100%
        use_distributed_sampler=False,
    )


#: what ``miam train`` writes in ``out_dir`` and ``--overwrite`` removes first
RUN_OUTPUTS = ("checkpoints", "logs", "test_subsets.csv", "trajectory.csv", "config.yaml")


def check_out_dir(out_dir: str | Path, resume: bool, overwrite: bool) -> None:
    """``miam train``'s guard: a non-empty ``out_dir`` is continued (``resume``) or replaced (``overwrite``), never
    trained into again, so that ``checkpoints/best.ckpt`` is always this run's.

    ``overwrite`` removes what a run writes (:data:`RUN_OUTPUTS`); other files stay.

    Raises:
        ConfigError: a non-empty folder without either flag, or ``resume`` with no ``last.ckpt``.
    """
    out = Path(out_dir)
    last = out / "checkpoints" / "last.ckpt"
    if resume:
        if not last.is_file():
            raise ConfigError(f"--resume: there is no checkpoint to resume from ({last} does not exist); run without "
                              f"--resume to start a new run in {str(out)!r}.")
        return
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if held and not overwrite:
        raise ConfigError(f"out_dir {str(out)!r} is not empty (it holds {held[:6]}{' ...' if len(held) > 6 else ''}); "
                          f"pass --resume to continue its run, --overwrite to replace it, or choose another "
                          f"folder with --out.")
    for name in RUN_OUTPUTS if held else ():
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def train(cfg: RunConfig, dataset: MultimodalDataset | None = None, resume: bool = False,
          extra_callbacks: list | None = None) -> TrainResult:
    """Train as ``cfg`` says; with ``resume``, continue from ``out_dir/checkpoints/last.ckpt`` (or, when a crash
    left it unreadable, from the readable checkpoint there that trained furthest: :func:`resume_checkpoint` says which).

    ``auto`` settings (model size, patience) are chosen from the training split and printed.
    Returns the best checkpoint's model (selected on validation only); the modality subset it
    scores best with on validation is stored in that checkpoint and printed.
    """
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    dataset = dataset if dataset is not None else build_dataset(cfg.data.name, **cfg.data.params)
    check_masking_units(cfg.masking, list(cfg.data.groups or dataset.modalities), f"{cfg.data.name} dataset")
    resolve_configs(dataset.specs, cfg.evaluation.configs, cfg.data.groups)   # a typo fails before training
    cfg, encoder = finetune_config(cfg)
    cfg, chosen = resolve_auto(cfg, len(dataset.split("train")), sum(s.n_tokens for s in dataset.specs))
    for line in (encoder, chosen):
        if line:
            print(line, flush=True)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    module = build_module(cfg, dataset)
    if cfg.pretrain.init_from:
        init_from_pretrained(module, cfg.pretrain.init_from, cfg.pretrain.finetune)
    data = MultimodalDataModule(dataset, cfg.data.batch_size, cfg.data.eval_batch_size,
                                cfg.data.num_workers, cfg.trainer.seed)
    last = out / "checkpoints" / "last.ckpt"
    ckpt_path = resume_checkpoint(last.parent) if resume else None
    start = time.perf_counter()
    with quiet_lightning():
        trainer = make_trainer(cfg, out, extra_callbacks)
        trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    seconds = time.perf_counter() - start
    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_path or str(last)
    best_module = MiamModule.load_from_checkpoint(best, map_location="cpu") if best and Path(best).is_file() else module
    # The best checkpoint was saved at its own epoch; keep the full trajectory of the run.
    best_module.trajectory_ = list(module.trajectory_)
    stopped = any(isinstance(c, EarlyStopping) and c.stopped_epoch > 0 for c in trainer.callbacks)
    inputs = None
    if best and Path(best).is_file():
        candidates = {Path(best).name: best_module}
        if last.is_file() and last.resolve() != Path(best).resolve():
            candidates[last.name] = MiamModule.load_from_checkpoint(str(last), map_location="cpu")
        inputs = choose_checkpoint_inputs(candidates, cfg.data.groups, dataset.split("val"), cfg.data.eval_batch_size)
        if trainer.is_global_zero:
            store_inputs(best, inputs)
            print(describe_inputs(inputs), flush=True)
    return TrainResult(best_module, dataset, out, best, str(last), seconds, trainer.current_epoch, stopped, inputs,
                       str(trainer.strategy.root_device))


def score_split(module: MiamModule, data: Any, evaluation: EvaluationConfig | None = None, batch_size: int = 512,
                device: str = "cpu", subsets: Sequence[Sequence[str]] | None = None) -> pd.DataFrame:
    """Scores of ``module`` on ``data`` (a split): every non-empty modality subset and the named input
    configurations that ``evaluation`` lists (``evaluation.configs``), or only the chosen ``subsets``."""
    module = module.to(torch.device(device))
    evaluation = evaluation or EvaluationConfig()
    groups = module.hparams.get("groups")
    try:
        evaluator = SubsetEvaluator(module.model, module.task, groups, batch_size=batch_size)
        configs = resolve_configs(module.specs, evaluation.configs, groups) if subsets is None else []
        return evaluator.evaluate(data, all_subsets(evaluator.names) if subsets is None else subsets, configs,
                                  evaluation.top_k_f1)
    finally:
        module.cpu()                                  # the model stays on the CPU, as loaded


def test_subsets(result: TrainResult, evaluation: EvaluationConfig | None = None,
                 batch_size: int = 512) -> pd.DataFrame:
    """Test scores of the selected model (:func:`score_split`), on the device it trained on."""
    return score_split(result.module, result.dataset.split("test"), evaluation, batch_size, result.device)


test_subsets.__test__ = False  # a library function, not a pytest test


def summarize(result: TrainResult, table: pd.DataFrame) -> dict[str, float]:
    return summarize_subsets(table, result.module.group_names)
