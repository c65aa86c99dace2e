"""The base class of the balancing methods: hooks where each method acts in the one trainer."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from miam._validation import Parameterised
from miam.balance.methods.functional import local_sum
from miam.data.contract.batch import MultimodalBatch
from miam.data.contract.spec import TaskSpec
from miam.errors import ConfigError, InvalidParameterError

LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class StepContext:
    """Where training stands when a hook runs: 0-based epoch, optimiser steps so far,
    the batch's index in the epoch and the number of batches per epoch.

    Under DDP each rank sees its own shard of the batch. A method builds its coefficients
    from per-batch *sums* passed through ``reduce_sum`` (the sum over all ranks;
    :func:`local_sum` in one process) before it forms a ratio, so every rank computes the
    same coefficient (``reduce_max`` gives the elementwise maximum over ranks, e.g. of
    histogram ranges); a random draw that decides a coefficient or modulates the (already
    synchronised) gradients uses ``generator``, seeded alike on every rank for the step
    (None: torch's global generator).
    """

    epoch: int = 0
    step: int = 0
    max_epochs: int | None = None
    batch_index: int = 0
    n_batches: int | None = None
    reduce_sum: Callable[[Tensor], Tensor] = local_sum
    reduce_max: Callable[[Tensor], Tensor] = local_sum
    generator: torch.Generator | None = None


class BalancingMethod(Parameterised):
    """A balancing method of the related work as a plug-in of :class:`~miam.training.MiamModule`.

    The trainer calls, in order:

    1. :meth:`configure_model` at config time: checks the task and the architecture
       (clear errors for a method undefined there) and picks the late-fusion ``fusion``;
    2. :meth:`setup` once the model exists: returns the method's own trainable parts
       (or None), which the trainer registers so they move devices and checkpoint;
    3. :meth:`param_groups` for the optimiser (learning-rate groups);
    4. each step, :meth:`training_loss` (the loss to back-propagate, extra or replaced
       terms included) then :meth:`after_backward` (gradient modulation) — or, for a
       method with ``manual_optimization = True``, :meth:`manual_step`, which does the
       whole step (M-SAM's two passes, MLA's per-modality updates);
    5. after each validation epoch, :meth:`epoch_end` with the validation scores of
       each modality alone and of the full input.

    Subclasses write their parameters as keyword arguments of ``__init__`` with their
    defaults and declare ``_parameter_constraints``; constructors only store the
    arguments, unchanged, and state learned during training ends in ``_`` and
    round-trips through :meth:`state_dict` / :meth:`load_state_dict`.
    """

    name: ClassVar[str] = ""
    #: the task kinds the method's rule is defined for
    tasks: ClassVar[tuple[str, ...]] = ("multiclass", "multilabel", "encounter")
    #: the model architectures it works with (unimodal logits need ``late_fusion``)
    architectures: ClassVar[tuple[str, ...]] = ("late_fusion",)
    #: the late-fusion fusions it works with; the first is used when the config names none
    fusions: ClassVar[tuple[str, ...]] = ("sum", "concat", "mean")
    #: True: the trainer hands the whole optimisation step to :meth:`manual_step`
    manual_optimization: ClassVar[bool] = False
    #: True: a backward pass reaches only part of the parameters (DDP then needs
    #: ``find_unused_parameters``)
    partial_backward: ClassVar[bool] = False

    def __init__(self, modalities: Sequence[str]) -> None:
        owner = type(self).__name__
        modalities = list(modalities)
        if len(modalities) < 2:
            raise InvalidParameterError(f"{owner} balances modalities: it needs at least 2, got {modalities}.")
        if len(set(modalities)) != len(modalities):
            raise InvalidParameterError(f"{owner}: modality names must be unique, got {modalities}.")
        self._validate_params()
        self.modalities = modalities
        self._stats: dict[str, float] = {}

    @property
    def n_modalities(self) -> int:
        return len(self.modalities)

    # ------------------------------------------------------------------ config and build
    def configure_model(self, model_params: Mapping[str, Any], task: TaskSpec | str) -> dict[str, Any]:
        """Check that the method is defined for this task and architecture; return the
        model's keyword arguments with the late-fusion ``fusion`` it needs.

        Raises:
            ConfigError: the task kind, architecture or fusion does not suit the method.
        """
        kind = task if isinstance(task, str) else task.kind
        if kind not in self.tasks:
            raise ConfigError(
                f"Balancing method {self.name!r} is not defined for a {kind} task (its rule needs "
                f"{' or '.join(self.tasks)}). Pick another method for this dataset."
            )
        params = dict(model_params)
        arch = params.get("architecture", "token")
        if arch not in self.architectures:
            raise ConfigError(
                f"Balancing method {self.name!r} needs model.architecture in {list(self.architectures)} "
                f"(it acts on per-modality encoders and unimodal logits); got {arch!r}. "
                f"Set `model: {{architecture: late_fusion}}`."
            )
        fusion = params.pop("fusion", None)
        if arch == "late_fusion":
            if fusion is not None and fusion not in self.fusions:
                raise ConfigError(f"Balancing method {self.name!r} works with model.fusion in "
                                  f"{list(self.fusions)}; got {fusion!r}.")
            params["fusion"] = fusion if fusion is not None else self.fusions[0]
        elif fusion is not None:
            raise ConfigError(f"model.fusion applies to the late_fusion architecture only; got {arch!r}.")
        return params

    def setup(self, model: nn.Module) -> nn.Module | None:
        """Bind to the built model; return the method's own trainable parts (default none)."""
        if list(model.modalities) != self.modalities:
            raise InvalidParameterError(f"{type(self).__name__} was built for modalities {self.modalities}, "
                                        f"the model has {list(model.modalities)}.")
        if "token" not in self.architectures and not hasattr(model, "forward_unimodal"):
            raise ConfigError(f"{type(self).__name__} needs a late_fusion model (unimodal logits); "
                              f"got {type(model).__name__}.")
        return None

    def param_groups(self, model: nn.Module, parts: nn.Module | None) -> list[dict[str, Any]]:
        """Optimiser parameter groups over the model and the method's parts (default: one group)."""
        params = list(model.parameters()) + ([] if parts is None else list(parts.parameters()))
        return [{"params": params}]

    # ------------------------------------------------------------------ each step
    def training_loss(self, model: nn.Module, batch: MultimodalBatch, visible: Tensor, loss_fn: LossFn,
                      ctx: StepContext) -> Tensor:
        """The loss to back-propagate for this batch (default: the fused task loss)."""
        return loss_fn(model(batch, visible), batch.target)

    def after_backward(self, model: nn.Module, ctx: StepContext) -> None:
        """Modulate the gradients between backward and the optimiser step (default: nothing).

        Called just before the step (Lightning's ``on_before_optimizer_step``), where mixed
        precision has unscaled the gradients: a clip or a noise level sees their true size."""

    def manual_step(self, model: nn.Module, batch: MultimodalBatch, visible: Tensor, loss_fn: LossFn,
                    optimizer: torch.optim.Optimizer, backward: Callable[[Tensor], None],
                    ctx: StepContext) -> Tensor:
        """The whole step (forward, ``backward(loss)``, ``optimizer.step()``) for methods with
        ``manual_optimization = True``; returns the loss to log."""
        raise NotImplementedError(f"{type(self).__name__} uses automatic optimisation.")

    # ------------------------------------------------------------------ each epoch
    def epoch_end(self, scores: Mapping[str, float], optimizer: torch.optim.Optimizer,
                  ctx: StepContext) -> None:
        """After validation: ``scores`` holds each modality's score alone and ``"full"``."""

    # ------------------------------------------------------------------ logs, checkpoints
    def stats(self) -> dict[str, float]:
        """The last step's diagnostics (coefficients, ratios) for the logs."""
        return dict(self._stats)

    def state_dict(self) -> dict[str, Any]:
        """Learned state: every attribute ending in ``_``."""
        return {k: v.clone() if isinstance(v, Tensor) else v for k, v in vars(self).items() if k.endswith("_")}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for k, v in state.items():
            if not k.endswith("_"):
                raise InvalidParameterError(f"{type(self).__name__}.load_state_dict: unexpected key {k!r}.")
            setattr(self, k, v.clone() if isinstance(v, Tensor) else v)

