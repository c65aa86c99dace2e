"""GeoPlant-sized data pipeline benchmark: prepare time, cache read rate vs the model's step rate, memory.

Writes a synthetic GeoPlant tree in the published layout (tests/data/geoplant.py: CSVs,
``.pt`` cubes, RGB + NIR JPEGs; ~17 of 5,016 species per survey) and measures:

1. ``miam prepare`` time (rows/s) and the cache's size on disk;
2. batches/s read from the cache for the same 60 shuffled training batches of 128: a plain
   numpy read of the same bytes (sorted fancy indexing of every array: the limit), the
   cache's ``read`` (what the loader's workers do: raw, uint8 images), ``read`` + ``finish``
   on the CPU (standardised float32), and the training DataLoader with 1 and 2 workers;
   then the training step rate of the paper's model (width 192, depth 3, 8 heads);
3. memory while training one full epoch (a small model, so the epoch is short), measured
   in a fresh process for a quarter-size and a full-size set: private memory (RssAnon)
   must not grow with the number of surveys; file pages of the memory map (RssFile) are
   page cache the kernel can drop, reported apart.

    python benchmarks/data_pipeline.py                 # 20,000 surveys
    python benchmarks/data_pipeline.py --surveys 88987 # GeoPlant's full size
    python benchmarks/data_pipeline.py --images 5000   # write JPEGs for the first 5,000 surveys only
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from data import geoplant as fixture  # noqa: E402

from miam.config import from_dict  # noqa: E402
from miam.data.benchmarks.geoplant import GeoPlantSource, load_geoplant  # noqa: E402
from miam.data.benchmarks.prepare import prepare  # noqa: E402
from miam.training.data import make_loader  # noqa: E402
from miam.training.run import build_module  # noqa: E402

GROUPS = {"tabular": ["env"], "timeseries": ["climate", "landsat"], "satellite": ["sentinel"]}


def memory() -> dict[str, float]:
    """Resident memory of this process in MiB: private (RssAnon), memory-mapped files (RssFile), peak (VmHWM)."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def config(root: Path, d_model: int, depth: int, heads: int) -> object:
    return from_dict({"data": {"name": "geoplant", "params": {"root": str(root)}, "groups": GROUPS},
                      "model": {"d_model": d_model, "depth": depth, "heads": heads}})


