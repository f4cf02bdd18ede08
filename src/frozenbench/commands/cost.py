"""``frozenbench cost``: GPU-hours per cell and for the whole study, from a benchmark record."""

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
        help="benchmark record with seconds per step per cell type: bench/records/gpu_<device>.json "
        "(GPU-hours) or a paper_cells CPU record (a CPU projection)",
    )
    parser.add_argument("--out", help="Markdown file to write (default: print it)")


def run(args: argparse.Namespace) -> int:
    from frozenbench.config import read_yaml
    from frozenbench.reporting.cost import cost_markdown, study_cost
    from frozenbench.utils.atomic import write_text

    config = read_yaml(args.config)  # the strict reader: a duplicate `train:` would skew the cost silently
    try:
        record = json.loads(Path(args.record).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read the record: {err}") from None
    if "cells" not in record:
        raise UserError(f"{args.record}: not a benchmark record with per-cell timings (no 'cells')")
    text = cost_markdown(study_cost(config, record))
    if args.out:
        write_text(Path(args.out), text)
    else:
        print(text, end="")
    return 0
