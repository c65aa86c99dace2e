"""MkDocs hook: the gallery's pictures and log come from running the example at build time.

Before the pages are read, ``examples/own_data/run.py`` runs end to end on a small landscape
(files written, trained, explained, predicted, mapped) and its PNGs and printed log are copied
into ``docs/gallery/`` (not tracked). A build whose sources (``src/``, ``examples/``) have not
changed since the last run reuses it; a failing example fails the build.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
GALLERY = ROOT / "docs" / "gallery"
RUN = ROOT / "build" / "gallery_run"
#: the example's settings: small enough for a docs build on 2 CPU cores (about a minute)
EXAMPLE = ["examples/own_data/run.py", "--out", str(RUN), "--epochs", "4", "--sites", "600"]


def sources_digest() -> str:
    """A digest of every file the example's output depends on."""
    h = hashlib.sha256(" ".join(EXAMPLE).encode())
    for path in sorted([*(ROOT / "src").rglob("*.py"), *(ROOT / "src").rglob("*.yaml"), *(ROOT / "examples").rglob("*")]):
        if path.is_file() and "__pycache__" not in path.parts:
            h.update(str(path.relative_to(ROOT)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def on_pre_build(config: Any) -> None:
    digest = sources_digest()
    stamp = GALLERY / "digest.txt"
    if stamp.is_file() and stamp.read_text() == digest:
        return
    shutil.rmtree(GALLERY, ignore_errors=True)
    (GALLERY / "img").mkdir(parents=True)
    done = subprocess.run([sys.executable, *EXAMPLE], cwd=ROOT, capture_output=True, text=True)
    log = done.stdout + done.stderr
    if done.returncode != 0:
        raise RuntimeError(f"the gallery example failed ({' '.join(EXAMPLE)}):\n{log[-4000:]}")
    lines = [line for line in log.splitlines() if "\r" not in line and not line.startswith(("GPU available", "TPU"))]
    (GALLERY / "log.txt").write_text("\n".join(lines).replace(str(RUN), "OUT") + "\n")
    for png in [*(RUN / "run" / "predictions").glob("*.png"), *(RUN / "run" / "explain" / "figures").glob("*.png")]:
        shutil.copy(png, GALLERY / "img" / png.name)
    stamp.write_text(digest)
