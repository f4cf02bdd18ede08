"""``frozenbench convert-checkpoint``: a published checkpoint -> the canonical backbone checkpoint."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--src", required=True, help="downloaded checkpoint file")
    parser.add_argument("--layout", required=True,
                        help="source layout: official_swin, official_swinv2, simmim, moby, mm, timm")
    parser.add_argument("--arch", required=True, help="registered architecture the weights belong to")
    parser.add_argument("--meta", default="{}", help="JSON recorded in the checkpoint (task, data, url)")
    parser.add_argument("--out", required=True, help="canonical checkpoint to write")


def run(args: argparse.Namespace) -> int:
    from frozenbench.checkpoint.convert import convert_file

    report = convert_file(args.src, args.out, args.layout, args.arch, meta=json.loads(args.meta))
    print(report.summary())
    print(f"wrote {args.out}")
    return 0
