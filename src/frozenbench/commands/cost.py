"""``frozenbench cost``: the price of every cell of a study, and its total, from a benchmark record
(GPU-hours from a GPU record, CPU-hours of one process from a CPU record; docs/cost.md)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from frozenbench.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="study config (e.g. configs/paper.yaml)")
    parser.add_argument(
        "--record",
        required=True,
        help="benchmark record with seconds per step per cell kind: bench/records/gpu_<device>.json "
        "(GPU-hours) or a CPU record (CPU-hours of one process, never GPU-hours)",
    )
    parser.add_argument("--out", help="Markdown file to write (default: print it)")
    parser.add_argument("--json", help="also write every cell's price, rules and sources as JSON to this file")


def run(args: argparse.Namespace) -> int:
    from frozenbench.config import load_config
    from frozenbench.reporting.cost import cost_markdown, study_cost
    from frozenbench.utils.atomic import write_json, write_text

    # read strictly and validated: a duplicate `train:` would skew the cost silently, and the schema
    # fills the defaults (nodes, batch sizes) the price depends on
    config = load_config(args.config)
    try:
        record = json.loads(Path(args.record).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"{args.record}: cannot read the record: {err}") from None
    cost = study_cost(config, record, source=args.record)
    text = cost_markdown(cost)
    if args.json:
        write_json(Path(args.json), cost)
    if args.out:
        write_text(Path(args.out), text)
    else:
        print(text, end="")
    return 0
