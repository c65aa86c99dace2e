"""MIAM, fixed masking strategies and the balancing methods of the related work on the embedded data.

Runs :func:`miam.training.compare.compare` (the ``miam compare`` command) on the demo
config's synthetic landscape (env easy and dominant, satellite slow and complementary),
then prints the summary table and, per name, how far it moves the weak modality alone
and the mean over modality subsets from plain late fusion (no masking, no balancing)
and from the token model with uniform-hypercube masking. Resumable: rerun the same
command to finish an interrupted comparison.

    python benchmarks/compare.py --seeds 3 --epochs 15
"""

from __future__ import annotations

import argparse
import logging
import warnings

from miam.cli.common import packaged_config
from miam.config import load_config
from miam.training.compare import compare


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--methods", help="comma-separated names (default: all defined for the task)")
    ap.add_argument("--config", default=str(packaged_config("demo.yaml")))
    ap.add_argument("--set", action="append", default=[], help="config override section.key=value")
    ap.add_argument("--out", default="miam_runs/bench_compare")
    args = ap.parse_args()
    for name in ("lightning", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    base = load_config(args.config, [*args.set, f"trainer.max_epochs={args.epochs}", "trainer.progress_bar=false",
                                     f"out_dir={args.out}"])
    names = args.methods.split(",") if args.methods else None
    result = compare(base, names, seeds=args.seeds)
    print((result.out_dir / "summary.md").read_text())
    s = result.summary
    weak = "satellite" if "satellite" in result.modalities else result.modalities[-1]
    print(f"Differences of the means (weak modality = {weak}):")
    for ref in ("late_fusion", "uniform_hypercube"):
        if ref not in s.index:
            continue
        print(f"\n  vs {ref}:  {'name':18s} {weak + ' alone':>14s} {'avg subsets':>12s} {'full':>8s}")
        for name, row in s.iterrows():
            if name == ref:
                continue
            d = [row[f"{c}_mean"] - s.loc[ref, f"{c}_mean"] for c in (weak, "avg_modality_subsets", "full")]
            print(f"  {'':{len(ref) + 5}s}{name:18s} {d[0]:+14.4f} {d[1]:+12.4f} {d[2]:+8.4f}")


if __name__ == "__main__":
    main()
