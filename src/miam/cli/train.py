"""``miam train --config FILE``: train one model, test it on every modality subset."""

from __future__ import annotations

import argparse

from miam.cli.common import add_config_args, config_from_args, format_table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model from a YAML config",
                       description="Train a model as the config says; checkpoints and logs go to out_dir.")
    add_config_args(p)
    p.add_argument("--init-from", metavar="CKPT", help="fine-tune from a miam pretrain checkpoint (sets "
                                                        "pretrain.init_from; pretrain.finetune: full or linear_probe)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue the run in out_dir from its "
                                                             "checkpoints/last.ckpt (the readable checkpoint "
                                                             "that trained furthest if a crash left it "
                                                             "unreadable)")
    again.add_argument("--overwrite", action="store_true", help="replace the run in a non-empty out_dir (its "
                                                                "checkpoints, logs and result tables)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from miam.evaluation.subsets import headline
    from miam.training.run import check_out_dir, summarize, test_subsets, train

    cfg = config_from_args(args)
    if args.init_from:
        cfg = cfg.replace(pretrain={"init_from": args.init_from})
    check_out_dir(cfg.out_dir, args.resume, args.overwrite)
    result = train(cfg, resume=args.resume)
    table = test_subsets(result, cfg.evaluation)
    table.to_csv(result.out_dir / "test_subsets.csv", index=False)
    result.trajectory().to_csv(result.out_dir / "trajectory.csv", index=False)
    print(format_table(table.to_dict("records"), ["kind", "subset", "metric", "value"]))
    print("\n" + headline(summarize(result, table)))
    print(f"best checkpoint: {result.best_checkpoint}")
    return 0
