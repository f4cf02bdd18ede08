"""``frozenbench probe-report``: tabulate the pretraining probes, with margins over random."""

from __future__ import annotations

import argparse

from frozenbench.commands._pairs import parse_pairs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("probes", nargs="+", help="NAME=PATH/probe.json for each pretrained backbone")
    parser.add_argument("--out-json", required=True)
    parser.add_argument("--out-md", required=True)


def run(args: argparse.Namespace) -> int:
    from frozenbench.pretrain.report import write_report

    files = parse_pairs(args.probes, "probe-report")
    rows = write_report(files, args.out_json, args.out_md)
    print(open(args.out_md).read(), end="")
    failing = [r["backbone"] for r in rows if r.get("beats_random") is False]
    if failing:
        print(f"WARNING: not above the random backbone on the probe: {', '.join(failing)}")
    return 0
