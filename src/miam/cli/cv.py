"""``miam cv --config FILE --folds 5 [--baselines]``: spatial k-fold cross-validation, out-of-fold predictions."""

from __future__ import annotations

import argparse

from miam.cli.common import add_config_args, config_from_args, format_table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cv", help="k-fold cross-validation (spatial blocks), optionally beside GBM and GLM",
                       description="Cross-validate the config's run: sites in k folds by spatial blocks (or at "
                                   "random, or by a fold column), validation blocks carved from each training fold, "
                                   "one resumable run per fold; writes out-of-fold predictions, per-fold and mean "
                                   "± sd scores on every modality subset, and a plot to out_dir.")
    add_config_args(p)
    p.add_argument("--folds", "-k", type=int, default=5, help="number of folds (default 5)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--block-km", type=float,
                     help="side of the spatial blocks in km (default: the config's split block)")
    how.add_argument("--block-size", type=float, help="side of the spatial blocks in the coordinates' own units")
    how.add_argument("--random", action="store_true", help="random folds instead of spatial blocks")
    how.add_argument("--fold-column", metavar="COLUMN",
                     help="a sites-table column holding each site's fold (one fold per value)")
    p.add_argument("--val-fraction", type=float, default=0.15,
                   help="share of each training fold carved out (by blocks) for validation (default 0.15)")
    p.add_argument("--baselines", action="store_true",
                   help="also fit scikit-learn's HistGradientBoosting and a logistic regression per species")
    p.add_argument("--modalities", default="all", choices=["all", "best", "best-per-species"],
                   help="miam's out-of-fold predictions: all modalities, or the subset chosen on each fold's "
                        "validation split (overall or per species); the table has every input either way")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from miam.training.cv import cross_validate

    cfg = config_from_args(args)
    method = "column" if args.fold_column else "random" if args.random else "spatial"
    result = cross_validate(cfg, args.folds, method, args.block_km, args.block_size, args.fold_column,
                            args.val_fraction, args.baselines, args.modalities)
    rows = result.summary.sort_values("mean", ascending=False).to_dict("records")
    folds = result.scores.pivot_table(index=["model", "input"], columns="fold", values="score")
    for r in rows:
        r["mean ± sd"] = f"{r['mean']:.3f} ± {r['sd']:.3f}"
        r["folds"] = " ".join(f"{v:.3f}" for v in folds.loc[(r["model"], r["input"])])
    print("\ntest macro AUROC out of fold, per model and input")
    print(format_table(rows, ["model", "input", "mean ± sd", "folds"]))
    print(f"\nfiles in {result.out_dir}: cv_oof_<model>.csv, cv_folds.csv, cv_summary.csv, cv_scores.png")
    return 0
