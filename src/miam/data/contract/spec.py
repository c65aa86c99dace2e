"""What a modality and a task look like: the names every other part speaks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from miam._validation import check_choice
from miam.errors import InvalidParameterError

#: Kinds of modality and what one token of each holds.
MODALITY_KINDS = {
    "tabular": "one token per variable, token_shape (1,) or () for a number",
    "categorical": "one token per categorical variable, an integer level (-1 = missing)",
    "timeseries": "one token per time segment, token_shape (n_variables,) or (n_variables, length)",
    "image": "one token per patch, token_shape (channels, patch, patch)",
    "audio": "one token per spectrogram frame or patch, token_shape (freq,) or (1, freq, frames)",
    "coords": "one token holding the location, token_shape (2,)",
    "embedding": "precomputed features, token_shape (dim,)",
}

#: Tasks and the score the tracker and the evaluator use for them.
TASK_KINDS = ("multilabel", "multiclass", "encounter")


@dataclass(frozen=True)
class ModalitySpec:
    """One input modality: its name, kind and the shape and names of its tokens.

    Args:
        name: the modality's name in configs, batches and reports (``"env"``).
        kind: one of :data:`MODALITY_KINDS`.
        n_tokens: how many tokens a sample has in this modality.
        token_shape: the shape of one token.
        token_names: a human name per token (a variable, a month, ``"patch r2 c3"``).
        grid: for image-like modalities, the (rows, cols) layout of the patch tokens.
        levels: for categorical modalities, the number of levels of each variable.

    Examples:
        >>> spec = ModalitySpec("env", "tabular", 3, (1,), ("bio1", "bio12", "elev"))
        >>> spec.token_names[1]
        'bio12'
    """

    name: str
    kind: str
    n_tokens: int
    token_shape: tuple[int, ...] = (1,)
    token_names: tuple[str, ...] = ()
    grid: tuple[int, int] | None = None
    levels: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InvalidParameterError(f"ModalitySpec.name must be a non-empty str, got {self.name!r}.")
        check_choice("ModalitySpec", "kind", self.kind, MODALITY_KINDS)
        if not isinstance(self.n_tokens, int) or self.n_tokens < 1:
            raise InvalidParameterError(
                f"ModalitySpec {self.name!r}: n_tokens must be a positive int, got {self.n_tokens!r}."
            )
        shape = tuple(int(s) for s in self.token_shape)
        if any(s < 1 for s in shape):
            raise InvalidParameterError(f"ModalitySpec {self.name!r}: token_shape must be positive, got {shape}.")
        object.__setattr__(self, "token_shape", shape)
        names = tuple(self.token_names) or tuple(f"{self.name}[{i}]" for i in range(self.n_tokens))
        if len(names) != self.n_tokens:
            raise InvalidParameterError(
                f"ModalitySpec {self.name!r}: expected {self.n_tokens} token_names, got {len(names)}."
            )
        object.__setattr__(self, "token_names", names)
        if self.grid is not None:
            grid = tuple(int(g) for g in self.grid)
            if len(grid) != 2 or grid[0] * grid[1] != self.n_tokens:
                raise InvalidParameterError(
                    f"ModalitySpec {self.name!r}: grid {self.grid} does not hold {self.n_tokens} tokens."
                )
            object.__setattr__(self, "grid", grid)
        if self.kind == "categorical":
            if self.levels is None or len(self.levels) != self.n_tokens:
                raise InvalidParameterError(
                    f"ModalitySpec {self.name!r}: a categorical modality needs one level count per token."
                )
            object.__setattr__(self, "levels", tuple(int(v) for v in self.levels))

    @property
    def token_size(self) -> int:
        """Number of values in one token."""
        size = 1
        for s in self.token_shape:
            size *= s
        return size

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModalitySpec:
        d = dict(d)
        for key in ("token_shape", "token_names", "grid", "levels"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)


@dataclass(frozen=True)
class TaskSpec:
    """What the model predicts.

    Args:
        kind: ``"multilabel"`` (species presence, AUROC), ``"multiclass"`` (top-1 accuracy) or
            ``"encounter"`` (per-species encounter rates in [0, 1], SatBird's top-k).
        n_outputs: species (multilabel, encounter) or classes (multiclass).
        output_names: a name per output.
    """

    kind: str
    n_outputs: int
    output_names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        check_choice("TaskSpec", "kind", self.kind, TASK_KINDS)
        if self.n_outputs < 2 and self.kind == "multiclass":
            raise InvalidParameterError(f"TaskSpec: a multiclass task needs >= 2 classes, got {self.n_outputs}.")
        names = tuple(self.output_names) or tuple(f"species_{j}" for j in range(self.n_outputs))
        if len(names) != self.n_outputs:
            raise InvalidParameterError(f"TaskSpec: expected {self.n_outputs} output_names, got {len(names)}.")
        object.__setattr__(self, "output_names", names)

    @property
    def per_output(self) -> bool:
        """True when the target has one value per output (``[N, n_outputs]``), False for class labels."""
        return self.kind != "multiclass"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "n_outputs": self.n_outputs, "output_names": list(self.output_names)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TaskSpec:
        return cls(d["kind"], int(d["n_outputs"]), tuple(d.get("output_names", ())))


def check_unique_names(specs: Sequence[ModalitySpec]) -> None:
    names = [s.name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InvalidParameterError(f"Modality names must be unique; repeated: {dup}.")


def spec_difference(model_specs: Sequence[Any], data_specs: Sequence[Any], here: str = "in the checkpoint",
                    there: str = "in the data") -> str | None:
    """The first difference between two lists of :class:`ModalitySpec` (names, then each field), or None."""
    a = [s.to_dict() for s in model_specs]
    b = [s.to_dict() for s in data_specs]
    if [s["name"] for s in a] != [s["name"] for s in b]:
        return f"modalities {[s['name'] for s in a]} {here}, {[s['name'] for s in b]} {there}"
    for sa, sb in zip(a, b):
        diff = [k for k in sa if sa[k] != sb[k]]
        if diff:
            return f"modality {sa['name']!r}: {diff[0]} {sa[diff[0]]} {here}, {sb[diff[0]]} {there}"
    return None
