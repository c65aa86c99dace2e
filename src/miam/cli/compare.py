"""``miam compare --config FILE --methods miam,uniform_hypercube,ogm_ge --seeds 3``: a fair comparison."""

from __future__ import annotations

import argparse

from miam.cli.common import add_config_args, config_from_args, format_table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare", help="compare masking strategies and balancing methods on one split, several seeds",
        description="Train every named masking strategy (on the config's model) or balancing method (on the "
                    "late-fusion model, without masking) on the same split with the same budget, once per seed; "
                    "select checkpoints on validation, test after training, and write runs.csv, summary.csv, "
                    "summary.md and comparison.png to the output folder. Interrupted comparisons resume: "
                    "finished runs are skipped, an unfinished one resumes from its last checkpoint.")
    add_config_args(p)
    p.add_argument("--methods", "-m",
                   help="comma-separated masking strategies, balancing methods or 'late_fusion' "
                        "(default: miam, uniform_hypercube, late_fusion and every balancing method defined "
                        "for the dataset's task)")
    p.add_argument("--seeds", type=int, default=3, help="runs per name (default: 3)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from miam.training.compare import compare

    cfg = config_from_args(args)
    names = [n.strip() for n in args.methods.split(",") if n.strip()] if args.methods else None
    result = compare(cfg, names, seeds=args.seeds)
    cols = result.score_columns
    rows = [{"name": name, **{c: f"{r[f'{c}_mean']:.4f} ± {r[f'{c}_std']:.4f}" for c in cols},
             "train_s": f"{r['train_seconds']:.1f}"} for name, r in result.summary.iterrows()]
    print(f"\nTest scores, mean ± sd over {args.seeds} seed(s) (protocol: {result.out_dir / 'summary.md'}):")
    print(format_table(rows, ["name", *cols, "train_s"]))
    return 0
