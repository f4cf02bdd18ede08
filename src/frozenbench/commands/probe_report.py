"""``frozenbench probe-report``: tabulate the pretraining probes, with margins over random."""

from __future__ import annotations

import argparse

from frozenbench.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("probes", nargs="+", help="NAME=PATH/probe.json for each pretrained backbone")
    parser.add_argument("--out-json", required=True)
    parser.add_argument("--out-md", required=True)


def run(args: argparse.Namespace) -> int:
    from frozenbench.pretrain.report import write_report

    files = {}
    for item in args.probes:
        name, sep, path = item.partition("=")
        if not sep:
            raise UserError(f"expected NAME=PATH, got {item!r}")
        files[name] = path
    rows = write_report(files, args.out_json, args.out_md)
    print(open(args.out_md).read(), end="")
    failing = [r["backbone"] for r in rows if r.get("beats_random") is False]
    if failing:
        print(f"WARNING: not above the random backbone on the probe: {', '.join(failing)}")
    return 0
