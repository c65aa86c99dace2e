"""Shapley values of a trained model's inputs, across modalities and within one modality.

Players are integer token groups, as captum's ``feature_mask``: across modalities every
modality (or modality group) is one player; within a modality every token (a tabular
variable, a month, an image patch) is one, and the tokens of the other modalities are
all visible or all hidden (``others``; MaskSDM hides them). Both analyses share one
path: a coalition is turned into a token mask and the model is scored on many masks
per forward pass (:class:`~miam.evaluation.subsets.SubsetEvaluator`).

Value functions:

* ``value="global"``: the task metric (macro AUROC, top-1, top-k) on the data. v(none)
  is the score of the model with *every* token hidden; a model that sees nothing gives
  every sample the same output, so its macro AUROC is 0.5 exactly, and that value is
  used without a model call (multiclass and encounter scores of the constant output
  are computed).
* ``value="local"``: the model output per sample (probability or logit of the chosen
  outputs), giving ``[N, P, O]`` attributions; v(none) is the output with the players
  hidden.

Values are never rounded before differencing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from miam._validation import check_choice
from miam.data.contract.batch import MultimodalBatch
from miam.data.contract.spec import TaskSpec
from miam.errors import InvalidParameterError, check_names
from miam.evaluation.functional import (
    MAX_EXACT_PLAYERS,
    PermutationEstimate,
    all_coalitions,
    batched_scores,
    coalition_masks,
    exact_shapley,
    permutation_shapley,
)
from miam.evaluation.subsets import SubsetEvaluator
from miam.scores import METRIC_NAMES

VALUES = ("global", "local")
OUTPUTS = ("prob", "logit")
OTHERS = ("hidden", "visible")
METHODS = ("permutation", "exact")
#: default stopping tolerance on the largest standard error, per value kind
DEFAULT_TOLERANCE = {"global": 2e-3, "local": 1e-2}


def n_samples(data: Any) -> int:
    """Number of samples in a batch, a list of batches, a dataset or a split."""
    if isinstance(data, MultimodalBatch):
        return data.batch_size
    if isinstance(data, (list, tuple)) and all(isinstance(b, MultimodalBatch) for b in data):
        return sum(b.batch_size for b in data)
    return len(data)


class GlobalValue:
    """v(mask) = the task score on ``data`` with the mask's tokens visible.

    With ``n_boot > 0`` each call returns ``[K, 1 + n_boot]``: column 0 on the data,
    the others on bootstrap resamples of the samples (the same resamples for every mask,
    so that Shapley values of each resample can be formed). Logits are computed for at
    most ``max_values`` (mask x sample x output) numbers at a time.
    """

    def __init__(self, evaluator: SubsetEvaluator, data: Any, n_boot: int = 0, seed: int = 0,
                 max_values: int = 2**26) -> None:
        self.evaluator, self.data, self.max_values = evaluator, data, max_values
        self.task: TaskSpec = evaluator.task
        n = n_samples(data)
        gen = torch.Generator().manual_seed(seed)
        self.resamples = torch.randint(0, n, (n_boot, n), generator=gen)
        self.n_evaluations = 0

    def _score(self, logits: Tensor, target: Tensor) -> Tensor:
        point = batched_scores(logits, target, self.task)
        boot = [batched_scores(logits[:, idx], target[idx], self.task) for idx in self.resamples]
        return torch.stack([point, *boot], dim=1)

    def __call__(self, masks: Tensor) -> Tensor:
        width = 1 + len(self.resamples)
        out = torch.full((len(masks), width), float("nan"), dtype=torch.float64)
        blind = ~masks.any(dim=1)
        if self.task.kind == "multilabel":
            out[blind] = 0.5                     # constant output: AUROC 0.5 exactly, no model call
            todo = torch.nonzero(~blind).flatten()
        else:
            todo = torch.arange(len(masks))
        per_mask = n_samples(self.data) * self.task.n_outputs
        chunk = max(1, self.max_values // max(1, per_mask))
        for start in range(0, len(todo), chunk):
            rows = todo[start:start + chunk]
            logits, target = self.evaluator.predict(self.data, masks[rows])
            out[rows] = self._score(logits, target).reshape(len(rows), width)
            self.n_evaluations += len(rows)
        return out if len(self.resamples) else out[:, 0]


class LocalValue:
    """v(mask) = the model output per sample ``[K, N, O]`` (probability or logit of ``outputs``)."""

    def __init__(self, evaluator: SubsetEvaluator, data: Any, outputs: Sequence[int], output: str = "prob") -> None:
        self.evaluator, self.data, self.output = evaluator, data, output
        self.outputs = torch.as_tensor(list(outputs), dtype=torch.long)
        self.n_evaluations = 0

    def __call__(self, masks: Tensor) -> Tensor:
        logits, _ = self.evaluator.predict(self.data, masks)
        self.n_evaluations += len(masks)
        if self.output == "prob":
            multiclass = self.evaluator.task.kind == "multiclass"
            logits = torch.softmax(logits.double(), dim=-1) if multiclass else torch.sigmoid(logits.double())
        return logits.double()[..., self.outputs]


@dataclass
class ShapleyResult:
    """Shapley values of ``players`` and how they were obtained.

    Attributes:
        players: player names (modalities or token names).
        values: ``[P]`` (global) or ``[N, P, O]`` (local) float64 Shapley values.
        se: standard errors, same shape; see ``se_kind``.
        v_all: the value with every player visible (``[]`` or ``[N, O]``).
        v_none: the value with every player hidden (``[]`` or ``[N, O]``).
        value: ``"global"`` or ``"local"``; ``metric``: what v measures.
        estimator: which estimator ran, in words.
        se_kind: what ``se`` measures (bootstrap over samples, permutation sampling, or none).
        n_evaluations: coalitions scored with the model.
        modality, others: for within-modality values, the modality and how its others were set.
        outputs: for local values, the output names; ``ids``: the sample ids.
    """

    players: list[str]
    values: np.ndarray
    se: np.ndarray
    v_all: np.ndarray
    v_none: np.ndarray
    value: str
    metric: str
    estimator: str
    se_kind: str
    n_evaluations: int
    modality: str | None = None
    others: str | None = None
    outputs: list[str] | None = None
    ids: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def efficiency_gap(self) -> float:
        """max |sum of values - (v(all) - v(none))|: zero up to rounding for every estimator here."""
        total = self.values.sum(axis=0 if self.value == "global" else 1)
        return float(np.max(np.abs(total - (self.v_all - self.v_none))))

    def to_frame(self) -> pd.DataFrame:
        """A tidy table: one row per player (global) or per (sample, player, output) (local)."""
        if self.value == "global":
            df = pd.DataFrame({"player": self.players, "value": self.values, "se": self.se})
        else:
            n, p, o = self.values.shape
            ids = np.arange(n) if self.ids is None else self.ids
            df = pd.DataFrame({
                "sample": np.repeat(ids, p * o),
                "player": np.tile(np.repeat(self.players, o), n),
                "output": np.tile(self.outputs, n * p),
                "value": self.values.reshape(-1),
                "se": self.se.reshape(-1),
            })
        df.insert(0, "modality", self.modality or "(all)")
        df["metric"] = self.metric
        return df


class _Explainer:
    """What both explainers share: the evaluator and the value function for a request."""

    def __init__(self, model: torch.nn.Module, task: TaskSpec | None = None,
                 groups: Mapping[str, Sequence[str]] | None = None, batch_size: int = 512,
                 max_rows: int | None = None) -> None:
        self.model = model
        self.evaluator = SubsetEvaluator(model, task or model.task, groups, batch_size, max_rows)
        self.task = self.evaluator.task

    def _value_fn(self, data: Any, value: str, outputs: Sequence[str | int] | None, output: str,
                  n_boot: int, seed: int) -> tuple[GlobalValue | LocalValue, str, list[str] | None]:
        check_choice(type(self).__name__, "value", value, VALUES)
        if n_samples(data) < 1:
            raise InvalidParameterError("No samples to explain: the data is empty.")
        if value == "global":
            return GlobalValue(self.evaluator, data, n_boot, seed), METRIC_NAMES[self.task.kind], None
        check_choice(type(self).__name__, "output", output, OUTPUTS)
        names = list(self.task.output_names)
        chosen = list(range(len(names))) if outputs is None else list(outputs)
        check_names(type(self).__name__, "output", [o for o in chosen if isinstance(o, str)], names)
        index = [names.index(o) if isinstance(o, str) else int(o) for o in chosen]
        bad = [i for i in index if not 0 <= i < len(names)]
        if bad:
            raise InvalidParameterError(f"{type(self).__name__}: output index {bad} out of range [0, {len(names)}).")
        return LocalValue(self.evaluator, data, index, output), output, [names[i] for i in index]


def _ids(data: Any) -> np.ndarray | None:
    if isinstance(data, MultimodalBatch):
        return None if data.ids is None else data.ids.cpu().numpy()
    base = getattr(data, "base", data)
    ids = getattr(base, "ids", None)
    if ids is None:
        return None
    return np.asarray(ids)[np.asarray(data.indices)] if hasattr(data, "indices") else np.asarray(ids)


class ShapleyModalities(_Explainer):
    """Exact Shapley values of the modalities (or modality groups), from one sweep of all 2^M subsets.

    Args:
        model: a miam model with ``forward_subsets`` (``TokenModel``).
        task: defaults to ``model.task``.
        groups: optional ``{group: [modalities]}``; groups are then the players.
        batch_size: as in :class:`~miam.evaluation.subsets.SubsetEvaluator`.
        max_rows: as in :class:`~miam.evaluation.subsets.SubsetEvaluator`.
        n_boot: bootstrap resamples of the samples for the standard errors of global
            values (0: none); the values themselves use every sample.
        seed: seeds the bootstrap.

    Examples:
        >>> from miam.data.synthetic import make_dataset
        >>> from miam.models import build_model
        >>> ds = make_dataset(seed=0, n_sites=120)
        >>> model = build_model(ds.specs, ds.task, d_model=16, depth=1, heads=2)
        >>> res = ShapleyModalities(model, n_boot=10).attribute(ds)
        >>> res.players, res.efficiency_gap() < 1e-12
        (['env', 'climate', 'satellite'], True)
    """

    def __init__(self, model: torch.nn.Module, task: TaskSpec | None = None,
                 groups: Mapping[str, Sequence[str]] | None = None, *, batch_size: int = 512,
                 max_rows: int | None = None, n_boot: int = 200, seed: int = 0) -> None:
        super().__init__(model, task, groups, batch_size, max_rows)
        self.n_boot, self.seed = n_boot, seed

    def attribute(self, data: Any, value: str = "global", outputs: Sequence[str | int] | None = None,
                  output: str = "prob") -> ShapleyResult:
        """Shapley values of every modality on ``data``.

        Args:
            data: a dataset, split, batch or iterable of batches.
            value: ``"global"`` (task metric) or ``"local"`` (output per sample).
            outputs: for local values, which outputs (names or indices; default all).
            output: for local values, ``"prob"`` or ``"logit"``.
        """
        names = self.evaluator.names
        p = len(names)
        if p > MAX_EXACT_PLAYERS:
            raise InvalidParameterError(f"Exact Shapley over {p} modalities needs 2^{p} subsets; "
                                        f"at most {MAX_EXACT_PLAYERS} are supported.")
        n_boot = self.n_boot if value == "global" else 0
        fn, metric, out_names = self._value_fn(data, value, outputs, output, n_boot, self.seed)
        coalitions = all_coalitions(p)
        masks = coalition_masks(coalitions, self.evaluator.token_group, others_visible=False)
        values = fn(masks)                                                   # one batched sweep
        phi = exact_shapley(values)
        estimator = f"exact over all 2^{p} = {2**p} modality subsets, one batched sweep"
        if value == "global":
            boot = phi[:, 1:] if phi.ndim == 2 else None
            point = phi[:, 0] if phi.ndim == 2 else phi
            se = boot.std(dim=1, correction=1) if boot is not None and boot.shape[1] > 1 else torch.zeros(p)
            v = values[:, 0] if values.ndim == 2 else values
            se_kind = f"bootstrap over samples ({n_boot} resamples)" if n_boot > 1 else "none (exact)"
            return ShapleyResult(names, point.numpy(), se.double().numpy(), v[-1].numpy(), v[0].numpy(), value,
                                 metric, estimator, se_kind, fn.n_evaluations,
                                 extra={"subset_values": v.numpy(), "coalitions": coalitions.numpy()})
        return ShapleyResult(names, phi.movedim(0, 1).numpy(), np.zeros(phi.movedim(0, 1).shape),
                             values[-1].numpy(), values[0].numpy(), value, metric, estimator, "none (exact)",
                             fn.n_evaluations, outputs=out_names, ids=_ids(data))


@dataclass
class _Estimate:
    """What one estimator found: values and SEs ``[P]`` (global) or ``[P, N, O]`` (local), the
    values of the full and empty coalitions, and how they were obtained."""

    values: Tensor
    se: Tensor
    v_all: Tensor
    v_none: Tensor
    estimator: str
    se_kind: str
    extra: dict[str, Any] = field(default_factory=dict)


class ShapleyTokens(_Explainer):
    """Shapley values of the tokens of one modality: each variable, time segment or image patch.

    By default estimated by permutation sampling with antithetic pairs (see
    :func:`~miam.evaluation.functional.permutation_shapley`): each permutation reveals the
    tokens one at a time, many chains are scored per forward pass, and sampling stops
    when the largest standard error is below ``tolerance`` or the budget is spent.
    ``method="exact"`` enumerates all 2^P coalitions instead (small P only).

    The constructor takes how to estimate; :meth:`attribute` what to explain.

    Args:
        model: a miam model with ``forward_subsets`` (``TokenModel``).
        task: defaults to ``model.task``.
        batch_size: as in :class:`~miam.evaluation.subsets.SubsetEvaluator`.
        max_rows: as in :class:`~miam.evaluation.subsets.SubsetEvaluator`.
        method: ``"permutation"`` (sampled) or ``"exact"`` (2^P coalitions).
        tolerance: stop when the largest SE is below it (default None: 0.002 for global
            values, 0.01 for local ones).
        max_permutations: the sampling budget.
        pairs_per_round: antithetic pairs scored per round (their chains go through the
            model together).
        n_boot: bootstrap resamples for the SE of global exact values.
        seed: seeds the permutations and the bootstrap.
        progress: show a progress bar over permutations.

    Raises:
        InvalidParameterError: an unknown ``method``, or a ``tolerance`` that is not > 0.

    Examples:
        >>> from miam.data.synthetic import make_dataset
        >>> from miam.models import build_model
        >>> ds = make_dataset(seed=0, n_sites=120)
        >>> model = build_model(ds.specs, ds.task, d_model=16, depth=1, heads=2)
        >>> explainer = ShapleyTokens(model, max_permutations=16, progress=False)
        >>> res = explainer.attribute(ds, "climate", others="visible")
        >>> res.players[:3], res.efficiency_gap() < 1e-12
        (['Jan', 'Feb', 'Mar'], True)
    """

    def __init__(self, model: torch.nn.Module, task: TaskSpec | None = None, *, batch_size: int = 512,
                 max_rows: int | None = None, method: str = "permutation", tolerance: float | None = None,
                 max_permutations: int = 256, pairs_per_round: int = 8, n_boot: int = 200, seed: int = 0,
                 progress: bool = True) -> None:
        check_choice(type(self).__name__, "method", method, METHODS)
        if tolerance is not None and not tolerance > 0:
            raise InvalidParameterError(f"{type(self).__name__}: tolerance must be > 0, got {tolerance!r}.")
        super().__init__(model, task, None, batch_size, max_rows)
        self.method, self.tolerance, self.n_boot, self.seed = method, tolerance, n_boot, seed
        self.max_permutations, self.pairs_per_round, self.progress = max_permutations, pairs_per_round, progress

    def players(self, modality: str, tokens: Sequence[str] | None = None) -> tuple[list[str], Tensor]:
        """The player names and each token's player index ``[T]`` (-1: not a player)."""
        specs = self.evaluator.model.specs
        check_names(type(self).__name__, "modality", [modality], [s.name for s in specs])
        spec = next(s for s in specs if s.name == modality)
        names = list(spec.token_names) if tokens is None else list(tokens)
        if not names:
            raise InvalidParameterError(f"{type(self).__name__}: no tokens of {modality!r} to explain; "
                                        f"choose among {list(spec.token_names)}.")
        check_names(type(self).__name__, f"token of modality {modality!r}", names, spec.token_names)
        start = sum(s.n_tokens for s in specs[:specs.index(spec)])
        player = torch.full((sum(s.n_tokens for s in specs),), -1, dtype=torch.long)
        for i, name in enumerate(names):
            player[start + spec.token_names.index(name)] = i
        return names, player

    def attribute(self, data: Any, modality: str, tokens: Sequence[str] | None = None, others: str = "hidden",
                  value: str = "global", outputs: Sequence[str | int] | None = None,
                  output: str = "prob") -> ShapleyResult:
        """Shapley values of the tokens of ``modality`` on ``data``.

        Args:
            data: a dataset, split, batch or iterable of batches.
            modality: a modality name of the model's specs.
            tokens: token names to treat as players (default: all of the modality); the
                modality's other tokens follow ``others``.
            others: ``"hidden"`` or ``"visible"``: every token that is not a player.
            value: as in :meth:`ShapleyModalities.attribute`.
            outputs: as in :meth:`ShapleyModalities.attribute`.
            output: as in :meth:`ShapleyModalities.attribute`.
        """
        check_choice(type(self).__name__, "others", others, OTHERS)
        names, player = self.players(modality, tokens)
        boot = self.n_boot if (self.method == "exact" and value == "global") else 0
        fn, metric, out_names = self._value_fn(data, value, outputs, output, boot, self.seed)

        def game(coalitions: Tensor) -> Tensor:
            return fn(coalition_masks(coalitions, player, others == "visible"))

        if self.method == "exact":
            est = self._exact(game, len(names), modality, boot)
        else:
            est = self._sampled(game, len(names), modality, DEFAULT_TOLERANCE[value])
        values, se = (est.values, est.se) if value == "global" else (est.values.movedim(0, 1), est.se.movedim(0, 1))
        return ShapleyResult(names, values.numpy(), se.numpy(), est.v_all.numpy(), est.v_none.numpy(), value, metric,
                             est.estimator, est.se_kind, fn.n_evaluations, modality, others, out_names,
                             _ids(data) if value == "local" else None, est.extra)

    def _exact(self, game: Callable[[Tensor], Tensor], p: int, modality: str, boot: int) -> _Estimate:
        """All 2^P coalitions in one sweep; bootstrap SEs where the game gives resampled columns."""
        if p > MAX_EXACT_PLAYERS:
            raise InvalidParameterError(f"{type(self).__name__}: exact Shapley over {p} tokens needs 2^{p} "
                                        f"coalitions; use method='permutation'.")
        values = game(all_coalitions(p))
        phi = exact_shapley(values)
        if boot:                                       # global values with resamples: [2^P, 1 + n_boot]
            se = phi[:, 1:].std(dim=1, correction=1) if phi.shape[1] > 2 else torch.zeros(p)
            phi, values = phi[:, 0], values[:, 0]
            se_kind = f"bootstrap over samples ({boot} resamples)"
        else:
            se, se_kind = torch.zeros_like(phi), "none (exact)"
        return _Estimate(phi, se, values[-1], values[0],
                         f"exact over all 2^{p} = {2**p} coalitions of {modality} tokens", se_kind)

    def _sampled(self, game: Callable[[Tensor], Tensor], p: int, modality: str, default_tolerance: float
                 ) -> _Estimate:
        """Antithetic permutation sampling until the largest SE is below the tolerance or the budget is spent."""
        tol = default_tolerance if self.tolerance is None else self.tolerance
        ends = game(torch.stack([torch.zeros(p, dtype=torch.bool), torch.ones(p, dtype=torch.bool)]))
        est = self._permutations(game, p, modality, ends, tol)
        worst = float(est.se.max())
        rule = (f"max SE {worst:.2g} < tolerance {tol:g}" if est.stopped_by == "precision"
                else f"budget of {self.max_permutations} permutations spent, max SE {worst:.2g}")
        estimator = (f"permutation sampling with antithetic pairs: {est.n_permutations} permutations of "
                     f"{p} {modality} tokens, stopped by {est.stopped_by} ({rule}); each permutation's "
                     f"marginals sum exactly to v(all) - v(none)")
        return _Estimate(est.values, est.se, ends[1], ends[0], estimator,
                         "permutation sampling (spread of antithetic pair means)",
                         {"stopped_by": est.stopped_by, "n_permutations": est.n_permutations})

    def _permutations(self, game: Callable[[Tensor], Tensor], p: int, modality: str, ends: Tensor,
                      tol: float) -> PermutationEstimate:
        """:func:`~miam.evaluation.functional.permutation_shapley` behind a progress bar."""
        bar = tqdm(total=self.max_permutations, desc=f"Shapley {modality}", unit="perm", disable=not self.progress,
                   leave=False)

        def on_round(n_perm: int, worst: float) -> None:
            bar.update(n_perm - bar.n)
            bar.set_postfix(max_se=f"{worst:.2g}")

        try:
            return permutation_shapley(game, p, ends[0], ends[1], tol, self.max_permutations, self.pairs_per_round,
                                       generator=torch.Generator().manual_seed(self.seed), on_round=on_round)
        finally:
            bar.close()


