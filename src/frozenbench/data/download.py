"""Fetch files over HTTP with resume, retries and checksum verification.

A file is only ever visible under its final name once its digest matched; until
then it lives in ``.<name>.part``, which a later attempt resumes with an HTTP
Range request. Nothing downstream (extraction, conversion) may touch a file
that has not gone through :func:`fetch`.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import socket
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from frozenbench.errors import UserError
from frozenbench.utils.atomic import atomic_dir, write_json

CHUNK = 1 << 20
RECORD_FILE = "checksums.recorded.json"  # sha256 of files whose source publishes no digest
RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}


class DownloadError(UserError):
    """A download that failed for good: names the URL and what went wrong."""


class ChecksumMismatch(DownloadError):
    pass


@dataclass(frozen=True)
class RemoteFile:
    url: str
    filename: str
    checksum: dict[str, str]
    extract: bool = True
    size: int | None = None
    url_list: bool = False

    @classmethod
    def from_config(cls, entry: dict[str, Any]) -> "RemoteFile":
        return cls(url=entry["url"], filename=entry["filename"], checksum=dict(entry["checksum"]),
                   extract=entry.get("extract", True), size=entry.get("size"), url_list=entry.get("url_list", False))


@dataclass
class RetryPolicy:
    attempts: int = 6
    backoff: float = 1.0  # seconds before the 2nd attempt; doubles each time
    max_backoff: float = 60.0
    timeout: float = 60.0  # per socket read: a stalled server counts as a failed attempt
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def delay(self, attempt: int) -> float:
        return min(self.backoff * 2 ** attempt, self.max_backoff)


def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def expected_digest(remote: RemoteFile, dest_dir: Path) -> tuple[str, str | None]:
    """(algorithm, expected hex digest or None when it is unpublished and not yet recorded)."""
    if "unpublished" in remote.checksum:
        recorded = _read_records(dest_dir).get(remote.filename)
        return "sha256", recorded
    (algorithm, value), = remote.checksum.items()
    return algorithm, value


def _read_records(dest_dir: Path) -> dict[str, str]:
    path = dest_dir / RECORD_FILE
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DownloadError(f"{path}: unreadable checksum records ({err})") from None


def _record(dest_dir: Path, filename: str, sha256: str) -> None:
    records = _read_records(dest_dir)
    records[filename] = sha256
    write_json(dest_dir / RECORD_FILE, records)


def verify(path: Path, remote: RemoteFile, dest_dir: Path) -> None:
    if remote.size is not None and path.stat().st_size != remote.size:
        # Checked first: a truncated body must never become the recorded digest of an unpublished file.
        raise ChecksumMismatch(f"{remote.url}: size mismatch: expected {remote.size} bytes, got {path.stat().st_size}")
    algorithm, expected = expected_digest(remote, dest_dir)
    actual = file_digest(path, algorithm)
    if expected is None:
        _record(dest_dir, remote.filename, actual)
        return
    if actual != expected:
        raise ChecksumMismatch(f"{remote.url}: {algorithm} mismatch: expected {expected}, got {actual}")


def _download_to_part(remote: RemoteFile, part: Path, policy: RetryPolicy, log: Callable[[str], None]) -> None:
    """Fill ``part`` with the whole body, resuming and retrying as needed."""
    last_error = "no attempt made"
    for attempt in range(policy.attempts):
        if attempt:
            delay = policy.delay(attempt - 1)
            log(f"retry {attempt}/{policy.attempts - 1} of {remote.url} in {delay:.1f}s ({last_error})")
            policy.sleep(delay)
        have = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(remote.url, headers={"User-Agent": "frozenbench"})
        if have:
            request.add_header("Range", f"bytes={have}-")
        try:
            with urllib.request.urlopen(request, timeout=policy.timeout) as response:
                status = response.status
                total = response.headers.get("Content-Length")
                if have and status == 206:
                    mode, expected_total = "ab", (have + int(total)) if total else None
                else:  # 200: the server ignored the Range header, start over
                    mode, expected_total = "wb", int(total) if total else None
                with open(part, mode) as f:
                    shutil.copyfileobj(response, f, CHUNK)
            size = part.stat().st_size
            if expected_total is not None and size < expected_total:
                last_error = f"connection closed after {size} of {expected_total} bytes"
                continue
            return
        except urllib.error.HTTPError as err:
            if err.code == 416 and have:  # the part already holds the whole file
                return
            if err.code not in RETRYABLE_STATUS:
                raise DownloadError(f"{remote.url}: HTTP {err.code} {err.reason}") from None
            last_error = f"HTTP {err.code}"
        except (urllib.error.URLError, socket.timeout, ConnectionError, TimeoutError, OSError,
                http.client.HTTPException) as err:  # IncompleteRead: a chunked body cut short
            reason = getattr(err, "reason", err)
            last_error = f"{type(err).__name__}: {reason}"
    raise DownloadError(f"{remote.url}: giving up after {policy.attempts} attempts ({last_error})")


def fetch(remote: RemoteFile, dest_dir: str | Path, policy: RetryPolicy | None = None,
          log: Callable[[str], None] = print, state_dir: str | Path | None = None) -> Path:
    """Download ``remote`` into ``dest_dir`` and return the verified file's path.

    An existing final file is re-verified instead of downloaded again. A digest
    mismatch discards the bytes and downloads once more from scratch (a corrupt
    transfer); a second mismatch raises :class:`ChecksumMismatch` naming the
    URL and both digests, and leaves no file under the final name.

    ``state_dir`` holds the partial files and the recorded digests of unpublished files; keep it
    outside a workflow output that a failed job would delete (default: ``dest_dir``).
    """
    policy = policy or RetryPolicy()
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    state_dir = Path(state_dir) if state_dir is not None else dest_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / remote.filename
    part = state_dir / f".{remote.filename}.part"
    if final.exists():
        try:
            verify(final, remote, state_dir)
            log(f"verified existing {final}")
            return final
        except ChecksumMismatch:
            final.unlink()
    for fresh_try in range(2):
        _download_to_part(remote, part, policy, log)
        try:
            verify(part, remote, state_dir)
        except ChecksumMismatch:
            part.unlink(missing_ok=True)
            if fresh_try:
                raise
            log(f"checksum mismatch for {remote.url}; downloading it again from scratch")
            continue
        os.replace(part, final)
        log(f"fetched {remote.url} -> {final}")
        return final
    raise AssertionError("unreachable")


def _safe_members(names: list[str], archive: Path) -> None:
    for name in names:
        if name.startswith("/") or ".." in Path(name).parts:
            raise UserError(f"{archive}: refusing archive member outside the target folder: {name!r}")


def extract(archive: Path, dest: Path) -> None:
    """Unpack a zip or tar archive into ``dest`` (created atomically; must not exist yet)."""
    with atomic_dir(dest, overwrite=False) as tmp:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                _safe_members(zf.namelist(), archive)
                zf.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                _safe_members(tf.getnames(), archive)
                tf.extractall(tmp, filter="data")
        else:
            raise UserError(f"{archive}: not a zip or tar archive")


def fetch_all(files: list[RemoteFile], dest_dir: str | Path, policy: RetryPolicy | None = None,
              log: Callable[[str], None] = print, state_dir: str | Path | None = None) -> list[Path]:
    """Fetch every file; for ``url_list`` files also every archive they list (one URL a line).

    Listed archives carry no published digest: their sha256 is recorded on first
    download and later copies are verified against the record.
    """
    dest_dir = Path(dest_dir)
    state_dir = Path(state_dir) if state_dir is not None else dest_dir
    fetched = []
    for remote in files:
        path = fetch(remote, dest_dir, policy, log, state_dir)
        fetched.append(path)
        if remote.url_list:
            for url in (line.strip() for line in path.read_text().splitlines()):
                if url and not url.startswith("#"):
                    listed = RemoteFile(url=url, filename=url.rstrip("/").rsplit("/", 1)[-1],
                                        checksum={"unpublished": f"listed in {remote.filename}"})
                    sub = remote.filename.removesuffix(".txt")
                    fetched.append(fetch(listed, dest_dir / sub, policy, log, state_dir / sub))
    return fetched
