"""``frozenbench convert-checkpoint``: a published checkpoint -> the canonical backbone checkpoint."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--src", required=True, help="downloaded checkpoint file")
    from frozenbench.checkpoint.layouts import LAYOUTS

    parser.add_argument("--layout", required=True, choices=sorted(LAYOUTS), help="source layout of --src")
    parser.add_argument("--arch", required=True, help="registered architecture the weights belong to")
    parser.add_argument("--meta", default="{}", help="JSON recorded in the checkpoint (task, data, url)")
    parser.add_argument("--out", required=True, help="canonical checkpoint to write")
    parser.add_argument(
        "--download-spec",
        help="the backbone's `checkpoint` config entry as JSON: --src is "
        "verified against its digest (published or recorded) first",
    )
    parser.add_argument("--checksums", help="sha256sum-format file of digests recorded on first download")
    parser.add_argument("--verified", help="marker written by `frozenbench fetch-checkpoint` (spares a second hash)")


def run(args: argparse.Namespace) -> int:
    from frozenbench.checkpoint.convert import convert_file, resolve_arch
    from frozenbench.errors import UserError

    try:
        meta = json.loads(args.meta)
    except json.JSONDecodeError as err:
        raise UserError(f"--meta: not JSON ({err})") from None
    if not isinstance(meta, dict):
        raise UserError(f"--meta: a JSON object is recorded in the checkpoint, not {type(meta).__name__}")
    resolve_arch(args.arch)  # an unknown --arch is refused before any file is read or verified
    if args.download_spec:
        from frozenbench.data.download import ChecksumRecords, RemoteFile, read_marker, verify_consumed

        spec = json.loads(args.download_spec)
        remote = RemoteFile(
            url=spec.get("url", ""), filename=spec["filename"], checksum=spec["checksum"], extract=False
        )
        records = ChecksumRecords(args.checksums) if args.checksums else None
        verify_consumed(Path(args.src), remote, records, remote.filename, read_marker(args.verified))
    report = convert_file(args.src, args.out, args.layout, args.arch, meta=meta)
    print(report.summary())
    print(f"wrote {args.out}")
    return 0
