"""The callback that closes MIAM's loop: unimodal validation scores -> tracker -> strategy."""

from __future__ import annotations

import lightning as L
import torch

from miam.training.module import MiamModule


class ImbalanceFeedback(L.Callback):
    """After each validation epoch: score every view, update rho_s/rho_d/w, re-weight the strategy.

    Scores come from torchmetrics states gathered across ranks, so every rank computes the
    same weights; they are broadcast from rank 0 as well, so no rank can drift.  Logs
    ``val/score_<m>``, ``val/score_full``, ``val/selection`` (mean of all of them, the
    early-stopping monitor) and ``rho/<m>/{rho_s,rho_d,w}``.
    """

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: MiamModule) -> None:
        scores = pl_module.view_scores("val")
        pl_module.log_scores("val", scores)
        if trainer.sanity_checking or pl_module.tracker is None:
            return
        tracker = pl_module.tracker
        weights = tracker.update({m: scores[m] for m in pl_module.group_names}, pl_module.val_standard_errors_)
        weights = trainer.strategy.broadcast(weights, src=0)
        tracker.weights_ = torch.as_tensor(weights, dtype=torch.float64)
        pl_module.strategy.set_weights(tracker.weights_.float())
        pl_module.strategy.set_scores(tracker.scores_.float())
        for m, row in tracker.as_dict().items():
            for key in ("rho_s", "rho_d", "w"):
                pl_module.log(f"rho/{m}/{key}", row[key])
            pl_module.trajectory_.append({"epoch": trainer.current_epoch, "modality": m, **row})
