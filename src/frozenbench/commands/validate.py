"""``frozenbench validate``: check a dataset folder and report every problem found."""

from __future__ import annotations

import argparse
import sys

from frozenbench.data.validate import VALIDATORS, validate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", required=True, choices=sorted(VALIDATORS))
    parser.add_argument("path", help="dataset folder")


def run(args: argparse.Namespace) -> int:
    report = validate(args.format, args.path)
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for problem in report.problems:
        print(problem, file=sys.stderr)
    status = "ok" if report.ok else f"{len(report.problems)} problem(s)"
    warned = f"; {len(report.warnings)} warning(s)" if report.warnings else ""
    print(f"{args.path}: {args.format}: {status}; {report.files_checked} files checked{warned}")
    return 0 if report.ok else 1
