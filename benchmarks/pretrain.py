"""Pretrain on every site you have, fine-tune on the few you surveyed: from scratch vs pretrained.

One synthetic landscape per seed (the demo landscape with correlated covariates,
``covariate_correlation``), ``--unlabelled`` unlabelled sites beside labelled training subsets
of ``--labelled`` sizes (nested: the 100 are among the 300, among the 1,000), one test set.
Per seed and strategy, one masked pretraining on the unlabelled pool plus the largest labelled
set's inputs (never their labels); then, per labelled size, two fine-tunings with the same
strategy and budget: ``scratch`` (random init) and ``pretrained`` (``--init-from`` its best
checkpoint, ``finetune: full``). Test scores: full input, ``avg_modality_subsets`` and
``avg_paper_configs`` (the demo config's ``evaluation.configs``).

Resumable: one JSON per run under ``--out`` (pretraining runs keep their checkpoints);
finished runs are skipped. ``--table`` only prints the table of what is there.
``--grid-memory`` measures the peak memory of reading every cell of a raster grid window by
window, and of a pretraining epoch on it, on a small and a 16x larger grid (subprocesses).

    python benchmarks/pretrain.py --seeds 0 --pretrain-epochs 10 --finetune-steps 400
    python benchmarks/pretrain.py --table
    python benchmarks/pretrain.py --grid-memory
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from miam.cli.common import packaged_config
from miam.config import load_config
from miam.data.synthetic.pool import synthetic_pool
from miam.training.pretrain import pretrain
from miam.training.run import summarize, test_subsets, train

#: the demo landscape's parameters, as demo.yaml draws it
DEMO = {"n_species": 24, "missing": {"satellite": 0.1}, "token_missing": {"env": 0.02}}
METRICS = ["full", "avg_modality_subsets", "avg_paper_configs"]
SHORT = {"full": "full", "avg_modality_subsets": "subsets", "avg_paper_configs": "configs"}
SPEED = ["model.dropout=0", "model.collapse_hidden=always", "trainer.progress_bar=false", "trainer.accelerator=cpu"]


def masking_for(strategy: str, base: dict) -> dict:
    """MIAM keeps the demo config's masking; every other strategy its defaults."""
    return dict(base) if strategy == "miam" else {"strategy": strategy, "params": {}}


def labelled_subset(ds, n: int, seed: int):
    """``ds`` with a random ``n`` of its training sites and validation sites in proportion (at least 20)."""
    rng = np.random.default_rng([seed, 7])
    out = copy.copy(ds)
    n_val = max(20, round(n * 0.15 / 0.7))
    out.splits = {"train": np.sort(rng.permutation(ds.splits["train"])[:n]),
                  "val": np.sort(rng.permutation(ds.splits["val"])[:n_val]), "test": ds.splits["test"]}
    return out


