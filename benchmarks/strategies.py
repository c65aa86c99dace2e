"""Every masking strategy on the embedded synthetic data, several seeds.

Prints mean ± sd over seeds of the test score averaged over all non-empty modality
subsets, the full-input score, and each single modality's score (the weak, slow one —
``satellite`` — is the one MIAM should lift).

    python benchmarks/strategies.py --seeds 3 --epochs 30
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import numpy as np
import pandas as pd

from miam.cli.common import packaged_config
from miam.config import load_config
from miam.data.registry import build_dataset
from miam.masking import list_strategies
from miam.training.run import summarize, test_subsets, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3, help="run seeds 0..N-1")
    ap.add_argument("--seed-list", help="comma-separated seeds instead (to split a run across processes)")
    ap.add_argument("--combine", nargs="+", metavar="CSV", help="only print the table of saved results.csv files")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--strategies", default=",".join(list_strategies()))
    ap.add_argument("--config", default=str(packaged_config("demo.yaml")))
    ap.add_argument("--set", action="append", default=[], help="config override section.key=value")
    ap.add_argument("--out", default="miam_runs/bench_strategies")
    args = ap.parse_args()
    if args.combine:
        report(pd.concat([pd.read_csv(f) for f in args.combine], ignore_index=True))
        return
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    base = load_config(args.config, [*args.set, f"trainer.max_epochs={args.epochs}", "trainer.progress_bar=false"])
    rows = []
    seeds = [int(s) for s in args.seed_list.split(",")] if args.seed_list else range(args.seeds)
    for seed in seeds:
        data_params = {**base.data.params, "seed": seed}
        dataset = build_dataset(base.data.name, **data_params)
        for name in args.strategies.split(","):
            params = dict(base.masking.params) if name == "miam" else {}
            cfg = base.replace(masking={"strategy": name, "params": params}, trainer={"seed": seed},
                               data={"params": data_params}, out_dir=f"{args.out}/{name}/seed{seed}")
            t0 = time.perf_counter()
            result = train(cfg, dataset=dataset)
            summary = summarize(result, test_subsets(result))
            rows.append({"strategy": name, "seed": seed, **summary, "epochs": result.epochs,
                         "seconds": time.perf_counter() - t0})
            print(f"seed {seed} {name:18s} avg_subsets {summary['avg_modality_subsets']:.4f} "
                  f"full {summary['full']:.4f}", flush=True)
    df = pd.DataFrame(rows)
    df.to_csv(f"{args.out}/results.csv", index=False)
    report(df, args.epochs)


def report(df: pd.DataFrame, epochs: int | None = None) -> None:
    """Mean ± sd over seeds per strategy, best subset average first."""
    modalities = [c for c in df.columns if c not in ("strategy", "seed", "full", "avg_modality_subsets", "epochs", "seconds")]
    cols = ["avg_modality_subsets", "full", *modalities]
    agg = df.groupby("strategy", sort=False)[cols].agg(["mean", "std"])
    table = pd.DataFrame({c: [f"{m:.4f} ± {s:.4f}" for m, s in zip(agg[c]["mean"], agg[c]["std"].fillna(0))]
                          for c in cols}, index=agg.index)
    table["seconds"] = df.groupby("strategy", sort=False)["seconds"].mean().round(1)
    print(f"\nTest AUROC, mean ± sd over {df['seed'].nunique()} seeds"
          + (f" ({epochs} epochs max):" if epochs else ":"))
    print(table.sort_values("avg_modality_subsets", ascending=False).to_markdown()
          if _has_tabulate() else table.to_string())
    best_fixed = agg["avg_modality_subsets"]["mean"].drop("miam", errors="ignore").max()
    if "miam" in agg.index:
        print(f"\nMIAM avg_modality_subsets - best fixed strategy: "
              f"{agg.loc['miam', ('avg_modality_subsets', 'mean')] - best_fixed:+.4f}")


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
        return True
    except ImportError:
        return False


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
