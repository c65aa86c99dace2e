"""Batched evaluation of all 2^M modality subsets vs one forward pass per subset.

For each setting it times, on the same data and model (weights do not change the cost):

* ``sweep``: :meth:`SubsetEvaluator.predict` on the masks of all 2^M subsets (tokens
  embedded once per data batch, the encoder runs on many masks per pass);
* ``naive``: a Python loop with one ``model(batch, visible)`` call per subset and batch;
* ``full``: 2^M plain forward passes with every token visible (the cost of scoring
  2^M models of the same size once each).

and prints ``naive / sweep`` (speed-up of batching) and ``sweep / full``.

Modes: ``replace`` (mask token, hidden tokens collapsed in eval: one per kind with its
count), ``replace-full`` (the same model run as the full sequence, ``collapse_hidden="never"``:
the cost before the collapse) and ``drop`` (hidden tokens left out).

With ``--token-shapley`` it then trains the demo config for ``--demo-epochs`` epochs and
times local token Shapley values (each sample's output probabilities) of every modality on
its test split, with hidden tokens collapsed and as the full sequence (same seed, same
permutations): wall times and the largest difference between the two sets of values.
(Local values, because global ones are AUROCs: a logit change of 1e-7 can swap two nearly
tied samples and move an AUROC by 1/(n_pos n_neg).)

    python benchmarks/subsets.py                       # M = 3 (the demo data) and M = 6, 8
    python benchmarks/subsets.py --hidden replace drop --samples 1024
    python benchmarks/subsets.py --many --hidden replace --token-shapley
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from miam.data.contract.dataset import MultimodalDataset
from miam.data.contract.spec import ModalitySpec, TaskSpec
from miam.data.synthetic import make_dataset
from miam.evaluation.functional import all_coalitions, coalition_masks
from miam.evaluation.subsets import SubsetEvaluator
from miam.models import build_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step import timeit  # noqa: E402  (interleaved best-of timing, shared with step.py)


def many_modalities(m: int, n: int, tokens_per_modality: int = 4, seed: int = 0) -> MultimodalDataset:
    """Random tabular data with ``m`` modalities of ``tokens_per_modality`` tokens (timing only)."""
    rng = np.random.default_rng(seed)
    specs = [ModalitySpec(f"m{i}", "tabular", tokens_per_modality) for i in range(m)]
    tokens = {s.name: rng.normal(size=(n, tokens_per_modality, 1)) for s in specs}
    return MultimodalDataset(tokens, (rng.uniform(size=(n, 24)) < 0.3).astype(float), specs,
                             TaskSpec("multilabel", 24))


#: benchmark mode -> model options
MODES = {"replace": {"hidden": "replace"}, "replace-full": {"hidden": "replace", "collapse_hidden": "never"},
         "drop": {"hidden": "drop"}}


def bench(label: str, ds, hidden: str, args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    model = build_model(ds.specs, ds.task, d_model=args.d_model, depth=args.depth, heads=args.heads,
                        **MODES[hidden]).eval().to(args.device)
    evaluator = SubsetEvaluator(model, ds.task, batch_size=args.batch_size, max_rows=args.max_rows)
    m = len(evaluator.names)
    masks = coalition_masks(all_coalitions(m), evaluator.token_group, others_visible=False)   # [2^M, T]
    batches = [ds.__getitems__(list(range(i, min(i + args.batch_size, len(ds))))).to(args.device)
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

    t_sweep, t_naive, t_full = timeit([sweep, naive, full], args.repeats, args.device)
    print(f"{label:<22} {hidden:<12} {2**m:>6} {t_sweep:>9.3f} {t_naive:>9.3f} {t_full:>9.3f} "
          f"{t_naive / t_sweep:>12.2f} {t_sweep / t_full:>12.2f}", flush=True)


def token_shapley(args: argparse.Namespace) -> None:
    """Token Shapley of every modality of the demo model: collapsed vs full sequence, same values."""
    import logging
    import warnings

    from miam.cli.common import packaged_config
    from miam.config import load_config
    from miam.explain.shapley import ShapleyTokens
    from miam.training.run import train

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    torch.set_grad_enabled(True)
    cfg = load_config(packaged_config("demo.yaml"), [f"trainer.max_epochs={args.demo_epochs}",
                                                     "trainer.progress_bar=false", f"out_dir={args.workdir}"])
    result = train(cfg)
    torch.set_grad_enabled(False)
    model, test = result.module.model.eval(), result.dataset.split("test")
    print(f"\ntoken Shapley on the demo model ({result.epochs} epochs), {len(test)} test samples, "
          f"{args.permutations} permutations per modality (no early stop), seed 0; times in s")
    print(f"{'modality':<10} {'coalitions':>10} {'full seq':>9} {'collapsed':>9} {'ratio':>6} {'max |diff|':>10}")
    for modality in model.modalities:
        runs = {}
        for mode in ("never", "eval"):
            model.collapse_hidden = mode
            start = time.perf_counter()
            explainer = ShapleyTokens(model, tolerance=1e-12, max_permutations=args.permutations, progress=False,
                                      seed=0)
            res = explainer.attribute(test, modality, value="local")
            runs[mode] = (time.perf_counter() - start, res)
        (t_full, full), (t_coll, coll) = runs["never"], runs["eval"]
        print(f"{modality:<10} {coll.n_evaluations:>10} {t_full:>9.2f} {t_coll:>9.2f} {t_coll / t_full:>6.2f} "
              f"{np.abs(coll.values - full.values).max():>10.1e}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=512, help="samples scored per subset")
    ap.add_argument("--many", type=int, nargs="*", default=[6, 8], help="M of the extra many-modality settings")
    ap.add_argument("--hidden", nargs="+", default=list(MODES), choices=list(MODES))
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--max-rows", type=int, help="rows per pass (default: SubsetEvaluator's, per device)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", type=torch.device, default=torch.device("cpu"))
    ap.add_argument("--token-shapley", action="store_true", help="also time token Shapley on the demo model")
    ap.add_argument("--demo-epochs", type=int, default=3)
    ap.add_argument("--permutations", type=int, default=32, help="token Shapley permutations per modality")
    ap.add_argument("--workdir", default="/tmp/miam_bench_subsets", help="where the demo model is trained")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    settings = [("demo data (M=3, T=40)", make_dataset(seed=0, n_sites=args.samples))]
    settings += [(f"tabular M={m} (T={4 * m})", many_modalities(m, args.samples)) for m in args.many]
    print(f"{args.samples} samples, d_model {args.d_model}, depth {args.depth}, {torch.get_num_threads()} threads; "
          f"device {args.device}; times in s (best of {args.repeats})")
    print(f"{'setting':<22} {'hidden':<12} {'2^M':>6} {'sweep':>9} {'naive':>9} {'full':>9} "
          f"{'naive/sweep':>12} {'sweep/full':>12}")
    for label, ds in settings:
        for hidden in args.hidden:
            bench(label, ds, hidden, args)
    if args.token_shapley:
        token_shapley(args)


if __name__ == "__main__":
    main()
