"""k-fold cross-validation the way ecologists evaluate: spatial blocks, out-of-fold predictions, baselines.

Sites are assigned to ``k`` folds by whole square blocks (or at random, or by a fold
column). For each fold, validation blocks are carved from the *other* folds (never from
the test fold), one miam run trains on the rest (:func:`miam.training.run.train`, so it
is resumable: a fold whose result files exist is skipped, an interrupted one resumes
from its ``last.ckpt``), and the test fold is scored with the full input, every
non-empty modality subset, the named configurations of ``evaluation.configs``
(``config:<name>``) and the subsets chosen on validation
(:mod:`miam.training.inputs`). ``baselines=True`` fits scikit-learn's
``HistGradientBoostingClassifier`` and ``LogisticRegression`` per species on the same
training folds and the same inputs flattened to columns.

Input statistics (standardisation, category levels of a ``files`` dataset) are those of
the dataset as built, learned without labels on its configured training split.

Files written under ``out_dir``: ``fold<i>/`` (each run, the ``splits.npz`` it used, its
test-fold probabilities ``miam_probs.npz`` and ``baselines_probs.npz``), ``cv_oof_<model>.csv`` (one row per site: id, fold, a
probability and the truth per species), ``cv_folds.csv`` (one row per model, input and
fold: the macro score and each species' AUROC), ``cv_summary.csv`` (mean and sd over
folds) and ``cv_scores.png``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from miam._validation import check_choice
from miam.config import RunConfig
from miam.data.contract.dataset import MultimodalDataset
from miam.data.contract.splits import spatial_block_split
from miam.data.registry import build_dataset
from miam.errors import ConfigError, InvalidParameterError
from miam.evaluation.configs import InputConfig, resolve_configs
from miam.evaluation.subsets import SubsetEvaluator, all_subsets, subset_label
from miam.training.inputs import BEST, chosen_checkpoint, species_auroc, subsets_for
from miam.training.module import MiamModule
from miam.training.run import TrainResult, train

#: how sites are assigned to folds
FOLD_METHODS = ("spatial", "random", "column")
#: ``modalities`` values: the full input, or the subsets chosen on each fold's validation split
MODALITY_CHOICES = ("all", *BEST)
#: the baselines of ``baselines=True``
BASELINES = ("hgb", "logistic")


def assign_folds(n_sites: int, n_folds: int, method: str = "spatial", coords: np.ndarray | None = None,
                 block_size: float | None = None, labels: Sequence[Any] | None = None, seed: int = 0) -> np.ndarray:
    """The fold of every site, ``[N]`` ints in ``[0, k)``.

    Args:
        method: ``spatial`` (whole square blocks of side ``block_size``, in the units of
            ``coords``, filled in random order up to an equal share of sites), ``random``
            (equal-sized folds) or ``column`` (one fold per distinct value of ``labels``).

    Examples:
        >>> xy = np.random.default_rng(0).uniform(0, 100, size=(500, 2))
        >>> folds = assign_folds(500, 5, "spatial", xy, 10.0)
        >>> blocks = np.floor(xy / 10.0).astype(int) @ [1000, 1]
        >>> all(len(set(folds[blocks == b])) == 1 for b in set(blocks))   # a block lies in one fold
        True
    """
    check_choice("assign_folds", "method", method, FOLD_METHODS)
    if method == "column":
        if labels is None or len(labels) != n_sites:
            raise InvalidParameterError(f"Fold method 'column' needs one fold label per site ({n_sites}).")
        _, folds = np.unique(np.asarray(labels).astype(str), return_inverse=True)
        folds = folds.reshape(-1)
    elif n_folds < 2:
        raise InvalidParameterError(f"Cross-validation needs at least 2 folds, got {n_folds}.")
    elif method == "random":
        folds = np.empty(n_sites, dtype=np.int64)
        folds[np.random.default_rng(seed).permutation(n_sites)] = np.arange(n_sites) % n_folds
    else:
        if coords is None or block_size is None:
            raise InvalidParameterError("Spatial folds need site coordinates and a block size; use random folds "
                                        "or a fold column for data without coordinates.")
        names = [str(i) for i in range(n_folds)]
        parts = spatial_block_split(coords, block_size, [1.0 / n_folds] * n_folds, names, seed)
        folds = np.empty(n_sites, dtype=np.int64)
        for i, name in enumerate(names):
            folds[parts[name]] = i
    counts = np.bincount(folds, minlength=int(folds.max()) + 1 if method == "column" else n_folds)
    if len(counts) < 2 or (counts == 0).any():
        hint = f"use smaller blocks (block size {block_size})" if method == "spatial" else "use fewer folds"
        raise InvalidParameterError(f"The {method} folds leave {int((counts == 0).sum())} of {len(counts)} folds "
                                    f"empty among {n_sites} sites; {hint}.")
    return folds


def fold_splits(folds: np.ndarray, fold: int, val_fraction: float = 0.15, coords: np.ndarray | None = None,
                block_size: float | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """train/val/test indices of ``fold``: test is the fold; validation is carved from the other folds,
    by whole blocks when ``block_size`` is given, else at random."""
    if not 0 < val_fraction < 1:
        raise InvalidParameterError(f"val_fraction must be in (0, 1), got {val_fraction}.")
    test = np.flatnonzero(folds == fold)
    pool = np.flatnonzero(folds != fold)
    if block_size is not None and coords is not None:
        part = spatial_block_split(coords[pool], block_size, (1 - val_fraction, val_fraction), ("train", "val"),
                                   seed + 1 + fold)
        train_idx, val_idx = pool[part["train"]], pool[part["val"]]
    else:
        perm = np.random.default_rng([seed, fold]).permutation(pool)
        n_val = int(round(val_fraction * len(pool)))
        train_idx, val_idx = np.sort(perm[n_val:]), np.sort(perm[:n_val])
    if not len(train_idx) or not len(val_idx):
        raise InvalidParameterError(f"Fold {fold}: carving {val_fraction:.0%} of {len(pool)} training sites for "
                                    f"validation leaves an empty split; use smaller blocks or more sites.")
    return {"train": train_idx, "val": val_idx, "test": test}


def flatten_tokens(ds: MultimodalDataset) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Every token value as a column ``[N, F]`` (NaN where hidden), which columns are categorical ``[F]``,
    and each modality's columns."""
    cols, categorical, owner, start = [], [], {}, 0
    for s in ds.specs:
        x = np.asarray(ds.tokens[s.name], dtype=np.float32).reshape(len(ds), s.n_tokens, -1).copy()
        x[~np.asarray(ds.present[s.name])] = np.nan
        x = x.reshape(len(ds), -1)
        cols.append(x)
        categorical += [s.kind == "categorical"] * x.shape[1]
        owner[s.name] = np.arange(start, start + x.shape[1])
        start += x.shape[1]
    return np.concatenate(cols, axis=1), np.array(categorical, dtype=bool), owner


