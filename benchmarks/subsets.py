"""Batched evaluation of all 2^M modality subsets vs one forward pass per subset.

For each setting it times, on the same data and model (weights do not change the cost):

* ``sweep``: :meth:`SubsetEvaluator.predict` on the masks of all 2^M subsets (tokens
  embedded once per data batch, the encoder runs on many masks per pass);
* ``naive``: a Python loop with one ``model(batch, visible)`` call per subset and batch;
* ``full``: 2^M plain forward passes with every token visible (the cost of scoring
  2^M models of the same size once each).

and prints ``naive / sweep`` (speed-up of batching) and ``sweep / full``.

    python benchmarks/subsets.py                       # M = 3 (the demo data) and M = 6, 8
    python benchmarks/subsets.py --hidden replace drop --samples 1024
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from miam.data.dataset import MultimodalDataset
from miam.data.spec import ModalitySpec, TaskSpec
from miam.data.synthetic import make_dataset
from miam.explain.functional import all_coalitions, coalition_masks
from miam.explain.subsets import SubsetEvaluator
from miam.models import build_model


def many_modalities(m: int, n: int, tokens_per_modality: int = 4, seed: int = 0) -> MultimodalDataset:
    """Random tabular data with ``m`` modalities of ``tokens_per_modality`` tokens (timing only)."""
    rng = np.random.default_rng(seed)
    specs = [ModalitySpec(f"m{i}", "tabular", tokens_per_modality) for i in range(m)]
    tokens = {s.name: rng.normal(size=(n, tokens_per_modality, 1)) for s in specs}
    return MultimodalDataset(tokens, (rng.uniform(size=(n, 24)) < 0.3).astype(float), specs,
                             TaskSpec("multilabel", 24))


def best_of(fn, repeats: int) -> float:
    fn()                                                      # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench(label: str, ds, hidden: str, args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    model = build_model(ds.specs, ds.task, d_model=args.d_model, depth=args.depth, heads=args.heads,
                        hidden=hidden).eval()
    evaluator = SubsetEvaluator(model, ds.task, batch_size=args.batch_size, max_rows=args.max_rows)
    m = len(evaluator.names)
    masks = coalition_masks(all_coalitions(m), evaluator.token_group, others_visible=False)   # [2^M, T]
    batches = [ds.__getitems__(list(range(i, min(i + args.batch_size, len(ds)))))
               for i in range(0, len(ds), args.batch_size)]

    def sweep() -> None:
        evaluator.predict(batches, masks)

    @torch.no_grad()
    def naive() -> None:
        for mask in masks:
            for batch in batches:
                model(batch, mask.expand(batch.batch_size, -1))

    @torch.no_grad()
    def full() -> None:
        for _ in range(len(masks)):
            for batch in batches:
                model(batch)

    t_sweep, t_naive, t_full = (best_of(f, args.repeats) for f in (sweep, naive, full))
    print(f"{label:<22} {hidden:<8} {2**m:>6} {t_sweep:>9.3f} {t_naive:>9.3f} {t_full:>9.3f} "
          f"{t_naive / t_sweep:>12.2f} {t_sweep / t_full:>12.2f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=512, help="samples scored per subset")
    ap.add_argument("--many", type=int, nargs="*", default=[6, 8], help="M of the extra many-modality settings")
    ap.add_argument("--hidden", nargs="+", default=["replace", "drop"], choices=["replace", "drop"])
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--max-rows", type=int, help="rows per pass (default: SubsetEvaluator's, per device)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    settings = [("demo data (M=3, T=40)", make_dataset(seed=0, n_sites=args.samples))]
    settings += [(f"tabular M={m} (T={4 * m})", many_modalities(m, args.samples)) for m in args.many]
    print(f"{args.samples} samples, d_model {args.d_model}, depth {args.depth}, {torch.get_num_threads()} threads; "
          f"times in s (best of {args.repeats})")
    print(f"{'setting':<22} {'hidden':<8} {'2^M':>6} {'sweep':>9} {'naive':>9} {'full':>9} "
          f"{'naive/sweep':>12} {'sweep/full':>12}")
    for label, ds in settings:
        for hidden in args.hidden:
            bench(label, ds, hidden, args)


if __name__ == "__main__":
    main()
