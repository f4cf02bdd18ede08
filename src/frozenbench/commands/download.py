"""``frozenbench download``: fetch a dataset's files with resume, retries and checksum verification."""

from __future__ import annotations

import argparse

from frozenbench.commands._dataset_spec import add_spec_arguments, resolve_spec
from frozenbench.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_spec_arguments(parser)
    parser.add_argument("--out", required=True, help="download folder (verified files only appear here)")
    parser.add_argument("--attempts", type=int, default=6, help="tries per file (default 6)")
    parser.add_argument("--backoff", type=float, default=1.0, help="seconds before the first retry; doubles")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a stalled read may wait")


def run(args: argparse.Namespace) -> int:
    from frozenbench.data.download import RemoteFile, RetryPolicy, fetch_all

    spec = resolve_spec(args)
    if spec["source"] != "download":
        raise UserError(f"dataset has source {spec['source']!r}; nothing to download")
    files = [RemoteFile.from_config(entry) for entry in spec["download"]["files"]]
    policy = RetryPolicy(attempts=args.attempts, backoff=args.backoff, timeout=args.timeout)
    fetched = fetch_all(files, args.out, policy)
    print(f"{args.out}: {len(fetched)} verified file(s)")
    return 0