def _baseline_model(name: str, categorical: np.ndarray, seed: int) -> Any:
    """A fresh scikit-learn classifier: gradient boosting (NaN native) or a logistic regression
    on mean-imputed, standardised numbers and one-hot categories."""
    try:
        from sklearn.compose import ColumnTransformer
        from sklearn.ensemble import HistGradientBoostingClassifier
        from sklearn.impute import SimpleImputer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import OneHotEncoder, StandardScaler
    except ImportError as e:
        raise ConfigError('Baselines need scikit-learn: pip install "miam[bench]" (or scikit-learn).') from e
    if name == "hgb":
        return HistGradientBoostingClassifier(categorical_features=categorical if categorical.any() else None,
                                              random_state=seed)
    numeric = make_pipeline(SimpleImputer(strategy="mean", keep_empty_features=True), StandardScaler())
    parts = [("num", numeric, np.flatnonzero(~categorical))]
    if categorical.any():
        parts.append(("cat", make_pipeline(SimpleImputer(strategy="most_frequent", keep_empty_features=True),
                                           OneHotEncoder(handle_unknown="ignore")), np.flatnonzero(categorical)))
    return make_pipeline(ColumnTransformer(parts), LogisticRegression(max_iter=2000))


def fit_baselines(x: np.ndarray, categorical: np.ndarray, target: np.ndarray, train_idx: np.ndarray,
                  test_idx: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Per species, each baseline fitted on ``train_idx`` -> presence probabilities on ``test_idx`` ``[n, S]``,
    keyed ``"<baseline>|full"``.

    A species with only presences or only absences in training gets its training prevalence.
    """
    out = {}
    for name in BASELINES:
        probs = np.empty((len(test_idx), target.shape[1]))
        for j in range(target.shape[1]):
            y = target[train_idx, j]
            if y.min() == y.max():
                probs[:, j] = y[0]
                continue
            clf = _baseline_model(name, categorical, seed).fit(x[train_idx], y)
            probs[:, j] = clf.predict_proba(x[test_idx])[:, 1]
        out[f"{name}|full"] = probs
    return out


def score_rows(fold: int, probs: dict[str, np.ndarray], target: np.ndarray,
               species: Sequence[str]) -> list[dict[str, Any]]:
    """One row per ``"model|input"`` key of ``probs``: model, input, fold, n_test, the macro AUROC
    (mean over species with presences and absences) and each species' AUROC."""
    rows = []
    y = torch.from_numpy(target)
    for key, p in probs.items():
        model, name = key.split("|", 1)
        per = species_auroc(torch.from_numpy(p), y)
        rows.append({"model": model, "input": name, "fold": fold, "n_test": len(target),
                     "score": float(np.nanmean(per)) if np.isfinite(per).any() else float("nan"),
                     **dict(zip(species, per.tolist()))})
    return rows


def subset_probs(module: Any, groups: Any, data: Any, batch_size: int = 512,
                 configs: Sequence[InputConfig] = ()) -> dict[str, np.ndarray]:
    """Probabilities of a trained model on ``data`` under every non-empty modality subset (by subset
    label) and every named configuration of ``evaluation.configs`` (as ``config:<name>``)."""
    evaluator = SubsetEvaluator(module.model.cpu(), module.task, groups, batch_size=batch_size)
    subsets = all_subsets(evaluator.names)
    masks = evaluator.masks([*subsets, *(c.mask for c in configs)])
    logits, _ = evaluator.predict(data, masks)
    labels = [*map(subset_label, subsets), *(f"config:{c.name}" for c in configs)]
    return dict(zip(labels, torch.sigmoid(logits).double().numpy()))


def miam_probs(result: TrainResult, groups: Any, data: Any, batch_size: int = 512,
               configs: Sequence[InputConfig] = ()) -> dict[str, np.ndarray]:
    """Probabilities of a trained run on ``data``, keyed ``"miam|<input>"``: the full input, every
    modality subset and named configuration, and the inputs chosen on validation (``best``,
    ``best-per-species``) with the weights of the checkpoint they were chosen with (``result.inputs``)."""
    probs = subset_probs(result.module, groups, data, batch_size, configs)
    full = subset_label(result.module.group_names)
    out = {f"miam|{'full' if label == full else label}": p for label, p in probs.items()}
    choice = result.inputs
    path = chosen_checkpoint(result.best_checkpoint, choice)
    if path.name != Path(result.best_checkpoint).name:
        probs = subset_probs(MiamModule.load_from_checkpoint(str(path), map_location="cpu"), groups, data,
                             batch_size)
    for mode in BEST:
        chosen = subsets_for(choice, mode, result.module.task.output_names)
        out[f"miam|{mode}"] = np.stack([probs[subset_label(s)][:, j] for j, s in enumerate(chosen)], axis=1)
    return out


@dataclass
class CVResult:
    """What :func:`cross_validate` leaves: the folds, the tables, and where the files are."""

    folds: np.ndarray
    scores: pd.DataFrame
    summary: pd.DataFrame
    oof: dict[str, pd.DataFrame]
    out_dir: Path


def summarize_folds(scores: pd.DataFrame, species: Sequence[str]) -> pd.DataFrame:
    """Mean and sd over folds of the macro score, and each species' mean AUROC, per (model, input)."""
    g = scores.groupby(["model", "input"], sort=False)
    out = g["score"].agg(n_folds="count", mean="mean", sd="std").reset_index()
    return out.merge(g[list(species)].mean().reset_index(), on=["model", "input"])


def default_block_km(cfg: RunConfig) -> float:
    """The block side of the config's own spatial split (``files``: ``split.block_km``; synthetic: ``block_km``)."""
    params = cfg.data.params
    split = params.get("split") or {}
    return float(split.get("block_km") or params.get("block_km") or 10.0)


def fold_labels(ds: MultimodalDataset, column: str) -> np.ndarray:
    """The values of a sites-table column, in the dataset's site order (``files`` datasets only)."""
    files = ds.info.get("files")
    if files is None or files.params.sites is None:
        raise ConfigError(f"A fold column ({column!r}) is read from the sites table of a 'files' dataset; this "
                          "dataset has none: use spatial or random folds.")
    sites, df, path = files.read_sites()
    if column not in df.columns:
        raise ConfigError(f"{path}: no fold column {column!r}; columns are {list(df.columns)[:20]}.")
    by_id = pd.Series(df[column].to_numpy(), index=sites.ids)
    return by_id.loc[ds.info["site_ids"]].to_numpy()


def km_coords(ds: MultimodalDataset) -> np.ndarray | None:
    """Site coordinates in km (a ``files`` dataset's CRS converted; others' coordinates as they are)."""
    if ds.coords is None:
        return None
    from miam.data.files.io import Sites
    from miam.data.files.loader import coords_km

    return coords_km(Sites(None, ds.coords[:, 0], ds.coords[:, 1], ds.info.get("crs")))


def _oof_table(ds: MultimodalDataset, folds: np.ndarray, probs: np.ndarray) -> pd.DataFrame:
    ids = ds.info.get("site_ids", ds.ids)
    out = pd.DataFrame({"site_id": ids, "fold": folds})
    if ds.coords is not None:
        out["x"], out["y"] = ds.coords[:, 0], ds.coords[:, 1]
    names = list(ds.task.output_names)
    cols = {f"prob_{n}": probs[:, j] for j, n in enumerate(names)}
    cols.update({f"true_{n}": ds.target[:, j].astype(np.int64) for j, n in enumerate(names)})
    return pd.concat([out, pd.DataFrame(cols)], axis=1)


def cross_validate(cfg: RunConfig, n_folds: int = 5, method: str = "spatial", block_km: float | None = None,
                   block_size: float | None = None, fold_column: str | None = None, val_fraction: float = 0.15,
                   baselines: bool = False, modalities: str = "all", dataset: MultimodalDataset | None = None,
                   extra_callbacks: Callable[[int], list] | None = None,
                   log: Callable[[str], None] = print) -> CVResult:
    """k-fold cross-validation of the run ``cfg`` describes; files go to ``cfg.out_dir``.

    Args:
        n_folds: k (ignored with ``fold_column``: one fold per value).
        method: ``spatial``, ``random`` or ``column`` (:func:`assign_folds`).
        block_km: block side in km (default: the config's split block); ``block_size``
            gives it in the coordinates' own units instead.
        fold_column: a sites-table column of a ``files`` dataset holding the folds.
        val_fraction: share of each training fold carved out for validation (by blocks).
        baselines: also fit gradient boosting and logistic regression per species.
        modalities: the input of miam's out-of-fold predictions: ``all``, or the subset(s)
            chosen on each fold's validation split (``best``, ``best-per-species``).
        extra_callbacks: ``fold -> callbacks`` added to each fold's trainer.
        log: where progress lines go.

    Raises:
        ConfigError: a task other than multilabel, spatial folds without coordinates.
    """
    check_choice("cross_validate", "method", method, FOLD_METHODS)
    check_choice("cross_validate", "modalities", modalities, MODALITY_CHOICES)
    ds = dataset if dataset is not None else build_dataset(cfg.data.name, **cfg.data.params)
    if ds.task.kind != "multilabel":
        raise ConfigError(f"miam cv scores species presence (a multilabel task); this dataset's task is "
                          f"{ds.task.kind!r}.")
    coords, size = (ds.coords, block_size) if block_size is not None else (km_coords(ds), block_km or
                                                                          default_block_km(cfg))
    if method == "spatial" and coords is None:
        raise ConfigError("Spatial folds need site coordinates; this dataset has none: use random folds or a "
                          "fold column.")
    labels = fold_labels(ds, fold_column) if method == "column" else None
    folds = assign_folds(len(ds), n_folds, method, coords, size, labels, cfg.trainer.seed)
    k = int(folds.max()) + 1
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    species = list(ds.task.output_names)
    x, categorical, _ = flatten_tokens(ds) if baselines else (None, None, None)
    rows, oof = [], {}
    for f in range(k):
        splits = fold_splits(folds, f, val_fraction, None if method == "random" else coords, size, cfg.trainer.seed)
        fold_dir = out / f"fold{f}"
        sizes = "/".join(str(len(splits[s])) for s in ("train", "val", "test"))
        start = time.perf_counter()
        log(f"fold {f + 1}/{k}: {sizes} train/val/test sites -> {fold_dir}")
        probs = _cached(fold_dir / "miam_probs.npz", lambda: _train_fold(cfg, ds, splits, f, fold_dir,
                                                                          extra_callbacks), log)
        if baselines:
            probs |= _cached(fold_dir / "baselines_probs.npz", lambda: fit_baselines(
                x, categorical, ds.target, np.concatenate([splits["train"], splits["val"]]), splits["test"],
                cfg.trainer.seed), log)
        fold_rows = score_rows(f, probs, ds.target[splits["test"]], species)
        rows += fold_rows
        for key, p in probs.items():
            model, name = key.split("|", 1)
            if name == ("full" if model != "miam" or modalities == "all" else modalities):
                oof.setdefault(model, np.full(ds.target.shape, np.nan))[splits["test"]] = p
        log(f"fold {f + 1}/{k} done in {time.perf_counter() - start:.0f} s; test macro AUROC, full input: "
            + ", ".join(f"{r['model']} {r['score']:.3f}" for r in fold_rows if r["input"] == "full"))
    scores = pd.DataFrame(rows)
    summary = summarize_folds(scores, species)
    tables = {m: _oof_table(ds, folds, p) for m, p in oof.items()}
    for m, table in tables.items():
        table.to_csv(out / f"cv_oof_{m}.csv", index=False)
    scores.to_csv(out / "cv_folds.csv", index=False)
    summary.to_csv(out / "cv_summary.csv", index=False)
    plot_cv(summary, scores, out / "cv_scores.png", f"{k}-fold {method} cross-validation, {len(ds)} sites")
    return CVResult(folds, scores, summary, tables, out)


def _cached(path: Path, compute: Callable[[], dict[str, np.ndarray]], log: Callable[[str], None]
            ) -> dict[str, np.ndarray]:
    """The probabilities saved at ``path``, else computed and saved (the marker of a finished part)."""
    if path.is_file():
        log(f"  {path.name} exists: skipped (delete it to redo this part)")
        return dict(np.load(path))
    probs = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **probs)
    tmp.replace(path)
    return probs


