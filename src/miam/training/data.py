"""DataLoaders whose order is a function of (seed, epoch, rank): exact resume, DDP-ready."""

from __future__ import annotations

from collections.abc import Iterator

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from miam.data.benchmarks.cached import CachedDataset
from miam.data.contract.batch import MultimodalBatch, collate
from miam.data.contract.dataset import MultimodalDataset


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class EpochSampler(Sampler[int]):
    """Shuffles with a seed of (seed, epoch) and shards by rank.

    Lightning calls ``set_epoch`` each epoch, so a run resumed at epoch e sees the same
    order as an uninterrupted one. Training shards are padded to equal length (as
    ``DistributedSampler`` does) so that every rank takes the same number of steps;
    evaluation shards are not, so no sample is scored twice.
    """

    def __init__(self, n: int, shuffle: bool, seed: int = 0, pad: bool = True) -> None:
        self.n, self.shuffle, self.seed, self.pad = n, shuffle, seed, pad
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n)
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.n)

    def __iter__(self) -> Iterator[int]:
        rank, world = _rank_world()
        idx = self._indices()
        if world > 1 and self.pad:
            total = -(-self.n // world) * world
            idx = np.concatenate([idx, idx[: total - self.n]])
        return iter(idx[rank::world].tolist())

    def __len__(self) -> int:
        rank, world = _rank_world()
        if world > 1 and self.pad:
            return -(-self.n // world)
        return len(range(rank, self.n, world))


def make_loader(ds: Dataset, batch_size: int, shuffle: bool, seed: int = 0, num_workers: int = 0,
                pin_memory: bool = False) -> DataLoader:
    """A loader that fetches whole batches through ``__getitems__`` (no per-sample Python work).

    ``pin_memory`` pins batches that can be pinned (:class:`~miam.data.benchmarks.cached.RawBatch`) for
    asynchronous copies to a CUDA device.
    """
    return DataLoader(
        ds, batch_size=batch_size, sampler=EpochSampler(len(ds), shuffle, seed, pad=shuffle),
        collate_fn=collate, num_workers=num_workers, persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(seed), pin_memory=pin_memory,
    )


class MultimodalDataModule(L.LightningDataModule):
    """Train/val/test loaders over a dataset's named splits.

    The test loader is only built when ``test_dataloader`` is called, after training:
    model selection never touches test data.

    A :class:`~miam.data.benchmarks.cached.CachedDataset` is read raw (uint8 images stay uint8, one
    gather per array), pinned when training on CUDA, and finished on the device by
    :meth:`on_after_batch_transfer` (Lightning calls it; outside Lightning, call it on each batch).
    """

    def __init__(self, dataset: MultimodalDataset, batch_size: int = 128, eval_batch_size: int = 512,
                 num_workers: int = 0, seed: int = 0) -> None:
        super().__init__()
        self.dataset = dataset
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers, self.seed = num_workers, seed
        self.test_loader_built = False

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        cached = isinstance(self.dataset, CachedDataset)
        cuda = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        ds = self.dataset.raw_split(split) if cached else self.dataset.split(split)
        return make_loader(ds, batch_size, shuffle, self.seed, self.num_workers, pin_memory=cached and cuda)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, False)

    def test_dataloader(self) -> DataLoader:
        self.test_loader_built = True
        return self._loader("test", self.eval_batch_size, False)

    def on_after_batch_transfer(self, batch: MultimodalBatch, dataloader_idx: int) -> MultimodalBatch:
        """Standardise a cached dataset's raw batch where it now is (the training device)."""
        return self.dataset.finish(batch) if isinstance(self.dataset, CachedDataset) else batch
