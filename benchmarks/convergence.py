"""The paper's evaluation at convergence, under a protocol that cannot fool us (issue 12).

Every row trains to early stopping (``trainer.max_epochs`` is a cap, 100 by default;
patience 10 on the paper's selection score) on one landscape per seed, and is scored on
the test split on every named input configuration of the dataset's config
(``evaluation.configs``: their mean is ``avg_paper_configs``), every modality subset
(``avg_modality_subsets``) and the full input.

Two phases, never mixed:

* ``--phase dev``: development landscapes (seeds 100-104), reported on the *validation*
  split (``validation.json``: the selected model's scores there), where every choice is made
  (which MIAM variant, which settings); their test scores stay in ``result.json``, unread;
* ``--phase confirm``: confirmation landscapes (seeds 0-4), run once at the end with the
  rows chosen on dev, for the final tables.

Rows: every masking strategy with its defaults, the paper's MIAM (``miam_paper``), our
variants (``miam_chance``, ``miam_slope``, ``miam_floor``, ...), plain late fusion, MLA,
and one model per modality alone (``alone:<m>``, the oracle rows). Each run is one
``result.json`` (:func:`miam.training.compare.execute`): a finished run is skipped and an
interrupted one resumes from its ``last.ckpt``, so a sweep can be stopped and continued.

The report per dataset: mean ± sd over seeds of every column, how many runs hit the cap,
and each row's paired difference per seed against the reference (the best fixed strategy
on ``avg_paper_configs``; pass ``--reference`` to fix it from the dev phase, one for every
dataset or ``dataset=row`` pairs) with a 95 % t-interval.

    python benchmarks/convergence.py --phase dev --datasets demo --rows dev
    python benchmarks/convergence.py --phase confirm --datasets demo,geoplant --rows all --reference demo=dirichlet,geoplant=dropout
    python benchmarks/convergence.py --phase dev --datasets demo --report-only
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from miam.cli.common import packaged_config
from miam.config import RunConfig, load_config
from miam.data.registry import build_dataset
from miam.masking import list_strategies
from miam.evaluation.subsets import headline_columns, summarize_subsets, token_groups
from miam.training import MiamModule
from miam.training.compare import PLAIN, NO_MASKING, PlannedRun, execute, run_config
from miam.training.run import score_split

#: the seeds of each phase: development landscapes for every choice, confirmation ones once
PHASE_SEEDS = {"dev": [100, 101, 102, 103, 104], "confirm": [0, 1, 2, 3, 4]}
#: the split each phase reports: choices read validation scores only
PHASE_SPLIT = {"dev": "val", "confirm": "test"}
#: the masking strategies with fixed (or no) feedback: the reference is the best of them
FIXED = [s for s in list_strategies() if s != "miam"]
#: MIAM as the paper runs it: lambda from the dataset's config, raw scores, one-epoch differences
PAPER = {"score_baseline": 0.0, "derivative": "diff", "window": 1, "noise_floor": 0.0, "clamp": None}
#: our variants of MIAM's feedback (ALGORITHM.md, docs/masking.md): masking-section overrides on top of PAPER
VARIANTS = {
    "miam_paper": {},
    "miam_chance": {"score_baseline": "chance"},
    "miam_slope": {"score_baseline": "chance", "derivative": "slope", "window": 4},
    "miam_floor": {"score_baseline": "chance", "noise_floor": 2.0},
    "miam_slope_floor": {"score_baseline": "chance", "derivative": "slope", "window": 4, "noise_floor": 2.0},
    "miam_demo": {"score_baseline": "chance", "window": 3},   # demo.yaml's settings (AUROC - 0.5, 3-epoch mean)
}
#: the rows of a development sweep: every variant beside the strongest fixed strategies so far
DEV_ROWS = [*VARIANTS, "corner_priority", "dirichlet", "dropout", "uniform_line"]
#: the dataset configs a sweep can run: the embedded demo landscape and the benchmark-shaped presets
DATASETS = {"demo": "demo.yaml", "geoplant": "synthetic_geoplant.yaml", "taxabench": "synthetic_taxabench.yaml",
            "satbird": "synthetic_satbird.yaml"}
#: the sweep's size, chosen so that the confirmation sweep fits about six hours of this 2-core machine
#: (docs/masking.md): 2,000 sites a landscape (the generator's default: 3,000), no dropout, which lets
#: training run the collapsed sequence (exact without dropout; 0.84x the time of an epoch)
SWEEP_SIZE = ["data.params.n_sites=2000", "model.dropout=0.0", "model.collapse_hidden=always"]
#: two-sided 95 % t quantiles by degrees of freedom
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def all_rows(units: list[str], variants: list[str] | None = None, grouped: bool = False) -> list[str]:
    """Every row of a confirmation table for a dataset scored on ``units`` (modalities or groups):
    with ``variants``, only those of our MIAM variants (the paper's MIAM is always in). MLA, a
    balancing method, needs one encoder per modality: a ``grouped`` dataset (``data.groups``, as
    the GeoPlant-like preset's three groups) has no MLA row."""
    chosen = [v for v in VARIANTS if v == "miam_paper" or variants is None or v in variants]
    return [*FIXED, *chosen, PLAIN, *([] if grouped else ["mla"]), *[f"alone:{u}" for u in units]]


def row_config(base: RunConfig, row: str, units: dict[str, list[str]]) -> tuple[RunConfig, str]:
    """The run config of one row, and its kind (``strategy``, ``balance``, ``plain`` or ``alone``)."""
    if row in VARIANTS:
        lam = base.masking.params if base.masking.strategy == "miam" else {}
        params = {k: lam[k] for k in ("kappa", "lambda_s", "lambda_d") if k in lam}
        return base.replace(masking={"strategy": "miam", "params": params, **PAPER, **VARIANTS[row]}), "strategy"
    if row.startswith("alone:"):
        unit = row.split(":", 1)[1]
        return base.replace(masking=NO_MASKING, data={"groups": {unit: units[unit]} if len(units[unit]) > 1 else None},
                            evaluation={"configs": []}), "alone"
    return run_config(base, row)


def run_row(base: RunConfig, row: str, seed: int, out: Path, dataset: Any, units: dict[str, list[str]],
            split: str = "test") -> dict[str, Any]:
    """Train and test one row on one landscape (or read its finished result); with
    ``split="val"``, the same selected model's scores on the validation split instead
    (``validation.json``): what the development phase decides on."""
    cfg, kind = row_config(base, row, units)
    run_dir = out / row.replace(":", "_")
    cfg = cfg.replace(trainer={"seed": seed}, out_dir=str(run_dir))
    run = PlannedRun(row, kind, seed, cfg)
    data = dataset.select(units[row.split(":", 1)[1]]) if kind == "alone" else dataset
    result = json.loads(run.result_file.read_text()) if run.result_file.is_file() else execute(run, data)
    if split == "test":
        return result
    file = run_dir / "validation.json"
    if not file.is_file():
        module = MiamModule.load_from_checkpoint(str(run_dir / "checkpoints" / "best.ckpt"), map_location="cpu")
        table = score_split(module, data.split("val"), cfg.evaluation, cfg.data.eval_batch_size)
        scores = summarize_subsets(table, module.group_names)
        file.write_text(json.dumps({**{k: result[k] for k in ("name", "kind", "architecture", "seed", "epochs",
                                                              "hit_cap", "train_seconds", "resumed")}, **scores}))
    return json.loads(file.read_text())


def sweep(phase: str, name: str, rows: list[str], epochs: int, patience: int, out_root: Path,
          overrides: list[str], seeds: list[int] | None = None, log: Any = print) -> pd.DataFrame:
    """Every (seed, row) run of one dataset in one phase, seed by seed; returns one row per run
    with its validation scores (dev) or its test scores (confirm)."""
    seeds = seeds or PHASE_SEEDS[phase]
    stray = [s for s in seeds if s not in PHASE_SEEDS[phase]]
    if stray:
        raise SystemExit(f"seeds {stray} are not {phase} seeds {PHASE_SEEDS[phase]}: the phases never share a landscape")
    base = load_config(packaged_config(DATASETS[name]), [*SWEEP_SIZE, *overrides, f"trainer.max_epochs={epochs}",
                                                        f"trainer.patience={patience}", "trainer.progress_bar=false"])
    results = []
    for seed in seeds:
        dataset = build_dataset(base.data.name, **{**base.data.params, "seed": seed})
        groups = base.data.groups or {m: [m] for m in dataset.modalities}
        units = {u: list(groups[u]) for u in token_groups(dataset.specs, base.data.groups)[0]}
        grouped = bool(base.data.groups)
        chosen = {"all": all_rows(list(units), None, grouped), "base": all_rows(list(units), [], grouped)}.get(
            rows[0], rows) \
            if len(rows) == 1 else rows
        for k, row in enumerate(chosen, 1):
            start = time.perf_counter()
            result = run_row(base, row, seed, out_root / phase / name / f"seed{seed}", dataset, units,
                             PHASE_SPLIT[phase])
            results.append({**oracle_columns(result, row), "name": row, "seed": seed, "dataset": name})
            log(f"[{name} {phase} seed {seed}, row {k} of {len(chosen)}] {row}: full {result.get('full', np.nan):.4f}"
                + (f", configs {result['avg_paper_configs']:.4f}" if "avg_paper_configs" in result else "")
                + f", epochs {result['epochs']}{' (cap)' if result.get('hit_cap') else ''}, "
                  f"{time.perf_counter() - start:.0f} s")
    return pd.DataFrame(results)


def oracle_columns(result: dict[str, Any], row: str) -> dict[str, Any]:
    """A run's scores as the tables show them: an oracle row (``alone:<m>``) speaks only in its own
    modality's column, not in ``full`` or ``avg_modality_subsets`` (its model sees one modality)."""
    if row.startswith("alone:"):
        return {k: v for k, v in result.items() if k not in ("full", "avg_modality_subsets")}
    return result


def paired(runs: pd.DataFrame, reference: str, column: str) -> pd.DataFrame:
    """Each row's difference to ``reference`` per seed on ``column``, its mean and 95 % t-interval."""
    wide = runs.pivot_table(index="seed", columns="name", values=column)
    if reference not in wide:
        return pd.DataFrame()
    out = []
    for name in wide.columns:
        d = (wide[name] - wide[reference]).dropna()
        if name == reference or d.empty:
            continue
        out.append({"name": name, "per_seed": " ".join(f"{v:+.4f}" for v in d), **interval(d), "seeds": len(d)})
    return pd.DataFrame(out).sort_values("mean", ascending=False)


def interval(d: pd.Series) -> dict[str, float]:
    """Paired differences ``d``: their mean, 95 % t-interval and how many are above 0."""
    half = T975.get(len(d) - 1, 1.96) * d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else float("nan")
    return {"mean": d.mean(), "ci95_low": d.mean() - half, "ci95_high": d.mean() + half, "wins": int((d > 0).sum())}


def report(runs: pd.DataFrame, reference: dict[str, str] | None = None, split: str = "test") -> str:
    """Markdown: per dataset, the mean ± sd table, runs at the cap, and paired differences (of
    whatever split the runs hold: validation in the dev phase, test in confirmation) against
    ``reference[dataset]`` (default: the best fixed strategy of these runs)."""
    parts = []
    for name, part in runs.groupby("dataset", sort=False):
        part = part.dropna(axis=1, how="all")      # another dataset's configurations
        configs = [c for c in part.columns if c.startswith("config:") and "/" not in c]
        cols = [*configs, *headline_columns(_units(part), part.columns)]
        grouped = part.groupby("name", sort=False)
        table = pd.DataFrame({c: grouped[c].agg(_mean_sd) for c in cols})
        table.columns = [c.removeprefix("config:") for c in table.columns]
        table["epochs"] = grouped["epochs"].mean().round(1)
        table["hit cap"] = grouped["hit_cap"].sum().astype(int).astype(str) + " of " + grouped["seed"].count().astype(str)
        key = "avg_paper_configs" if "avg_paper_configs" in part else "avg_modality_subsets"
        fixed = part[part["name"].isin(FIXED)].groupby("name")[key].mean()
        ref = (reference or {}).get(name) or (fixed.idxmax() if len(fixed) else None)
        parts.append(f"## {name}, {split} split: {part['seed'].nunique()} seeds, {len(part)} runs, "
                     f"{int(part['hit_cap'].sum())} at the epoch cap\n\n{table.to_markdown()}\n")
        if ref is not None:
            for column in dict.fromkeys([key, "avg_modality_subsets", "full"]):
                diff = paired(part, ref, column)
                if len(diff):
                    parts.append(f"Paired differences on `{column}` against `{ref}` (per seed, mean, 95 % t-interval):"
                                 f"\n\n{diff.round(4).to_markdown(index=False)}\n")
    return "\n".join(parts)


def parse_reference(text: str | None, datasets: list[str]) -> dict[str, str]:
    """``--reference``: ``"dirichlet"`` (every dataset) or ``"demo=dirichlet,geoplant=dropout"``.

    Examples:
        >>> parse_reference("demo=dirichlet, geoplant=dropout", ["demo", "geoplant"])
        {'demo': 'dirichlet', 'geoplant': 'dropout'}
    """
    if not text:
        return {}
    if "=" not in text:
        return dict.fromkeys(datasets, text.strip())
    pairs = dict(part.strip().split("=", 1) for part in text.split(",") if part.strip())
    unknown = sorted(set(pairs) - set(datasets))
    if unknown:
        raise SystemExit(f"--reference names {unknown}, not among the datasets reported {datasets}.")
    return pairs


def feedback_log(run_dir: Path) -> dict[str, float]:
    """What a MIAM run's feedback did, from its logged scores and weights (validation only):
    ``strong_most`` the share of epochs with feedback where the modality strongest alone got the
    largest w (masked most, MIAM's claim), ``weak_more`` the share where the weakest alone got
    w > 1 (masked more than neutral: starving it further), ``jitter`` the median over modalities
    of the sd of log w's one-epoch change, and ``w_range`` the median of each epoch's max/min w."""
    logs = sorted(run_dir.glob("logs/version_*/metrics.csv"))
    if not logs:
        return {}
    frame = pd.read_csv(logs[-1]).groupby("epoch").last()
    units = [c.split("/")[1] for c in frame.columns if c.startswith("rho/") and c.endswith("/w")]
    if not units:
        return {}
    w = frame[[f"rho/{u}/w" for u in units]].to_numpy()
    score = frame[[f"val/score_{u}" for u in units]].to_numpy()
    live = ~np.isclose(w, 1.0).all(axis=1) & np.isfinite(w).all(axis=1)   # epochs where the feedback acted
    if not live.any():
        return {}
    w, score = w[live], score[live]
    rows = np.arange(len(w))
    log_w = np.log(w)
    return {"strong_most": float((w.argmax(1) == score.argmax(1)).mean()),
            "weak_more": float((w[rows, score.argmin(1)] > 1).mean()),
            "jitter": float(np.median(np.diff(log_w, axis=0).std(axis=0))) if len(w) > 2 else float("nan"),
            "w_range": float(np.median(w.max(1) / w.min(1)))}


def feedback_report(out: Path, phase: str, name: str) -> str:
    """Markdown: :func:`feedback_log` of every MIAM run of one dataset, mean over seeds per row."""
    runs = [{"name": d.name, "seed": d.parent.name, **feedback_log(d)}
            for d in sorted((out / phase / name).glob("seed*/miam_*"))]
    frame = pd.DataFrame([r for r in runs if len(r) > 2])
    if frame.empty:
        return ""
    table = frame.groupby("name", sort=False)[["strong_most", "weak_more", "jitter", "w_range"]].mean()
    table["seeds"] = frame.groupby("name", sort=False)["seed"].count()
    return (f"What the feedback did ({name}, validation logs, mean over seeds): strong_most = share of epochs "
            f"where the strongest modality alone got the largest w; weak_more = share where the weakest got "
            f"w > 1; jitter = sd of log w's one-epoch change; w_range = max/min w in an epoch (median)\n\n"
            f"{table.round(3).to_markdown()}\n")


def variant_choice(runs: pd.DataFrame, column: str = "avg_paper_configs") -> pd.DataFrame:
    """The development rule (docs/masking.md): each variant's paired difference to ``miam_paper``
    on ``column`` over every (dataset, seed) landscape, with its mean, 95 % t-interval and wins."""
    wide = runs.assign(landscape=runs["dataset"] + ":" + runs["seed"].astype(str)).pivot_table(
        index="landscape", columns="name", values=column)
    out = []
    for name in [v for v in VARIANTS if v != "miam_paper" and v in wide and "miam_paper" in wide]:
        d = (wide[name] - wide["miam_paper"]).dropna()
        out.append({"variant": name, "landscapes": len(d), **interval(d), **d.round(4).to_dict()})
    return pd.DataFrame(out).sort_values("mean", ascending=False) if out else pd.DataFrame()


def _mean_sd(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return "–"
    return f"{values.mean():.4f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.4f}"


def _units(part: pd.DataFrame) -> list[str]:
    """The dataset's modalities (or groups): the single-unit columns every run reports."""
    skip = {"name", "kind", "architecture", "seed", "dataset", "epochs", "hit_cap", "train_seconds", "resumed",
            "full", "avg_modality_subsets", "avg_paper_configs"}
    return [c for c in part.columns if c not in skip and not c.startswith("config:") and "/" not in c]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phase", choices=list(PHASE_SEEDS), required=True)
    ap.add_argument("--datasets", default="demo", help=f"comma-separated among {list(DATASETS)}")
    ap.add_argument("--seeds", help="comma-separated seeds of the phase (default: all five)")
    ap.add_argument("--rows", default="dev", help="'dev' (variants + strongest fixed), 'all', 'base' (all but our variants: the rows that "
                         "no development choice touches), or comma-separated rows")
    ap.add_argument("--epochs", type=int, default=100, help="the epoch cap (early stopping ends most runs first)")
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--set", action="append", default=[], help="config override section.key=value for every run (after SWEEP_SIZE)")
    ap.add_argument("--reference", help="the fixed strategy to pair against: one row, or dataset=row pairs separated by "
                                        "commas (default: the best fixed one of the runs reported)")
    ap.add_argument("--out", default="miam_runs/convergence")
    ap.add_argument("--report-only", action="store_true", help="print the report of the finished runs only")
    args = ap.parse_args()
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    out = Path(args.out)
    rows = DEV_ROWS if args.rows == "dev" else [r.strip() for r in args.rows.split(",") if r.strip()]
    frames = []
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        if args.report_only:
            kind = "validation.json" if PHASE_SPLIT[args.phase] == "val" else "result.json"
            files = sorted((out / args.phase / name).glob(f"seed*/*/{kind}"))
            rows_read = [f.parent.name.replace("_", ":", 1) if f.parent.name.startswith("alone_") else f.parent.name
                         for f in files]
            frames.append(pd.DataFrame([{**oracle_columns(json.loads(f.read_text()), row), "name": row, "dataset": name}
                                        for f, row in zip(files, rows_read)]))
        else:
            seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else None
            frames.append(sweep(args.phase, name, rows, args.epochs, args.patience, out, args.set, seeds,
                                lambda line: print(line, flush=True)))
    runs = pd.concat(frames, ignore_index=True)
    runs.to_csv(out / f"runs_{args.phase}.csv", index=False)
    text = report(runs, parse_reference(args.reference, list(runs["dataset"].unique())), PHASE_SPLIT[args.phase])
    if args.phase == "dev":
        text += "\n".join(feedback_report(out, args.phase, name) for name in runs["dataset"].unique())
        choice = variant_choice(runs)
        if len(choice):
            text += ("\nThe rule for choosing a variant: paired difference to miam_paper on avg_paper_configs, "
                     f"every development landscape\n\n{choice.round(4).to_markdown(index=False)}\n")
    (out / f"report_{args.phase}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
