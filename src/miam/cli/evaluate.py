"""``miam evaluate --checkpoint CKPT``: score a trained model on every modality subset (or chosen ones)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from miam.cli.common import format_table
from miam.errors import ConfigError


def add_run_args(p: argparse.ArgumentParser) -> None:
    """Arguments shared by the verbs that read a checkpoint and its dataset."""
    p.add_argument("--checkpoint", required=True, help="a .ckpt file written by miam train")
    p.add_argument("--config", "-c", help="the run's YAML config, for the dataset (default: config.yaml of the "
                                          "checkpoint's run folder, i.e. <ckpt dir>/../config.yaml)")
    p.add_argument("--set", "-s", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value, e.g. --set data.params.n_sites=2000 (repeatable)")
    p.add_argument("--split", default="test", help="the split to score (default: test)")
    p.add_argument("--max-samples", type=int, help="score a random subset of this many samples of the split")
    p.add_argument("--batch-size", type=int, default=512, help="samples per forward pass (default: 512)")
    p.add_argument("--seed", type=int, default=0, help="seeds sample subsets and random draws (default: 0)")


def default_config(checkpoint: Path) -> Path:
    """``<run>/config.yaml`` for a checkpoint at ``<run>/checkpoints/<name>.ckpt``."""
    return checkpoint.resolve().parent.parent / "config.yaml"


def load_run(args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    """The checkpoint's module (on CPU), the data split to score, the dataset and the run's config.

    Raises a :class:`~miam.errors.ConfigError` for a missing checkpoint or config, and
    when the checkpoint comes from another dataset's specs.
    """
    from miam.config import load_config
    from miam.data.registry import build_dataset
    from miam.explain.pipeline import check_model_data, subsample
    from miam.training import MiamModule

    ckpt = Path(args.checkpoint)
    if not ckpt.is_file():
        raise ConfigError(f"Checkpoint {str(ckpt)!r} does not exist.")
    config = Path(args.config) if args.config else default_config(ckpt)
    if not config.is_file():
        raise ConfigError(f"No config for checkpoint {str(ckpt)!r}: {str(config)!r} does not exist; pass the "
                          "run's config with --config (it names the dataset).")
    cfg = load_config(config, args.set)
    module = MiamModule.load_from_checkpoint(str(ckpt), map_location="cpu")
    dataset = build_dataset(cfg.data.name, **cfg.data.params)
    check_model_data(module.specs, dataset.specs, module.task, dataset.task, source=f"checkpoint {str(ckpt)!r}")
    return module, subsample(dataset.split(args.split), args.max_samples, args.seed), dataset, cfg


def parse_subset(text: str, names: list[str]) -> list[str]:
    """``"env+climate"`` -> ``["env", "climate"]``; an empty request is an error that lists the names."""
    subset = [m.strip() for m in text.split("+") if m.strip()]
    if not subset:
        raise ConfigError(f"--subset {text!r} names no modality; give names joined by '+' among {names}.")
    return subset


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score a checkpoint on every modality subset",
                       description="Score a trained model on a split with any subset of its modalities "
                                   "(default: all 2^M - 1 non-empty subsets), in batched forward passes.")
    add_run_args(p)
    p.add_argument("--subset", action="append", metavar="A+B",
                   help="a modality subset such as env+climate (repeatable; default: every non-empty subset)")
    p.add_argument("--out", help="CSV file for the table (default: <run>/evaluate_<split>.csv)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from miam.evaluation.subsets import headline, summarize_subsets
    from miam.training.run import score_split

    module, split, _, cfg = load_run(args)
    names = module.group_names
    subsets = [parse_subset(s, names) for s in args.subset] if args.subset else None
    table = score_split(module, split, cfg.evaluation, args.batch_size, subsets=subsets)
    out = Path(args.out) if args.out else Path(args.checkpoint).resolve().parent.parent / f"evaluate_{args.split}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    columns = ["kind", "subset", "n_tokens", "metric", "value", *[c for c in table if c.startswith("f1_top")]]
    print(format_table(table.to_dict("records"), columns, "{:.4f}"))
    if not args.subset:
        print("\n" + headline(summarize_subsets(table, names)))
    print(f"{len(split)} samples of split {args.split!r}; table written to {out}")
    return 0
