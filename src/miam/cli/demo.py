"""``miam demo``: MIAM against a fixed strategy on the embedded data, in a few CPU minutes."""

from __future__ import annotations

import argparse
from pathlib import Path

from miam.cli.common import add_config_args, config_from_args, format_table, packaged_config

#: the strategies the demo trains, MIAM first
DEMO_STRATEGIES = ("miam", "uniform_hypercube")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train MIAM and a fixed strategy on the embedded data",
                       description="Train MIAM and uniform_hypercube on the embedded synthetic landscape, "
                                   "then print test scores per modality subset and MIAM's rho/w trajectory.")
    add_config_args(p)
    p.add_argument("--epochs", type=int, help="override trainer.max_epochs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from miam.data.registry import build_dataset
    from miam.evaluation.subsets import headline_columns
    from miam.training.run import summarize, test_subsets, train

    cfg = config_from_args(args, default=str(packaged_config("demo.yaml")))
    if args.epochs:
        cfg = cfg.replace(trainer={"max_epochs": args.epochs})
    dataset = build_dataset(cfg.data.name, **cfg.data.params)
    names = dataset.modalities
    rows, results = [], {}
    for strategy in DEMO_STRATEGIES:
        params = dict(cfg.masking.params) if strategy == cfg.masking.strategy else {}
        run_cfg = cfg.replace(masking={"strategy": strategy, "params": params},
                              out_dir=str(Path(cfg.out_dir) / strategy))
        print(f"\n=== training with masking strategy '{strategy}' ===", flush=True)
        result = train(run_cfg, dataset=dataset)
        table = test_subsets(result, cfg.evaluation)
        table.to_csv(result.out_dir / "test_subsets.csv", index=False)
        result.trajectory().to_csv(result.out_dir / "trajectory.csv", index=False)
        summary = summarize(result, table)
        rows.append({"strategy": strategy, **summary, "epochs": result.epochs, "seconds": round(result.seconds)})
        results[strategy] = result
    metric = "AUROC" if dataset.task.kind == "multilabel" else "top-1"
    print(f"\nTest {metric} (spatial block split, {len(dataset.split('test'))} sites):")
    print(format_table(rows, ["strategy", *headline_columns(names, rows[0]), "epochs", "seconds"]))
    traj = results["miam"].trajectory()
    if len(traj):
        print("\nMIAM feedback per epoch (rho_s = strength vs. the others, w = masking weight, w > 1 masks more):")
        wide = traj.pivot(index="epoch", columns="modality", values=["rho_s", "w"])
        wide.columns = [f"{m}.{k}" for k, m in wide.columns]
        print(wide[[f"{m}.{k}" for m in names for k in ("rho_s", "w")]].round(3).to_string())
    print(f"\nRuns, checkpoints and logs: {Path(cfg.out_dir).resolve()}")
    from miam.explain import explain_model, write_report

    print("\n=== explaining the MIAM model (subsets, robustness, Shapley values) ===", flush=True)
    miam = results["miam"]
    expl = explain_model(miam.module.model, dataset.split("test"), groups=miam.module.hparams.get("groups"),
                         max_permutations=32, repeats=3, max_samples=256, truth=dataset.info.get("truth"),
                         description="miam demo: the MIAM model on the embedded synthetic landscape")
    print(f"Explanation report of the MIAM model: {write_report(expl, miam.out_dir / 'explain')}")
    return 0
