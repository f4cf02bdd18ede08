"""A dataset's content digest: what a training run's fingerprint holds instead of the dataset's path.

Recorded when the dataset is built (synthesized or prepared) in its ``frozenbench_dataset.json``
and computed again from the files for each run that consumes it; a rebuilt dataset with other
content gets another digest, so the heads trained on the old content are never reloaded as if
they were trained on the new. The digest covers every file's relative path and bytes (images and
clips included: a re-encoded clip or a retouched image often keeps its size); each file's sha256
is cached by its stat key (``file_digests``), so fingerprinting an unchanged dataset again reads
no file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from frozenbench.errors import UserError

MANIFEST = "frozenbench_dataset.json"


def _entries(folder: str) -> Iterator[os.DirEntry]:
    """The entries of ``folder`` by name; an unreadable folder is an error, not a gap in the digest."""
    try:
        with os.scandir(folder) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
    except OSError as err:
        raise UserError(f"{folder}: cannot list this folder of the dataset ({err.strerror})") from None
    return iter(entries)


def dataset_files(root: str | Path) -> Iterator[tuple[str, Path]]:
    """``(relative path, path)`` of every regular file under ``root`` but the hidden ones (a
    component starting with ``.``) and the manifest, in the order of sorted path components (what
    sorting ``Path`` objects gives: ``a/b`` before ``a.txt``). Links are neither listed nor followed.

    Iterative: ``Path.rglob`` and ``os.walk`` recurse once per folder level on Python 3.11, so a
    tree about a thousand folders deep (a hostile archive's) raised ``RecursionError``."""
    pending = [("", _entries(os.fspath(root)))]
    while pending:
        rel, entries = pending[-1]
        entry = next(entries, None)
        if entry is None:
            pending.pop()
            continue
        if entry.name.startswith("."):
            continue
        path = f"{rel}/{entry.name}" if rel else entry.name
        if entry.is_dir(follow_symlinks=False):
            pending.append((path, _entries(entry.path)))
        elif entry.is_file(follow_symlinks=False) and path != MANIFEST:
            yield path, Path(entry.path)


def content_digest(root: str | Path) -> str:
    """sha256 over the sorted file list of ``root``: each file's relative path and sha256."""
    from frozenbench.data.file_digests import DigestCache

    root = Path(root)
    digest = hashlib.sha256()
    cache = DigestCache(root)
    seen = set()
    for rel, path in dataset_files(root):
        seen.add(rel)
        # surrogateescape: a name that is not valid UTF-8 is hashed as the bytes it has on disk
        digest.update(f"{rel}\0{cache.digest(path, rel)}\0".encode("utf-8", "surrogateescape"))
    cache.save(seen)
    return digest.hexdigest()


def dataset_digest(root: str | Path) -> str:
    """The digest of what ``root`` holds now. The one recorded when it was built is not trusted:
    a file edited since (same size, mtime restored) must change the fingerprint; the cache keeps
    this cheap (a stat per file)."""
    return content_digest(root)
