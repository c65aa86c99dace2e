"""``miam map PREDICTION.tif --species NAME``: a PNG of one species' predicted probability, with the
observed presences on top, marked by split (training, validation, test)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("map", help="draw one species of a predicted GeoTIFF to a PNG",
                       description="Draw one band of a GeoTIFF written by miam predict (a species, or richness) "
                                   "with a colour bar and coordinates; with --config, the presences of the species "
                                   "are drawn on top, one marker per split (training, validation, test).")
    p.add_argument("prediction", help="a GeoTIFF written by miam predict --grid/--bbox")
    p.add_argument("--species", required=True, help="the band to draw (a species name, or richness)")
    p.add_argument("--config", "-c", help="the run's config.yaml, to overlay the presences")
    p.add_argument("--out", help="the PNG (default: next to the GeoTIFF, <prediction>_<species>.png)")
    p.add_argument("--title", help="the map's title (default: the species)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from miam.maps import plot_species_map, presences_by_split

    presences = None
    if args.config:
        from miam.config import load_config
        from miam.data.registry import build_dataset

        cfg = load_config(args.config)
        presences = presences_by_split(build_dataset(cfg.data.name, **cfg.data.params), args.species)
    pred = Path(args.prediction)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in args.species)
    out = Path(args.out) if args.out else pred.with_name(f"{pred.stem}_{safe}.png")
    plot_species_map(pred, args.species, out, presences, args.title)
    n = "" if presences is None else f" with presences: {presences.counts()}"
    print(f"map of {args.species!r}{n} -> {out}")
    return 0
