"""``frozenbench synth``: generate one mini dataset in its real format."""

from __future__ import annotations

import argparse
import json

from frozenbench.commands._dataset_spec import add_spec_arguments, resolve_spec
from frozenbench.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_spec_arguments(parser)
    parser.add_argument("--out", required=True, help="output folder (created atomically)")


def run(args: argparse.Namespace) -> int:
    from frozenbench.data.synth import synthesize

    spec = resolve_spec(args)
    if spec["source"] != "synth":
        raise UserError(f"dataset has source {spec['source']!r}; use `frozenbench download` and `prepare`")
    counts = synthesize(spec, args.out)
    print(json.dumps({"out": args.out, "format": spec["format"], "counts": counts}))
    return 0
