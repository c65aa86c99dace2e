"""The batch that flows from every dataset to every model, and its checks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from miam.data.contract.spec import ModalitySpec, TaskSpec
from miam.errors import ShapeError


@dataclass
class MultimodalBatch:
    """Tokens and presence per modality, plus targets.

    Attributes:
        tokens: ``{modality: Tensor[B, T_m, *token_shape]}``, float; values under a
            missing token are zero and never reach the model.
        present: ``{modality: bool Tensor[B, T_m]}``, False where data is missing.
        target: ``[B, n_species]`` float 0/1 (multilabel) or ``[B]`` long (multiclass).
        ids: optional ``[B]`` sample ids.
    """

    tokens: dict[str, Tensor]
    present: dict[str, Tensor]
    target: Tensor
    ids: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return int(self.target.shape[0])

    @property
    def modalities(self) -> list[str]:
        return list(self.tokens)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> MultimodalBatch:
        move = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return MultimodalBatch(
            {m: move(t) for m, t in self.tokens.items()},
            {m: move(t) for m, t in self.present.items()},
            move(self.target),
            None if self.ids is None else move(self.ids),
            {k: move(v) for k, v in self.extras.items()},
        )

    def present_flat(self, order: Sequence[str]) -> Tensor:
        """``present`` of the modalities in ``order`` concatenated to ``[B, sum T_m]``."""
        return torch.cat([self.present[m] for m in order], dim=1)

    def select(self, index: Tensor) -> MultimodalBatch:
        """The samples at ``index`` (a long or bool tensor over the batch)."""
        return MultimodalBatch(
            {m: t[index] for m, t in self.tokens.items()},
            {m: t[index] for m, t in self.present.items()},
            self.target[index],
            None if self.ids is None else self.ids[index],
            {k: v[index] for k, v in self.extras.items()},
        )

    def validate(self, specs: Sequence[ModalitySpec], task: TaskSpec | None = None) -> None:
        """Check every tensor against the specs; the error names the field and both shapes."""
        b = self.batch_size
        names = [s.name for s in specs]
        missing = [n for n in names if n not in self.tokens]
        extra = [n for n in self.tokens if n not in names]
        if missing or extra:
            raise ShapeError(f"Batch modalities {list(self.tokens)} do not match specs {names} "
                             f"(missing {missing}, unexpected {extra}).")
        for s in specs:
            want = (b, s.n_tokens, *s.token_shape)
            got = tuple(self.tokens[s.name].shape)
            if got != want:
                raise ShapeError(f"Expected `tokens[{s.name!r}]` {list(want)}, got {list(got)}.")
            pres = self.present.get(s.name)
            if pres is None or tuple(pres.shape) != (b, s.n_tokens):
                got_p = None if pres is None else list(pres.shape)
                raise ShapeError(f"Expected `present[{s.name!r}]` {[b, s.n_tokens]}, got {got_p}.")
            if pres.dtype != torch.bool:
                raise ShapeError(f"Expected `present[{s.name!r}]` of dtype bool, got {pres.dtype}.")
            if not self.tokens[s.name].is_floating_point():
                raise ShapeError(f"Expected `tokens[{s.name!r}]` floating point, got {self.tokens[s.name].dtype}.")
        if task is not None:
            want_t = (b, task.n_outputs) if task.per_output else (b,)
            if tuple(self.target.shape) != want_t:
                raise ShapeError(f"Expected `target` {list(want_t)} for a {task.kind} task, "
                                 f"got {list(self.target.shape)}.")


def collate(samples: Sequence[Mapping] | MultimodalBatch) -> MultimodalBatch:
    """Stack per-sample dicts into a batch; a ready batch (from ``__getitems__``) passes through."""
    if isinstance(samples, MultimodalBatch):
        return samples
    first = samples[0]
    tokens = {m: torch.stack([s["tokens"][m] for s in samples]) for m in first["tokens"]}
    present = {m: torch.stack([s["present"][m] for s in samples]) for m in first["present"]}
    target = torch.stack([torch.as_tensor(s["target"]) for s in samples])
    ids = torch.stack([torch.as_tensor(s["id"]) for s in samples]) if "id" in first else None
    return MultimodalBatch(tokens, present, target, ids)


def nan_to_present(values: Tensor, token_ndim: int) -> tuple[Tensor, Tensor]:
    """Split raw values with NaN into (zero-filled values, ``present``).

    A token with any NaN (or inf) value is missing whole, as ALGORITHM.md asks.

    Examples:
        >>> x = torch.tensor([[[1.0], [float("nan")]]])
        >>> v, p = nan_to_present(x, token_ndim=1)
        >>> p.tolist(), v.tolist()
        ([[True, False]], [[[1.0], [0.0]]])
    """
    finite = torch.isfinite(values)
    present = finite.flatten(start_dim=values.ndim - token_ndim).all(dim=-1) if token_ndim else finite
    keep = present.reshape(*present.shape, *([1] * token_ndim))
    return torch.where(keep, values, torch.zeros((), dtype=values.dtype)), present