def run_all(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sizes = sorted(int(n) for n in args.labelled.split(","))
    base = load_config(packaged_config("demo.yaml"), [*SPEED, *args.set])
    for seed in (int(s) for s in args.seeds.split(",")):
        ds = synthetic_pool(sizes[-1], args.unlabelled, seed=seed, n_test=args.n_test,
                            covariate_correlation=args.correlation, **DEMO)
        for strategy in args.strategies.split(","):
            masking = masking_for(strategy, vars(base.masking))
            pre_dir = out / f"pretrain_{strategy}_s{seed}"
            pre_json = out / f"pretrain_{strategy}_s{seed}.json"
            ckpt = pre_dir / "checkpoints" / "best.ckpt"
            if not pre_json.is_file():
                cfg = base.replace(masking=masking, out_dir=str(pre_dir),
                                   trainer={"seed": seed, "max_epochs": args.pretrain_epochs},
                                   data={"batch_size": args.pretrain_batch})
                resume = (pre_dir / "checkpoints" / "last.ckpt").is_file()
                res = pretrain(cfg, dataset=ds, resume=resume)
                pre_json.write_text(json.dumps({"strategy": strategy, "seed": seed, "epochs": res.epochs,
                                                "seconds": res.seconds, "sites": len(res.pool),
                                                **res.reconstruction}))
                print(f"pretrained {strategy} seed {seed}: {res.reconstruction}", flush=True)
            for n in sizes:
                sub = labelled_subset(ds, n, seed)
                steps = math.ceil(n / base.data.batch_size)
                epochs = max(10, math.ceil(args.finetune_steps / steps))
                for mode in ("scratch", "pretrained"):
                    path = out / f"ft_{strategy}_{mode}_n{n}_s{seed}.json"
                    if path.is_file():
                        continue
                    cfg = base.replace(masking=masking, out_dir=str(out / "ft_tmp"), trainer={
                        "seed": seed, "max_epochs": epochs, "patience": "auto"},
                        pretrain={"init_from": str(ckpt) if mode == "pretrained" else None})
                    shutil.rmtree(out / "ft_tmp", ignore_errors=True)
                    start = time.perf_counter()
                    result = train(cfg, dataset=sub)
                    s = summarize(result, test_subsets(result, cfg.evaluation))
                    path.write_text(json.dumps({"strategy": strategy, "mode": mode, "n_labelled": n, "seed": seed,
                                                "epochs": result.epochs, "seconds": time.perf_counter() - start,
                                                **{k: float(v) for k, v in s.items()}}))
                    print(f"{strategy} {mode} n={n} seed {seed}: full {s['full']:.4f}, "
                          f"avg_modality_subsets {s['avg_modality_subsets']:.4f}, "
                          f"avg_paper_configs {s['avg_paper_configs']:.4f}", flush=True)


def table(dirs: list[Path]) -> None:
    """The pretraining runs, then per labelled size and strategy: scratch and pretrained (mean ± sd over seeds)
    and the gain, for the full input, avg_modality_subsets and avg_paper_configs."""
    pre = [json.loads(p.read_text()) for d in dirs for p in sorted(d.glob("pretrain_*.json"))]
    if pre:
        df = pd.DataFrame(pre)
        cols = ["strategy", "seed", "epochs", "sites", "error", "baseline", "skill_masked", "skill_env",
                "skill_climate", "skill_satellite", "seconds"]
        print(df[[c for c in cols if c in df]].sort_values(["strategy", "seed"]).round(4).to_markdown(index=False))
    rows = [json.loads(p.read_text()) for d in dirs for p in sorted(d.glob("ft_*.json"))]
    if not rows:
        return
    df = pd.DataFrame(rows)
    g = df.groupby(["n_labelled", "strategy", "mode"])
    mean, sd = g[METRICS].mean(), g[METRICS].std().fillna(0)
    out = {}
    for m in METRICS:
        for mode in ("scratch", "pretrained"):
            out[f"{SHORT[m]} {mode}"] = (mean[m].xs(mode, level="mode").map("{:.4f}".format) + " ± "
                                        + sd[m].xs(mode, level="mode").map("{:.4f}".format))
        out[f"{SHORT[m]} gain"] = (mean[m].xs("pretrained", level="mode")
                                   - mean[m].xs("scratch", level="mode")).map("{:+.4f}".format)
    out["seeds"] = g.size().xs("pretrained", level="mode")
    print(pd.DataFrame(out).to_markdown())



# ---- memory of a raster grid read window by window ------------------------------------------


def write_grid(root: Path, size: int) -> dict:
    """A ``files`` dataset: 200 labelled sites and a 3-band ``size`` x ``size`` GeoTIFF over them."""
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(0)
    res = 1000.0 / size
    rows, cols = np.indices((size, size))
    with rasterio.open(root / "layers.tif", "w", driver="GTiff", height=size, width=size, count=3, dtype="float32",
                       crs="EPSG:32631", transform=from_origin(500_000, 5_000_000, res, res), tiled=True) as dst:
        for b in range(3):
            dst.write(np.sin(rows / (17 + b)) + np.cos(cols / (23 + b)) + 0.1 * b, b + 1)
    x = 500_000 + rng.uniform(0, 1000, 200)
    y = 5_000_000 - rng.uniform(0, 1000, 200)
    sites = pd.DataFrame({"site_id": np.arange(200), "x": x, "y": y, "sp_a": rng.integers(0, 2, 200),
                          "sp_b": rng.integers(0, 2, 200), "split": rng.choice(["train", "val", "test"], 200)})
    sites.to_csv(root / "sites.csv", index=False)
    return {"root": str(root), "sites": {"path": "sites.csv", "x": "x", "y": "y", "crs": "EPSG:32631"},
            "targets": {"species": ["sp_*"]}, "split": {"method": "column"}, "progress": False,
            "rasters": [{"name": "layers", "paths": ["layers.tif"]},
                        {"name": "patches", "paths": ["layers.tif"], "bands": [1], "patch": 4, "token_size": 2}]}


def grid_child(size: int) -> None:
    """In a fresh process: peak RSS after walking every window of the grid, then after a pretraining epoch."""
    from miam.config import from_dict
    from miam.data.files.grid import Grid
    from miam.data.files.loader import FilesData
    from miam.data.files.pools import GridPool

    with tempfile.TemporaryDirectory() as tmp:
        params = write_grid(Path(tmp), size)
        data = FilesData(**params)
        ds = data.build()
        pool = GridPool(data, Grid.of_raster(Path(tmp) / "layers.tif"), window_pixels=1 << 14)
        start = time.perf_counter()
        cells = sum(len(b.ids) for b in pool.windows())
        walk_s = time.perf_counter() - start
        rss_walk = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        cfg = from_dict({"data": {"name": "files", "params": params, "batch_size": 256},
                         "model": {"d_model": 16, "depth": 1, "heads": 2, "dropout": 0, "collapse_hidden": "always"},
                         "masking": {"strategy": "uniform_line"}, "out_dir": str(Path(tmp) / "run"),
                         "trainer": {"max_epochs": 1, "progress_bar": False, "accelerator": "cpu",
                                     "limit_train_batches": 20}})
        pretrain(cfg, dataset=ds, pool=GridPool(data, Grid.of_raster(Path(tmp) / "layers.tif"), val_fraction=0.002))
        rss_train = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"size": size, "cells": cells, "walk_seconds": walk_s, "peak_rss_mb_after_walk": rss_walk,
                      "peak_rss_mb_after_pretraining": rss_train}))


