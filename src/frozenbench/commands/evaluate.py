"""``frozenbench evaluate``: score a trained cell on the validation split and write metrics.json."""

from __future__ import annotations

import argparse
import json

from frozenbench.commands._pairs import parse_pairs
from frozenbench.commands.train import add_cell_arguments, set_threads


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_cell_arguments(parser)
    parser.add_argument("--out", required=True, help="metrics.json to write")
    parser.add_argument("--label", action="append", default=[], help="KEY=VALUE recorded in metrics.json")


def run(args: argparse.Namespace) -> int:
    from frozenbench.engine.run import evaluate_cell

    set_threads(args)
    labels = parse_pairs(args.label, "--label")
    record = evaluate_cell(
        json.loads(args.spec),
        args.checkpoint,
        args.mode,
        args.run_dir,
        args.out,
        args.seed,
        labels,
        device=args.device,
        workers=args.workers,
    )
    print(json.dumps(record["metrics"]))
    return 0
