"""A fair comparison of masking strategies and balancing methods: one split, one budget, several seeds.

Every name is trained on the same dataset split with the same trainer budget (epochs,
early-stopping patience, batch size, optimiser), once per seed. The checkpoint is
selected on validation only (``val/selection``); the test split is read once training
has ended (:func:`miam.training.run.test_subsets`). Results go to ``out_dir``:

* ``<name>/seed<k>/``: the run (checkpoints, logs, ``test_subsets.csv``, ``result.json``);
* ``runs.csv``: one row per run; ``summary.csv`` and ``summary.md``: mean ± sd over seeds
  of the full-input score, each single modality's score and the mean over all non-empty
  modality subsets, with the training time; ``comparison.png``: the same as bars.

A comparison is resumable: a run with a ``result.json`` is skipped, and an interrupted
run resumes from its ``last.ckpt``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from miam.balance import list_methods
from miam.balance.methods import configure_model, get_method
from miam.config import RunConfig
from miam.data.contract.dataset import MultimodalDataset
from miam.data.registry import build_dataset
from miam.errors import ConfigError
from miam.evaluation.subsets import headline_columns, token_groups
from miam.masking import ALIASES, list_strategies
from miam.training.run import summarize, test_subsets, train

#: the plain late-fusion baseline (no masking, no balancing)
PLAIN = "late_fusion"
#: no masking: what balancing-method runs use, so only the method acts
NO_MASKING = {"strategy": "constant", "params": {"q": 0.0}}


def default_names(task: str) -> list[str]:
    """MIAM, the uniform hypercube, plain late fusion and every balancing method defined for ``task``."""
    return ["miam", "uniform_hypercube", PLAIN, *list_methods(task)]


def run_config(base: RunConfig, name: str) -> tuple[RunConfig, str]:
    """The run config of one compared name, and its kind (``strategy``, ``balance`` or ``plain``).

    * a masking strategy: the base config's model (the token model unless it says
      otherwise), masked with that strategy (its params from the base config when it names
      the same strategy), no balancing method;
    * a balancing method: the late-fusion model with the base model's sizes and the
      method's own fusion, no masking, that method (its params and fusion from the base
      config when it names the same method);
    * ``late_fusion``: the late-fusion model, no masking, no method.
    """
    strategies = set(list_strategies()) | set(ALIASES)
    if name in list_methods():
        own = base.balance.method == name
        model = {"architecture": "late_fusion", "fusion": base.model.fusion if own else None}
        return base.replace(model=model, masking=NO_MASKING,
                            balance={"method": name, "params": dict(base.balance.params) if own else {}}), "balance"
    if name == PLAIN:
        return base.replace(model={"architecture": "late_fusion"}, masking=NO_MASKING,
                            balance={"method": None, "params": {}}), "plain"
    if name in strategies:
        params = dict(base.masking.params) if base.masking.strategy == name else {}
        return base.replace(masking={"strategy": name, "params": params},
                            balance={"method": None, "params": {}}), "strategy"
    raise ConfigError(f"Unknown name {name!r} to compare: give masking strategies {list_strategies()}, "
                      f"balancing methods {list_methods()} or {PLAIN!r}.")


@dataclass
class PlannedRun:
    """One (name, seed) run of a comparison."""

    name: str
    kind: str
    seed: int
    cfg: RunConfig

    @property
    def out_dir(self) -> Path:
        return Path(self.cfg.out_dir)

    @property
    def result_file(self) -> Path:
        return self.out_dir / "result.json"


def plan(base: RunConfig, names: Sequence[str], seeds: int, dataset: MultimodalDataset, out_dir: str | Path
         ) -> list[PlannedRun]:
    """Every (name, seed) run, checked before any training: an unknown name, or a method
    undefined for the dataset's task or the model, fails here."""
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}.")
    if len(set(names)) != len(names):
        raise ConfigError(f"Names to compare must be unique, got {list(names)}.")
    runs = []
    for name in names:
        cfg, kind = run_config(base, name)
        if kind == "balance":
            method = get_method(name, dataset.modalities, **cfg.balance.params)
            configure_model(vars(cfg.model), dataset.task, method)
            if cfg.data.groups:
                raise ConfigError(f"Balancing method {name!r} acts per modality: remove data.groups to compare it.")
        for k in range(seeds):
            seed = base.trainer.seed + k
            run = cfg.replace(trainer={"seed": seed}, out_dir=str(Path(out_dir) / name / f"seed{seed}"))
            runs.append(PlannedRun(name, kind, seed, run))
    return runs


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)   # atomic: a result file is whole or absent


