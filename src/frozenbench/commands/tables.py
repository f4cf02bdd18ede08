"""``frozenbench tables``: the study tables (Markdown, LaTeX, CSV) and figures (PNG) from the results json alone."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("metrics", nargs="*", help="metrics.json files (what the rule passes)")
    parser.add_argument("--results", help="or: a results folder, every {task}/{backbone}/{mode}/{head}/metrics.json")
    parser.add_argument("--out", required=True, help="folder for the tables and figures")
    parser.add_argument(
        "--plan",
        help="JSON: the study's cells (shown as missing until run), the head per task "
        "of the comparison tables (heads) and the paper comparison's backbone",
    )


def run(args: argparse.Namespace) -> int:
    from frozenbench.errors import UserError
    from frozenbench.reporting.figures import build_figures
    from frozenbench.reporting.tables import build_tables, load_results, to_markdown

    if args.metrics and args.results:
        raise UserError("give metrics.json files or --results, not both")
    # No cells yet (e.g. the paper study before any run): every cell shows as missing.
    source = args.results or list(args.metrics)
    plan = json.loads(args.plan) if args.plan else None
    for table in build_tables(source, args.out, plan):
        print(to_markdown(table))
    build_figures(load_results(source), args.out)
    return 0
