"""``frozenbench fetch-checkpoint``: download a published checkpoint, verified by checksum."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from frozenbench.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spec", required=True, help="the backbone's `checkpoint` config entry as JSON")
    parser.add_argument("--out-dir", required=True, help="folder the verified file lands in")
    parser.add_argument("--attempts", type=int, default=6)
    parser.add_argument("--backoff", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=60.0)


def run(args: argparse.Namespace) -> int:
    from frozenbench.data.download import RemoteFile, RetryPolicy, fetch

    spec = json.loads(args.spec)
    out_dir = Path(args.out_dir)
    if spec.get("manual_download"):
        target = out_dir / spec["filename"]
        if not target.exists():
            raise UserError(f"{target}: this checkpoint cannot be fetched automatically "
                            f"({spec['manual_download']}); download it by hand to this path")
    remote = RemoteFile(url=spec["url"], filename=spec["filename"], checksum=spec["checksum"], extract=False)
    from frozenbench.commands.download import default_state_dir

    path = fetch(remote, out_dir, RetryPolicy(attempts=args.attempts, backoff=args.backoff, timeout=args.timeout),
                 state_dir=default_state_dir(args.out_dir))
    print(path)
    return 0
