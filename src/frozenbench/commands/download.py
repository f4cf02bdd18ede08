"""``frozenbench download``: fetch a dataset's files with resume, retries and checksum verification."""

from __future__ import annotations

import argparse
from pathlib import Path

from frozenbench.commands._dataset_spec import add_spec_arguments, resolve_spec
from frozenbench.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_spec_arguments(parser)
    parser.add_argument("--out", required=True, help="download folder (verified files only appear here)")
    add_checksum_arguments(parser)
    parser.add_argument("--verified", help="write this marker (size, mtime, sha256 of every verified file) at the end")
    parser.add_argument("--state-dir", help="partial files (default: the download folder itself)")
    add_retry_arguments(parser)


def add_checksum_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checksums",
        help="sha256sum-format file of digests recorded on first download, shared by "
        "committing it (default with --dataset: checksums/datasets/<dataset>.sha256)",
    )


def add_retry_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--attempts", type=int, default=6, help="tries per file (default 6)")
    parser.add_argument("--backoff", type=float, default=1.0, help="seconds before the first retry; doubles")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a stalled read may wait")
    parser.add_argument(
        "--deadline",
        type=float,
        default=12 * 3600.0,
        help="seconds one file may take over all attempts (default 12 h); the partial copy is kept",
    )


def retry_policy(args: argparse.Namespace):
    from frozenbench.data.download import RetryPolicy

    return RetryPolicy(attempts=args.attempts, backoff=args.backoff, timeout=args.timeout, deadline=args.deadline)


def checksum_records(args: argparse.Namespace):
    from frozenbench.data.download import ChecksumRecords

    if args.checksums:
        return ChecksumRecords(args.checksums)
    if getattr(args, "dataset", None):
        return ChecksumRecords(Path("checksums") / "datasets" / f"{args.dataset}.sha256")
    raise UserError("--checksums is needed with --spec (where first-download digests are recorded and checked)")


def run(args: argparse.Namespace) -> int:
    from frozenbench.data.download import RemoteFile, fetch_all, write_verified_marker

    spec = resolve_spec(args)
    if spec["source"] != "download":
        raise UserError(f"dataset has source {spec['source']!r}; nothing to download")
    allowed_hosts = spec["download"].get("allowed_hosts", ())
    files = [RemoteFile.from_config(entry, allowed_hosts) for entry in spec["download"]["files"]]
    fetched = fetch_all(files, args.out, retry_policy(args), state_dir=args.state_dir, records=checksum_records(args))
    if args.verified:
        write_verified_marker(args.verified, args.out, list(fetched))
    print(f"{args.out}: {len(fetched)} verified file(s)")
    return 0
