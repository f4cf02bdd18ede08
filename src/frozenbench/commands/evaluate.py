"""``frozenbench evaluate``: score a trained cell on the validation split and write metrics.json."""

from __future__ import annotations

import argparse
import json

from frozenbench.commands._pairs import parse_pairs
from frozenbench.commands.train import CELL_FORM, add_cell_arguments, cell_of, resolve_cell, set_threads
from frozenbench.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_cell_arguments(parser)
    parser.add_argument("--out", help="metrics.json to write (with --cell: the DAG's results/<cell>/metrics.json)")
    parser.add_argument("--label", action="append", default=[], help="KEY=VALUE recorded in metrics.json")


def run(args: argparse.Namespace) -> int:
    from frozenbench.cells.run import evaluate_cell

    resolve_cell(args, evaluation=True)
    if not args.out:
        raise UserError(f"--out required (or name one cell: {CELL_FORM})")
    set_threads(args)
    labels = parse_pairs(args.label, "--label")
    record = evaluate_cell(cell_of(args), args.out, labels, device=args.device, workers=args.workers)
    print(json.dumps(record["metrics"]))
    return 0