def execute(run: PlannedRun, dataset: MultimodalDataset, extra_callbacks: list | None = None) -> dict[str, Any]:
    """Train one run (resuming from its ``last.ckpt`` if there is one), test it, write its result."""
    resumed = (run.out_dir / "checkpoints" / "last.ckpt").is_file()
    result = train(run.cfg, dataset=dataset, resume=True, extra_callbacks=extra_callbacks)
    table = test_subsets(result, run.cfg.evaluation)
    table.to_csv(run.out_dir / "test_subsets.csv", index=False)
    row = {"name": run.name, "kind": run.kind, "architecture": run.cfg.model.architecture, "seed": run.seed,
           **summarize(result, table), "epochs": result.epochs, "hit_cap": not result.stopped_early,
           "train_seconds": result.seconds, "resumed": resumed}
    _write_json(run.result_file, row)
    return row


@dataclass
class Comparison:
    """What a comparison leaves: the per-run table, the summary over seeds and where the files are."""

    runs: pd.DataFrame
    summary: pd.DataFrame
    #: the modalities or, with ``data.groups``, the groups: the units the runs were scored on
    modalities: list[str]
    out_dir: Path

    @property
    def score_columns(self) -> list[str]:
        """The summary's headline scores (:func:`miam.evaluation.subsets.headline_columns`)."""
        return headline_columns(self.modalities, self.runs.columns)


