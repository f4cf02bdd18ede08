"""``frozenbench submit``: predict COCO test-dev with a trained cell and write the upload zip."""

from __future__ import annotations

import argparse
import json

from frozenbench.commands.train import add_cell_arguments, cell_of, resolve_cell, set_threads


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_cell_arguments(parser)
    parser.add_argument("--out", required=True, help="zip to write (holds detections_test-dev2017_<alg>_results.json)")
    parser.add_argument("--alg", default="frozenbench", help="algorithm name in the results file name")


def run(args: argparse.Namespace) -> int:
    from frozenbench.cells.run import submit_cell

    resolve_cell(args)
    set_threads(args)
    count = submit_cell(cell_of(args), args.out, args.alg, device=args.device, workers=args.workers)
    print(json.dumps({"detections": count, "out": args.out}))
    return 0
