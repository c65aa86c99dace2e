"""Pieces several verbs share: config loading and result tables."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from importlib import resources
from pathlib import Path

from miam.config import RunConfig, load_config


def packaged_config(name: str) -> Path:
    """Path of a config shipped inside the package (``demo.yaml``)."""
    return Path(str(resources.files("miam") / "configs" / name))


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="YAML config file (default: built-in defaults)")
    p.add_argument("--set", "-s", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value, e.g. --set trainer.max_epochs=5 (repeatable)")
    p.add_argument("--out", help="output folder (overrides out_dir)")


def config_from_args(args: argparse.Namespace, default: str | None = None) -> RunConfig:
    overrides = list(args.set) + ([f"out_dir={args.out}"] if args.out else [])
    return load_config(args.config or default, overrides)


def format_table(rows: list[dict], columns: list[str], floatfmt: str = "{:.3f}") -> str:
    """A plain aligned text table."""
    cells = [[c for c in columns]] + [
        [floatfmt.format(r[c]) if isinstance(r[c], float) else str(r[c]) for c in columns] for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(cell.rjust(w) if j else cell.ljust(w) for j, (cell, w) in enumerate(zip(row, widths)))
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


class _Print(logging.Handler):
    """Prints to the ``sys.stderr`` of the moment (a redirection or a test may have swapped it)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stderr, flush=True)


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int, file=None,
                  line: str | None = None) -> None:
    """A warning as one line, ``warning: <message>``, without the source line that raised it."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def show_logs() -> None:
    """Print miam's log lines from INFO up (the data summary, dropped parameters) and warnings as one line each
    (``warning: climate: bio.tif: 3 site(s) outside the raster, ...``)."""
    log = logging.getLogger("miam")
    log.setLevel(logging.INFO)
    if not any(isinstance(h, _Print) for h in log.handlers):
        log.addHandler(_Print())
    warnings.showwarning = _show_warning
