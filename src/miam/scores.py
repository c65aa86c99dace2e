"""Task scores (higher is better), from torchmetrics, synchronised across DDP ranks.

Per task kind: macro AUROC (``multilabel``), top-1 accuracy (``multiclass``) and SatBird's
adaptive top-k (``encounter``: the share of the k species with the highest predicted rates
among the k species actually encountered, k = number of encountered species; higher is
better, so the tracker can use it). :func:`encounter_scores` adds SatBird's top-10/top-30,
MAE and MSE for reports (those two are lower-is-better).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.functional.classification import binary_auroc, multilabel_auroc
from torchmetrics.utilities import dim_zero_cat

from miam.data.contract.spec import TaskSpec

#: the name of each task kind's score in tables and logs
METRIC_NAMES = {"multilabel": "auroc_macro", "multiclass": "top1", "encounter": "topk"}


def auroc_standard_error(auc: Tensor, n_pos: Tensor, n_neg: Tensor) -> Tensor:
    """Hanley & McNeil's (1982) standard error of each AUROC, from its positives and negatives.

    Examples:
        >>> round(float(auroc_standard_error(torch.tensor(0.8), torch.tensor(50), torch.tensor(150))), 4)
        0.0401
    """
    a, n1, n2 = auc.double(), n_pos.double(), n_neg.double()
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    return ((a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n2 - 1) * (q2 - a * a)) / (n1 * n2)).clamp_min(0).sqrt()


def _qualified_auroc(preds: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """AUROC [J] of the species with >= 1 positive and >= 1 negative, their mask [S] and positives [S]."""
    target = target.long()
    n_pos = target.sum(dim=0)
    valid = (n_pos > 0) & (n_pos < target.shape[0])
    k = int(valid.sum())
    if k == 0:
        return torch.empty(0), valid, n_pos
    if k == 1:  # torchmetrics' multilabel AUROC needs >= 2 labels
        per = binary_auroc(preds[:, valid].float().reshape(-1), target[:, valid].reshape(-1), thresholds=None)[None]
    else:
        per = multilabel_auroc(preds[:, valid].float(), target[:, valid], num_labels=k, average="none",
                               thresholds=None)
    return per, valid, n_pos


def species_auroc(probs: Tensor, target: Tensor) -> np.ndarray:
    """AUROC of each species ``[S]``; NaN where a species has only presences or only absences.

    Examples:
        >>> p = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.8, 0.3]])
        >>> y = torch.tensor([[1, 0], [0, 0], [1, 0]])
        >>> species_auroc(p, y).tolist()
        [1.0, nan]
    """
    per, valid, _ = _qualified_auroc(probs, target)
    out = np.full(target.shape[1], np.nan)
    out[valid.numpy()] = per.double().numpy()
    return out


def macro_auroc(preds: Tensor, target: Tensor, with_standard_error: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Unweighted mean of per-species AUROC over species with >= 1 positive and >= 1 negative.

    Returns 0.5 when no species qualifies (the chance level). With ``with_standard_error``,
    also the standard error of the mean: sqrt(sum of the species' Hanley-McNeil variances) / J
    (species taken as independent; it only needs to say which score changes are noise).

    Examples:
        >>> p = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.8, 0.3]])
        >>> y = torch.tensor([[1, 0], [0, 0], [1, 0]])
        >>> float(macro_auroc(p, y))  # species 1 has no positive: left out
        1.0
    """
    per, valid, n_pos = _qualified_auroc(preds, target)
    if not len(per):
        return (torch.tensor(0.5), torch.tensor(0.0, dtype=torch.float64)) if with_standard_error else torch.tensor(0.5)
    if not with_standard_error:
        return per.mean()
    se = auroc_standard_error(per, n_pos[valid], target.shape[0] - n_pos[valid])
    return per.mean(), se.pow(2).sum().sqrt() / len(per)


def samples_f1_topk(probs: Tensor, target: Tensor, k: int) -> Tensor:
    """Samples-averaged F1 of each sample's k highest-scored species (GeoLifeCLEF 2024's score).

    Per sample, the predicted set is the top k species; F1 = 2 |P ∩ T| / (|P| + |T|), and a
    sample with no observed species scores 0 (as ``sklearn.metrics.f1_score(average="samples")``
    with ``zero_division=0``). The GeoPlant baselines report F1 34.1 with k = 25.

    Examples:
        >>> p = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.9, 0.3]])
        >>> y = torch.tensor([[1, 0, 0], [0, 1, 1]])
        >>> round(float(samples_f1_topk(p, y, 2)), 4)  # (2*1/3 + 2*2/4) / 2
        0.8333
    """
    if not 1 <= k <= probs.shape[1]:
        raise ValueError(f"top-k F1 needs 1 <= k <= {probs.shape[1]} (the number of species), got k={k}.")
    top = torch.zeros_like(target, dtype=torch.bool).scatter_(1, probs.topk(k, dim=1).indices, True)
    truth = target.bool()
    hits = (top & truth).sum(dim=1).double()
    return (2 * hits / (k + truth.sum(dim=1).double())).mean()


class MacroAUROC(Metric):
    """:func:`macro_auroc` over the whole epoch; predictions are gathered across ranks.
    ``compute`` also sets ``standard_error_`` (the score's SE on these samples)."""

    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, preds: Tensor, target: Tensor) -> None:
        self.preds.append(preds.detach().float())
        self.target.append(target.detach().to(torch.int8))

    def compute(self) -> Tensor:
        score, self.standard_error_ = macro_auroc(dim_zero_cat(self.preds), dim_zero_cat(self.target), True)
        return score


