"""``frozenbench prepare``: build a dataset folder from its verified downloads."""

from __future__ import annotations

import argparse
import json

from frozenbench.commands._dataset_spec import add_spec_arguments, resolve_spec
from frozenbench.commands.download import add_checksum_arguments, checksum_records


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_spec_arguments(parser)
    parser.add_argument("--downloads", required=True, help="folder written by `frozenbench download`")
    add_checksum_arguments(parser)
    parser.add_argument(
        "--verified",
        help="marker written by `frozenbench download --verified`: files unchanged "
        "since (same size and mtime) are not hashed again",
    )
    parser.add_argument("--out", required=True, help="dataset folder (created atomically)")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes for per-clip work (Kinetics re-encoding); the rule passes its threads",
    )


def run(args: argparse.Namespace) -> int:
    from frozenbench.data.download import read_marker
    from frozenbench.data.prepare import prepare

    summary = prepare(
        resolve_spec(args),
        args.downloads,
        args.out,
        workers=args.workers,
        records=checksum_records(args),
        verified=read_marker(args.verified),
    )
    print(json.dumps({"out": args.out, **summary}))
    return 0
