"""How much a jointly trained model starves each modality, per synthetic landscape.

For each dataset (the embedded demo data and the benchmark-shaped presets of
:mod:`miam.data.synthetic.presets`) it trains, per seed, one model on every modality
without masking (``masking: {strategy: constant, params: {q: 0}}``) and one model on each
modality alone (``MultimodalDataset.select``; with ``data.groups``, each group alone). It
prints each modality's test score alone (its ceiling), inside the joint model (only that
modality visible), the gap, and its true share of the signal. Each preset takes the
``data`` section of its packaged config (``synthetic_<preset>.yaml``: preset and groups);
model, optimiser and trainer are the demo's. Results and what they show: docs/presets.md.

    python benchmarks/imbalance.py --seeds 1 --epochs 30 --patience 10
"""

from __future__ import annotations

import argparse
import logging
import warnings
from pathlib import Path

import pandas as pd
import yaml

from miam.cli.common import packaged_config
from miam.config import RunConfig, load_config
from miam.data.registry import build_dataset
from miam.training.run import summarize, test_subsets, train

DATASETS = ("demo", "geoplant", "taxabench", "satbird")
NO_MASKING = {"strategy": "constant", "params": {"q": 0.0}}


def dataset_config(name: str, base: RunConfig) -> RunConfig:
    """The demo config, with the ``data`` section of the preset's packaged config."""
    if name == "demo":
        return base
    data = yaml.safe_load(packaged_config(f"synthetic_{name}.yaml").read_text())["data"]
    return base.replace(data=data)


def run_dataset(name: str, base: RunConfig, seed: int, out: Path) -> list[dict]:
    """Train the joint model and each modality (group) alone on ``name``; one row per modality."""
    cfg = dataset_config(name, base)
    params = {**cfg.data.params, "seed": seed}
    dataset = build_dataset(cfg.data.name, **params)
    groups = cfg.data.groups or {m: [m] for m in dataset.modalities}
    truth = dataset.info["truth"]
    shares = truth.get("group_importance") if cfg.data.groups else truth["modality_importance"]

    def fit(label: str, data, run_groups):
        run = cfg.replace(masking=NO_MASKING, trainer={"seed": seed}, data={"params": params, "groups": run_groups},
                          out_dir=str(out / name / label / f"seed{seed}"))
        result = train(run, dataset=data)
        return summarize(result, test_subsets(result)), result

    joint, result = fit("joint", dataset, cfg.data.groups)
    per_epoch = result.seconds / max(result.epochs, 1)
    rows = []
    for g, members in groups.items():
        alone, _ = fit(f"alone_{g}", dataset.select(members), {g: members} if cfg.data.groups else None)
        rows.append({"dataset": name, "seed": seed, "modality": g, "truth_share": shares[g],
                     "alone": alone["full"], "in_joint": joint[g], "gap": alone["full"] - joint[g],
                     "joint_full": joint["full"], "joint_epochs": result.epochs, "joint_s_per_epoch": per_epoch})
        print(f"{name} seed {seed} {g:12s} alone {alone['full']:.4f} in joint {joint[g]:.4f} "
              f"(joint full {joint['full']:.4f}, {per_epoch:.2f} s/epoch)", flush=True)
    return rows


def report(df: pd.DataFrame) -> None:
    """Mean over seeds per dataset and modality; the joint model's seconds per epoch against the demo's."""
    cols = ["truth_share", "alone", "in_joint", "gap", "joint_full", "joint_epochs", "joint_s_per_epoch"]
    table = df.groupby(["dataset", "modality"], sort=False)[cols].mean()
    print(f"\nTest score, mean over {df['seed'].nunique()} seed(s): alone = a model of that modality only; "
          "in_joint = the unmasked joint model with only that modality visible")
    print(table.round(4).to_string())
    speed = df.groupby("dataset", sort=False)["joint_s_per_epoch"].mean()
    if "demo" in speed:
        print("\nJoint model, seconds per epoch relative to the demo data's:")
        print((speed / speed["demo"]).round(2).to_string())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=",".join(DATASETS), help=f"comma-separated, among {DATASETS}")
    ap.add_argument("--seeds", type=int, default=1, help="run seeds 0..N-1")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--out", default="miam_runs/bench_imbalance")
    ap.add_argument("--combine", nargs="+", metavar="CSV", help="only print the table of saved results.csv files")
    args = ap.parse_args()
    if args.combine:
        report(pd.concat([pd.read_csv(f) for f in args.combine], ignore_index=True))
        return
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    overrides = [f"trainer.max_epochs={args.epochs}", f"trainer.patience={args.patience}", "trainer.progress_bar=false"]
    base = load_config(packaged_config("demo.yaml"), overrides)
    out = Path(args.out)
    rows = []
    for seed in range(args.seeds):
        for name in args.datasets.split(","):
            rows += run_dataset(name, base, seed, out)
            pd.DataFrame(rows).to_csv(out / "results.csv", index=False)
    report(pd.DataFrame(rows))


if __name__ == "__main__":
    main()
