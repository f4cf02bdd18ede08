"""``frozenbench fetch-checkpoint``: download a published checkpoint, verified by checksum."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from frozenbench.commands.download import add_retry_arguments, checksum_records, retry_policy
from frozenbench.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spec", required=True, help="the backbone's `checkpoint` config entry as JSON")
    parser.add_argument("--out-dir", required=True, help="folder the verified file lands in")
    parser.add_argument(
        "--checksums",
        required=True,
        help="sha256sum-format file of digests recorded on first download (commit it to share it)",
    )
    parser.add_argument("--verified", help="write this marker (size, mtime, sha256 of the verified file) at the end")
    add_retry_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from frozenbench.data.download import RemoteFile, fetch, write_verified_marker

    spec = json.loads(args.spec)
    out_dir = Path(args.out_dir)
    # the same rules as a dataset's files: what is refused there (an HTML page, a partial answer, a
    # redirect to a host the entry does not allow) is never recorded as this checkpoint's digest
    remote = RemoteFile.from_config({"url": "", **spec, "extract": False})
    records = checksum_records(args)
    if spec.get("manual_download"):
        from frozenbench.data.download import verify

        target = out_dir / spec["filename"]
        if not target.exists():
            raise UserError(
                f"{target}: this checkpoint cannot be fetched automatically "
                f"({spec['manual_download']}); download it by hand to this path"
            )
        verify(target, remote, records, remote.filename)  # a hand-placed copy: its digest is recorded or checked
        path = target
    else:
        path = fetch(remote, out_dir, retry_policy(args), records=records)
    if args.verified:
        write_verified_marker(args.verified, out_dir, [remote.filename])
    print(path)
    return 0
