"""Checkpoints a crash cannot cut short, and the checkpoint a resumed run starts from."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside it, flushes it to disk, then renames
    it over the old one: a crash during the write leaves the previous checkpoint whole.

    (Lightning stages the file in the system's temporary folder and moves it; across file
    systems that move is a copy, which a crash can cut short.)
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options; got {storage_options!r}.")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        try:
            with open(partial, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)


def _unreadable(path: Path) -> str | None:
    """Why ``path`` cannot be loaded as a checkpoint (the reader's first line), or None."""
    try:
        torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as e:
        return str(e).splitlines()[0] if str(e) else type(e).__name__
    return None


def resume_checkpoint(folder: str | Path) -> str | None:
    """The newest readable checkpoint in ``folder`` (``last.ckpt`` first among equals), or None.

    Each unreadable one (e.g. cut short by a crash) and the absence of any readable one are
    printed, naming the file: a resumed run says where it starts from.
    """
    folder = Path(folder)
    found = sorted(folder.glob("*.ckpt"), key=lambda p: (p.stat().st_mtime, p.name == "last.ckpt"), reverse=True)
    for path in found:
        reason = _unreadable(path)
        if reason is None:
            print(f"resume: continuing from {path}", flush=True)
            return str(path)
        print(f"resume: {path} cannot be read ({reason}); it is skipped.", flush=True)
    print(f"resume: no readable checkpoint in {folder}; training from scratch.", flush=True)
    return None
