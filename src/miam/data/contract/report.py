"""What reading a dataset found: missing and corrupt files, table findings, hidden tokens.

Every loader (the benchmarks' prepare step, the user-files reader) fills one :class:`Report`,
so a user reads the same summary whatever the source.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Report:
    """What preparation found: missing and corrupt files, table inconsistencies.

    Attributes:
        missing_files: ``{modality: count}`` of samples whose file is absent.
        corrupt_files: ``{modality: count}`` of samples whose file could not be decoded.
        examples: up to 20 ``"file (row): problem"`` lines, for the messages.
        notes: table-level findings (ids in one table only, NaN cells, dropped rows).
        hidden_tokens: ``{modality: count}`` of tokens hidden for any reason (filled at the end).
    """

    missing_files: dict[str, int] = field(default_factory=dict)
    corrupt_files: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    hidden_tokens: dict[str, int] = field(default_factory=dict)

    def missing(self, modality: str, n: int = 1) -> None:
        self.missing_files[modality] = self.missing_files.get(modality, 0) + n

    def corrupt(self, modality: str, where: str, problem: str) -> None:
        """Count a corrupt file and warn, naming the file and the row."""
        self.corrupt_files[modality] = self.corrupt_files.get(modality, 0) + 1
        line = f"{where}: {problem}"
        if len(self.examples) < 20:
            self.examples.append(line)
        warnings.warn(f"{line}; its {modality!r} tokens are hidden.", stacklevel=3)

    def note(self, text: str) -> None:
        """Record a table-level finding and warn."""
        self.notes.append(text)
        warnings.warn(text, stacklevel=3)

    def merge(self, other: Report) -> None:
        for k, v in other.missing_files.items():
            self.missing(k, v)
        for k, v in other.corrupt_files.items():
            self.corrupt_files[k] = self.corrupt_files.get(k, 0) + v
        self.examples.extend(other.examples[: max(0, 20 - len(self.examples))])
        self.notes.extend(n for n in other.notes if n not in self.notes)

    def to_dict(self) -> dict[str, Any]:
        return {"missing_files": self.missing_files, "corrupt_files": self.corrupt_files,
                "examples": self.examples, "notes": self.notes, "hidden_tokens": self.hidden_tokens}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Report:
        return cls(dict(d.get("missing_files", {})), dict(d.get("corrupt_files", {})),
                   list(d.get("examples", [])), list(d.get("notes", [])), dict(d.get("hidden_tokens", {})))
