"""What one bad-input case is, and what every case must show when a user runs it.

A builder gets the case's own temporary folder, makes its inputs there (or copies committed
ones from ``tests/data/bad/``) and returns a :class:`Case`: the command a user would type, the
file, URL or config key the error must name, and what must be left untouched afterwards.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

from ..conftest import REPO

BAD = REPO / "tests" / "data" / "bad"


@dataclass
class Case:
    args: list[str]
    """The command a user runs, e.g. ``["frozenbench", "convert-checkpoint", ...]``."""
    named: str | Path
    """The file, URL or config key the error line must name."""
    expected: str
    """Words of the problem that must stand on that same line (or in the one error message)."""
    output: Path | None = None
    """Must not exist afterwards, nor any hidden ``.<name>*`` temporary sibling of it."""
    records: Path | None = None
    """A trusted-checksum file (``checksums/*.sha256``) that must not gain a digest."""
    cwd: Path | None = None
    env: dict[str, str] | None = None
    leaves: tuple[str, ...] = ()
    """Globs (relative to the case's folder) of files a refused run may legitimately leave,
    e.g. a partial download kept for a resume. Anything else new is a failure."""
    secrets: tuple[str, ...] = ()
    """Strings (credentials) that must appear nowhere in the output."""
    timeout: float = 300


Builder = Callable[[Path], Case]


@dataclass
class Snapshot:
    """The files under a folder and the bytes of a record file, before the command runs."""

    files: set[str] = field(default_factory=set)
    record_digest: str | None = None

    @classmethod
    def take(cls, root: Path, records: Path | None) -> Snapshot:
        files = set()
        # an explicit stack, so a hostile deep tree left behind cannot break the check itself (os.walk
        # recurses once per folder level on Python 3.11: RecursionError about a thousand levels down)
        pending = [os.fspath(root)]
        while pending:
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
                    else:
                        files.add(os.path.relpath(entry.path, root))
        digest = None
        if records is not None and records.exists():
            digest = hashlib.sha256(records.read_bytes()).hexdigest()
        return cls(files, digest)

    def new_files(self, after: Snapshot, leaves: tuple[str, ...]) -> list[str]:
        return sorted(f for f in after.files - self.files if not any(fnmatch(f, glob) for glob in leaves))
