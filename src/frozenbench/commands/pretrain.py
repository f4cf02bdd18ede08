"""``frozenbench pretrain``: pretrain a mini backbone by one objective and write its canonical checkpoint."""

from __future__ import annotations

import argparse
import json

from frozenbench.engine.device import DEVICE_CHOICES
from frozenbench.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", required=True, help="registered architecture, e.g. convstem_swin_tiny")
    parser.add_argument(
        "--objective", required=True, help="supervised, contrastive, mim or random (frozenbench.models.registry)"
    )
    parser.add_argument("--data", required=True, help="ImageFolder dataset (train/ and val/)")
    parser.add_argument("--options", default="{}", help="pretraining options as JSON (config's pretrain section)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    parser.add_argument(
        "--device", default="auto", choices=DEVICE_CHOICES, help="auto: the GPU when torch sees one, else the CPU"
    )
    parser.add_argument("--out", required=True, help="canonical checkpoint to write")
    parser.add_argument("--run-dir", required=True, help="resumable state, loss log and probe result")


def run(args: argparse.Namespace) -> int:
    import torch

    from frozenbench.engine.device import select_device
    from frozenbench.models.registry import PRETRAIN_OBJECTIVES
    from frozenbench.pretrain.train import PretrainOptions, pretrain

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        options = PretrainOptions.from_config(json.loads(args.options))
    except (json.JSONDecodeError, TypeError) as err:
        raise UserError(f"--options: {err}") from None
    if args.objective not in PRETRAIN_OBJECTIVES:
        raise UserError(f"--objective {args.objective}: choose from {', '.join(PRETRAIN_OBJECTIVES)}")
    pretrain(
        args.arch,
        args.objective,
        args.data,
        args.out,
        args.run_dir,
        options,
        seed=args.seed,
        meta={"name": args.out},
        device=select_device(args.device),
    )
    return 0
