"""``frozenbench train``: train the head (frozen) or the whole model (finetune) of one study cell."""

from __future__ import annotations

import argparse
import json


def add_cell_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spec", required=True, help="the task entry as JSON: type, data, img_size, head, train")
    parser.add_argument("--checkpoint", required=True, help="canonical backbone checkpoint")
    parser.add_argument("--mode", required=True, choices=["frozen", "finetune"])
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_cell_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import torch

    from frozenbench.engine.run import train_cell

    if args.threads:
        torch.set_num_threads(args.threads)
    summary = train_cell(json.loads(args.spec), args.checkpoint, args.mode, args.run_dir, args.seed)
    print(json.dumps(summary))
    return 0
