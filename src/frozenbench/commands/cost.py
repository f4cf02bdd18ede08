"""``frozenbench cost``: the price of every cell of a study, and its total, from a benchmark record
(GPU-hours from a GPU record, CPU-hours of one process from a CPU record; docs/cost.md)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from frozenbench.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="study config (e.g. configs/paper.yaml)")
    parser.add_argument(
        "--record",
        default=None,
        help="benchmark record with seconds per step per cell kind: bench/records/gpu_<device>.json "
        "(GPU-hours) or a CPU record (CPU-hours of one process, never GPU-hours); default the best one "
        "in the repository: the newest GPU smoke record, else the CPU smoke record",
    )
    parser.add_argument("--out", help="Markdown file to write (default: print it)")
    parser.add_argument("--json", help="also write every cell's price, rules and sources as JSON to this file")


def best_record() -> Path:
    """The newest GPU smoke record (``bench/records/gpu_*.json``, schema 2), else the CPU smoke record."""
    from frozenbench.cluster.memory import RECORDS_DIR, default_record_path

    found = default_record_path()
    if found is not None:
        return found
    cpu = RECORDS_DIR / "cpu_2core" / "gpu_smoke_cpu.json"
    if not cpu.exists():
        raise UserError(f"no benchmark record under {RECORDS_DIR}: name one with --record (bench/gpu_smoke.py)")
    return cpu


def run(args: argparse.Namespace) -> int:
    from frozenbench.config import load_config
    from frozenbench.reporting.cost import cost_markdown, study_cost
    from frozenbench.utils.atomic import write_json, write_text

    # read strictly and validated: a duplicate `train:` would skew the cost silently, and the schema
    # fills the defaults (nodes, batch sizes) the price depends on
    config = load_config(args.config)
    if args.record is None:
        args.record = str(best_record())
        print(f"cost: priced from {args.record} (the best record in the repository; --record names another)",
              file=sys.stderr)  # fmt: skip
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
