"""``miam prepare DATASET --root DIR``: decode a published dataset once into the memory-mapped cache."""

from __future__ import annotations

import argparse
import inspect
import time
from pathlib import Path

from miam._validation import check_keys
from miam.cli.common import format_table, packaged_config
from miam.config import load_config, parse_override
from miam.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="turn a published dataset into the fast cache",
                       description="Decode the published files of DATASET once (CSV, JPEG, cubes, rasters) into "
                                   "memory-mapped arrays with a manifest, so training never parses them again. "
                                   "Resumes if interrupted; refuses nothing: missing files become hidden tokens "
                                   "and are reported.")
    p.add_argument("dataset", help="the benchmark whose published files to decode (its name in the dataset registry)")
    p.add_argument("--root", required=True, help="folder holding the dataset as published")
    p.add_argument("--cache-dir", help="where the cache goes (default ROOT/miam_cache)")
    p.add_argument("--config", "-c", help="take the loader options from this config's data.params "
                                            "(a file, or a packaged one: geoplant.yaml, taxabench.yaml, satbird.yaml)")
    p.add_argument("--set", "-s", action="append", default=[], metavar="KEY=VALUE",
                   help="a loader option, e.g. --set presences_above=20 (repeatable)")
    p.add_argument("--force", action="store_true", help="rebuild even if an up-to-date cache exists")
    p.add_argument("--workers", type=int, default=1, help="processes decoding files (default 1)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def loader_params(args: argparse.Namespace) -> dict:
    """The loader's keyword arguments: config's data.params, then --set, then --root/--cache-dir."""
    params: dict = {}
    if args.config:
        path = args.config if Path(args.config).is_file() else packaged_config(args.config)
        cfg = load_config(path)
        if cfg.data.name != args.dataset:
            raise ConfigError(f"{args.config} is a config for {cfg.data.name!r}, not {args.dataset!r}.")
        params.update(cfg.data.params)
    for text in args.set:
        keys, value = parse_override(text)
        params[".".join(keys)] = value
    params["root"] = args.root
    if args.cache_dir:
        params["cache_dir"] = args.cache_dir
    return params


def run(args: argparse.Namespace) -> int:
    from miam.data.benchmarks.cached import SPLIT_OPTIONS, open_cache
    from miam.data.benchmarks.prepare import prepare
    from miam.data.registry import builder, raw_source

    source_class = raw_source(args.dataset)
    params = loader_params(args)
    check_keys("miam prepare", params, list(inspect.signature(builder(args.dataset)).parameters), what="option",
               context=f" for {args.dataset}")
    split = {k: params.pop(k) for k in SPLIT_OPTIONS if k in params}
    cache_root = split.pop("cache_dir", None)
    split.pop("workers", None)
    source = source_class(**params)
    start = time.perf_counter()
    cdir = prepare(source, cache_root, force=args.force, workers=args.workers, progress=not args.no_progress)
    ds = open_cache(source, cache_root, check=False, **split)
    rep = ds.info["report"]
    hidden = ds.missing_report()
    rows = [{"modality": s.name, "kind": s.kind, "tokens": s.n_tokens, "token_shape": "x".join(map(str, s.token_shape)),
             "dtype": str(ds.tokens[s.name].dtype), "hidden %": 100 * hidden[s.name],
             "missing files": rep["missing_files"].get(s.name, 0),
             "corrupt files": rep["corrupt_files"].get(s.name, 0)} for s in ds.specs]
    print(f"\n{args.dataset}: {len(ds)} samples, {ds.task.n_outputs} outputs ({ds.task.kind}); "
          f"cache {cdir} ({time.perf_counter() - start:.1f} s)")
    print(format_table(rows, list(rows[0])))
    print("splits: " + ", ".join(f"{k} {len(v)}" for k, v in ds.splits.items()) + f" (saved in {cdir / 'splits'})")
    for note in rep["notes"]:
        print(f"note: {note}")
    for line in rep["examples"]:
        print(f"corrupt: {line}")
    return 0
