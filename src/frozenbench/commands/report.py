"""``frozenbench report``: one self-contained HTML page of the tables, figures and probes."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tables", required=True, help="folder with the tables (*.csv, *.md) and figures (*.png)")
    parser.add_argument("--probe", default="", help="pretraining probe table (probe.md), if any")
    parser.add_argument("--out", required=True, help="HTML file to write")


def run(args: argparse.Namespace) -> int:
    from frozenbench.reporting.html import build_report

    build_report(args.tables, args.out, args.probe or None)
    return 0
