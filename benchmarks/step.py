"""Cost of MIAM's masking and of the per-modality validation, measured in one run.

For each mode (``replace``: mask token, hidden tokens collapsed in eval; ``replace-full``:
the same model run as the full sequence, ``collapse_hidden="never"``, the cost before the
collapse; ``drop``: hidden tokens left out), prints
  * MIAM training step (draw p, token mask, forward, backward, AdamW step) / the same
    step with no masking (every present token visible);
  * all M unimodal validation passes / one full validation pass: in passes of at most
    ``device_max_rows`` rows (``forward_subsets``' default, what validation runs), batched
    in one forward, and one by one;
then the cost per row of an evaluation pass at several rows per pass on this device
(``row_costs``), which justifies the CPU default and picks the rows per pass elsewhere.

    python benchmarks/step.py                 # paper-size model (width 192, 3 layers, 8 heads)
    python benchmarks/step.py --d-model 64 --depth 2 --heads 4 --device cuda
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import torch

from miam.data.synthetic import make_dataset
from miam.masking import get_strategy, token_mask
from miam.models import TaskLoss, TokenModel
from miam.models.token_model import CPU_MAX_ROWS, MEASURED_ROWS, device_max_rows, row_costs


#: benchmark mode -> TokenModel options
MODES = {"replace": {"hidden": "replace"}, "replace-full": {"hidden": "replace", "collapse_hidden": "never"},
         "drop": {"hidden": "drop"}}
#: rows per pass measured on CPU
CPU_ROWS = (64, 256, 512, 1024, 2048)


def timeit(fns: Sequence[Callable[[], object]], repeats: int, device: torch.device) -> list[float]:
    """Best time of each of ``fns``, run in turn ``repeats`` times (interleaved: a loaded machine
    slows all of them alike, so their ratios hold)."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, t in zip(fns, times):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            t.append(time.perf_counter() - t0)
    return [min(t) for t in times]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--d-model", type=int, default=192)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--eval-batch-size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    args = ap.parse_args()
    device = torch.device(args.device)
    ds = make_dataset(seed=0, n_sites=2000)
    batch = ds.__getitems__(list(range(args.batch_size))).to(device)
    eval_batch = ds.__getitems__(list(range(args.eval_batch_size))).to(device)
    names = ds.modalities
    print(f"device {device}, width {args.d_model}, depth {args.depth}, heads {args.heads}, "
          f"batch {args.batch_size}, tokens {sum(s.n_tokens for s in ds.specs)} over {len(names)} modalities")
    print(f"{'mode':12s} {'step ms':>8s} {'no-mask ms':>10s} {'ratio':>6s} | {'full val ms':>11s} "
          f"{'M uni chunked':>13s} {'ratio':>6s} {'M uni 1 pass':>12s} {'ratio':>6s} {'M uni loop':>10s} {'ratio':>6s}")
    for mode in args.modes:
        options = MODES[mode]
        torch.manual_seed(0)
        model = TokenModel(ds.specs, ds.task, args.d_model, args.depth, args.heads, **options).to(device)
        loss_fn = TaskLoss("multilabel", torch.as_tensor(ds.target.sum(0)), len(ds)).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        strategy = get_strategy("miam", names)
        gen = torch.Generator(device=device).manual_seed(0)
        token_modality = model.token_modality
        present = batch.present_flat(names)

        def step(masked: bool) -> None:
            visible = present
            if masked:
                p = strategy.sample(batch.batch_size, gen)
                visible = token_mask(p, present, gen, token_modality)
            loss = loss_fn(model(batch, visible), batch.target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        t_miam, t_plain = timeit([lambda: step(True), lambda: step(False)], args.repeats, device)
        model.eval()
        t_total = model.n_tokens
        uni = torch.stack([token_modality == i for i in range(len(names))])
        full = torch.ones(1, t_total, dtype=torch.bool, device=device)
        with torch.no_grad():
            t_full, t_chunk, t_uni, t_loop = timeit([
                lambda: model.forward_subsets(eval_batch, full),
                lambda: model.forward_subsets(eval_batch, uni),
                lambda: model.forward_subsets(eval_batch, uni, max_rows=len(uni) * eval_batch.batch_size),
                lambda: [model(eval_batch, m.expand(eval_batch.batch_size, -1)) for m in uni],
            ], args.repeats, device)
        print(f"{mode:12s} {t_miam * 1e3:8.1f} {t_plain * 1e3:10.1f} {t_miam / t_plain:6.2f} | "
              f"{t_full * 1e3:11.1f} {t_chunk * 1e3:13.1f} {t_chunk / t_full:6.2f} {t_uni * 1e3:12.1f} "
              f"{t_uni / t_full:6.2f} {t_loop * 1e3:10.1f} {t_loop / t_full:6.2f}", flush=True)
    torch.manual_seed(0)
    model = TokenModel(ds.specs, ds.task, args.d_model, args.depth, args.heads).to(device).eval()
    costs = row_costs(model, eval_batch, CPU_ROWS if device.type == "cpu" else MEASURED_ROWS)
    print("evaluation cost per row (all tokens visible) at rows per pass: "
          + ", ".join(f"{n}: {c * 1e6:.0f} us" for n, c in costs.items()))
    print(f"rows per pass on {device}: {device_max_rows(model, eval_batch)}"
          + (f" (CPU_MAX_ROWS = {CPU_MAX_ROWS})" if device.type == "cpu" else " (measured, cached per device)"))


if __name__ == "__main__":
    main()
