"""Masked reconstruction for self-supervised pretraining: light heads, standardised targets, a balanced loss.

Pure tensor code (no Lightning). The encoder (:meth:`TokenModel.token_states`) sees the visible
tokens only; a light linear head per token position predicts each hidden token's input from
the encoder's output state at that position (per position, since the encoder's mask token
carries no position of its own). What the loss counts:

* only tokens that are **present in the data and hidden by the mask**: a visible token, or a
  token missing in the data, adds nothing (there is nothing to predict, or nothing to learn);
* per modality, the mean error over its own hidden tokens, then the plain mean over the
  modalities that have any, so an image of 16 x 64 values does not outweigh 12 tabular numbers;
* continuous tokens (tabular values, series segments, image and audio patches, embeddings,
  coordinates) as squared error on targets standardised per token position and value with the
  training split's mean and sd (``TokenStandardizer``), so predicting the training mean costs
  about 1 everywhere; categorical levels as cross-entropy over the variable's levels, divided by
  log(levels) (a uniform guess costs 1).

Example:
    >>> import torch
    >>> from miam.data.contract.spec import ModalitySpec
    >>> specs = [ModalitySpec("env", "tabular", 3)]
    >>> heads = ReconstructionHeads(specs, d_model=8)
    >>> out = heads(torch.zeros(2, 3, 8))
    >>> out["env"].shape
    torch.Size([2, 3, 1])
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from miam.data.contract.batch import MultimodalBatch
from miam.data.contract.spec import ModalitySpec


def is_categorical(spec: ModalitySpec) -> bool:
    return spec.kind == "categorical"


class TokenStandardizer(nn.Module):
    """Per-token, per-value mean and sd of each continuous modality (buffers: they travel in checkpoints).

    :meth:`fit` reads batches of the training split and counts present tokens only.
    """

    def __init__(self, specs: Sequence[ModalitySpec]) -> None:
        super().__init__()
        self.names = [s.name for s in specs if not is_categorical(s)]
        for s in specs:
            if not is_categorical(s):
                self.register_buffer(f"mean_{s.name}", torch.zeros(s.n_tokens, s.token_size))
                self.register_buffer(f"sd_{s.name}", torch.ones(s.n_tokens, s.token_size))

    @torch.no_grad()
    def fit(self, batches: Iterable[MultimodalBatch]) -> TokenStandardizer:
        """Mean and sd over the present tokens of ``batches`` (sd floored at 1e-6; an unseen token keeps 0 / 1)."""
        sums = {m: [0.0, 0.0, 0.0] for m in self.names}
        for batch in batches:
            for m in self.names:
                x = batch.tokens[m].flatten(start_dim=2).double()
                w = batch.present[m].double().unsqueeze(-1)
                acc = sums[m]
                acc[0] = acc[0] + w.sum(0)
                acc[1] = acc[1] + (w * x).sum(0)
                acc[2] = acc[2] + (w * x * x).sum(0)
        for m, (n, s1, s2) in sums.items():
            if isinstance(n, float):       # no batch at all
                continue
            mean = s1 / n.clamp_min(1)
            var = (s2 / n.clamp_min(1) - mean ** 2).clamp_min(0)
            getattr(self, f"mean_{m}").copy_(mean.float())
            getattr(self, f"sd_{m}").copy_(torch.where(n > 0, var.sqrt().clamp_min(1e-6), torch.ones_like(var)).float())
        return self

    def forward(self, name: str, x: Tensor) -> Tensor:
        """Tokens ``x`` [B, T, *shape] of modality ``name`` -> standardised [B, T, token_size]."""
        return (x.flatten(start_dim=2) - getattr(self, f"mean_{name}")) / getattr(self, f"sd_{name}")


class ReconstructionHeads(nn.Module):
    """A light linear head per token position: ``LayerNorm(state_t) @ W_t + b_t`` -> token t's values (continuous
    kinds, standardised) or its levels' logits (categorical, padded to the modality's most levels).

    The weights are per position, as the tabular tokenizer's are per variable, so a hidden position
    whose state is the shared mask token's still gets its own prediction.
    """

    def __init__(self, specs: Sequence[ModalitySpec], d_model: int) -> None:
        super().__init__()
        self.specs = list(specs)
        self.norm = nn.LayerNorm(d_model)
        self.weight = nn.ParameterDict()
        self.bias = nn.ParameterDict()
        for s in self.specs:
            out = max(s.levels) if is_categorical(s) else s.token_size
            self.weight[s.name] = nn.Parameter(torch.randn(s.n_tokens, d_model, out) / d_model ** 0.5)
            self.bias[s.name] = nn.Parameter(torch.zeros(s.n_tokens, out))
        self.standardizer = TokenStandardizer(self.specs)

    def forward(self, states: Tensor) -> dict[str, Tensor]:
        """Encoder states [B, T, d] -> ``{modality: [B, T_m, out_m]}`` predictions."""
        parts = self.norm(states).split([s.n_tokens for s in self.specs], dim=1)
        return {s.name: torch.einsum("btd,tdo->bto", part, self.weight[s.name]) + self.bias[s.name]
                for s, part in zip(self.specs, parts)}


@dataclass
class ReconstructionErrors:
    """Per modality, sums over its hidden tokens: ``error`` (squared standardised error, or
    cross-entropy / log(levels)), ``baseline`` (the same for the training mean, or a uniform
    guess) and ``count`` (hidden tokens), each a tensor [M]; add them over batches."""

    names: list[str]
    error: Tensor
    baseline: Tensor
    count: Tensor

    def loss(self) -> Tensor:
        """Each modality's mean error over its hidden tokens, averaged over the modalities with any (0 if none)."""
        has = self.count > 0
        per = self.error[has] / self.count[has]
        return per.mean() if len(per) else self.error.sum() * 0.0

    def skill(self) -> Tensor:
        """Per modality 1 - error / baseline (an R^2 for continuous tokens), NaN where nothing was hidden."""
        return torch.where(self.count > 0, 1 - self.error / self.baseline.clamp_min(1e-12),
                           torch.full_like(self.error, float("nan")))


