"""The token transformer: every modality tokenized, one pre-LN encoder over visible tokens."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from miam._validation import check_choice
from miam.data.contract.batch import MultimodalBatch
from miam.data.contract.spec import ModalitySpec, TaskSpec
from miam.errors import InvalidParameterError, ShapeError
from miam.models.tokenizers import build_tokenizer

HIDDEN_MODES = ("replace", "drop")
MASK_TOKENS = ("shared", "per_modality")
POOLINGS = ("mean", "cls")
#: when ``hidden="replace"`` runs the collapsed sequence (one mask token per kind, with its count)
COLLAPSE_HIDDEN = ("eval", "always", "never")

#: (mask x sample) rows per forward pass on CPU. The cost per row grows with the rows of
#: one pass there (``benchmarks/step.py`` prints :func:`row_costs` for the paper-size model),
#: so passes stay small. Other devices measure theirs once (:func:`device_max_rows`).
CPU_MAX_ROWS = 256
#: rows per pass tried by the measurement on other devices
MEASURED_ROWS = (1024, 4096, 16384, 65536)
#: the measured rows per pass, by device (``"cuda:0"``)
_measured: dict[str, int] = {}

logger = logging.getLogger("miam.models")


class TokenModel(nn.Module):
    """Tokenizers per modality + modality/position embeddings + transformer + linear head.

    Hidden tokens (missing or masked) never reach the model as values: their inputs are
    zeroed before the tokenizer, and then either

    * ``hidden="replace"`` (default, the paper's way): their embedding is replaced by a
      learned mask token; they stay in attention and in the mean pool;
    * ``hidden="drop"``: they are left out; visible tokens are packed to the left, so the
      encoder's cost follows the number of visible tokens.

    A learned CLS token is always visible, so an all-hidden input gives a finite output.

    Collapsed hidden tokens (``hidden="replace"``): every hidden token of one kind (the
    shared mask token, or one per modality) enters the encoder as the same vector and,
    without dropout, stays identical through every layer, since each sees the same keys
    and applies the same function. k identical keys in a softmax weigh as one key with
    log k added to its logit, and k identical tokens in the mean pool as one weighted by
    k. So the sequence [CLS, visible tokens packed to the left, one mask token per kind
    present] with those corrections gives the full sequence's output, to rounding, at the
    cost of the visible tokens. It is exact in eval mode and, with ``dropout=0``, in
    training; not when the position is re-added to the mask token (the hidden tokens
    then differ), where the full sequence runs and the log says so once.

    Args:
        specs: the modalities, in token order.
        task: what to predict (``n_outputs`` logits).
        d_model: token width (paper default 192).
        depth: encoder layers (paper default 3).
        heads: attention heads (paper default 8).
        dropout: encoder dropout (paper default 0.1).
        hidden: ``"replace"`` or ``"drop"``.
        mask_token: ``"shared"`` (one for all modalities) or ``"per_modality"``.
        readd_position: add the position and modality embedding to the mask token.
        pooling: ``"mean"`` over CLS + tokens in the sequence, or ``"cls"``.
        tabular_embedding: how a tabular number becomes a token.
        n_frequencies: the tabular number embedding's frequencies.
        sigma: the tabular number embedding's frequency scale.
        collapse_hidden: ``"eval"`` (default: collapse hidden tokens in eval mode),
            ``"always"`` (also in training; needs ``dropout=0``) or ``"never"``.

    Raises:
        InvalidParameterError: ``collapse_hidden="always"`` with dropout or ``readd_position``.
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
        collapse_hidden: str = "eval",
    ) -> None:
        super().__init__()
        check_choice("TokenModel", "hidden", hidden, HIDDEN_MODES)
        check_choice("TokenModel", "mask_token", mask_token, MASK_TOKENS)
        check_choice("TokenModel", "pooling", pooling, POOLINGS)
        check_choice("TokenModel", "collapse_hidden", collapse_hidden, COLLAPSE_HIDDEN)
        if d_model % heads:
            raise ShapeError(f"TokenModel: d_model={d_model} must be divisible by heads={heads}.")
        if collapse_hidden == "always" and (dropout > 0 or readd_position):
            raise InvalidParameterError(
                f"TokenModel: collapse_hidden='always' is exact only with dropout=0 and readd_position=False "
                f"(got dropout={dropout}, readd_position={readd_position}); use collapse_hidden='eval'.")
        self.collapse_hidden = collapse_hidden
        self._said_full = False
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

    def forward_subsets(self, batch: MultimodalBatch, masks: Tensor, max_rows: int | None = None) -> Tensor:
        """Logits [S, B, n_outputs] for S token masks ``masks`` [S, T] (or [S, B, T]).

        Tokenizers act per token, so the batch is embedded once and only the encoder runs on
        the S x B (mask x sample) rows, in passes of at most ``max_rows`` rows (at least one
        mask a pass; None: :func:`device_max_rows` for the batch's device).
        """
        emb = self.embed(batch, batch.present_flat(self.modalities))
        return subset_passes(self, batch, masks, max_rows,
                             lambda visible, sample: self.head(self.encode(emb, visible, sample)))

    def encode(self, emb: Tensor, visible: Tensor, sample: Tensor | None = None) -> Tensor:
        """The pooled representation [N, d] of N rows: row i is ``emb[sample[i]]`` under ``visible[i]``.

        ``emb`` is [B, T, d] token embeddings, ``visible`` a bool [N, T], ``sample`` a long [N]
        (None: row i is ``emb[i]``). Sequences follow the visible tokens (packed to the left)
        with ``hidden="drop"``, and with ``hidden="replace"`` where the collapse is exact.
        """
        h, weight = self._states(emb, visible, sample)
        if self.pooling == "cls":
            return h[:, 0]
        if weight is None:
            return h.mean(dim=1)
        weight = weight.unsqueeze(-1)                  # 1 for CLS and visible tokens, k for a kind, 0 under padding
        return (h * weight).sum(dim=1) / weight.sum(dim=1)

    def token_states(self, batch: MultimodalBatch, visible: Tensor) -> Tensor:
        """The encoder's output state [B, T, d] at every token position, the encoder seeing ``visible & present``.

        A visible token's position holds its own state; a hidden one's the state of the mask
        token that stood in for it (``hidden="replace"``; collapsed or not, the same to
        rounding) or, with ``hidden="drop"``, the CLS state: what the encoder knows there.
        Masked pretraining (:mod:`miam.models.reconstruction`) predicts hidden inputs from it.
        """
        visible = visible & batch.present_flat(self.modalities)
        emb = self.embed(batch, visible)
        h, weight = self._states(emb, visible, None)
        n, t = visible.shape
        if weight is None:                             # the full sequence: position 1 + i is token i
            return h[:, 1:]
        if self.hidden == "drop":
            fill = h[:, :1].expand(n, t, -1)
        else:                                          # each hidden token's kind, at the end of the sequence
            kind = (torch.zeros_like(self.token_modality) if self.mask_token.shape[0] == 1
                    else self.token_modality)
            used = torch.zeros(self.mask_token.shape[0], dtype=torch.bool, device=h.device)
            used[kind[(~visible).any(dim=0)]] = True
            slot = torch.cumsum(used, 0) - 1 + h.shape[1] - int(used.sum())
            fill = h[:, slot[kind]]
        length = int(visible.sum(dim=1).max()) if n else 0
        order = torch.argsort((~visible).to(torch.int8), dim=1, stable=True)[:, :length]
        rows = torch.arange(n, device=h.device).unsqueeze(1).expand(n, length)
        keep = torch.arange(length, device=h.device).unsqueeze(0) < visible.sum(dim=1, keepdim=True)
        out = fill.clone()
        out[rows[keep], order[keep]] = h[:, 1:1 + length][keep]
        return out

    def _states(self, emb: Tensor, visible: Tensor, sample: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Normed encoder states [N, L, d] of each row's sequence, and each position's weight in the mean pool
        [N, L] (None for the full sequence [CLS, every token], where all weigh 1)."""
        n, t = visible.shape
        d = emb.shape[-1]
        cls = self.cls.expand(n, 1, d)
        if self.hidden == "replace" and not self._collapses():
            rows = emb if sample is None else emb[sample]
            mask_tok = self.mask_token[0 if self.mask_token.shape[0] == 1 else self.token_modality]
            if self.readd_position:
                mask_tok = mask_tok + self.position + self.modality[self.token_modality]
            seq = torch.where(visible.unsqueeze(-1), rows, mask_tok.expand(n, t, d))
            return self.norm(self.encoder(torch.cat([cls, seq], dim=1))), None
        if self.hidden == "drop":
            seq, pad = self._pack(emb, visible, sample, cls[:1], None)
            h = self.encoder(seq, src_key_padding_mask=pad)
            weight = (~pad).to(emb.dtype)
        else:
            kinds, counts = self._hidden_kinds(visible, emb.dtype)
            seq, pad = self._pack(emb, visible, sample, cls[:1], kinds)
            weight = torch.cat([(~pad[:, :seq.shape[1] - len(kinds)]).to(emb.dtype), counts], dim=1)
            key_bias = weight.log()            # 0 for CLS and visible tokens, -inf under padding, log k for a kind
            h = self._encode_with_key_bias(seq, key_bias)
        return self.norm(h), weight

    def _encode_with_key_bias(self, x: Tensor, key_bias: Tensor) -> Tensor:
        """``self.encoder(x)`` [N, L, d] with ``key_bias`` [N, L] added to every attention logit of each key.

        ``nn.TransformerEncoder``'s inference fast path reads a float key mask as a boolean one,
        so the same pre-LN layers (same weights) run here through ``scaled_dot_product_attention``.
        """
        n, length, d = x.shape
        for layer in self.encoder.layers:
            attn = layer.self_attn
            heads = attn.num_heads
            qkv = F.linear(layer.norm1(x), attn.in_proj_weight, attn.in_proj_bias)
            q, k, v = qkv.view(n, length, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=key_bias[:, None, None, :].to(q.dtype),
                                               dropout_p=attn.dropout if self.training else 0.0)
            x = x + layer.dropout1(attn.out_proj(a.transpose(1, 2).reshape(n, length, d)))
            x = x + layer.dropout2(layer.linear2(layer.dropout(layer.activation(layer.linear1(layer.norm2(x))))))
        return x

    def _collapses(self) -> bool:
        """Whether ``hidden="replace"`` runs the collapsed sequence now; says once per model when it cannot."""
        if self.collapse_hidden == "never":
            return False
        if self.readd_position:
            reason = "the mask token carries its position (readd_position=True), so hidden tokens differ"
        elif self.training and self.collapse_hidden == "eval":
            reason = "training mode (exact only without dropout: collapse_hidden='always' with dropout=0)"
        else:
            return True
        if not self._said_full:
            logger.info("TokenModel: hidden tokens run as the full sequence, not collapsed: %s.", reason)
            self._said_full = True
        return False

    def _pack(self, emb: Tensor, visible: Tensor, sample: Tensor | None, first: Tensor,
              last: Tensor | None) -> tuple[Tensor, Tensor]:
        """One gather builds every row's sequence [N, 1 + L + K, d]: ``first`` [1, 1, d] (CLS), the
        row's visible tokens packed to the left (L: the most visible in a row), then ``last`` [K, d]
        (or none); and the padding [N, 1 + L + K], True past each row's visible tokens."""
        n, t = visible.shape
        b, _, d = emb.shape
        counts = visible.sum(dim=1)
        length = int(counts.max()) if n else 0
        parts = [first.expand(b, 1, d), emb] + ([] if last is None else [last.expand(b, -1, d)])
        table = torch.cat(parts, dim=1)                                       # [B, 1 + T + K, d]: small
        k = 0 if last is None else len(last)
        order = torch.argsort((~visible).to(torch.int8), dim=1, stable=True)[:, :length] + 1
        ends = torch.arange(1 + t, 1 + t + k, device=emb.device).expand(n, k)
        index = torch.cat([torch.zeros(n, 1, dtype=order.dtype, device=emb.device), order, ends], dim=1)
        rows = torch.arange(n, device=emb.device) if sample is None else sample
        pad = torch.arange(1 + length + k, device=emb.device).unsqueeze(0) > counts.unsqueeze(1)
        pad[:, 1 + length:] = False
        return table[rows.unsqueeze(1), index], pad

    def _hidden_kinds(self, visible: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """The mask tokens [K, d] hidden somewhere in ``visible`` [N, T], and their counts per row [N, K]."""
        hidden = (~visible).to(dtype)
        if self.mask_token.shape[0] == 1:
            counts = hidden.sum(dim=1, keepdim=True)
        else:
            counts = hidden.new_zeros(len(hidden), self.mask_token.shape[0]).index_add_(1, self.token_modality, hidden)
        used = counts.any(dim=0)
        return self.mask_token[used], counts[:, used]


def subset_passes(model: nn.Module, batch: MultimodalBatch, masks: Tensor, max_rows: int | None,
                  rows_forward: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """``model.forward_subsets``: outputs [S, B, out] for token masks ``masks`` [S, T] (or [S, B, T]),
    run in passes of at most ``max_rows`` (mask x sample) rows, at least one mask a pass.

    ``rows_forward(visible, sample)`` gives the outputs [N, out] of N rows, row i being sample
    ``sample[i]`` of the batch under ``visible[i]`` (its present tokens that the mask keeps).
    ``max_rows`` None picks :func:`device_max_rows` for the batch's device.
    """
    present = batch.present_flat(model.modalities)
    b, t = present.shape
    if masks.shape[-1] != t or masks.ndim not in (2, 3):
        raise ShapeError(f"Expected masks [S, {t}] or [S, {b}, {t}], got {list(masks.shape)}.")
    sample = torch.arange(b, device=present.device)

    def one_pass(part: Tensor) -> Tensor:
        s = part.shape[0]
        visible = (present.unsqueeze(0) & (part if part.ndim == 3 else part.unsqueeze(1))).reshape(s * b, t)
        return rows_forward(visible, sample.repeat(s)).reshape(s, b, -1)

    per_pass = max(1, (device_max_rows(model, batch) if max_rows is None else max_rows) // max(1, b))
    if per_pass >= len(masks):
        return one_pass(masks)
    return torch.cat([one_pass(masks[i:i + per_pass]) for i in range(0, len(masks), per_pass)])


@torch.no_grad()
def row_costs(model: nn.Module, batch: MultimodalBatch, rows: Sequence[int] = MEASURED_ROWS,
              repeats: int = 2) -> dict[int, float]:
    """Seconds per (mask x sample) row of one ``model.forward_subsets`` pass at each number of ``rows`` per pass.

    Every row sees all its present tokens (the longest sequences). A size that does not fit
    in the device's memory ends the measurement.
    """
    cuda = batch.target.device.type == "cuda"
    full = torch.ones(1, model.n_tokens, dtype=torch.bool, device=batch.target.device)
    costs = {}
    for n in rows:
        part = batch if n >= batch.batch_size else batch.select(torch.arange(n, device=full.device))
        masks = full.expand(-(-n // part.batch_size), -1)
        one_pass = len(masks) * part.batch_size
        try:
            model.forward_subsets(part, masks, one_pass)                     # warm-up
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(repeats):
                model.forward_subsets(part, masks, one_pass)
            if cuda:
                torch.cuda.synchronize()
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            break
        costs[n] = (time.perf_counter() - start) / (repeats * one_pass)
    return costs


def pick_rows(costs: Mapping[int, float], slack: float = 0.1) -> int:
    """The fewest rows per pass whose cost per row is within ``slack`` of the cheapest.

    Examples:
        >>> pick_rows({1024: 2.0e-6, 4096: 1.05e-6, 16384: 1.0e-6})
        4096
    """
    best = min(costs.values())
    return min(n for n, c in costs.items() if c <= (1 + slack) * best)


def device_max_rows(model: nn.Module, batch: MultimodalBatch) -> int:
    """Rows per pass for the batch's device: :data:`CPU_MAX_ROWS` on CPU, else measured once per device."""
    device = batch.target.device
    if device.type == "cpu":
        return CPU_MAX_ROWS
    if str(device) not in _measured:
        _measured[str(device)] = pick_rows(row_costs(model, batch)) if batch.batch_size else CPU_MAX_ROWS
    return _measured[str(device)]