def shapley_modalities(model: torch.nn.Module, data: Any, task: TaskSpec | None = None,
                       groups: Mapping[str, Sequence[str]] | None = None, batch_size: int = 512, *,
                       value: str = "global", outputs: Sequence[str | int] | None = None, output: str = "prob",
                       n_boot: int = 200, seed: int = 0) -> ShapleyResult:
    """Exact Shapley values of the modalities in one call: :class:`ShapleyModalities` built with
    ``task, groups, batch_size, n_boot, seed``, then its :meth:`~ShapleyModalities.attribute` on
    ``data`` with ``value, outputs, output``; every argument as there."""
    explainer = ShapleyModalities(model, task, groups, batch_size=batch_size, n_boot=n_boot, seed=seed)
    return explainer.attribute(data, value, outputs, output)


def shapley_tokens(model: torch.nn.Module, data: Any, modality: str, task: TaskSpec | None = None,
                   batch_size: int = 512, *, tokens: Sequence[str] | None = None, others: str = "hidden",
                   value: str = "global", outputs: Sequence[str | int] | None = None, output: str = "prob",
                   method: str = "permutation", tolerance: float | None = None, max_permutations: int = 256,
                   pairs_per_round: int = 8, n_boot: int = 200, seed: int = 0,
                   progress: bool = True) -> ShapleyResult:
    """Shapley values of one modality's tokens in one call: :class:`ShapleyTokens` built with
    ``task, batch_size`` and the estimation settings (``method`` to ``progress``), then its
    :meth:`~ShapleyTokens.attribute` on ``data, modality`` with ``tokens, others, value, outputs,
    output``; every argument as there."""
    explainer = ShapleyTokens(model, task, batch_size=batch_size, method=method, tolerance=tolerance,
                              max_permutations=max_permutations, pairs_per_round=pairs_per_round, n_boot=n_boot,
                              seed=seed, progress=progress)
    return explainer.attribute(data, modality, tokens, others, value, outputs, output)
