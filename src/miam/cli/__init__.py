"""The ``miam`` command: one sub-module per verb, each with ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from miam.cli.common import show_logs
from miam.errors import MiamError

#: verb modules, in the order ``miam --help`` lists them
VERBS = ("demo", "pretrain", "train", "evaluate", "explain", "predict", "map", "prepare", "compare", "cv")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="miam", description="Train multimodal ecological models with Modality Imbalance-Aware Masking.")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb in VERBS:
        importlib.import_module(f"miam.cli.{verb}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``miam`` console script."""
    args = build_parser().parse_args(argv)
    show_logs()
    try:
        return int(args.func(args) or 0)
    except MiamError as e:
        print(f"miam {args.verb}: error: {e}", file=sys.stderr)
        return 2