def encounter_topk(preds: Tensor, target: Tensor, k: int | None = None) -> Tensor:
    """SatBird's top-k per hotspot, for hotspots with at least one encountered species.

    With ``k=None`` (SatBird's ``topk``), k_i = number of species with a non-zero rate at
    hotspot i, and the score is |top-k_i predicted ∩ top-k_i observed| / k_i. With an
    integer ``k`` (``top10``, ``top30``) the k highest predictions are compared with the
    min(k_i, k) highest rates, divided by min(k_i, k) (RolnickLab/SatBird
    ``src/losses/metrics.py::CustomTopK/CustomTop10/CustomTop30``), all hotspots at once.

    Examples:
        >>> y = torch.tensor([[0.5, 0.2, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.9, 0.1, 0.3]])
        >>> p = torch.tensor([[0.9, 0.1, 0.8, 0.0], [0.1, 0.2, 0.3, 0.4], [0.1, 0.8, 0.6, 0.7]])
        >>> encounter_topk(p, y).tolist()  # hotspot 1 has no encounter: left out
        [0.5, 1.0]
    """
    encountered = (target != 0).sum(dim=1)
    n_true = encountered if k is None else encountered.clamp(max=k)
    n_pred = n_true if k is None else torch.full_like(n_true, k)
    pred_rank = preds.argsort(dim=1, descending=True, stable=True).argsort(dim=1)
    true_rank = target.argsort(dim=1, descending=True, stable=True).argsort(dim=1)
    hits = ((pred_rank < n_pred[:, None]) & (true_rank < n_true[:, None])).sum(dim=1)
    valid = encountered > 0
    return hits[valid].double() / n_true[valid].double()


class EncounterTopK(Metric):
    """:func:`encounter_topk` averaged over the hotspots of an epoch (sums synchronised across ranks).
    ``compute`` also sets ``standard_error_`` (sd of the hotspots' values / sqrt(hotspots))."""

    higher_is_better = True
    full_state_update = False

    def __init__(self, k: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.k = k
        self.add_state("correct", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("squares", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        per = encounter_topk(preds.detach(), target.detach(), self.k)
        self.correct += per.sum()
        self.squares += per.pow(2).sum()
        self.total += per.numel()

    def compute(self) -> Tensor:
        n = self.total.clamp(min=1)
        mean = self.correct / n
        self.standard_error_ = ((self.squares / n - mean * mean).clamp_min(0) / n).sqrt()
        return mean.float()


class Top1Accuracy(MulticlassAccuracy):
    """Micro top-1 accuracy; ``compute`` also sets ``standard_error_`` = sqrt(a (1 - a) / n)."""

    def __init__(self, num_classes: int, **kwargs) -> None:
        super().__init__(num_classes=num_classes, top_k=1, average="micro", **kwargs)

    def compute(self) -> Tensor:
        score = super().compute()
        n = (self.tp + self.fn).sum().double().clamp(min=1)
        self.standard_error_ = (score.double() * (1 - score.double()) / n).sqrt()
        return score


def encounter_scores(preds: Tensor, target: Tensor) -> dict[str, float]:
    """SatBird's report: ``topk``, ``top10``, ``top30`` (higher is better), ``mae``, ``mse`` (lower is better).

    Examples:
        >>> y = torch.tensor([[0.5, 0.0], [0.0, 1.0]])
        >>> encounter_scores(torch.tensor([[0.5, 0.0], [0.0, 0.5]]), y)["mae"]
        0.125
    """
    out = {name: float(encounter_topk(preds, target, k).mean()) for name, k in
           (("topk", None), ("top10", 10), ("top30", 30))}
    out["mae"] = float((preds - target).abs().mean())
    out["mse"] = float(((preds - target) ** 2).mean())
    return out


def make_metric(task: TaskSpec) -> Metric:
    """The task's score: macro AUROC (multilabel), top-1 accuracy (multiclass) or top-k (encounter)."""
    if task.kind == "multilabel":
        return MacroAUROC()
    if task.kind == "encounter":
        return EncounterTopK()
    return Top1Accuracy(num_classes=task.n_outputs)


def task_score(logits: Tensor, target: Tensor, task: TaskSpec) -> float:
    """One-shot score of logits against targets."""
    if task.kind == "multilabel":
        return float(macro_auroc(torch.sigmoid(logits), target))
    if task.kind == "encounter":
        return float(encounter_topk(torch.sigmoid(logits), target).mean())
    return float((logits.argmax(dim=1) == target).float().mean())


def chance_level(task: TaskSpec) -> float:
    """The score of an uninformed ranking, known before any data: AUROC 0.5, top-1 1/C.

    SatBird's adaptive top-k has none (it depends on how many species each hotspot has):
    a :class:`ValueError` says so.
    """
    if task.kind == "multilabel":
        return 0.5
    if task.kind == "multiclass":
        return 1.0 / task.n_outputs
    raise ValueError(f"The {METRIC_NAMES[task.kind]!r} score of an {task.kind!r} task has no chance level known "
                     f"before the data (it depends on the species per sample); give a number.")


def chance_score(task: TaskSpec, target: Tensor) -> float:
    """What a trivial predictor scores: 0.5 AUROC, the majority class share, or the top-k of mean rates."""
    if task.kind == "multilabel":
        return 0.5
    if task.kind == "encounter":
        return float(encounter_topk(target.mean(dim=0).expand_as(target), target).mean())
    return float(torch.bincount(target, minlength=task.n_outputs).max() / len(target))
