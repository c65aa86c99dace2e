"""Late fusion: one encoder and one linear head per modality, fused logits.

The balancing methods of the related work (OGM-GE, OPM, MILES, MLA, CGGM, MNL, AMSS)
act on unimodal logits z_m and on per-modality encoders; this model gives them both,
behind the same interface as :class:`~miam.models.TokenModel` (``forward(batch,
visible)``, ``forward_subsets(batch, masks, max_rows)``, ``specs``, ``task``, ``modalities``,
``n_tokens``, ``token_modality``), so masking strategies, validation views and the
:class:`~miam.evaluation.subsets.SubsetEvaluator` work on it unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from miam._validation import check_choice
from miam.data.contract.batch import MultimodalBatch
from miam.data.contract.spec import ModalitySpec, TaskSpec
from miam.errors import ShapeError
from miam.models.token_model import TokenModel, subset_passes

FUSIONS = ("sum", "mean", "concat", "entropy")


@dataclass
class LateFusionOutput:
    """Everything a balancing method reads from one forward pass.

    Attributes:
        logits: fused logits ``[B, n_outputs]``.
        unimodal: z_m, ``[M, B, n_outputs]``: the output with only modality m visible.
        features: pooled encoder features ``[M, B, d_model]``.
        available: ``[M, B]`` bool, True where modality m has at least one visible token.
    """

    logits: Tensor
    unimodal: Tensor
    features: Tensor
    available: Tensor


def output_entropy(logits: Tensor, kind: str) -> Tensor:
    """Per-row entropy of the predictive distribution (``[..., C]`` -> ``[...]``).

    Multiclass: the entropy of softmax(z). Multilabel: the mean binary entropy of
    sigmoid(z) over outputs.

    Examples:
        >>> output_entropy(torch.zeros(1, 4), "multiclass")  # uniform over 4 classes: log 4
        tensor([1.3863])
    """
    if kind == "multiclass":
        logp = F.log_softmax(logits, dim=-1)
        return -(logp.exp() * logp).sum(dim=-1)
    p = torch.sigmoid(logits)
    return -(p * F.logsigmoid(logits) + (1 - p) * F.logsigmoid(-logits)).mean(dim=-1)


class LateFusionModel(nn.Module):
    """One token encoder per modality, a linear head per modality, fused logits.

    Each modality m has its own encoder: the modality's tokenizer and a small pre-LN
    transformer over its tokens with a CLS token (a one-modality
    :class:`~miam.models.TokenModel` without its head, so hidden tokens are handled
    the same way: ``hidden="replace"`` or ``"drop"``). Its pooled feature h_m gives
    the unimodal logits z_m. The unimodal logits are always what the model outputs
    when only modality m is visible, and a modality with no visible token in a sample
    contributes nothing to that sample's fusion (``a_m = 0`` below):

    * ``fusion="sum"`` (default): z_m = W_m h_m + b_m, fused = sum_m a_m z_m;
    * ``"mean"``: the same heads, fused = sum_m a_m z_m / max(1, sum_m a_m) (MNL's);
    * ``"concat"``: one linear layer over the concatenated features,
      fused = W [a_1 h_1; ...; a_M h_M] + b, and z_m = W_m h_m + b (its block m);
    * ``"entropy"``: one head g shared by all modalities, z_m = g(h_m), fused =
      sum_m lambda_m z_m with per-sample lambda_m ∝ a_m exp(-e_m), e_m the entropy of
      z_m's prediction (MLA's inference-time fusion).

    With nothing visible the output is 0 (``concat``: the bias), finite.

    Args:
        specs: the modalities, in token order.
        task: what to predict.
        fusion: one of :data:`FUSIONS`.
        **encoder: keyword arguments of :class:`~miam.models.TokenModel` for every encoder
            (``d_model``, ``depth``, ``heads``, ``dropout``, ``hidden``, ``pooling``, ...).

    Examples:
        >>> from miam.data.synthetic import make_dataset
        >>> ds = make_dataset(seed=0, n_sites=60, n_species=5)
        >>> model = LateFusionModel(ds.specs, ds.task, d_model=16, depth=1, heads=2)
        >>> out = model.forward_unimodal(ds.__getitems__([0, 1, 2]))
        >>> out.logits.shape, out.unimodal.shape, out.features.shape
        (torch.Size([3, 5]), torch.Size([3, 3, 5]), torch.Size([3, 3, 16]))
    """

    def __init__(self, specs: Sequence[ModalitySpec], task: TaskSpec, fusion: str = "sum", **encoder: Any) -> None:
        super().__init__()
        check_choice("LateFusionModel", "fusion", fusion, FUSIONS)
        self.specs = list(specs)
        self.task = task
        self.fusion = fusion
        self.encoders = nn.ModuleDict()
        for s in self.specs:
            enc = TokenModel([s], task, **encoder)
            enc.head = nn.Identity()  # the encoder gives features; the heads live here
            self.encoders[s.name] = enc
        self.d_model = int(enc.cls.shape[-1])
        sizes = [s.n_tokens for s in self.specs]
        self.n_tokens = sum(sizes)
        self.register_buffer(
            "token_modality",
            torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)),
            persistent=False,
        )
        m, d, out = len(self.specs), self.d_model, task.n_outputs
        if fusion in ("sum", "mean"):
            self.heads = nn.ModuleList([nn.Linear(d, out) for _ in range(m)])
        elif fusion == "concat":
            self.head = nn.Linear(m * d, out)
        else:
            self.head = nn.Linear(d, out)

    @property
    def modalities(self) -> list[str]:
        return [s.name for s in self.specs]

    # ------------------------------------------------------------------ parts
    def head_weight(self, modality: str) -> Tensor:
        """The fused head's weight block that reads modality m's feature, ``[n_outputs, d_model]``."""
        i = self.modalities.index(modality)
        if self.fusion in ("sum", "mean"):
            return self.heads[i].weight
        if self.fusion == "concat":
            return self.head.weight[:, i * self.d_model:(i + 1) * self.d_model]
        return self.head.weight

    def head_parameters(self) -> list[nn.Parameter]:
        """Every parameter outside the encoders (the heads)."""
        return list(self.heads.parameters()) if self.fusion in ("sum", "mean") else list(self.head.parameters())

    def encoder_weights(self, modality: str) -> list[nn.Parameter]:
        """The weight matrices ``[out, in]`` of modality m's encoder (every linear map and
        attention projection; rows are output channels)."""
        out = []
        for mod in self.encoders[modality].modules():
            if isinstance(mod, nn.Linear):
                out.append(mod.weight)
            elif isinstance(mod, nn.MultiheadAttention) and mod.in_proj_weight is not None:
                out.append(mod.in_proj_weight)
        return out

    # ------------------------------------------------------------------ maths
    def modality_logits(self, features: Tensor, modality: str) -> Tensor:
        """z_m from modality m's features ``[N, d]`` -> ``[N, n_outputs]``."""
        if self.fusion in ("sum", "mean"):
            return self.heads[self.modalities.index(modality)](features)
        if self.fusion == "concat":
            return F.linear(features, self.head_weight(modality), self.head.bias)
        return self.head(features)

    def unimodal_logits(self, features: Tensor) -> Tensor:
        """z_m from features ``[M, N, d]`` -> ``[M, N, n_outputs]``."""
        return torch.stack([self.modality_logits(h, m) for h, m in zip(features, self.modalities)])

    def fuse(self, unimodal: Tensor, available: Tensor) -> Tensor:
        """Fused logits ``[N, n_outputs]`` from z ``[M, N, n_outputs]`` and ``available`` ``[M, N]``."""
        a = available.unsqueeze(-1).to(unimodal.dtype)
        if self.fusion == "sum":
            return (a * unimodal).sum(dim=0)
        if self.fusion == "mean":
            return (a * unimodal).sum(dim=0) / a.sum(dim=0).clamp_min(1.0)
        if self.fusion == "concat":
            bias = self.head.bias
            return (a * (unimodal - bias)).sum(dim=0) + bias
        entropy = output_entropy(unimodal, self.task.kind)                                # [M, N]
        shift = entropy.masked_fill(~available, float("inf")).amin(dim=0)
        shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
        weights = torch.exp(shift - entropy) * a.squeeze(-1)      # exp(min_j e_j - e_m): no overflow
        weights = weights / weights.sum(dim=0).clamp_min(1e-12)   # a row with nothing available -> 0
        return (weights.unsqueeze(-1) * unimodal).sum(dim=0)

    def _encode_rows(self, batch: MultimodalBatch, modality: str, visible: Tensor, sample: Tensor) -> Tensor:
        """Modality m's features ``[N, d]`` for N rows: row i is sample ``sample[i]`` under its
        token mask ``visible[i]`` ([N, T_m], already & present).

        Without gradients the encoder only runs on the rows where m has a visible token
        (the others are 0, and the fusion ignores them); with gradients it runs on all
        rows, so every parameter gets a gradient (DDP-safe).
        """
        enc = self.encoders[modality]
        emb = enc.embed(batch, batch.present[modality])
        if torch.is_grad_enabled():
            return enc.encode(emb, visible, sample)
        rows = visible.any(dim=1).nonzero().squeeze(1)
        h = emb.new_zeros(visible.shape[0], self.d_model)
        if len(rows):
            h[rows] = enc.encode(emb, visible[rows], sample[rows])
        return h

    def _encode(self, batch: MultimodalBatch, visible: Tensor, sample: Tensor) -> tuple[Tensor, Tensor]:
        """Features ``[M, N, d]`` and availability ``[M, N]`` of N rows under ``visible`` [N, T]."""
        parts = visible.split([s.n_tokens for s in self.specs], dim=1)
        features = torch.stack([self._encode_rows(batch, m, vis, sample) for m, vis in zip(self.modalities, parts)])
        return features, torch.stack([vis.any(dim=1) for vis in parts])

    # ------------------------------------------------------------------ interface
    def _visible(self, batch: MultimodalBatch, visible: Tensor | None) -> Tensor:
        present = batch.present_flat(self.modalities)
        if visible is not None and visible.shape != present.shape:
            raise ShapeError(f"Expected `visible` {list(present.shape)}, got {list(visible.shape)}.")
        return present if visible is None else visible & present

    def forward_unimodal(self, batch: MultimodalBatch, visible: Tensor | None = None) -> LateFusionOutput:
        """Fused logits, unimodal logits, features and availability under ``visible`` [B, T]."""
        visible = self._visible(batch, visible)
        sample = torch.arange(batch.batch_size, device=visible.device)
        features, available = self._encode(batch, visible, sample)
        unimodal = self.unimodal_logits(features)
        return LateFusionOutput(self.fuse(unimodal, available), unimodal, features, available)

    def encode_modality(self, batch: MultimodalBatch, modality: str, visible: Tensor | None = None
                        ) -> tuple[Tensor, Tensor]:
        """Modality m's features ``[B, d]`` and availability ``[B]`` alone, with a graph of its
        own (``visible`` [B, T] over all tokens, default: present)."""
        visible = self._visible(batch, visible)[:, self.token_modality == self.modalities.index(modality)]
        sample = torch.arange(batch.batch_size, device=visible.device)
        return self._encode_rows(batch, modality, visible, sample), visible.any(dim=1)

    def forward(self, batch: MultimodalBatch, visible: Tensor | None = None) -> Tensor:
        """Fused logits [B, n_outputs]; ``visible`` is a bool [B, T] over all tokens (default: present)."""
        return self.forward_unimodal(batch, visible).logits

    def forward_subsets(self, batch: MultimodalBatch, masks: Tensor, max_rows: int | None = None) -> Tensor:
        """Fused logits [S, B, n_outputs] for S token masks ``masks`` [S, T] (or [S, B, T]), in passes
        of at most ``max_rows`` (mask x sample) rows (None: a size that suits the device), as
        ``TokenModel.forward_subsets``."""
        def rows_forward(visible: Tensor, sample: Tensor) -> Tensor:
            features, available = self._encode(batch, visible, sample)
            return self.fuse(self.unimodal_logits(features), available)

        return subset_passes(self, batch, masks, max_rows, rows_forward)
