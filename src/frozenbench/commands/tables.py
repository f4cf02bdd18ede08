"""``frozenbench tables``: the study tables (Markdown, LaTeX, CSV) from the results json alone."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("metrics", nargs="*", help="metrics.json files (what the rule passes)")
    parser.add_argument("--results", help="or: a results folder, every {task}/{backbone}/{mode}/{head}/metrics.json")
    parser.add_argument("--out", required=True, help="folder for the tables")


def run(args: argparse.Namespace) -> int:
    from frozenbench.reporting.tables import build_tables, to_markdown

    from frozenbench.errors import UserError

    if args.metrics and args.results:
        raise UserError("give metrics.json files or --results, not both")
    # No cells yet (e.g. the paper study before any run): every cell shows as missing.
    for table in build_tables(args.results or list(args.metrics), args.out):
        print(to_markdown(table))
    return 0
