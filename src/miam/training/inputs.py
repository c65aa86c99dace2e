"""Inputs the validation says to trust: the modality subset a trained model scores best with.

A model trained with masking can be scored on any subset of its inputs. After training,
:func:`choose_inputs` scores every non-empty modality subset on the validation split and
keeps the best one overall and, for multilabel tasks, the best one per species. The
choice names the checkpoint whose weights it was made with (the best, or the last: see
:func:`choose_checkpoint_inputs`) and is stored in the best checkpoint under :data:`INPUTS_KEY` (a plain dict, so the
model still loads with ``MiamModule.load_from_checkpoint``), where ``miam predict
--modalities best`` and ``miam cv --modalities best`` read it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from miam.errors import ConfigError
from miam.evaluation.subsets import SubsetEvaluator, all_subsets, subset_label
from miam.scores import METRIC_NAMES, species_auroc, task_score

#: the checkpoint key holding the validated choice of inputs
INPUTS_KEY = "miam_inputs"
#: the ``--modalities`` values that read the stored choice
BEST = ("best", "best-per-species")


def choose_inputs(model: torch.nn.Module, task: Any, groups: Any, data: Any, batch_size: int = 512
                  ) -> dict[str, Any]:
    """Score every non-empty modality subset on ``data`` (the validation split) and keep the best.

    Ties go to the larger subset, so a modality is dropped only when the validation
    score is higher without it.

    Returns:
        ``{"metric", "n", "names", "subset", "dropped", "scores": {subset label: score},
        "per_species": {species: subset} (multilabel tasks, else None), "checkpoint": None}``.
    """
    evaluator = SubsetEvaluator(model, task, groups, batch_size=batch_size)
    subsets = all_subsets(evaluator.names)
    logits, target = evaluator.predict(data, evaluator.masks(subsets))
    scores = [task_score(lg, target, task) for lg in logits]
    # subsets come by increasing size: the last maximum is the largest best subset
    best = len(scores) - 1 - int(np.argmax(scores[::-1]))
    per_species = None
    if task.kind == "multilabel":
        per = np.stack([species_auroc(torch.sigmoid(lg), target) for lg in logits])        # [n_subsets, S]
        per = np.where(np.isnan(per), -np.inf, per)
        pick = len(subsets) - 1 - np.argmax(per[::-1], axis=0)                                # full input if all NaN
        per_species = {name: list(subsets[i]) for name, i in zip(task.output_names, pick.tolist())}
    return {"metric": METRIC_NAMES[task.kind], "n": int(len(target)), "names": list(evaluator.names),
            "subset": list(subsets[best]), "dropped": [m for m in evaluator.names if m not in subsets[best]],
            "scores": {subset_label(s): float(v) for s, v in zip(subsets, scores)}, "per_species": per_species,
            "checkpoint": None}


def choose_checkpoint_inputs(modules: dict[str, Any], groups: Any, data: Any, batch_size: int = 512
                             ) -> dict[str, Any]:
    """:func:`choose_inputs` for each of a run's checkpoints ``{file name: module}`` (the best on the
    selection score first); keeps the checkpoint whose best subset scores highest, in ``"checkpoint"``.

    The selection score averages every modality alone and the full input, so a modality that
    hurts on validation drags it down and can select an early, undertrained epoch; the
    run's last checkpoint may then serve the trusted inputs better. Ties keep the first.
    """
    best = None
    for name, module in modules.items():
        choice = choose_inputs(module.model, module.task, groups, data, batch_size)
        choice["checkpoint"] = name
        if best is None or _best_score(choice) > _best_score(best):
            best = choice
    return best


def _best_score(choice: dict[str, Any]) -> float:
    return choice["scores"][subset_label(choice["subset"])]


def store_inputs(checkpoint: str | Path, choice: dict[str, Any]) -> None:
    """Write ``choice`` into the checkpoint file (under :data:`INPUTS_KEY`)."""
    state = torch.load(str(checkpoint), map_location="cpu", weights_only=False)
    state[INPUTS_KEY] = choice
    torch.save(state, str(checkpoint))


def load_inputs(checkpoint: str | Path) -> dict[str, Any]:
    """The choice stored by training; a :class:`ConfigError` if the checkpoint has none."""
    state = torch.load(str(checkpoint), map_location="cpu", weights_only=False)
    if INPUTS_KEY not in state:
        raise ConfigError(f"{checkpoint} holds no validated choice of inputs (it comes from an older miam or is "
                          f"not a best checkpoint): train again, or name the modalities to use.")
    return state[INPUTS_KEY]


def chosen_checkpoint(checkpoint: str | Path, choice: dict[str, Any]) -> Path:
    """The checkpoint file whose weights go with ``choice`` (a sibling of ``checkpoint``)."""
    return Path(checkpoint).parent / choice["checkpoint"]


def describe_inputs(choice: dict[str, Any]) -> str:
    """One line: what the choice keeps, what it drops and why (the validation scores)."""
    full, kept = subset_label(choice["names"]), subset_label(choice["subset"])
    scores, metric = choice["scores"], choice["metric"]
    where = f"best inputs on validation ({choice['n']} sites, weights of {choice['checkpoint']})"
    if not choice["dropped"]:
        return f"{where}: all modalities ({metric} {scores[full]:.4f}); nothing dropped"
    return (f"{where}: {kept} ({metric} {scores[kept]:.4f} vs {scores[full]:.4f} with all modalities); "
            f"dropped {', '.join(choice['dropped'])}")


def subsets_for(choice: dict[str, Any], mode: str, output_names: Sequence[str]) -> list[list[str]]:
    """The subset each output uses: one for all (``best``) or one per species (``best-per-species``)."""
    if mode == "best":
        return [list(choice["subset"])] * len(output_names)
    if choice.get("per_species") is None:
        raise ConfigError("--modalities best-per-species needs a multilabel model; use --modalities best.")
    return [list(choice["per_species"][name]) for name in output_names]
