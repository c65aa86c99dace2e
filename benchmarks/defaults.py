"""Model size and early stopping chosen from the data (``auto``) against the former fixed defaults.

    python benchmarks/defaults.py --sites 300 3000          # ~20 min on 2 busy cores

For each synthetic set (``make_dataset(n_sites=N)``, its spatial-block split), trains
the former defaults (width 192, depth 3, 8 heads, patience 10) and each variant given by
``--variant NAME:SECTION.KEY=VALUE,...`` (default: ``auto``, what ``model: {d_model: auto,
depth: auto, heads: auto}`` and ``trainer.patience: auto`` choose), with the same seed and
epoch budget. Prints the full-input validation and test AUROC of the selected checkpoint, the epochs run and the training time, with each variant's time as a ratio of
the former default's measured in the same run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from miam.config import load_config
from miam.data.synthetic import make_dataset
from miam.evaluation.subsets import SubsetEvaluator
from miam.training.run import train

FORMER = "former:model.d_model=192,model.depth=3,model.heads=8,trainer.patience=10"


def run_one(overrides: list[str], n_sites: int, epochs: int, seed: int, out: Path) -> dict:
    cfg = load_config(None, [f"trainer.max_epochs={epochs}", f"trainer.seed={seed}", "trainer.progress_bar=false",
                             "trainer.accelerator=cpu", f"out_dir={out}", *overrides])
    ds = make_dataset(seed=seed, n_sites=n_sites)
    start = time.perf_counter()
    result = train(cfg, dataset=ds)
    seconds = time.perf_counter() - start
    module = result.module
    evaluator = SubsetEvaluator(module.model, module.task, None)
    full = [evaluator.names]
    val, test = (float(evaluator.scores(ds.split(s), full)[0]) for s in ("val", "test"))
    return {"val_full": val, "test_full": test, "epochs": result.epochs, "seconds": seconds,
            "d_model": module.hparams["model"]["d_model"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, nargs="+", default=[300, 3000])
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variant", action="append", metavar="NAME:SECTION.KEY=VALUE,...",
                    help="a variant to compare with the former defaults (default: auto)")
    args = ap.parse_args()
    variants = [FORMER, *(args.variant or ["auto:"])]
    for n in args.sites:
        rows = []
        for text in variants:
            name, _, sets = text.partition(":")
            with tempfile.TemporaryDirectory() as tmp:
                row = run_one([s for s in sets.split(",") if s], n, args.epochs, args.seed, Path(tmp))
            rows.append({"variant": name, **row})
            print(f"{n} sites  {name:>10}: val full {row['val_full']:.4f}  test full {row['test_full']:.4f}  "
                  f"epochs {row['epochs']:3d}  {row['seconds']:6.1f} s  (width {row['d_model']})", flush=True)
        base = rows[0]["seconds"]
        for row in rows[1:]:
            print(f"{n} sites  {row['variant']}: val full {row['val_full'] - rows[0]['val_full']:+.4f}, test full "
                  f"{row['test_full'] - rows[0]['test_full']:+.4f}, time x{row['seconds'] / base:.2f} of former",
                  flush=True)


if __name__ == "__main__":
    main()