def reconstruction_errors(heads: ReconstructionHeads, predictions: Mapping[str, Tensor], batch: MultimodalBatch,
                          hidden: Tensor) -> ReconstructionErrors:
    """Sum the errors of ``predictions`` on the tokens of ``hidden`` [B, T] that are present in ``batch``.

    ``hidden`` is ``~visible`` (or any token set); tokens missing in the data are dropped here,
    so they never count.
    """
    hidden = hidden & batch.present_flat([s.name for s in heads.specs])
    errors, baselines, counts = [], [], []
    for s, h in zip(heads.specs, hidden.split([s.n_tokens for s in heads.specs], dim=1)):
        pred = predictions[s.name].float()
        w = h.to(pred.dtype)
        if is_categorical(s):
            levels = torch.tensor(s.levels, device=pred.device)
            valid = torch.arange(pred.shape[-1], device=pred.device) < levels.unsqueeze(-1)     # [T, L]
            logits = pred.masked_fill(~valid, float("-inf"))
            target = batch.tokens[s.name].reshape(pred.shape[:2]).long().clamp(min=0)
            target = torch.minimum(target, levels - 1)
            ce = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")            # [B, T]
            norm = levels.to(pred.dtype).clamp_min(2).log()
            errors.append((w * ce / norm).sum())
            baselines.append(w.sum())
        else:
            target = heads.standardizer(s.name, batch.tokens[s.name].to(pred.dtype))
            per_token = ((pred - target) ** 2).mean(dim=-1)                                    # [B, T]
            errors.append((w * per_token).sum())
            baselines.append((w * (target ** 2).mean(dim=-1)).sum())
        counts.append(w.sum())
    return ReconstructionErrors([s.name for s in heads.specs], torch.stack(errors), torch.stack(baselines), torch.stack(counts))