def compare(base: RunConfig, names: Sequence[str] | None = None, seeds: int = 3,
            dataset: MultimodalDataset | None = None, out_dir: str | Path | None = None,
            extra_callbacks: list | None = None, log: Callable[[str], None] | None = None) -> Comparison:
    """Train and test every name with every seed; write the tables and the plot.

    Args:
        base: the shared config (dataset, model sizes, budget, optimiser).
        names: masking strategies, balancing methods or ``late_fusion``
            (default: :func:`default_names` for the dataset's task).
        seeds: runs per name, with trainer seeds ``base.trainer.seed + k``.
        dataset: the dataset (default: built from ``base.data``), split once for all.
        out_dir: where everything goes (default: ``base.out_dir``).
        extra_callbacks: more Lightning callbacks for every run.
        log: where the progress lines go (default: printed and flushed).

    Returns:
        the per-run table (``runs.csv``) and the summary (``summary.csv``).
    """
    log = log or (lambda line: print(line, flush=True))
    dataset = dataset if dataset is not None else build_dataset(base.data.name, **base.data.params)
    out = Path(out_dir if out_dir is not None else base.out_dir)
    names = list(names) if names else default_names(dataset.task.kind)
    runs = plan(base, names, seeds, dataset, out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, run in enumerate(runs, 1):
        head = f"[run {k} of {len(runs)}] {run.name} (seed {run.seed})"
        if run.result_file.is_file():
            rows.append(json.loads(run.result_file.read_text()))
            log(f"{head}: finished earlier, skipped")
            continue
        log(f"{head}: training{' (resuming)' if (run.out_dir / 'checkpoints' / 'last.ckpt').is_file() else ''}")
        row = execute(run, dataset, extra_callbacks)
        rows.append(row)
        log(f"{head}: full {row['full']:.4f}, subsets {row['avg_modality_subsets']:.4f}, "
            f"{row['train_seconds']:.0f} s")
    table = pd.DataFrame(rows)
    table.to_csv(out / "runs.csv", index=False)
    units = token_groups(dataset.specs, base.data.groups)[0]
    summary = summarize_runs(table, units)
    summary.to_csv(out / "summary.csv")
    (out / "summary.md").write_text(markdown_report(summary, dataset, base, seeds, units))
    plot_comparison(summary, headline_columns(units, table.columns), out / "comparison.png",
                    metric_name(dataset.task.kind))
    log(f"Tables and plot: {out.resolve()}")
    return Comparison(table, summary, units, out)


def metric_name(kind: str) -> str:
    """The test metric of a task kind, in words."""
    return {"multilabel": "macro AUROC", "multiclass": "top-1 accuracy", "encounter": "top-k accuracy"}.get(kind, "score")


def summarize_runs(runs: pd.DataFrame, modalities: Sequence[str]) -> pd.DataFrame:
    """Per name: mean and sd over seeds of each score (the headline scores, then each named
    configuration), mean training seconds and epochs. ``modalities``: the units the runs were
    scored on (the groups when ``data.groups`` is set)."""
    cols = [*headline_columns(modalities, runs.columns), *[c for c in runs.columns if c.startswith("config:")]]
    grouped = runs.groupby("name", sort=False)
    stats = grouped[cols].agg(["mean", "std"])
    stats.columns = [f"{c}_{s}" for c, s in stats.columns]
    stats = stats.fillna({f"{c}_std": 0.0 for c in cols})
    info = grouped.agg(kind=("kind", "first"), architecture=("architecture", "first"), seeds=("seed", "count"),
                       epochs=("epochs", "mean"), train_seconds=("train_seconds", "mean"),
                       hit_cap=("hit_cap", "sum"))
    return info.join(stats)


def markdown_report(summary: pd.DataFrame, dataset: MultimodalDataset, base: RunConfig, seeds: int,
                    modalities: Sequence[str]) -> str:
    """The summary as a Markdown table, with the protocol it ran."""
    metric = metric_name(dataset.task.kind)
    mods = list(modalities)
    cols = headline_columns(mods, [c[:-len("_mean")] for c in summary.columns if c.endswith("_mean")])
    header = ["name", "model", *cols, "train s", "epochs"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in summary.iterrows():
        cells = [f"{row[f'{c}_mean']:.4f} ± {row[f'{c}_std']:.4f}" for c in cols]
        lines.append("| " + " | ".join([str(name), str(row["architecture"]), *cells,
                                        f"{row['train_seconds']:.1f}", f"{row['epochs']:.1f}"]) + " |")
    t = base.trainer
    n_configs = len(base.evaluation.configs)
    hit_cap = int(summary["hit_cap"].sum())
    sizes = {s: len(dataset.split(s)) for s in ("train", "val", "test")}
    protocol = (
        f"Test {metric}, mean ± sd over {seeds} seed(s) (trainer seeds {t.seed}..{t.seed + seeds - 1}). "
        f"Dataset `{base.data.name}`, one split for every run (train/val/test: {sizes['train']}/{sizes['val']}/"
        f"{sizes['test']}). Same budget for every run: at most {t.max_epochs} epochs, early stopping patience "
        f"{t.patience} on the mean of the validation scores of each modality alone and of the full input, batch "
        f"{base.data.batch_size}, AdamW lr {base.optim.lr}, weight decay {base.optim.weight_decay}. The "
        f"checkpoint is selected on validation only; the test split is read after training. Masking strategies "
        f"train the `{base.model.architecture}` model; balancing methods and `{PLAIN}` train the late-fusion "
        f"model (same width and depth per encoder) without masking. `avg_modality_subsets` is the mean over all "
        f"{2 ** len(mods) - 1} non-empty modality subsets"
        + (f"; `avg_paper_configs` the plain mean over the {n_configs} named input configurations of "
           f"`evaluation.configs`" if n_configs else "")
        + f". {hit_cap} of {int(summary['seeds'].sum())} runs reached the epoch cap without early stopping. "
        f"'train s' is the training time of a run (only its last part for a resumed run)."
    )
    return f"# Comparison\n\n{protocol}\n\n" + "\n".join(lines) + "\n"


def plot_comparison(summary: pd.DataFrame, columns: Sequence[str], path: str | Path,
                    metric: str = "score") -> None:
    """Grouped bars per name, one per headline score (``columns``: full input, each modality
    alone, the averages; :func:`miam.evaluation.subsets.headline_columns`), ± sd."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = list(columns)
    short = {"avg_modality_subsets": "avg. subsets", "avg_paper_configs": "avg. configs"}
    labels = [short.get(c, c) for c in cols]
    x = np.arange(len(summary))
    width = 0.8 / len(cols)
    fig, ax = plt.subplots(figsize=(min(16.0, 2.0 + 1.2 * len(summary)), 4.2))
    for i, (c, label) in enumerate(zip(cols, labels)):
        ax.bar(x + (i - (len(cols) - 1) / 2) * width, summary[f"{c}_mean"], width, yerr=summary[f"{c}_std"],
               label=label, capsize=2)
    ax.set_xticks(x, summary.index, rotation=30, ha="right")
    low = float(np.nanmin(summary[[f"{c}_mean" for c in cols]].to_numpy()))
    ax.set_ylim(max(0.0, low - 0.05), None)
    ax.set_ylabel(f"test {metric} (mean ± sd over seeds)")
    ax.legend(ncol=len(cols), fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
