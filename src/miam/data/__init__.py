"""The data contract (specs, batches, datasets) and the embedded synthetic data."""

from miam.data.batch import MultimodalBatch, collate, nan_to_present
from miam.data.dataset import MultimodalDataset, SplitView, spatial_block_split
from miam.data.spec import MODALITY_KINDS, TASK_KINDS, ModalitySpec, TaskSpec

__all__ = [
    "MODALITY_KINDS", "TASK_KINDS", "ModalitySpec", "MultimodalBatch", "MultimodalDataset",
    "SplitView", "TaskSpec", "collate", "nan_to_present", "spatial_block_split",
]
