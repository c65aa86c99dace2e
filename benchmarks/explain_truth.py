"""Do the explanations find the synthetic generator's ground truth?

Trains a model with MIAM on the embedded synthetic data (the demo config, or a checkpoint
you pass), explains it on the test split and prints, against ``dataset.info["truth"]``:
the modality Shapley ranking, and per modality Spearman's rho between token Shapley values
and true token importance (over all tokens and over the tokens that carry signal), and how
far the noise tokens stay from zero. Then it writes the HTML report.

    python benchmarks/explain_truth.py --epochs 30                 # train, then explain
    python benchmarks/explain_truth.py --checkpoint RUN/checkpoints/best.ckpt
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from miam.cli.common import packaged_config
from miam.config import load_config
from miam.data.registry import build_dataset
from miam.explain.pipeline import check_model_data, explain_model, subsample
from miam.explain.report import write_report
from miam.explain.shapley import ShapleyTokens, n_samples
from miam.explain.truth import spearman


def check_estimator(module, dataset, args: argparse.Namespace) -> None:
    """Sampled vs exact token Shapley values of one modality on the same samples."""
    data = subsample(dataset.split("test"), args.exact_samples, seed=1)
    start = time.perf_counter()
    exact = ShapleyTokens(module.model, module.task, method="exact", n_boot=0).attribute(
        data, args.check_exact, others=args.others)
    t_exact = time.perf_counter() - start
    start = time.perf_counter()
    sampled = ShapleyTokens(module.model, module.task, tolerance=args.tolerance,
                            max_permutations=args.max_permutations, progress=False).attribute(
        data, args.check_exact, others=args.others)
    t_sampled = time.perf_counter() - start
    z = (sampled.values - exact.values) / np.maximum(sampled.se, 1e-12)
    print(f"\nestimator check on {args.check_exact} ({n_samples(data)} samples): exact "
          f"{exact.n_evaluations} coalitions in {t_exact:.0f} s, sampled {sampled.extra['n_permutations']} "
          f"permutations ({sampled.n_evaluations} coalitions) in {t_sampled:.0f} s")
    print(pd.DataFrame({"exact": exact.values, "sampled": sampled.values, "se": sampled.se, "z": z},
                       index=exact.players).round(4).T.to_string())
    print(f"max |z| = {np.abs(z).max():.2f}; spearman(sampled, exact) = {spearman(sampled.values, exact.values):.3f}; "
          f"efficiency gaps {exact.efficiency_gap():.1e} (exact), {sampled.efficiency_gap():.1e} (sampled)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", help="explain this checkpoint instead of training (its run's config.yaml)")
    ap.add_argument("--config", default=str(packaged_config("demo.yaml")))
    ap.add_argument("--set", action="append", default=[], help="config override section.key=value")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--out", default="miam_runs/bench_explain_truth")
    ap.add_argument("--others", default="hidden", choices=["hidden", "visible"])
    ap.add_argument("--max-permutations", type=int, default=256)
    ap.add_argument("--tolerance", type=float, default=1e-3)
    ap.add_argument("--max-samples", type=int, help="explain a random subset of the test split")
    ap.add_argument("--check-exact", metavar="MODALITY",
                    help="also compare the sampled token values of MODALITY with the exact 2^T enumeration "
                         "on --exact-samples test samples (is the estimator at fault?)")
    ap.add_argument("--exact-samples", type=int, default=100)
    args = ap.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    from miam.training import MiamModule
    from miam.training.run import train

    if args.checkpoint:
        ckpt = Path(args.checkpoint)
        cfg = load_config(ckpt.resolve().parent.parent / "config.yaml", args.set)
        module = MiamModule.load_from_checkpoint(str(ckpt), map_location="cpu")
        dataset = build_dataset(cfg.data.name, **cfg.data.params)
        check_model_data(module.specs, dataset.specs, module.task, dataset.task)
        print(f"checkpoint {ckpt}")
    else:
        cfg = load_config(args.config, [*args.set, f"trainer.max_epochs={args.epochs}",
                                        "trainer.progress_bar=false", f"out_dir={args.out}"])
        start = time.perf_counter()
        result = train(cfg)
        module, dataset = result.module, result.dataset
        print(f"trained {result.epochs} epochs in {time.perf_counter() - start:.0f} s: {result.best_checkpoint}")
    truth = dataset.info["truth"]
    start = time.perf_counter()
    expl = explain_model(module.model, dataset.split("test"), module.task, module.hparams.get("groups"),
                         others=args.others, tolerance=args.tolerance, max_permutations=args.max_permutations,
                         truth=truth, max_samples=args.max_samples, progress=False)
    print(f"explained {expl.n_samples} test samples in {time.perf_counter() - start:.0f} s "
          f"({', '.join(f'{k} {v:.0f} s' for k, v in expl.seconds.items())})")
    s = expl.summary
    print(f"\ntest {expl.metric}: full {s['full']:.3f}, " + ", ".join(f"{m} {s[m]:.3f}" for m in expl.group_names)
          + f", avg_modality_subsets {s['avg_modality_subsets']:.3f}")
    m = expl.modalities
    print("\nmodality Shapley (exact, bootstrap SE) vs true share of logit variance:")
    print(pd.DataFrame({"shapley": m.values, "se": m.se,
                        "true_share": [truth["modality_importance"][p] for p in m.players]},
                       index=m.players).round(4).to_string())
    for name, res in expl.tokens.items():
        print(f"\n{name}: {res.estimator}")
        t = np.asarray(truth["token_importance"][name])
        print(pd.DataFrame({"shapley": res.values, "se": res.se, "true_share": t}, index=res.players)
              .round(4).T.to_string())
    print("\nagreement with the ground truth:")
    print(expl.agreement.round(3).to_string(index=False))
    if args.check_exact:
        check_estimator(module, dataset, args)
    path = write_report(expl, Path(args.out) / "explain")
    print(f"\nreport: {path}")


if __name__ == "__main__":
    main()
