"""The one LightningModule: masks each step with the strategy, scores every view on validation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import math
import warnings

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn

from miam.balance import ImbalanceTracker, get_method
from miam.balance.methods import StepContext, configure_model
from miam.balance.methods.functional import all_reduce_max, all_reduce_sum, local_sum
from miam.data.contract.batch import MultimodalBatch
from miam.data.contract.spec import ModalitySpec, TaskSpec
from miam.errors import ConfigError
from miam.evaluation.subsets import token_groups
from miam.masking import get_strategy, token_mask
from miam.models import TaskLoss, build_model
from miam.scores import chance_level, chance_score, make_metric


def score_baseline(value: float | str, task: TaskSpec, train_target: Tensor | None = None) -> float:
    """``masking.score_baseline`` as a number: ``"chance"`` follows the task's metric (AUROC 0.5,
    top-1 1/C; :func:`miam.scores.chance_level`). SatBird's adaptive top-k has no chance level
    before the data: with ``train_target``, its ``"chance"`` is the score of the uninformed
    predictor (the training split's mean rates) on the training split
    (:func:`miam.scores.chance_score`). A number that is not the metric's chance level is kept,
    with a warning that names the chance level, so 0.5 on an accuracy is never silent."""
    if value == "chance":
        if task.kind == "encounter" and train_target is not None:
            return chance_score(task, torch.as_tensor(train_target))
        try:
            return chance_level(task)
        except ValueError as e:
            raise ConfigError(f"masking.score_baseline: 'chance': {e}") from None
    if isinstance(value, str) or not 0.0 <= float(value) < 1.0:
        raise ConfigError(f"masking.score_baseline must be 'chance' or a number in [0, 1), got {value!r}.")
    value = float(value)
    try:
        chance = chance_level(task)
    except ValueError:
        return value
    if value not in (0.0, chance):
        warnings.warn(f"masking.score_baseline={value} is not the chance level of the {task.kind} score "
                      f"({chance:.4g}); set score_baseline: chance to follow the metric.", UserWarning, stacklevel=3)
    return value


#: the random stream of the balancing methods' draws, the same on every rank
BALANCE_STREAM = 20_000
#: the random streams of per-sample masking probabilities: this plus the rank, one stream per rank
PER_SAMPLE_STREAM = 30_000


def step_seed(seed: int, step: int, stream: int) -> int:
    """A seed that depends only on (run seed, global step, stream): resume replays it exactly."""
    return int(np.random.SeedSequence([seed, step, stream]).generate_state(1, dtype=np.uint64)[0] >> 1)


class MiamModule(L.LightningModule):
    """Multimodal training with a masking strategy and per-modality validation views.

    Every argument is a plain dict or list (no paths, no objects), so the checkpoint
    rebuilds the module anywhere with ``MiamModule.load_from_checkpoint``.

    Validation scores M + 1 views of each batch in one forward pass: each modality
    (group) alone, and all modalities. The :class:`~miam.training.feedback.ImbalanceFeedback`
    callback turns the unimodal scores into MIAM's weights.

    Args:
        specs: ``ModalitySpec.to_dict()`` per modality.
        task: ``TaskSpec.to_dict()``.
        model: keyword arguments of :func:`miam.models.build_model`.
        masking: ``{"strategy": name, "params": {...}, "per_sample": bool, "eps", "window", "clamp",
            "score_baseline", "derivative", "noise_floor"}`` (:class:`miam.config.MaskingConfig`).
        optim: ``{"lr": ..., "weight_decay": ...}``.
        groups: optional ``{group: [modalities]}``: the units of masking and feedback.
        positive_counts: training-set class counts for the weighted loss.
        n_train: training-set size for the weighted loss.
        seed: the run's seed; every step's randomness derives from (seed, step, rank).
        balance: optional ``{"method": name, "params": {...}}``: a balancing method of the
            related work (:func:`miam.balance.get_method`); its hooks set the loss, modulate
            gradients, set learning-rate groups, act after each validation epoch or take
            the whole optimiser step (methods with ``manual_optimization``). None: plain
            training with the masking strategy.
        pretrained: what the model was initialised from (:func:`miam.training.pretrain.init_from_pretrained`).
    """

    def __init__(
        self,
        specs: Sequence[Mapping[str, Any]],
        task: Mapping[str, Any],
        model: Mapping[str, Any] | None = None,
        masking: Mapping[str, Any] | None = None,
        optim: Mapping[str, Any] | None = None,
        groups: Mapping[str, Sequence[str]] | None = None,
        positive_counts: Sequence[float] | None = None,
        n_train: int = 1,
        seed: int = 0,
        balance: Mapping[str, Any] | None = None,
        pretrained: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.specs = [ModalitySpec.from_dict(s) for s in specs]
        self.task = TaskSpec.from_dict(task)
        model = dict(model or {})
        weighted = model.pop("weighted_loss", True)
        self.balance = None
        if balance is not None:
            if groups:
                raise ConfigError("Balancing methods act on one encoder per modality: data.groups cannot be "
                                  "combined with a balance method.")
            self.balance = get_method(balance["method"], [s.name for s in self.specs],
                                      **dict(balance.get("params") or {}))
        self.model = build_model(self.specs, self.task, **configure_model(model, self.task, self.balance))
        self.group_names, token_group = token_groups(self.specs, groups)
        self.register_buffer("token_group", token_group, persistent=False)
        m = len(self.group_names)
        views = torch.stack([token_group == i for i in range(m)] + [torch.ones_like(token_group, dtype=torch.bool)])
        self.register_buffer("view_masks", views, persistent=False)
        masking = dict(masking or {})
        params = dict(masking.get("params") or {})
        self.strategy = get_strategy(masking.get("strategy", "miam"), self.group_names,
                                     per_sample=bool(masking.get("per_sample", False)), **params)
        # The tracker takes MIAM's lambdas from the strategy and the rest from the masking section;
        # what neither names keeps the tracker's default.
        options = {k: v for k, v in {**masking, **self.strategy.params}.items() if k in ImbalanceTracker.param_names()}
        if "score_baseline" in masking:
            options["baseline"] = score_baseline(masking["score_baseline"], self.task)
        self.tracker = ImbalanceTracker(self.group_names, **options) if m >= 2 else None
        counts = None if positive_counts is None else torch.as_tensor(positive_counts, dtype=torch.float64)
        self.loss_fn = TaskLoss(self.task.kind, counts, n_train, weighted)
        self.val_metrics = nn.ModuleList([make_metric(self.task) for _ in range(m + 1)])
        self.test_metrics = nn.ModuleList([make_metric(self.task) for _ in range(m + 1)])
        self.optim = {"lr": 1e-3, "weight_decay": 0.01, **(optim or {})}
        self.seed = seed
        self.trajectory_: list[dict[str, Any]] = []
        self._generators: dict[str, torch.Generator] = {}
        self.val_scores_: dict[str, float] = {}
        self.val_standard_errors_: dict[str, float] = {}
        if self.balance is not None:
            self.balance_parts = self.balance.setup(self.model)
            self.automatic_optimization = not self.balance.manual_optimization
            if not (self.strategy.name == "constant" and self.strategy.q == 0):
                warnings.warn(f"Balancing method {self.balance.name!r} runs on top of masking strategy "
                              f"{self.strategy.name!r}; set `masking: {{strategy: constant, params: {{q: 0}}}}` "
                              "to train the method alone (as `miam compare` does).", UserWarning, stacklevel=2)

    @property
    def view_names(self) -> list[str]:
        return [*self.group_names, "full"]

    def forward(self, batch: MultimodalBatch, visible: Tensor | None = None) -> Tensor:
        return self.model(batch, visible)

    def _generator(self, stream: int) -> torch.Generator:
        key = f"{self.device}:{stream}"
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=self.device)
        return self._generators[key].manual_seed(step_seed(self.seed, self.global_step, stream))

    def draw_p(self, batch_size: int) -> Tensor:
        """The step's masking probabilities ``[batch_size, M]``: one p per step is the same on
        every rank; per-sample p (``per_sample: true``) are drawn per rank, as the samples are theirs."""
        stream = PER_SAMPLE_STREAM + self.global_rank if self.strategy.per_sample else 0
        return self.strategy.sample(batch_size, self._generator(stream))

    def draw_visible(self, batch: MultimodalBatch) -> Tensor:
        """The step's visible mask: p from :meth:`draw_p`, token draws per rank."""
        present = batch.present_flat(self.model.modalities)
        return token_mask(self.draw_p(batch.batch_size), present, self._generator(1 + self.global_rank),
                          self.token_group)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Dropout draws from the global RNG: key it on the step as well.
        torch.manual_seed(step_seed(self.seed, self.global_step, 10_000 + self.global_rank))

    def training_step(self, batch: MultimodalBatch, batch_idx: int) -> Tensor:
        if batch_idx == 0:  # once an epoch: a loader that breaks the contract fails with a named field
            batch.validate(self.specs, self.task)
        visible = self.draw_visible(batch)
        if self.balance is None:
            logits = self.model(batch, visible)
            loss = self.loss_fn(logits, batch.target)
        else:
            loss = self._balanced_loss(batch, batch_idx, visible)
        b = batch.batch_size
        self.log("train/loss", loss, prog_bar=True, batch_size=b)
        self.log("train/visible", visible.float().mean(), batch_size=b)
        return loss

    def step_context(self, batch_idx: int = 0) -> StepContext:
        """Where training stands, for the balancing method's hooks."""
        trainer = self._trainer
        n = None if trainer is None else trainer.num_training_batches
        distributed = trainer is not None and trainer.world_size > 1
        return StepContext(epoch=self.current_epoch, step=self.global_step,
                           max_epochs=None if trainer is None else trainer.max_epochs, batch_index=batch_idx,
                           n_batches=int(n) if n is not None and math.isfinite(n) else None,
                           reduce_sum=all_reduce_sum if distributed else local_sum,
                           reduce_max=all_reduce_max if distributed else local_sum,
                           generator=self._generator(BALANCE_STREAM))

    def _balanced_loss(self, batch: MultimodalBatch, batch_idx: int, visible: Tensor) -> Tensor:
        """The balancing method's loss, or its whole step when it optimises manually."""
        ctx = self.step_context(batch_idx)
        if self.automatic_optimization:
            loss = self.balance.training_loss(self.model, batch, visible, self.loss_fn, ctx)
        else:
            loss = self.balance.manual_step(self.model, batch, visible, self.loss_fn, self.optimizers(),
                                            self.manual_backward, ctx)
        for key, value in self.balance.stats().items():
            self.log(f"balance/{key}", value, batch_size=batch.batch_size)
        return loss

    def on_fit_start(self) -> None:
        if self.balance is None or self.trainer.world_size == 1 or not self.balance.partial_backward:
            return
        if not getattr(self.trainer.strategy, "_ddp_kwargs", {}).get("find_unused_parameters", False):
            raise ConfigError(f"Balancing method {self.balance.name!r} back-propagates through part of the model "
                              f"at a time: under DDP set trainer.strategy: ddp_find_unused_parameters_true.")

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Not on_after_backward: under 16-mixed the gradients are unscaled only here, so a clip sees true norms.
        if self.balance is not None:
            self.balance.after_backward(self.model, self.step_context())

    def on_validation_epoch_end(self) -> None:
        # Runs after the callbacks' hook, so ImbalanceFeedback has computed this epoch's view scores.
        if self.balance is not None and self.val_scores_ and self.trainer.optimizers:
            self.balance.epoch_end(self.val_scores_, self.trainer.optimizers[0], self.step_context())

    def _view_step(self, batch: MultimodalBatch, metrics: nn.ModuleList) -> None:
        logits = self.model.forward_subsets(batch, self.view_masks)
        for metric, lg in zip(metrics, logits):
            metric.update(torch.sigmoid(lg) if self.task.per_output else lg, batch.target)

    def validation_step(self, batch: MultimodalBatch, batch_idx: int) -> None:
        self._view_step(batch, self.val_metrics)

    def test_step(self, batch: MultimodalBatch, batch_idx: int) -> None:
        self._view_step(batch, self.test_metrics)

    def view_scores(self, stage: str) -> dict[str, float]:
        """Compute (synchronised across ranks) and reset the scores of every view."""
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        scores = {name: float(metric.compute()) for name, metric in zip(self.view_names, metrics)}
        if stage == "val":
            self.val_scores_ = dict(scores)
            self.val_standard_errors_ = {name: float(metric.standard_error_)
                                         for name, metric in zip(self.view_names, metrics)}
        for metric in metrics:
            metric.reset()
        return scores

    def log_scores(self, stage: str, scores: Mapping[str, float]) -> None:
        for name, value in scores.items():
            self.log(f"{stage}/score_{name}", value, sync_dist=False)
        if stage == "val":   # each view's standard error: how much of an epoch's change is noise
            for name, value in self.val_standard_errors_.items():
                self.log(f"val/se_{name}", value, sync_dist=False)
        self.log(f"{stage}/selection", float(np.mean(list(scores.values()))), prog_bar=stage == "val")

    def on_test_epoch_end(self) -> None:
        self.log_scores("test", self.view_scores("test"))

    def configure_optimizers(self):
        params = self.parameters() if self.balance is None else self.balance.param_groups(self.model, self.balance_parts)
        return torch.optim.AdamW(params, lr=self.optim["lr"], weight_decay=self.optim["weight_decay"])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["miam"] = {
            "tracker": None if self.tracker is None else self.tracker.state_dict(),
            "strategy": self.strategy.state_dict(),
            "trajectory": list(self.trajectory_),
            "balance": None if self.balance is None else self.balance.state_dict(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("miam", {})
        if self.tracker is not None and state.get("tracker") is not None:
            self.tracker.load_state_dict(state["tracker"])
        self.strategy.load_state_dict(state.get("strategy", {}))
        self.trajectory_ = list(state.get("trajectory", []))
        if self.balance is not None and state.get("balance") is not None:
            self.balance.load_state_dict(state["balance"])