def step_rate(module, batches: list, steps: int) -> float:
    """Training steps/s (masking, forward, backward, AdamW step) on ready batches."""
    opt = module.configure_optimizers()
    module.train()
    for i in range(steps + 1):
        if i == 1:
            start = time.perf_counter()
        batch = batches[i % len(batches)]
        visible = module.draw_visible(batch)
        loss = module.loss_fn(module.model(batch, visible), batch.target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps / (time.perf_counter() - start)


def epoch_memory(root: str) -> dict:
    """One full training epoch with a small model; memory sampled every 10 steps (run in a fresh process)."""
    warnings.simplefilter("ignore")
    ds = load_geoplant(root)
    module = build_module(config(Path(root), 32, 1, 2), ds)
    opt = module.configure_optimizers()
    loader = make_loader(ds.raw_split("train"), 128, shuffle=True)
    samples, start = [], time.perf_counter()
    for i, raw in enumerate(loader):
        batch = ds.finish(raw)
        loss = module.loss_fn(module.model(batch, module.draw_visible(batch)), batch.target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i % 10 == 0:
            samples.append(memory()["RssAnon"])
    end = memory()
    return {"surveys": len(ds), "steps": i + 1, "seconds": time.perf_counter() - start,
            "anon_first": samples[1] if len(samples) > 1 else samples[0], "anon_peak": max(samples),
            "anon_end": end["RssAnon"], "file_end": end["RssFile"], "hwm": end["VmHWM"]}


def best_rate(fn, n_batches: int, repeats: int = 3) -> float:
    """Batches/s of ``fn()`` (which reads ``n_batches``), best of ``repeats``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return n_batches / min(times)


def read_rates(ds, device: torch.device, n_batches: int = 60) -> tuple[float, list]:
    """Print read rates of the same training batches; return the 2-worker loader's and 4 finished batches."""
    split = ds.split("train")
    order = np.random.default_rng(0).permutation(len(split))
    rows = [split.indices[order[i * 128:(i + 1) * 128]] for i in range(n_batches)]
    arrays = [*ds.tokens.values(), *ds.present.values(), ds.target]

    def plain() -> None:
        for r in rows:
            s = np.sort(r)
            for a in arrays:
                a[s]

    def read() -> None:
        for r in rows:
            ds.read(r)

    def finished() -> None:
        for r in rows:
            ds.finish(ds.read(r))

    def loader(workers: int, to: torch.device | None = None):
        def run() -> None:
            cuda = to is not None and to.type == "cuda"
            for i, raw in enumerate(make_loader(ds.raw_split("train"), 128, True, num_workers=workers, pin_memory=cuda)):
                if to is not None:
                    ds.finish(raw.to(to, non_blocking=cuda))
                if i + 1 == n_batches:
                    break
            if cuda:
                torch.cuda.synchronize()
        return run

    plain(), read()                                                # page cache warm for both
    rates = {"plain numpy read": best_rate(plain, n_batches), "cache read (raw)": best_rate(read, n_batches),
             "read + finish on CPU": best_rate(finished, n_batches)}
    for w in (1, 2):
        rates[f"loader, {w} worker{'s' * (w > 1)}"] = best_rate(loader(w), n_batches, repeats=2)
    if device.type != "cpu":
        rates[f"loader (2) + finish on {device}"] = best_rate(loader(2, device), n_batches, repeats=2)
    limit = rates["plain numpy read"]
    print(f"reads of the same {n_batches} shuffled batches of 128 surveys ({sum(a[:1].nbytes for a in arrays) * 128 / 2**20:.1f} "
          "MiB a batch as stored):")
    for name, rate in rates.items():
        print(f"  {name:<28} {rate:7.1f} batches/s  {rate / limit:5.2f} x the plain read")
    batches = [ds.finish(ds.read(r)) for r in rows[:4]]
    return rates["loader, 2 workers"], batches


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--surveys", type=int, default=20_000, help="surveys to write (GeoPlant: 88,987)")
    p.add_argument("--images", type=int, default=None, help="write JPEG patches for this many surveys only")
    p.add_argument("--species", type=int, default=5016)
    p.add_argument("--workers", type=int, default=2, help="processes decoding files during prepare")
    p.add_argument("--steps", type=int, default=5, help="timed training steps of the paper's model")
    p.add_argument("--workdir", default="/tmp/miam_data_pipeline")
    p.add_argument("--device", default="cpu", help="also time the loader finishing batches on this device (cuda)")
    p.add_argument("--reads-only", action="store_true", help="stop after the read rates (benchmarks/gpu_checks.sh)")
    p.add_argument("--keep", action="store_true", help="keep the written trees")
    p.add_argument("--epoch-memory", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.epoch_memory:
        print(json.dumps(epoch_memory(args.epoch_memory)))
        return
    torch.set_num_threads(2)
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    sizes = {"full": args.surveys} if args.reads_only else {"quarter": max(1000, args.surveys // 4), "full": args.surveys}
    for name, n in sizes.items():
        start = time.perf_counter()
        fixture.write(work / name, seed=0, n_surveys=n, n_species=args.species, species_per_survey=17,
                      n_images=None if args.images is None else min(n, args.images))
        print(f"wrote {n} surveys in the GLC24 layout ({name}) in {time.perf_counter() - start:.0f} s", flush=True)
    root = work / "full"
    warnings.simplefilter("ignore")
    source = GeoPlantSource(root)
    start = time.perf_counter()
    cdir = prepare(source, root / "miam_cache", workers=args.workers)
    prep = time.perf_counter() - start
    if "quarter" in sizes:
        prepare(GeoPlantSource(work / "quarter"), work / "quarter" / "miam_cache", workers=args.workers, progress=False)
    size_mb = sum(f.stat().st_size for f in cdir.rglob("*") if f.is_file()) / 2**20
    ds = load_geoplant(root)
    print(f"\nprepare: {len(ds)} surveys in {prep:.1f} s ({len(ds) / prep:.0f} surveys/s, {args.workers} workers); "
          f"cache {size_mb:.0f} MiB; {ds.task.n_outputs} species kept (> 20 presences)")
    read_rate, batches = read_rates(ds, torch.device(args.device))
    if args.reads_only:
        return
    module = build_module(config(root, 192, 3, 8), ds)
    rate = step_rate(module, batches, args.steps)
    print(f"cache reads (loader, 2 workers): {read_rate:.1f} batches/s of 128 surveys ({read_rate * 128:.0f} surveys/s); "
          f"paper model (192 x 3 layers, {sum(s.n_tokens for s in ds.specs)} tokens, {ds.task.n_outputs} outputs) "
          f"trains at {rate:.2f} steps/s on {torch.get_num_threads()} CPU threads: "
          f"reading is {read_rate / rate:.0f}x faster than training")
    print("\nmemory over one training epoch (small model; fresh process per size):")
    for name in sizes:
        out = subprocess.run([sys.executable, __file__, "--epoch-memory", str(work / name)], capture_output=True,
                             text=True, check=True)
        m = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"  {m['surveys']:>6} surveys, {m['steps']:>4} steps in {m['seconds']:.0f} s: private memory "
              f"{m['anon_first']:.0f} MiB after 10 steps, peak {m['anon_peak']:.0f} MiB, end {m['anon_end']:.0f} MiB; "
              f"mapped file pages {m['file_end']:.0f} MiB (page cache); peak RSS {m['hwm']:.0f} MiB")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
