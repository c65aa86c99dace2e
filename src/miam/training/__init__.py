"""The Lightning layer: the module, the feedback callback, loaders and the run driver."""

from miam.training.data import EpochSampler, MultimodalDataModule, make_loader
from miam.training.feedback import ImbalanceFeedback
from miam.training.module import MiamModule, step_seed

__all__ = ["EpochSampler", "ImbalanceFeedback", "MiamModule", "MultimodalDataModule", "make_loader", "step_seed"]
