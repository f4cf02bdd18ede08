"""The sha256 of every file of a dataset folder, each hashed once and then cached.

A dataset's fingerprint must follow the bytes of its images and clips, not only their sizes (a
re-encoded clip or a retouched image often keeps its size). Hashing a 100 GB dataset on every
training run would cost minutes, so a file's digest is reused while its *stat key* is unchanged:

    (inode, size, mtime_ns, ctime_ns)

``mtime_ns`` alone is not enough: ``os.utime`` (``touch -r``, ``cp -p``, ``rsync -t``, ``tar x``)
sets it back after an edit of the same size. ``ctime_ns`` cannot be set from user space: the
kernel moves it on every write, chmod, rename or utime of the inode, so an edit always changes
the key, whatever is restored afterwards. The inode tells a file replaced by another (a rebuilt
dataset) from an edit. The one edit a key cannot see is one that changes the system clock back
as well; ``FROZENBENCH_DIGEST_CACHE=off`` hashes every byte every time.

The cache is one JSON file per dataset folder, under ``$FROZENBENCH_DIGEST_CACHE`` (default
``$XDG_CACHE_HOME/frozenbench/file-digests``), named after the folder's device and inode: the
folder keeps them when it is renamed into place (``atomic_dir``), so the digests computed while a
dataset is built serve its first training run. Nothing is written inside the dataset (a DVC or
read-only dataset stays untouched); a cache that cannot be read or written is only a slower run.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

CHUNK = 1 << 20


def cache_dir() -> Path | None:
    """Where the digest caches live; None when caching is switched off."""
    configured = os.environ.get("FROZENBENCH_DIGEST_CACHE")
    if configured == "off":
        return None
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "frozenbench" / "file-digests"


def hash_file(path: Path) -> str:
    """sha256 of the bytes of ``path`` (read in chunks: memory independent of its size)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def stat_key(stat: os.stat_result) -> list[int]:
    return [stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]


class DigestCache:
    """``{relative path: (stat key, sha256)}`` for the files of one folder; see the module doc."""

    def __init__(self, root: Path) -> None:
        folder = cache_dir()
        self.path = None
        if folder is not None and root.is_dir():
            stat = root.stat()
            self.path = folder / f"{stat.st_dev}-{stat.st_ino}.json"
        self.entries: dict[str, list] = {}
        self.changed = False
        if self.path is not None:
            try:
                loaded = json.loads(self.path.read_text())
                self.entries = loaded if isinstance(loaded, dict) else {}
            except (OSError, ValueError):
                self.entries = {}

    def digest(self, path: Path, rel: str) -> str:
        """The sha256 of ``path``: the cached one while its stat key is unchanged, else hashed now."""
        key = stat_key(path.stat())
        cached = self.entries.get(rel)
        if isinstance(cached, list) and len(cached) == 2 and cached[0] == key:
            return cached[1]
        value = hash_file(path)
        # stat again: a file written while it was hashed gets the later key, so it is hashed again
        # next time instead of caching a digest of bytes it no longer holds
        if stat_key(path.stat()) == key:
            self.entries[rel] = [key, value]
            self.changed = True
        return value

    def save(self, kept: set[str]) -> None:
        """Write the cache, less the entries of files no longer in the folder (``kept``)."""
        stale = set(self.entries) - kept
        for rel in stale:
            del self.entries[rel]
        if self.path is None or not (self.changed or stale):
            return
        from frozenbench.utils.atomic import write_json

        try:
            write_json(self.path, self.entries, indent=None)
        except OSError:
            pass  # a read-only home: the next fingerprint hashes again, it is still right
