"""``frozenbench download``: fetch a dataset's files with resume, retries and checksum verification."""

from __future__ import annotations

import argparse
from pathlib import Path

from frozenbench.commands._dataset_spec import add_spec_arguments, resolve_spec
from frozenbench.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_spec_arguments(parser)
    parser.add_argument("--out", required=True, help="download folder (verified files only appear here)")
    parser.add_argument("--attempts", type=int, default=6, help="tries per file (default 6)")
    parser.add_argument("--backoff", type=float, default=1.0, help="seconds before the first retry; doubles")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a stalled read may wait")
    parser.add_argument("--state-dir", help="partial files and recorded digests (default: .<out>.state beside --out)")


def default_state_dir(out: str) -> str:
    """Beside the output, not inside it: a workflow deletes a failed job's output folder, and the
    partial files (for resume) and the recorded digests must survive that."""
    path = Path(out)
    return str(path.parent / f".{path.name}.state")


def run(args: argparse.Namespace) -> int:
    from frozenbench.data.download import RemoteFile, RetryPolicy, fetch_all

    spec = resolve_spec(args)
    if spec["source"] != "download":
        raise UserError(f"dataset has source {spec['source']!r}; nothing to download")
    files = [RemoteFile.from_config(entry) for entry in spec["download"]["files"]]
    policy = RetryPolicy(attempts=args.attempts, backoff=args.backoff, timeout=args.timeout)
    fetched = fetch_all(files, args.out, policy, state_dir=args.state_dir or default_state_dir(args.out))
    print(f"{args.out}: {len(fetched)} verified file(s)")
    return 0
