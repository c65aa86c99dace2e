"""Task scores (higher is better), from torchmetrics, synchronised across DDP ranks."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.functional.classification import multilabel_auroc
from torchmetrics.utilities import dim_zero_cat

from miam.data.spec import TaskSpec


def macro_auroc(preds: Tensor, target: Tensor) -> Tensor:
    """Unweighted mean of per-species AUROC over species with >= 1 positive and >= 1 negative.

    Returns 0.5 when no species qualifies (the chance level).

    Example:
        >>> p = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.8, 0.3]])
        >>> y = torch.tensor([[1, 0], [0, 0], [1, 0]])
        >>> float(macro_auroc(p, y))  # species 1 has no positive: left out
        1.0
    """
    target = target.long()
    n_pos = target.sum(dim=0)
    valid = (n_pos > 0) & (n_pos < target.shape[0])
    if not bool(valid.any()):
        return torch.tensor(0.5)
    per = multilabel_auroc(preds[:, valid].float(), target[:, valid], num_labels=int(valid.sum()),
                           average="none", thresholds=None)
    return per.mean()


class MacroAUROC(Metric):
    """:func:`macro_auroc` over the whole epoch; predictions are gathered across ranks."""

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
        return macro_auroc(dim_zero_cat(self.preds), dim_zero_cat(self.target))


def make_metric(task: TaskSpec) -> Metric:
    """The task's score: macro AUROC (multilabel) or top-1 accuracy (multiclass)."""
    if task.kind == "multilabel":
        return MacroAUROC()
    return MulticlassAccuracy(num_classes=task.n_outputs, top_k=1, average="micro")


def task_score(logits: Tensor, target: Tensor, task: TaskSpec) -> float:
    """One-shot score of logits against targets."""
    if task.kind == "multilabel":
        return float(macro_auroc(torch.sigmoid(logits), target))
    return float((logits.argmax(dim=1) == target).float().mean())


def chance_score(task: TaskSpec, target: Tensor) -> float:
    """What a trivial predictor scores: 0.5 AUROC, or the majority class share."""
    if task.kind == "multilabel":
        return 0.5
    return float(torch.bincount(target, minlength=task.n_outputs).max() / len(target))
