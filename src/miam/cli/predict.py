"""``miam predict --checkpoint CKPT (--sites TABLE | --grid RASTER | --bbox ...)``: probabilities for new
sites (CSV) or for every cell of a raster grid (GeoTIFF)."""

from __future__ import annotations

import argparse
from pathlib import Path

from miam.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict on new sites (CSV) or on a raster grid (GeoTIFF)",
                       description="Predict with a model trained on a 'files' dataset. Each site or pixel uses "
                                   "whatever modalities it has; --modalities restricts them (e.g. climate only).")
    p.add_argument("--checkpoint", required=True, help="a .ckpt file written by miam train")
    p.add_argument("--config", "-c", help="the run's config (default: <ckpt dir>/../config.yaml)")
    p.add_argument("--set", "-s", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value (repeatable)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--sites", metavar="TABLE", help="CSV/Parquet of new sites with the training sites table's "
                                                       "id and coordinate columns")
    where.add_argument("--grid", metavar="RASTER", help="predict on this GeoTIFF's grid, or on the grid of a raster "
                                                       "modality of the config (its first file)")
    where.add_argument("--bbox", nargs=4, type=float, metavar=("XMIN", "YMIN", "XMAX", "YMAX"),
                       help="predict on a grid covering this box (with --resolution, --crs)")
    p.add_argument("--resolution", type=float, help="pixel size of the --bbox grid, in its CRS's unit")
    p.add_argument("--crs", help="CRS of the --bbox grid (default: the sites' CRS)")
    p.add_argument("--source", action="append", default=[], metavar="NAME=PATH[,PATH...]",
                   help="replace the file(s) of a table, time-series, raster or image section, e.g. "
                        "climate=future/bio1.tif,future/bio12.tif (repeatable)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--species", nargs="+", metavar="NAME", help="grid bands: these species (default: all)")
    what.add_argument("--top-k", type=int, metavar="K", help="grid bands: the indices of the K most likely outputs")
    what.add_argument("--richness", action="store_true", help="grid band: expected richness (sum of probabilities)")
    p.add_argument("--modalities", nargs="+", metavar="NAME",
                   help="predict with these modalities only; 'best': the subset that scored best on validation "
                        "after training (stored in the checkpoint; what it drops and why is printed)")
    p.add_argument("--out", help="output file (default: <run>/predictions/sites.csv or grid.tif)")
    p.add_argument("--batch-size", type=int, default=4096, help="sites or pixels per forward pass (default 4096)")
    p.add_argument("--window-pixels", type=int, default=1 << 16,
                   help="pixels read and predicted at once on a grid (default 65536)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def parse_sources(items: list[str]) -> dict[str, object]:
    """``["climate=a.tif,b.tif", "soil=new.csv"]`` -> ``{"climate": ["a.tif", "b.tif"], "soil": "new.csv"}``."""
    out: dict[str, object] = {}
    for text in items:
        if "=" not in text:
            raise ConfigError(f"--source {text!r} must look like NAME=PATH (or NAME=PATH,PATH for rasters).")
        name, value = text.split("=", 1)
        paths = [v for v in value.split(",") if v]
        out[name.strip()] = paths if len(paths) > 1 else paths[0]
    return out


def run(args: argparse.Namespace) -> int:
    from miam.data.files.grid import Grid
    from miam.predict import Predictor

    checkpoint, modalities = args.checkpoint, args.modalities
    if modalities == ["best"]:
        from miam.training.inputs import chosen_checkpoint, describe_inputs, load_inputs

        choice = load_inputs(checkpoint)
        print(describe_inputs(choice))
        checkpoint, modalities = chosen_checkpoint(checkpoint, choice), choice["subset"]
    pred = Predictor.from_checkpoint(checkpoint, args.config, args.set, args.batch_size, args.device)
    sources = parse_sources(args.source)
    run_dir = Path(args.checkpoint).resolve().parent.parent
    if args.sites:
        if args.top_k or args.richness or args.species:
            raise ConfigError("--species, --top-k and --richness choose grid bands; a sites CSV has every output.")
        table = pred.predict_sites(args.sites, sources, modalities)
        out = Path(args.out) if args.out else run_dir / "predictions" / "sites.csv"
        out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(out, index=False)
        counts = table["modalities"].value_counts()
        print(f"{len(table)} sites -> {out}")
        print("modalities used: " + "; ".join(f"{k}: {v} site(s)" for k, v in counts.items()))
        if table["no_data"].any():
            print(f"{int(table['no_data'].sum())} site(s) had no data in any modality (outside every raster, no "
                  f"table row or image): flagged no_data, their probabilities left empty")
        return 0
    if args.bbox:
        if not args.resolution:
            raise ConfigError("--bbox needs --resolution (pixel size in the CRS's unit).")
        grid = Grid.of_bbox(args.bbox, args.resolution, args.crs or pred.data.crs)
    else:
        grid = Grid.of_raster(raster_path(pred, args.grid))
    out = Path(args.out) if args.out else run_dir / "predictions" / "grid.tif"
    summary = pred.predict_grid(grid, out, args.species, args.top_k, args.richness, sources, modalities,
                                args.window_pixels, not args.no_progress)
    print(f"{grid.width} x {grid.height} pixels, {len(summary['bands'])} band(s) "
          f"({', '.join(summary['bands'][:6])}{' ...' if len(summary['bands']) > 6 else ''}) -> {out}")
    print(f"{summary['seconds']:.1f} s ({summary['pixels_per_s']:,.0f} pixels/s); "
          f"{100 * summary['share_with_data']:.1f}% of pixels had data")
    return 0


def raster_path(pred: object, name: str) -> Path:
    """An existing file, else the first file of the config's raster section ``name``."""
    if Path(name).is_file():
        return Path(name)
    rasters = {r.name: r for r in pred.data.params.rasters}
    if name not in rasters:
        raise ConfigError(f"--grid {name!r} is neither a file nor a raster modality; raster modalities are "
                          f"{list(rasters)}.")
    paths = rasters[name].paths
    first = next(iter(paths.values())) if isinstance(paths, dict) else paths[0]
    return pred.data.root / first
