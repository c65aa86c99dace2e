"""miam against the tabular SDM baseline: one gradient-boosted-tree model per species, same features, same split.

    python benchmarks/vs_gbm.py                      # 1500 plots, miam up to 40 epochs (~30 min on 2 busy cores)
    python benchmarks/vs_gbm.py --epochs 10          # quicker

Data: the landscape of ``examples/own_data`` (plots with soil, NDVI, lon/lat climate rasters, a
land-cover raster and 16 x 16 px aerial patches), read by the ``files`` dataset with the
example's config and split (spatial blocks of 4 km, 70/15/15).

Baseline: scikit-learn's ``HistGradientBoostingClassifier`` per species (it takes NaN
natively), on every token of every modality flattened: numbers as numbers, soil type and
land cover as categorical features, NDVI months and the aerial pixels as numeric features,
NaN wherever the dataset hides a token. scikit-learn's defaults (learning rate 0.1), up to 300
iterations with early stopping on 15 % of the training split.

Scores: test macro AUROC (``miam.scores.macro_auroc`` for both), with all data and with
each modality missing at test time (miam: the modality's tokens hidden; GBM: its features
set to NaN, which trees send down the branch learned for missing values, or the larger
one when none was seen in training).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples" / "own_data"))

import landscape  # noqa: E402

from miam.config import from_dict  # noqa: E402
from miam.data.registry import build_dataset  # noqa: E402
from miam.evaluation.subsets import SubsetEvaluator  # noqa: E402
from miam.scores import macro_auroc  # noqa: E402
from miam.training.cv import flatten_tokens  # noqa: E402
from miam.training.run import train  # noqa: E402


def gbm_scores(ds, scenarios: dict[str, list[str]], seed: int) -> tuple[dict[str, float], float]:
    from sklearn.ensemble import HistGradientBoostingClassifier

    x, categorical, owner = flatten_tokens(ds)
    train_idx, test_idx = ds.splits["train"], ds.splits["test"]
    y = np.asarray(ds.target)
    start = time.perf_counter()
    models = []
    for j in range(y.shape[1]):
        clf = HistGradientBoostingClassifier(max_iter=300, early_stopping=True, validation_fraction=0.15,
                                             categorical_features=categorical, random_state=seed)
        models.append(clf.fit(x[train_idx], y[train_idx, j]))
    seconds = time.perf_counter() - start
    out = {}
    for name, hidden in scenarios.items():
        xt = x[test_idx].copy()
        for m in hidden:
            xt[:, owner[m]] = np.nan
        probs = np.stack([clf.predict_proba(xt)[:, 1] for clf in models], axis=1)
        out[name] = float(macro_auroc(torch.from_numpy(probs), torch.from_numpy(y[test_idx])))
    return out, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, default=1500)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="folder for the files and the run (default: a temporary one)")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory() if not args.out else None
    out = Path(args.out or tmp.name)
    landscape.write(out / "data", seed=args.seed, n_sites=args.sites)
    cfg = yaml.safe_load((ROOT / "examples" / "own_data" / "config.yaml").read_text())
    cfg["data"]["params"].update(root=str(out / "data"), progress=False)
    cfg["trainer"].update(max_epochs=args.epochs, seed=args.seed)
    cfg["out_dir"] = str(out / "run")
    cfg = from_dict(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = build_dataset(cfg.data.name, **cfg.data.params)
    groups = cfg.data.groups
    # scenario -> the modality groups hidden at test time
    scenarios = {"all data": []} | {f"without {g}": [g] for g in groups}

    start = time.perf_counter()
    result = train(cfg, dataset=ds)
    miam_seconds = time.perf_counter() - start
    model = result.module.model.cpu()
    evaluator = SubsetEvaluator(model, result.module.task, groups)
    subsets = [[g for g in groups if g not in hidden] for hidden in scenarios.values()]
    miam = dict(zip(scenarios, evaluator.scores(ds.split("test"), subsets).tolist()))

    hidden_modalities = {name: [m for g in hidden for m in groups[g]] for name, hidden in scenarios.items()}
    gbm, gbm_seconds = gbm_scores(ds, hidden_modalities, args.seed)
    rows = [{"test data": name, "miam": miam[name], "GBM per species": gbm[name],
             "miam - GBM": miam[name] - gbm[name]} for name in scenarios]
    table = pd.DataFrame(rows)
    print(f"\n{len(ds)} plots ({len(ds.splits['train'])} train, {len(ds.splits['val'])} val, "
          f"{len(ds.splits['test'])} test, spatial blocks), {ds.task.n_outputs} species; test macro AUROC")
    print(table.to_string(index=False, float_format=lambda v: f"{v:+.3f}" if v < 0 else f"{v:.3f}"))
    print(f"\ntraining time: miam {miam_seconds:.0f} s ({result.epochs} epochs, best checkpoint on validation), "
          f"GBM {gbm_seconds:.0f} s ({ds.task.n_outputs} models)")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
