"""Your own data, end to end: write a landscape of plain files, then train, explain, predict and map.

    python examples/own_data/run.py                 # 10 to 20 minutes on 2 CPU cores
    python examples/own_data/run.py --epochs 5      # a quicker look (about 5 minutes)

Everything lands in ``--out`` (default ``own_data_example/``): the files (``data/``), the
config (``config.yaml``, from ``examples/own_data/config.yaml``), the run (``run/``: checkpoints,
test scores on every modality subset, the explain report) and the predictions
(``run/predictions/``: a CSV for the surveyed plots, GeoTIFFs now and under a warmer
climate, PNG maps). Each step is the ``miam`` command a user would type; they are printed.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import landscape  # noqa: E402

from miam.cli import VERBS, main  # noqa: E402


def miam(*args: str) -> None:
    """Run one ``miam`` command (printed first) and stop on failure."""
    print(f"\n$ miam {shlex.join(args)}", flush=True)
    if main(list(args)) != 0:
        raise SystemExit(f"miam {args[0]} failed")


def warmer(src: Path, dst: Path, degrees: float) -> None:
    """A copy of a temperature GeoTIFF, ``degrees`` warmer (nodata kept)."""
    import rasterio

    with rasterio.open(src) as s:
        profile, band = s.profile, s.read(1, masked=True)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(dst, "w", **profile) as d:
        d.write((band + degrees).filled(profile["nodata"]).astype(np.float32), 1)
        d.set_band_description(1, "bio1")


def run(out: Path, epochs: int, sites: int, species: str) -> None:
    data = out / "data"
    print(f"writing the landscape to {data} ...", flush=True)
    landscape.write(data, seed=0, n_sites=sites)
    cfg = yaml.safe_load((HERE / "config.yaml").read_text())
    cfg["data"]["params"]["root"] = str(data.resolve())
    cfg["out_dir"] = str((out / "run").resolve())
    cfg["trainer"]["max_epochs"] = epochs
    config = out / "config.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    run_dir = out / "run"
    best = str(run_dir / "checkpoints" / "best.ckpt")
    pred = run_dir / "predictions"

    miam("train", "--config", str(config), "--overwrite")          # a rerun replaces the previous run
    if "explain" in VERBS:
        miam("explain", "--checkpoint", best, "--max-permutations", "32", "--n-boot", "50")
    miam("predict", "--checkpoint", best, "--sites", str(data / "surveys.csv"), "--out", str(pred / "plots.csv"))
    miam("predict", "--checkpoint", best, "--grid", "landcover", "--out", str(pred / "now.tif"))
    warmer(data / "climate" / "bio1.tif", data / "climate_2070" / "bio1.tif", 2.0)
    miam("predict", "--checkpoint", best, "--grid", "landcover", "--out", str(pred / "plus2C.tif"),
         "--modalities", "climate", "landcover",
         "--source", f"climate={data / 'climate_2070' / 'bio1.tif'},{data / 'climate' / 'bio12.tif'}")
    miam("predict", "--checkpoint", best, "--grid", "landcover", "--richness", "--out", str(pred / "richness.tif"))
    miam("map", str(pred / "now.tif"), "--species", species, "--config", str(run_dir / "config.yaml"))
    miam("map", str(pred / "plus2C.tif"), "--species", species, "--config", str(run_dir / "config.yaml"),
         "--title", f"{species}, climate + land cover only, +2 °C")
    miam("map", str(pred / "richness.tif"), "--species", "richness")
    print(f"\ndone: see {run_dir} (test_subsets.csv, explain/report.html, predictions/*.png)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="Write a landscape of plain files and run miam on it end to end.")
    ap.add_argument("--out", default="own_data_example", help="output folder (default own_data_example)")
    ap.add_argument("--epochs", type=int, default=40, help="training epochs (default 40, early stopping on)")
    ap.add_argument("--sites", type=int, default=1500, help="surveyed plots (default 1500)")
    ap.add_argument("--species", default="sp00", help="the species to map (default sp00)")
    a = ap.parse_args()
    run(Path(a.out), a.epochs, a.sites, a.species)
