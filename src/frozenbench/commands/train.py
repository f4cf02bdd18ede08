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
    parser.add_argument("--nproc", type=int, default=1,
                        help="ranks on this node (one per GPU): > 1 relaunches itself under torchrun, DeepSpeed ZeRO")


def relaunch_command(args: argparse.Namespace) -> list[str]:
    """``torchrun`` running this same training with ``args.nproc`` ranks on this node."""
    import sys

    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
            "-m", "frozenbench.cli", "train", "--spec", args.spec, "--checkpoint", args.checkpoint,
            "--mode", args.mode, "--run-dir", args.run_dir, "--seed", str(args.seed), "--threads", str(args.threads)]


def run(args: argparse.Namespace) -> int:
    import os
    import subprocess

    import torch

    from frozenbench.engine.run import train_cell

    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return subprocess.call(relaunch_command(args))

    if args.threads:
        torch.set_num_threads(args.threads)
    summary = train_cell(json.loads(args.spec), args.checkpoint, args.mode, args.run_dir, args.seed)
    print(json.dumps(summary))
    return 0
