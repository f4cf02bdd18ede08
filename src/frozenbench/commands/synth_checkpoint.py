"""``frozenbench synth-checkpoint``: seeded random weights written in a published checkpoint layout."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", required=True, help="registered architecture")
    parser.add_argument("--layout", required=True, help="published layout to write (timm, dinov2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random initialisation")
    parser.add_argument("--out", required=True, help="file to write (atomically)")


def run(args: argparse.Namespace) -> int:
    from frozenbench.checkpoint.convert import write_source_checkpoint

    write_source_checkpoint(args.out, args.arch, args.layout, args.seed)
    print(f"wrote {args.out}: {args.arch} with seed {args.seed}'s random weights in the {args.layout} layout")
    return 0
