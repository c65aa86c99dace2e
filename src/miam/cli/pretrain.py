"""``miam pretrain --config FILE``: masked self-supervised pretraining on unlabelled sites."""

from __future__ import annotations

import argparse

from miam.cli.common import add_config_args, config_from_args, format_table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain", help="pretrain the encoder on unlabelled sites (masked reconstruction)",
                       description="Hide tokens with the masking strategy and learn to reconstruct them from the "
                                   "visible ones, on the unlabelled sites of the config's pretrain section; "
                                   "checkpoints and logs go to out_dir. Fine-tune with miam train --init-from "
                                   "OUT/checkpoints/best.ckpt.")
    add_config_args(p)
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue the run in out_dir from its "
                                                             "checkpoints/last.ckpt")
    again.add_argument("--overwrite", action="store_true", help="replace the run in a non-empty out_dir")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from miam.training.pretrain import pretrain
    from miam.training.run import check_out_dir

    cfg = config_from_args(args)
    check_out_dir(cfg.out_dir, args.resume, args.overwrite)
    result = pretrain(cfg, resume=args.resume)
    pd.DataFrame(result.module.trajectory_).to_csv(result.out_dir / "trajectory.csv", index=False)
    rec = result.reconstruction
    rows = [{"view": k.removeprefix("skill_"), "skill": v} for k, v in rec.items() if k.startswith("skill_")]
    print(f"pretrained on {result.pool.info.get('source')} ({len(result.pool.split('train'))} training, "
          f"{len(result.pool.split('val'))} validation sites), {result.epochs} epochs, {result.seconds:.0f} s")
    print(format_table(rows, ["view", "skill"]))
    print(f"hidden tokens of the masked view (validation): error {rec['error']:.4f} (standardised squared error), "
          f"training mean {rec['baseline']:.4f}")
    print(f"best checkpoint: {result.best_checkpoint}\nfine-tune: miam train --config FILE --init-from "
          f"{result.best_checkpoint}")
    return 0
