"""Every masking strategy on the embedded synthetic data, several seeds.

Prints mean ± sd over seeds of the test score averaged over all non-empty modality
subsets, the full-input score, and each single modality's score (the weak ones —
``climate`` and ``satellite`` — are the ones MIAM should lift). A row ``alone:climate``
is a model trained on that modality only: the gap between it and a joint model's
climate column is how much the joint model starves it. ``--miam-set`` adds a MIAM row
with config overrides (the demo config's MIAM uses ``masking.score_baseline=0.5``; the
paper's is 0). Results and what they show: docs/masking.md.

    python benchmarks/strategies.py --seeds 3 --epochs 15 --miam-set masking.score_baseline=0
"""

from __future__ import annotations

import argparse
import logging
import re
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
    ap.add_argument("--alone", default="climate,satellite",
                    help="also train a model on each of these modalities alone ('' for none)")
    ap.add_argument("--miam-set", action="append", default=[], metavar="KEY=VALUE",
                    help="add a MIAM row trained with these config overrides")
    ap.add_argument("--out", default="miam_runs/bench_strategies")
    args = ap.parse_args()
    if args.combine:
        report(pd.concat([pd.read_csv(f) for f in args.combine], ignore_index=True))
        return
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    common = [*args.set, f"trainer.max_epochs={args.epochs}", "trainer.progress_bar=false"]
    base = load_config(args.config, common)
    rows = []
    seeds = [int(s) for s in args.seed_list.split(",")] if args.seed_list else range(args.seeds)
    for seed in seeds:
        data_params = {**base.data.params, "seed": seed}
        dataset = build_dataset(base.data.name, **data_params)
        # (row name, config, masking, data): MIAM keeps its config's parameters, the others their defaults
        runs = [(name, base, {"strategy": name, "params": dict(base.masking.params) if name == "miam" else {}},
                 dataset) for name in args.strategies.split(",") if name]
        if args.miam_set:
            variant = load_config(args.config, [*common, *args.miam_set])
            runs.append((f"miam[{','.join(args.miam_set)}]", variant,
                         {"strategy": "miam", "params": dict(variant.masking.params)}, dataset))
        runs += [(f"alone:{m}", base, {"strategy": "constant", "params": {"q": 0.0}}, dataset.select([m]))
                 for m in args.alone.split(",") if m]
        for name, cfg, masking, data in runs:
            cfg = cfg.replace(masking=masking, trainer={"seed": seed}, data={"params": data_params},
                              out_dir=f"{args.out}/{re.sub(r'[^A-Za-z0-9_.=-]+', '_', name)}/seed{seed}")
            t0 = time.perf_counter()
            result = train(cfg, dataset=data)
            summary = summarize(result, test_subsets(result))
            rows.append({"strategy": name, "seed": seed, **summary, "epochs": result.epochs,
                         "seconds": time.perf_counter() - t0})
            print(f"seed {seed} {name:30s} avg_subsets {summary['avg_modality_subsets']:.4f} "
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
    fixed = [s for s in agg.index if not s.startswith(("miam", "alone:"))]
    best_fixed = agg.loc[fixed, ("avg_modality_subsets", "mean")].max()
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