def grid_memory(out: Path, small: int) -> None:
    results = []
    for size in (small, 4 * small):
        proc = subprocess.run([sys.executable, __file__, "--grid-child", str(size)], capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(proc.stderr[-3000:])
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(results[-1], flush=True)
    (out / "grid_memory.json").write_text(json.dumps(results, indent=1))
    a, b = results
    print(f"{b['cells'] / a['cells']:.0f}x the cells: peak RSS {a['peak_rss_mb_after_walk']:.0f} -> "
          f"{b['peak_rss_mb_after_walk']:.0f} MB after the walk, {a['peak_rss_mb_after_pretraining']:.0f} -> "
          f"{b['peak_rss_mb_after_pretraining']:.0f} MB after a pretraining epoch")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    ap.add_argument("--unlabelled", type=int, default=20_000)
    ap.add_argument("--labelled", default="100,300,1000")
    ap.add_argument("--n-test", type=int, default=2_000, help="test sites (of the landscape's test blocks)")
    ap.add_argument("--strategies", default="uniform_line,dirichlet,dropout,miam")
    ap.add_argument("--correlation", type=float, default=0.6, help="make_dataset's covariate_correlation")
    ap.add_argument("--pretrain-epochs", type=int, default=20)
    ap.add_argument("--pretrain-batch", type=int, default=256)
    ap.add_argument("--finetune-steps", type=int, default=600,
                    help="fine-tuning budget in optimiser steps (epochs = steps / batches per epoch, at least 10)")
    ap.add_argument("--set", action="append", default=[], help="config override section.key=value")
    ap.add_argument("--out", default="miam_runs/bench_pretrain")
    ap.add_argument("--table", nargs="*", metavar="DIR",
                    help="only print the table of the results in these folders (default: --out)")
    ap.add_argument("--grid-memory", action="store_true", help="measure memory on a small and a 16x larger grid")
    ap.add_argument("--grid-size", type=int, default=256, help="side of the small grid in cells")
    ap.add_argument("--grid-child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    if args.grid_child:
        grid_child(args.grid_child)
    elif args.grid_memory:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        grid_memory(Path(args.out), args.grid_size)
    elif args.table is not None:
        table([Path(d) for d in args.table or [args.out]])
    else:
        run_all(args)
        table([Path(args.out)])


if __name__ == "__main__":
    main()
