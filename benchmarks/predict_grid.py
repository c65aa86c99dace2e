"""Grid prediction speed and memory: pixels/s and peak memory for 1 M and 16 M pixels in one run.

    python benchmarks/predict_grid.py                     # 1000^2 and 4000^2 pixels
    python benchmarks/predict_grid.py --sides 500 2000    # a quicker look

For each side n it writes an n x n UTM GeoTIFF (2 bands, written strip by strip), reuses a
coarse lon/lat climate raster (so every pixel is reprojected), builds a ``files`` dataset
from 400 sites, and predicts 8 species on the n x n grid with
:meth:`miam.predict.Predictor.predict_grid`. The model is a small untrained
:class:`~miam.models.TokenModel` (speed and memory do not depend on the weights).

All input rasters are written first. Printed per grid: seconds, pixels/s and the process's
peak resident memory (``ru_maxrss``) before and after the grid, next to the size the
output alone would take if held in memory. Memory is flat when the 16 M grid leaves the
peak where the 1 M grid left it.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from miam.data.contract.spec import TaskSpec
from miam.data.files.grid import Grid
from miam.data.files.loader import FilesData
from miam.models import build_model
from miam.predict import Predictor

UTM = "EPSG:32631"
X0, Y1, RES = 460_000.0, 5_020_000.0, 10.0


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_grid_raster(path: Path, side: int) -> None:
    """An n x n, 2-band float32 GeoTIFF in UTM 31N, written strip by strip (flat memory)."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rows = max(1, (1 << 20) // side)
    with rasterio.open(path, "w", driver="GTiff", width=side, height=side, count=2, dtype="float32", crs=UTM,
                       transform=from_origin(X0, Y1, RES, RES), nodata=-9999.0, tiled=True) as dst:
        for r in range(0, side, rows):
            h = min(rows, side - r)
            rr, cc = np.meshgrid(np.arange(r, r + h), np.arange(side), indexing="ij")
            a = np.sin(rr / 150.0) + np.cos(cc / 90.0)
            b = np.where((rr // 100 + cc // 100) % 7 == 0, -9999.0, rr * 0.01 - cc * 0.02)
            dst.write(np.stack([a, b]).astype(np.float32), window=Window(0, r, side, h))


def write_climate(path: Path) -> None:
    """A 0.01 deg lon/lat raster covering every grid (reprojection on every pixel)."""
    import rasterio
    from rasterio.transform import from_origin

    lon = np.arange(2.0, 3.5, 0.01)
    lat = np.arange(45.4, 44.6, -0.01)
    band = (10 + np.add.outer(-(lat - 45) * 5, np.sin(lon * 7))).astype(np.float32)[None]
    with rasterio.open(path, "w", driver="GTiff", width=band.shape[2], height=band.shape[1], count=1,
                       dtype="float32", crs="EPSG:4326", transform=from_origin(2.0, 45.4, 0.01, 0.01)) as dst:
        dst.write(band)


def build(root: Path, side: int, seed: int = 0) -> tuple[FilesData, TaskSpec]:
    rng = np.random.default_rng(seed)
    n = 400
    sites = pd.DataFrame({"id": np.arange(n), "x": X0 + rng.uniform(0, side * RES, n),
                          "y": Y1 - rng.uniform(0, side * RES, n),
                          **{f"sp{j}": (rng.uniform(size=n) < 0.3).astype(int) for j in range(8)}})
    sites.to_csv(root / "sites.csv", index=False)
    data = FilesData(root=str(root), sites={"path": "sites.csv", "id": "id", "crs": UTM},
                     targets={"species": ["sp*"]}, split={"method": "random"}, progress=False,
                     rasters=[{"name": "local", "paths": [f"grid_{side}.tif"]},
                              {"name": "climate", "paths": ["climate.tif"]}])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        task = data.build().task
    return data, task


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sides", type=int, nargs="+", default=[1000, 4000], help="grid sides in pixels")
    ap.add_argument("--d-model", type=int, default=32)
    ap.add_argument("--depth", type=int, default=1)
    ap.add_argument("--window-pixels", type=int, default=1 << 16)
    ap.add_argument("--batch-size", type=int, default=16384)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--out", help="folder for the rasters (default: a temporary one)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tmp = tempfile.TemporaryDirectory() if not args.out else None
    root = Path(args.out or tmp.name)
    root.mkdir(parents=True, exist_ok=True)
    import rasterio

    with rasterio.Env(GDAL_CACHEMAX=64):   # every input first: the measures below see prediction only
        write_climate(root / "climate.tif")
        for side in args.sides:
            write_grid_raster(root / f"grid_{side}.tif", side)
    rows = []
    for side in args.sides:
        data, task = build(root, side)
        model = build_model(data.specs, task, d_model=args.d_model, depth=args.depth, heads=4)
        pred = Predictor(model, data, batch_size=args.batch_size)
        before = peak_mb()
        start = time.perf_counter()
        summary = pred.predict_grid(Grid.of_raster(root / f"grid_{side}.tif"), root / f"pred_{side}.tif",
                                    window_pixels=args.window_pixels)
        seconds = time.perf_counter() - start
        rows.append({"pixels": side * side, "seconds": seconds, "pixels_per_s": side * side / seconds,
                     "peak_rss_mb_before": before, "peak_rss_mb_after": peak_mb(),
                     "peak_growth_mb": peak_mb() - before,
                     "output_if_in_memory_mb": side * side * len(summary["bands"]) * 4 / 2**20,
                     "with_data": summary["share_with_data"]})
        print(f"{side * side / 1e6:.0f} M pixels: {seconds:.1f} s, {side * side / seconds:,.0f} pixels/s, "
              f"peak RSS {peak_mb():.0f} MB", flush=True)
    table = pd.DataFrame(rows)
    print(f"\nmodel: TokenModel d_model={args.d_model} depth={args.depth}, 3 tokens per pixel (2 local bands, "
          f"1 reprojected climate value), 8 species; window {args.window_pixels} pixels; torch threads "
          f"{torch.get_num_threads()}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:,.1f}"))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
