"""Data: what every source hands the model, and the sources.

Four sub-packages, each importing only :mod:`miam.data.contract` below it:

* :mod:`miam.data.contract`: the names every other part speaks (modality and task specs,
  batches, datasets and their splits, reports of what was hidden, patches, unlabelled pools);
* :mod:`miam.data.benchmarks`: the published benchmarks (GeoPlant, SatBird, TaxaBench-8k),
  decoded once into a memory-mapped cache;
* :mod:`miam.data.files`: the user's own tables, rasters and images, described in YAML;
* :mod:`miam.data.synthetic`: landscapes that keep their truth (the demo, the presets).

:mod:`miam.data.registry` names them for configs. The contract's classes are re-exported here.
"""

from miam.data.contract.batch import MultimodalBatch, collate, nan_to_present
from miam.data.contract.dataset import MultimodalDataset, SplitView
from miam.data.contract.spec import MODALITY_KINDS, TASK_KINDS, ModalitySpec, TaskSpec
from miam.data.contract.splits import spatial_block_split

__all__ = [
    "MODALITY_KINDS", "TASK_KINDS", "ModalitySpec", "MultimodalBatch", "MultimodalDataset",
    "SplitView", "TaskSpec", "collate", "nan_to_present", "spatial_block_split",
]