def _train_fold(cfg: RunConfig, ds: MultimodalDataset, splits: dict[str, np.ndarray], fold: int, fold_dir: Path,
                extra_callbacks: Callable[[int], list] | None) -> dict[str, np.ndarray]:
    """Train one fold (resuming from its ``last.ckpt``) and return its test probabilities."""
    fold_ds = copy.copy(ds)
    fold_ds.splits = splits
    result = train(cfg.replace(out_dir=str(fold_dir)), dataset=fold_ds, resume=True,
                   extra_callbacks=extra_callbacks(fold) if extra_callbacks else None)
    np.savez(fold_dir / "splits.npz", **result.dataset.splits)
    configs = resolve_configs(ds.specs, cfg.evaluation.configs, cfg.data.groups)
    return miam_probs(result, cfg.data.groups, result.dataset.split("test"), cfg.data.eval_batch_size, configs)


def plot_cv(summary: pd.DataFrame, scores: pd.DataFrame, path: Path, title: str) -> None:
    """Mean ± sd over folds (bars) and each fold (dots) of every (model, input), best first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = summary.sort_values("mean").reset_index(drop=True)
    colors = {"miam": "tab:blue", "hgb": "tab:orange", "logistic": "tab:green"}
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(order) + 1.4))
    for i, row in order.iterrows():
        c = colors.get(row["model"], "tab:gray")
        ax.errorbar(row["mean"], i, xerr=0 if np.isnan(row["sd"]) else row["sd"], fmt="o", color=c, capsize=3)
        folds = scores[(scores["model"] == row["model"]) & (scores["input"] == row["input"])]["score"]
        ax.plot(folds, np.full(len(folds), i), "|", color=c, alpha=0.6, markersize=8)
    ax.set_yticks(range(len(order)), [f"{m}: {n}" for m, n in zip(order["model"], order["input"])], fontsize=7)
    ax.axvline(0.5, color="0.7", lw=0.8, ls="--")
    ax.set_xlabel("test macro AUROC (out of fold): mean ± sd over folds, | = one fold")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
