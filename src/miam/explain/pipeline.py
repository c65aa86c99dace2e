"""Every explanation of a trained model on held-out data, in one call.

subset table (all 2^M - 1 modality subsets) -> robustness curves -> exact modality
Shapley values -> sampled token Shapley values within each modality -> agreement with a
ground truth when the data carries one. :func:`miam.explain.report.write_report` turns
the result into an HTML page and CSV files.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from miam._validation import check_choice
from miam.data.contract.batch import MultimodalBatch
from miam.data.contract.dataset import MultimodalDataset, SplitView
from miam.data.contract.spec import ModalitySpec, TaskSpec
from miam.errors import ConfigError, InvalidParameterError, check_names
from miam.evaluation.configs import InputConfig
from miam.evaluation.subsets import SubsetEvaluator, all_subsets, summarize_subsets
from miam.explain.robustness import robustness_curves, summarize_curves
from miam.explain.shapley import OTHERS, ShapleyModalities, ShapleyResult, ShapleyTokens, n_samples
from miam.explain.truth import truth_agreement
from miam.scores import METRIC_NAMES


def subsample(data: Any, max_samples: int | None, seed: int = 0) -> Any:
    """A random subset of ``max_samples`` samples of a dataset, split or batch (all of it if smaller)."""
    if max_samples is None or max_samples >= n_samples(data):
        return data
    if max_samples < 1:
        raise InvalidParameterError(f"max_samples must be >= 1, got {max_samples}.")
    keep = np.sort(np.random.default_rng(seed).choice(n_samples(data), max_samples, replace=False))
    if isinstance(data, MultimodalBatch):
        return data.select(torch.as_tensor(keep))
    if isinstance(data, SplitView):
        return SplitView(data.base, data.indices[keep])
    if isinstance(data, MultimodalDataset):
        return SplitView(data, keep)
    raise InvalidParameterError(f"max_samples needs a dataset, split or batch, got {type(data).__name__}.")


def check_model_data(model_specs: Sequence[ModalitySpec], data_specs: Sequence[ModalitySpec],
                     model_task: TaskSpec, data_task: TaskSpec, source: str = "the model") -> None:
    """Raise a :class:`~miam.errors.ConfigError` unless the data has the model's modalities and task.

    Examples:
        >>> a = [ModalitySpec("env", "tabular", 3)]
        >>> check_model_data(a, [ModalitySpec("env", "tabular", 4)], TaskSpec("multilabel", 2),
        ...                  TaskSpec("multilabel", 2))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        miam.errors.ConfigError: the model comes from another dataset's specs: modality 'env' has 3 tokens ...
    """
    problems = []
    want = {s.name: s for s in model_specs}
    got = {s.name: s for s in data_specs}
    if list(want) != list(got):
        problems.append(f"modalities {list(want)} in the model, {list(got)} in the data")
    for name in want.keys() & got.keys():
        a, b = want[name], got[name]
        for key in ("kind", "n_tokens", "token_shape", "token_names", "grid"):
            if getattr(a, key) != getattr(b, key):
                what = "tokens" if key == "n_tokens" else key
                problems.append(f"modality {name!r} has {getattr(a, key)} {what} in the model, "
                                f"{getattr(b, key)} in the data")
                break
    if (model_task.kind, model_task.n_outputs) != (data_task.kind, data_task.n_outputs):
        problems.append(f"task {model_task.kind} with {model_task.n_outputs} outputs in the model, "
                        f"{data_task.kind} with {data_task.n_outputs} in the data")
    if problems:
        raise ConfigError(f"{source} comes from another dataset's specs: " + "; ".join(problems)
                          + ". Evaluate it on the dataset it was trained on (the run's config.yaml).")


@dataclass
class Explanation:
    """What :func:`explain_model` computed; tables are tidy pandas DataFrames."""

    specs: list[ModalitySpec]
    task: TaskSpec
    group_names: list[str]
    n_samples: int
    subsets: pd.DataFrame
    summary: dict[str, float]
    curves: pd.DataFrame
    curves_summary: pd.DataFrame
    modalities: ShapleyResult
    tokens: dict[str, ShapleyResult]
    others: str
    truth: Mapping[str, Any] | None = None
    agreement: pd.DataFrame | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    description: str = ""

    @property
    def metric(self) -> str:
        return METRIC_NAMES[self.task.kind]

    def chance(self) -> float | None:
        """The score of a model without input, when it is known a priori (0.5 AUROC)."""
        return 0.5 if self.task.kind == "multilabel" else None

    def spec(self, name: str) -> ModalitySpec:
        return next(s for s in self.specs if s.name == name)


def explain_model(
    model: torch.nn.Module,
    data: Any,
    task: TaskSpec | None = None,
    groups: Mapping[str, Sequence[str]] | None = None,
    modalities: Sequence[str] | None = None,
    others: str = "hidden",
    tolerance: float = 2e-3,
    max_permutations: int = 128,
    pairs_per_round: int = 8,
    shares: Sequence[float] = tuple(np.linspace(0.0, 1.0, 11)),
    repeats: int = 5,
    n_boot: int = 200,
    seed: int = 0,
    truth: Mapping[str, Any] | None = None,
    batch_size: int = 512,
    max_samples: int | None = None,
    progress: bool = True,
    description: str = "",
    configs: Sequence[InputConfig] = (),
) -> Explanation:
    """Subset table, robustness curves and Shapley values (global, on the task metric) of ``model``.

    Args:
        model: a miam model with ``forward_subsets`` (``TokenModel``).
        data: held-out data (a split, dataset or batch).
        task: defaults to ``model.task``; ``groups``: optional modality grouping.
        modalities: whose tokens get Shapley values (default: every modality).
        others: tokens outside the explained modality, ``"hidden"`` or ``"visible"``.
        tolerance: the token estimator's stopping rule: the largest SE below it.
        max_permutations: the token estimator's sampling budget.
        pairs_per_round: antithetic pairs the token estimator scores per round.
        shares: the robustness curves' shares of hidden tokens.
        repeats: the robustness curves' random draws per share.
        n_boot: bootstrap resamples for the SE of the exact modality values.
        seed: seeds every random draw.
        truth: a ground truth as in :mod:`miam.explain.truth` (synthetic data).
        max_samples: explain a random subset of this many samples (the cost of token
            Shapley values grows with samples x permutations x tokens).
        description: a line about the model and data, shown in the report.
        configs: named input configurations (:func:`miam.evaluation.configs.resolve_configs`),
            scored beside the subsets; their mean is ``avg_paper_configs``.
    """
    task = task or model.task
    check_choice("explain_model", "others", others, OTHERS)
    names = [s.name for s in model.specs]
    chosen = names if modalities is None else list(modalities)
    check_names("explain_model", "modality", chosen, names)
    data = subsample(data, max_samples, seed)
    if n_samples(data) < 2:
        raise InvalidParameterError(f"explain_model needs at least 2 samples, got {n_samples(data)}.")
    seconds = {}
    start = time.perf_counter()
    evaluator = SubsetEvaluator(model, task, groups, batch_size)
    table = evaluator.evaluate(data, all_subsets(evaluator.names), configs)
    summary = summarize_subsets(table, evaluator.names)
    seconds["subsets"] = time.perf_counter() - start

    start = time.perf_counter()
    curves = robustness_curves(model, data, task, shares, repeats, seed=seed, batch_size=batch_size)
    seconds["robustness"] = time.perf_counter() - start

    start = time.perf_counter()
    modalities_explainer = ShapleyModalities(model, task, groups, batch_size=batch_size, n_boot=n_boot, seed=seed)
    modality_values = modalities_explainer.attribute(data)
    seconds["shapley_modalities"] = time.perf_counter() - start

    explainer = ShapleyTokens(model, task, batch_size=batch_size, tolerance=tolerance,
                              max_permutations=max_permutations, pairs_per_round=pairs_per_round, seed=seed,
                              progress=progress)
    tokens = {}
    for name in chosen:
        start = time.perf_counter()
        tokens[name] = explainer.attribute(data, name, others=others)
        seconds[f"shapley_{name}"] = time.perf_counter() - start
    agreement = truth_agreement(modality_values, tokens, truth) if truth else None
    return Explanation(list(model.specs), task, list(evaluator.names), n_samples(data), table, summary, curves,
                       summarize_curves(curves), modality_values, tokens, others, truth, agreement, seconds,
                       description)
