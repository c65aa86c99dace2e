"""Tokenizers: each maps one modality's tokens [B, T_m, *token_shape] to [B, T_m, d]."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from miam._validation import check_choice
from miam.data.contract.spec import ModalitySpec


class PeriodicTabular(nn.Module):
    """Per-variable periodic embedding: cos/sin of k learned frequencies, linear to d, ReLU.

    The MaskSDM default for tabular numbers (k = 48, frequencies ~ N(0, sigma)).
    """

    def __init__(self, n_tokens: int, d_model: int, n_frequencies: int = 48, sigma: float = 0.01) -> None:
        super().__init__()
        self.frequencies = nn.Parameter(torch.randn(n_tokens, n_frequencies) * sigma)
        self.weight = nn.Parameter(torch.empty(n_tokens, 2 * n_frequencies, d_model))
        self.bias = nn.Parameter(torch.zeros(n_tokens, d_model))
        nn.init.uniform_(self.weight, -1 / math.sqrt(2 * n_frequencies), 1 / math.sqrt(2 * n_frequencies))

    def forward(self, x: Tensor) -> Tensor:
        v = 2 * math.pi * x.reshape(*x.shape[:2], 1) * self.frequencies
        feats = torch.cat([torch.cos(v), torch.sin(v)], dim=-1)
        return torch.relu(torch.einsum("btk,tkd->btd", feats, self.weight) + self.bias)


class LinearTabular(nn.Module):
    """Per-variable affine embedding: x_t * a_t + b_t."""

    def __init__(self, n_tokens: int, d_model: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_tokens, d_model) / math.sqrt(d_model))
        self.bias = nn.Parameter(torch.zeros(n_tokens, d_model))

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(*x.shape[:2], 1) * self.weight + self.bias


class CategoricalTokens(nn.Module):
    """One embedding table per categorical variable, packed into one table with offsets."""

    def __init__(self, levels: tuple[int, ...], d_model: int) -> None:
        super().__init__()
        sizes = torch.tensor(levels)
        self.register_buffer("offsets", torch.cumsum(sizes, 0) - sizes, persistent=False)
        self.register_buffer("sizes", sizes, persistent=False)
        self.table = nn.Embedding(int(sizes.sum()), d_model)

    def forward(self, x: Tensor) -> Tensor:
        level = x.reshape(*x.shape[:2]).long().clamp(min=0)
        level = torch.minimum(level, self.sizes - 1)
        return self.table(level + self.offsets)


class SharedTokenMLP(nn.Module):
    """One MLP shared by every token of the modality (time segments, frames, embeddings, coords)."""

    def __init__(self, token_size: int, d_model: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(token_size, d_model), nn.GELU(), nn.Linear(d_model, d_model))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(start_dim=2))


class PatchEmbedding(nn.Module):
    """Linear patch embedding (a ViT's conv-stride-patch, written for pre-cut patches)."""

    def __init__(self, token_size: int, d_model: int) -> None:
        super().__init__()
        self.proj = nn.Linear(token_size, d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x.flatten(start_dim=2))


TABULAR_EMBEDDINGS = ("periodic", "linear")


def build_tokenizer(
    spec: ModalitySpec, d_model: int, tabular_embedding: str = "periodic",
    n_frequencies: int = 48, sigma: float = 0.01,
) -> nn.Module:
    """The tokenizer for a modality's kind."""
    check_choice("build_tokenizer", "tabular_embedding", tabular_embedding, TABULAR_EMBEDDINGS)
    if spec.kind == "tabular":
        if spec.token_size != 1:
            return SharedTokenMLP(spec.token_size, d_model)
        if tabular_embedding == "periodic":
            return PeriodicTabular(spec.n_tokens, d_model, n_frequencies, sigma)
        return LinearTabular(spec.n_tokens, d_model)
    if spec.kind == "categorical":
        return CategoricalTokens(spec.levels, d_model)
    if spec.kind in ("image",) or (spec.kind == "audio" and len(spec.token_shape) > 1):
        return PatchEmbedding(spec.token_size, d_model)
    return SharedTokenMLP(spec.token_size, d_model)
