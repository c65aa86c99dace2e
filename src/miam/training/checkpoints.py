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


def resume_checkpoint(folder: str | Path) -> str | None:
    """The checkpoint a resumed run continues from: ``last.ckpt`` in ``folder`` or, when it cannot
    be read (e.g. cut short by a crash), the readable checkpoint there that trained furthest
    (largest global step); None when there is none.

    Each unreadable file, the choice and the absence of any readable checkpoint are printed,
    naming the files: a resumed run says where it starts from.
    """
    folder = Path(folder)
    last = folder / "last.ckpt"
    candidates = ([last] if last.is_file() else []) + sorted(p for p in folder.glob("*.ckpt") if p != last)
    steps: dict[Path, int] = {}
    for path in candidates:
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            print(f"resume: {path} cannot be read ({reason}); it is skipped.", flush=True)
            continue
        if path == last:
            print(f"resume: continuing from {last}", flush=True)
            return str(last)
        steps[path] = int(state.get("global_step", 0))
    if not steps:
        print(f"resume: no readable checkpoint in {folder}; training from scratch.", flush=True)
        return None
    furthest = max(steps, key=steps.get)
    print(f"resume: continuing from {furthest} (step {steps[furthest]})", flush=True)
    return str(furthest)
