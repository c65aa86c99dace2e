"""The token transformer: every modality tokenized, one pre-LN encoder over visible tokens."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from miam.data.batch import MultimodalBatch
from miam.data.spec import ModalitySpec, TaskSpec
from miam.errors import ShapeError, check_choice
from miam.models.tokenizers import build_tokenizer

HIDDEN_MODES = ("replace", "drop")
MASK_TOKENS = ("shared", "per_modality")
POOLINGS = ("mean", "cls")


class TokenModel(nn.Module):
    """Tokenizers per modality + modality/position embeddings + transformer + linear head.

    Hidden tokens (missing or masked) never reach the model as values: their inputs are
    zeroed before the tokenizer, and then either

    * ``hidden="replace"`` (default, the paper's way): their embedding is replaced by a
      learned mask token; they stay in attention and in the mean pool;
    * ``hidden="drop"``: they are left out; visible tokens are packed to the left, so the
      encoder's cost follows the number of visible tokens.

    A learned CLS token is always visible, so an all-hidden input gives a finite output.

    Args:
        specs: the modalities, in token order.
        task: what to predict (``n_outputs`` logits).
        d_model, depth, heads, dropout: encoder size (paper defaults 192, 3, 8, 0.1).
        hidden: ``"replace"`` or ``"drop"``.
        mask_token: ``"shared"`` (one for all modalities) or ``"per_modality"``.
        readd_position: add the position and modality embedding to the mask token.
        pooling: ``"mean"`` over CLS + tokens in the sequence, or ``"cls"``.
        tabular_embedding, n_frequencies, sigma: the tabular number embedding.
    """

    def __init__(
        self,
        specs: Sequence[ModalitySpec],
        task: TaskSpec,
        d_model: int = 192,
        depth: int = 3,
        heads: int = 8,
        dropout: float = 0.1,
        hidden: str = "replace",
        mask_token: str = "shared",
        readd_position: bool = False,
        pooling: str = "mean",
        tabular_embedding: str = "periodic",
        n_frequencies: int = 48,
        sigma: float = 0.01,
    ) -> None:
        super().__init__()
        check_choice("TokenModel", "hidden", hidden, HIDDEN_MODES)
        check_choice("TokenModel", "mask_token", mask_token, MASK_TOKENS)
        check_choice("TokenModel", "pooling", pooling, POOLINGS)
        if d_model % heads:
            raise ShapeError(f"TokenModel: d_model={d_model} must be divisible by heads={heads}.")
        self.specs = list(specs)
        self.task = task
        self.hidden, self.pooling, self.readd_position = hidden, pooling, readd_position
        self.tokenizers = nn.ModuleDict({
            s.name: build_tokenizer(s, d_model, tabular_embedding, n_frequencies, sigma) for s in self.specs
        })
        sizes = [s.n_tokens for s in self.specs]
        self.n_tokens = sum(sizes)
        self.register_buffer(
            "token_modality",
            torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)),
            persistent=False,
        )
        self.position = nn.Parameter(torch.randn(self.n_tokens, d_model) * 0.02)
        self.modality = nn.Parameter(torch.randn(len(sizes), d_model) * 0.02)
        n_mask = 1 if mask_token == "shared" else len(sizes)
        self.mask_token = nn.Parameter(torch.randn(n_mask, d_model) * 0.02)
        self.cls = nn.Parameter(torch.randn(1, 1, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d_model, heads, 4 * d_model, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, task.n_outputs)

    @property
    def modalities(self) -> list[str]:
        return [s.name for s in self.specs]

    def embed(self, batch: MultimodalBatch, visible: Tensor) -> Tensor:
        """Token embeddings [B, T, d] with hidden tokens' inputs zeroed."""
        out = []
        for s, vis in zip(self.specs, visible.split([s.n_tokens for s in self.specs], dim=1)):
            x = batch.tokens[s.name]
            keep = vis.reshape(*vis.shape, *([1] * (x.ndim - 2)))
            out.append(self.tokenizers[s.name](torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device))))
        emb = torch.cat(out, dim=1)
        return emb + self.position + self.modality[self.token_modality]

    def forward(self, batch: MultimodalBatch, visible: Tensor | None = None) -> Tensor:
        """Logits [B, n_outputs]; ``visible`` is a bool [B, T] over all tokens (default: present)."""
        present = batch.present_flat(self.modalities)
        if visible is not None and visible.shape != present.shape:
            raise ShapeError(f"Expected `visible` {list(present.shape)}, got {list(visible.shape)}.")
        visible = present if visible is None else visible & present
        return self.head(self.encode(self.embed(batch, visible), visible))

    def forward_subsets(self, batch: MultimodalBatch, masks: Tensor) -> Tensor:
        """Logits [S, B, n_outputs] for S token masks ``masks`` [S, T] (or [S, B, T]) in one pass.

        Tokenizers act per token, so the embeddings are computed once and only the
        encoder runs on the S x B rows.
        """
        present = batch.present_flat(self.modalities)
        b, t = present.shape
        if masks.shape[-1] != t:
            raise ShapeError(f"Expected masks [S, {t}] or [S, {b}, {t}], got {list(masks.shape)}.")
        s = masks.shape[0]
        visible = (present.unsqueeze(0) & (masks if masks.ndim == 3 else masks.unsqueeze(1))).reshape(s * b, t)
        emb = self.embed(batch, present)
        emb = emb.unsqueeze(0).expand(s, *emb.shape).reshape(s * b, t, -1)
        return self.head(self.encode(emb, visible)).reshape(s, b, -1)

    def encode(self, emb: Tensor, visible: Tensor) -> Tensor:
        """The pooled representation [B, d] of token embeddings [B, T, d] under ``visible``."""
        b, t, d = emb.shape
        cls = self.cls.expand(b, 1, d)
        if self.hidden == "replace":
            mask_tok = self.mask_token[0 if self.mask_token.shape[0] == 1 else self.token_modality]
            if self.readd_position:
                mask_tok = mask_tok + self.position + self.modality[self.token_modality]
            seq = torch.where(visible.unsqueeze(-1), emb, mask_tok.expand(b, t, d))
            h = self.norm(self.encoder(torch.cat([cls, seq], dim=1)))
            return h[:, 0] if self.pooling == "cls" else h.mean(dim=1)
        counts = visible.sum(dim=1)
        length = int(counts.max()) if b else 0
        order = torch.argsort((~visible).to(torch.int8), dim=1, stable=True)[:, :length]
        packed = emb.gather(1, order.unsqueeze(-1).expand(b, length, d))
        pad = torch.arange(length, device=emb.device).unsqueeze(0) >= counts.unsqueeze(1)
        pad = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=emb.device), pad], dim=1)
        h = self.norm(self.encoder(torch.cat([cls, packed], dim=1), src_key_padding_mask=pad))
        if self.pooling == "cls":
            return h[:, 0]
        keep = (~pad).unsqueeze(-1).to(h.dtype)
        return (h * keep).sum(dim=1) / keep.sum(dim=1)
