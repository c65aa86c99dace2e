"""Models: tokenizers, the token transformer and task losses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from miam._validation import check_choice
from miam.data.contract.spec import ModalitySpec, TaskSpec
from miam.models.late_fusion import LateFusionModel
from miam.models.losses import TaskLoss, full_weighted_bce
from miam.models.token_model import TokenModel

ARCHITECTURES = {"token": TokenModel, "late_fusion": LateFusionModel}


def build_model(specs: Sequence[ModalitySpec], task: TaskSpec, architecture: str = "token", **params: Any) -> nn.Module:
    """The model named by ``architecture`` (``token`` or ``late_fusion``), built for these modalities and task."""
    check_choice("build_model", "architecture", architecture, ARCHITECTURES)
    return ARCHITECTURES[architecture](specs, task, **params)


__all__ = ["ARCHITECTURES", "LateFusionModel", "TaskLoss", "TokenModel", "build_model", "full_weighted_bce"]
