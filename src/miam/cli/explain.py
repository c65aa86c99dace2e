"""``miam explain --checkpoint CKPT --out DIR``: subset scores, robustness, Shapley values, HTML report."""

from __future__ import annotations

import argparse
from pathlib import Path

from miam.cli.common import format_table
from miam.cli.evaluate import add_run_args, load_run


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="explain a checkpoint: subsets, robustness, Shapley values, HTML report",
                       description="Score a trained model on every modality subset, draw robustness curves, "
                                   "compute exact modality Shapley values and sampled token Shapley values "
                                   "within each modality, and write report.html plus CSV files.")
    add_run_args(p)
    p.add_argument("--out", help="report folder (default: <run>/explain)")
    p.add_argument("--modalities", nargs="+", metavar="NAME",
                   help="modalities whose tokens get Shapley values (default: all)")
    p.add_argument("--others", choices=("hidden", "visible"), default="hidden",
                   help="tokens of the other modalities during a within-modality analysis (default: hidden, "
                        "as MaskSDM)")
    p.add_argument("--tolerance", type=float, default=2e-3,
                   help="stop sampling permutations when every SE is below this (default: 0.002)")
    p.add_argument("--max-permutations", type=int, default=128,
                   help="permutation budget per modality (default: 128)")
    p.add_argument("--repeats", type=int, default=5, help="random draws per share hidden (default: 5)")
    p.add_argument("--n-boot", type=int, default=200,
                   help="bootstrap resamples for the SE of modality values (default: 200)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from miam.evaluation.configs import resolve_configs
    from miam.explain.pipeline import explain_model
    from miam.explain.report import write_report
    from miam.training.pretrain import describe_pretrained

    module, split, dataset, cfg = load_run(args)
    strategy = (module.hparams.get("masking") or {}).get("strategy", "miam")
    description = (f"Checkpoint {Path(args.checkpoint).name} (masking: {strategy}), data "
                   f"{dataset.info.get('source', 'dataset')}, split {args.split!r}. "
                   + describe_pretrained(module.hparams.get("pretrained"))).strip()
    expl = explain_model(module.model, split, module.task, module.hparams.get("groups"), args.modalities,
                         args.others, args.tolerance, args.max_permutations, repeats=args.repeats,
                         n_boot=args.n_boot, seed=args.seed, truth=dataset.info.get("truth"),
                         batch_size=args.batch_size, progress=not args.no_progress, description=description,
                         configs=resolve_configs(module.specs, cfg.evaluation.configs, module.hparams.get("groups")))
    out = Path(args.out) if args.out else Path(args.checkpoint).resolve().parent.parent / "explain"
    path = write_report(expl, out)
    print(format_table(expl.modalities.to_frame().to_dict("records"), ["player", "value", "se"], "{:.4f}"))
    print(f"modality Shapley: {expl.modalities.estimator}")
    for name, res in expl.tokens.items():
        print(f"{name}: {res.estimator}")
    if expl.agreement is not None and len(expl.agreement):
        cols = ["level", "spearman_all", "spearman_signal", "noise_vs_top_signal"]
        print("\nagreement with the generator's ground truth:")
        print(format_table(expl.agreement.to_dict("records"), cols))
    print(f"\nreport: {path}")
    return 0
