"""float16 mixed precision: the weighted loss stays finite, CGGM clips true (unscaled) gradients.

Lightning turns ``precision: 16-mixed`` into bf16 on a CPU, so these runs pass its fp16
plugin by hand: real float16 autocast and a real GradScaler (initial scale 2^16).
"""

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins import MixedPrecision

from miam.config import from_dict
from miam.data.synthetic import make_dataset
from miam.models.losses import full_weighted_bce, presence_weights
from miam.training.data import MultimodalDataModule
from miam.training.run import build_module


@pytest.fixture(scope="module")
def unseen_species():
    """Species 0 has no positive at all, so its weight N / (0 + 1e-5) exceeds float16's range."""
    dataset = make_dataset(seed=0, n_sites=200, n_species=5)
    dataset.target[:, 0] = 0
    return dataset


class Record(L.Callback):
    """Each step's loss and, after the optimiser step, the norm of the model's gradients."""

    def __init__(self) -> None:
        self.losses, self.grad_norms = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))
        grads = [p.grad.flatten() for p in pl_module.model.parameters() if p.grad is not None]
        self.grad_norms.append(float(torch.cat(grads).norm()))


def fit_float16(dataset, tmp_path, **sections) -> tuple[Record, MixedPrecision]:
    cfg = from_dict({"model": {"d_model": 8, "depth": 1, "heads": 2, "dropout": 0.0},
                     "data": {"batch_size": 32}, "out_dir": str(tmp_path), **sections})
    record, plugin = Record(), MixedPrecision("16-mixed", "cpu")
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", plugins=[plugin], limit_train_batches=3,
                        limit_val_batches=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, use_distributed_sampler=False,
                        callbacks=[record])
    trainer.fit(build_module(cfg, dataset), datamodule=MultimodalDataModule(dataset, 32, 64, 0, 0))
    return record, plugin


def test_weighted_loss_of_half_precision_logits_is_the_float32_loss():
    weights = presence_weights(torch.tensor([0.0, 3.0, 40.0]), 100).float()
    assert weights[0] > torch.finfo(torch.float16).max
    logits = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))
    target = (torch.rand(16, 3, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    target[:, 0] = 0
    half = full_weighted_bce(logits.half(), target.half(), weights)
    assert half.dtype == torch.float32 and torch.isfinite(half)
    torch.testing.assert_close(half, full_weighted_bce(logits.half().float(), target, weights))


def test_float16_training_with_an_unseen_species_has_a_finite_loss(unseen_species, tmp_path):
    record, plugin = fit_float16(unseen_species, tmp_path)
    assert plugin.scaler.get_scale() == 2.0 ** 16          # no step was skipped for inf/NaN gradients
    assert len(record.losses) == 3 and all(torch.isfinite(torch.tensor(record.losses))), record.losses


def test_cggm_clips_the_unscaled_gradients_under_float16(unseen_species, tmp_path):
    clip = 0.05
    record, plugin = fit_float16(unseen_species, tmp_path, model={"architecture": "late_fusion", "d_model": 8,
                                                                   "depth": 1, "heads": 2, "dropout": 0.0},
                                 masking={"strategy": "constant", "params": {"q": 0.0}},
                                 balance={"method": "cggm", "params": {"clip": clip}})
    assert plugin.scaler.get_scale() == 2.0 ** 16
    # clipped to `clip` after unscaling; clipped while still scaled, they would end at clip / 2^16
    torch.testing.assert_close(torch.tensor(record.grad_norms), torch.full((3,), clip), rtol=1e-3, atol=0)
