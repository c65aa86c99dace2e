"""Many token masks over one batch, in forward passes of a size that suits the device."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from miam.data.contract.batch import MultimodalBatch
from miam.models.token_model import TokenModel

#: (mask x sample) rows per forward pass on CPU. The cost per row grows with the rows of
#: one pass there (``benchmarks/step.py`` prints :func:`row_costs` for the paper-size model),
#: so passes stay small. Other devices measure theirs once (:func:`device_max_rows`).
CPU_MAX_ROWS = 256
#: rows per pass tried by the measurement on other devices
MEASURED_ROWS = (1024, 4096, 16384, 65536)
#: the measured rows per pass, by device (``"cuda:0"``)
_measured: dict[str, int] = {}


@torch.no_grad()
def row_costs(model: nn.Module, batch: MultimodalBatch, rows: Sequence[int] = MEASURED_ROWS,
              repeats: int = 2) -> dict[int, float]:
    """Seconds per (mask x sample) row of ``model.forward_subsets`` at each number of ``rows`` per pass.

    Every row sees all its present tokens (the longest sequences). A size that does not fit
    in the device's memory ends the measurement.
    """
    cuda = batch.target.device.type == "cuda"
    full = torch.ones(1, model.n_tokens, dtype=torch.bool, device=batch.target.device)
    costs = {}
    for n in rows:
        part = batch if n >= batch.batch_size else batch.select(torch.arange(n, device=full.device))
        masks = full.expand(-(-n // part.batch_size), -1)
        try:
            model.forward_subsets(part, masks)                               # warm-up
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(repeats):
                model.forward_subsets(part, masks)
            if cuda:
                torch.cuda.synchronize()
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            break
        costs[n] = (time.perf_counter() - start) / (repeats * len(masks) * part.batch_size)
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


def forward_subsets_chunked(model: nn.Module, batch: MultimodalBatch, masks: Tensor,
                            max_rows: int | None = None) -> Tensor:
    """``model.forward_subsets(batch, masks)`` [S, B, out], run over chunks of at most ``max_rows`` rows.

    ``max_rows`` None picks :func:`device_max_rows` for the batch's device. Every chunk
    holds at least one mask; a :class:`TokenModel` embeds the batch once for all chunks.
    """
    if max_rows is None:
        max_rows = device_max_rows(model, batch)
    chunk = max(1, max_rows // max(1, batch.batch_size))
    if chunk >= len(masks):
        return model.forward_subsets(batch, masks)
    # the embeddings do not depend on the masks: a model that takes them embeds once for all chunks
    reuse = {"emb": model.embed(batch, batch.present_flat(model.modalities))} if isinstance(model, TokenModel) else {}
    return torch.cat([model.forward_subsets(batch, masks[i:i + chunk], **reuse) for i in range(0, len(masks), chunk)])
