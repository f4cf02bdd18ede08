"""Fetch files over HTTP with resume, retries and checksum verification.

A file is only ever visible under its final name once its digest matched; until
then it lives in ``.<name>.part``, which a later attempt resumes with an HTTP
Range request. Nothing downstream (extraction, conversion) may touch a file
that has not gone through :func:`fetch`, and consumers check it again with
:func:`verify_consumed` (cheaply, through the download's verified marker).

Files whose source publishes no digest are *trusted on first use*: the sha256 of
the first complete copy is recorded in a sha256sum-format file meant to be
committed (``checksums/<name>.sha256``), and every later copy, on any machine
that shares the file, must match it. A copy is recorded only when it is provably
whole: its length was announced (Content-Length, Content-Range or a chunked body
that ended properly), each resumed part continued the same remote file (same
ETag / Last-Modified / total size, a Content-Range starting where the part ends).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from frozenbench.errors import UserError
from frozenbench.utils.atomic import atomic_file, write_json

CHUNK = 1 << 20
RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}
SAFE_FILENAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,254}$")
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_UNSATISFIED_RANGE = re.compile(r"^bytes \*/(\d+)$")


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
        return cls(
            url=entry["url"],
            filename=entry["filename"],
            checksum=dict(entry["checksum"]),
            extract=entry.get("extract", True),
            size=entry.get("size"),
            url_list=entry.get("url_list", False),
        )

    @property
    def published(self) -> bool:
        return "unpublished" not in self.checksum


@dataclass
class RetryPolicy:
    attempts: int = 6
    backoff: float = 1.0  # seconds before the 2nd attempt; doubles each time
    max_backoff: float = 60.0
    timeout: float = 60.0  # per socket read: a stalled server counts as a failed attempt
    deadline: float = 12 * 3600.0  # per file, all attempts together: a trickling server never stalls a read
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def delay(self, attempt: int) -> float:
        return min(self.backoff * 2**attempt, self.max_backoff)


def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


class ChecksumRecords:
    """The sha256 of unpublished files, in ``sha256sum`` format (``<hex>  <relative path>``), keyed by
    the file's path inside its download folder. Meant to be committed: the next machine then
    verifies its copies against the first one instead of trusting its own first copy."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def read(self) -> dict[str, str]:
        if not self.path.exists():
            return {}
        records = {}
        for number, line in enumerate(self.path.read_text().splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            match = re.fullmatch(r"([0-9a-f]{64}) [ *](\S.*)", line)
            if not match:
                raise DownloadError(f"{self.path}:{number}: not a sha256sum line: {line[:80]!r}")
            records[match.group(2)] = match.group(1)
        return records

    def get(self, key: str) -> str | None:
        return self.read().get(key)

    def add(self, key: str, sha256: str) -> None:
        records = self.read()
        if records.get(key, sha256) != sha256:
            raise ChecksumMismatch(f"{self.path}: {key} is already recorded as {records[key]}, not {sha256}")
        records[key] = sha256
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(self.path) as tmp:
            tmp.write_text(
                "# sha256 of files whose source publishes none, recorded from their first complete\n"
                "# download (trust on first use): commit this file so other machines verify against it\n"
                + "".join(f"{digest}  {name}\n" for name, digest in sorted(records.items()))
            )


def expected_digest(remote: RemoteFile, records: ChecksumRecords | None, key: str) -> tuple[str, str | None]:
    """(algorithm, expected hex digest or None when it is unpublished and not yet recorded)."""
    if not remote.published:
        return "sha256", records.get(key) if records is not None else None
    ((algorithm, value),) = remote.checksum.items()
    return algorithm, value


def verify(
    path: Path, remote: RemoteFile, records: ChecksumRecords | None, key: str, provably_whole: bool = True
) -> str:
    """Check ``path`` against ``remote``'s digest and return its digest; an unpublished, unrecorded
    digest is recorded, but only from a copy known to be whole."""
    if remote.size is not None and path.stat().st_size != remote.size:
        # Checked first: a truncated body must never become the recorded digest of an unpublished file.
        raise ChecksumMismatch(f"{remote.url}: size mismatch: expected {remote.size} bytes, got {path.stat().st_size}")
    algorithm, expected = expected_digest(remote, records, key)
    actual = file_digest(path, algorithm)
    if expected is None:
        if not provably_whole:
            raise DownloadError(
                f"{remote.url}: the server announced no length (no Content-Length, no chunked encoding), so a "
                f"copy cut short cannot be told from a whole one and its digest is not recorded; check the file and "
                f"pin `checksum: {{sha256: {actual}}}` in the config"
            )
        if records is None:
            raise DownloadError(f"{remote.url}: publishes no digest and no checksum record file was given")
        records.add(key, actual)
        return actual
    if actual != expected:
        source = f"recorded in {records.path}" if not remote.published and records is not None else "published"
        raise ChecksumMismatch(f"{remote.url}: {algorithm} mismatch: expected {expected} ({source}), got {actual}")
    return actual


class _NoDowngradeRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to http(s), and never from https to plain http."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        old, new = urllib.parse.urlsplit(req.full_url).scheme, urllib.parse.urlsplit(newurl).scheme
        if new not in ("http", "https") or (old == "https" and new != "https"):
            raise DownloadError(f"{req.full_url}: refusing a redirect from {old} to {newurl}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_NoDowngradeRedirects())


def check_url(url: str, where: str) -> None:
    if urllib.parse.urlsplit(url).scheme not in ("http", "https") or any(c.isspace() for c in url):
        raise DownloadError(f"{where}: only http(s) URLs are fetched, got {url!r}")


class _Restart(Exception):
    """The partial copy cannot be continued (another remote file, a wrong range): start from byte 0."""


def _validators(headers) -> dict[str, Any]:
    return {"etag": headers.get("ETag"), "last_modified": headers.get("Last-Modified")}


def _same_remote(saved: dict[str, Any], headers, total: int | None) -> bool:
    now = _validators(headers)
    for key in ("etag", "last_modified"):
        if saved.get(key) and now[key] and saved[key] != now[key]:
            return False
    return saved.get("total") is None or total is None or saved["total"] == total


def _download_to_part(remote: RemoteFile, part: Path, policy: RetryPolicy, log: Callable[[str], None]) -> bool:
    """Fill ``part`` with the whole body, resuming and retrying as needed. Returns whether the copy is
    provably whole (its length was announced, or a chunked body ended properly)."""
    check_url(remote.url, remote.filename)
    meta_path = part.with_name(part.name + ".json")  # where the part came from: resume only the same file
    deadline = time.monotonic() + policy.deadline
    last_error = "no attempt made"
    for attempt in range(policy.attempts):
        if attempt:
            delay = policy.delay(attempt - 1)
            log(f"retry {attempt}/{policy.attempts - 1} of {remote.url} in {delay:.1f}s ({last_error})")
            policy.sleep(delay)
        if time.monotonic() > deadline:
            break
        saved = json.loads(meta_path.read_text()) if meta_path.exists() and part.exists() else None
        have = part.stat().st_size if part.exists() and saved is not None else 0
        request = urllib.request.Request(remote.url, headers={"User-Agent": "frozenbench"})
        if have:
            request.add_header("Range", f"bytes={have}-")
            if saved.get("etag") or saved.get("last_modified"):  # a changed file is sent whole (200)
                request.add_header("If-Range", saved.get("etag") or saved["last_modified"])
        try:
            with _OPENER.open(request, timeout=min(policy.timeout, max(1.0, deadline - time.monotonic()))) as response:
                length = response.headers.get("Content-Length")
                chunked = "chunked" in (response.headers.get("Transfer-Encoding") or "").lower()
                if have and response.status == 206:
                    match = _CONTENT_RANGE.match(response.headers.get("Content-Range") or "")
                    total = int(match.group(3)) if match and match.group(3) != "*" else None
                    if not match or int(match.group(1)) != have:
                        raise _Restart(
                            f"answered Range bytes={have}- with Content-Range {response.headers.get('Content-Range')!r}"
                        )
                    if not _same_remote(saved, response.headers, total):
                        raise _Restart("the remote file changed since the partial copy was made")
                    mode, expected_total = (
                        "ab",
                        total if total is not None else (have + int(length) if length else None),
                    )
                else:  # 200: a first request, a server ignoring Range, or a changed file (If-Range)
                    if have:
                        log(f"{remote.url}: sent whole ({response.status}), not resumed; starting over")
                    mode, expected_total = "wb", int(length) if length else None
                    write_json(meta_path, {"url": remote.url, **_validators(response.headers), "total": expected_total})
                with open(part, mode) as f:
                    while chunk := response.read1(CHUNK):  # what has arrived: the deadline is checked often
                        f.write(chunk)
                        if time.monotonic() > deadline:
                            raise DownloadError(
                                f"{remote.url}: not complete after the deadline of {policy.deadline:.0f} s; "
                                f"the partial copy ({part.stat().st_size} bytes) is kept and the next run resumes it"
                            )
            size = part.stat().st_size
            if expected_total is not None and size < expected_total:
                last_error = f"connection closed after {size} of {expected_total} bytes"
                continue
            if expected_total is not None and size > expected_total:
                raise _Restart(f"the partial copy holds {size} bytes, more than the file's {expected_total}")
            meta_path.unlink(missing_ok=True)
            return expected_total is not None or chunked
        except _Restart as err:
            log(f"{remote.url}: {err}; discarding the partial copy")
            last_error = str(err)
            part.unlink(missing_ok=True)
            meta_path.unlink(missing_ok=True)
        except urllib.error.HTTPError as err:
            if err.code == 416 and have:
                match = _UNSATISFIED_RANGE.match(err.headers.get("Content-Range") or "")
                total = int(match.group(1)) if match else None
                if total == have and saved.get("total") == have and _same_remote(saved, err.headers, total):
                    meta_path.unlink(missing_ok=True)
                    return True  # the part already holds the whole, same file
                log(
                    f"{remote.url}: the partial copy ({have} bytes) does not fit the file "
                    f"({total if total is not None else 'unknown'} bytes); discarding it"
                )
                part.unlink(missing_ok=True)
                meta_path.unlink(missing_ok=True)
                last_error = "HTTP 416 on a stale partial copy"
                continue
            if err.code not in RETRYABLE_STATUS:
                raise DownloadError(f"{remote.url}: HTTP {err.code} {err.reason}") from None
            last_error = f"HTTP {err.code}"
        except (
            urllib.error.URLError,
            socket.timeout,
            ConnectionError,
            TimeoutError,
            OSError,
            http.client.HTTPException,
        ) as err:  # IncompleteRead: a chunked body cut short
            if isinstance(getattr(err, "reason", None), DownloadError):
                raise err.reason from None
            reason = getattr(err, "reason", err)
            last_error = f"{type(err).__name__}: {reason}"
    if time.monotonic() > deadline:
        raise DownloadError(
            f"{remote.url}: not complete after the deadline of {policy.deadline:.0f} s "
            f"({last_error}); the partial copy is kept and the next run resumes it"
        )
    raise DownloadError(f"{remote.url}: giving up after {policy.attempts} attempts ({last_error})")


def fetch(
    remote: RemoteFile,
    dest_dir: str | Path,
    policy: RetryPolicy | None = None,
    log: Callable[[str], None] = print,
    state_dir: str | Path | None = None,
    records: ChecksumRecords | None = None,
    key: str | None = None,
) -> Path:
    """Download ``remote`` into ``dest_dir`` and return the verified file's path.

    An existing final file is re-verified instead of downloaded again. A digest
    mismatch discards the bytes and downloads once more from scratch (a corrupt
    transfer); a second mismatch raises :class:`ChecksumMismatch` naming the
    URL and both digests, and leaves no file under the final name.

    ``state_dir`` holds the partial files (default: ``dest_dir``); ``records`` the digests of
    unpublished files, under ``key`` (default: the file name).
    """
    policy = policy or RetryPolicy()
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    state_dir = Path(state_dir) if state_dir is not None else dest_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    key = key or remote.filename
    records = records if records is not None else ChecksumRecords(state_dir / "checksums.sha256")
    final = dest_dir / remote.filename
    part = state_dir / f".{remote.filename}.part"
    if final.exists():
        try:
            verify(final, remote, records, key, provably_whole=False)
            log(f"verified existing {final}")
            return final
        except ChecksumMismatch:
            final.unlink()
        except DownloadError:  # unpublished, unrecorded: a file of unknown origin is not trusted
            final.unlink()
    for fresh_try in range(2):
        whole = _download_to_part(remote, part, policy, log)
        try:
            verify(part, remote, records, key, provably_whole=whole)
        except ChecksumMismatch:
            part.unlink(missing_ok=True)
            if fresh_try:
                raise
            log(f"checksum mismatch for {remote.url}; downloading it again from scratch")
            continue
        except DownloadError:
            part.unlink(missing_ok=True)
            raise
        os.replace(part, final)
        log(f"fetched {remote.url} -> {final}")
        return final
    raise AssertionError("unreachable")


def listed_files(remote: RemoteFile, list_path: Path) -> list[RemoteFile]:
    """The archives a ``url_list`` file names (one http(s) URL a line, ``#`` comments), which carry no
    published digest; refuses unsafe or duplicate file names."""
    listed, seen = [], {}
    for number, line in enumerate(list_path.read_text().splitlines(), 1):
        url = line.strip()
        if not url or url.startswith("#"):
            continue
        where = f"{list_path}:{number}"
        check_url(url, where)
        name = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1])
        if not SAFE_FILENAME.match(name):
            raise DownloadError(f"{where}: unsafe file name {name!r} in {url}")
        if name in seen:
            raise DownloadError(f"{where}: file name {name!r} is already listed on line {seen[name]}")
        seen[name] = number
        listed.append(RemoteFile(url=url, filename=name, checksum={"unpublished": f"listed in {remote.filename}"}))
    return listed


def list_folder(remote: RemoteFile) -> str:
    """The download sub-folder that holds the archives a ``url_list`` file names."""
    return remote.filename.removesuffix(".txt")


def fetch_all(
    files: list[RemoteFile],
    dest_dir: str | Path,
    policy: RetryPolicy | None = None,
    log: Callable[[str], None] = print,
    state_dir: str | Path | None = None,
    records: ChecksumRecords | None = None,
) -> dict[str, str]:
    """Fetch every file; for ``url_list`` files also every archive they list. Returns
    {path inside ``dest_dir``: digest} of every verified file."""
    dest_dir = Path(dest_dir)
    state_dir = Path(state_dir) if state_dir is not None else dest_dir
    fetched = {}
    for remote in files:
        check_url(remote.url, remote.filename)
        path = fetch(remote, dest_dir, policy, log, state_dir, records)
        fetched[remote.filename] = path
        if remote.url_list:
            sub = list_folder(remote)
            for listed in listed_files(remote, path):
                key = f"{sub}/{listed.filename}"
                fetched[key] = fetch(listed, dest_dir / sub, policy, log, state_dir / sub, records, key)
    return {key: str(path) for key, path in fetched.items()}


# -- consumers: check what they read, once per file version ------------------------------------


def write_verified_marker(
    marker: str | Path, dest_dir: str | Path, keys: list[str], files: list[RemoteFile] | None = None
) -> None:
    """Record size, mtime and sha256 of each verified file: consumers then re-check a big archive by
    its stat alone, and hash it again only when it changed."""
    dest_dir = Path(dest_dir)
    entries = {}
    for key in keys:
        path = dest_dir / key
        stat = path.stat()
        entries[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": file_digest(path, "sha256")}
    write_json(marker, {"folder": str(dest_dir), "files": entries})


def verify_consumed(
    path: Path, remote: RemoteFile, records: ChecksumRecords | None, key: str, marker: dict[str, Any] | None = None
) -> None:
    """Refuse to consume ``path`` unless its digest is the published or recorded one. A marker entry
    with the same size and mtime stands for a hash (a file changed in place gets another mtime)."""
    if not path.is_file():
        raise DownloadError(f"{path}: missing; run `frozenbench download` first")
    algorithm, expected = expected_digest(remote, records, key)
    if expected is None:
        where = records.path if records is not None else "no checksum record file"
        raise DownloadError(
            f"{path}: no digest published or recorded (in {where}); it was not fetched by "
            f"`frozenbench download`, which records it"
        )
    stat = path.stat()
    entry = (marker or {}).get(key)
    if (
        entry
        and algorithm == "sha256"
        and entry.get("sha256") == expected
        and entry.get("size") == stat.st_size
        and entry.get("mtime_ns") == stat.st_mtime_ns
    ):
        return
    actual = file_digest(path, algorithm)
    if actual != expected:
        raise ChecksumMismatch(
            f"{path}: {algorithm} mismatch: expected {expected}, got {actual}; the file changed after it was downloaded"
        )


def read_marker(marker: str | Path | None) -> dict[str, Any]:
    if marker is None:
        return {}
    path = Path(marker)
    try:
        return json.loads(path.read_text())["files"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise DownloadError(f"{path}: unreadable verified marker ({err}); run `frozenbench download` again") from None


def verify_downloads(
    files: list[RemoteFile], downloads: Path, records: ChecksumRecords | None, marker: dict[str, Any] | None = None
) -> None:
    """Check every file a dataset consumes (and the archives its URL lists name) before reading it."""
    for remote in files:
        path = downloads / remote.filename
        verify_consumed(path, remote, records, remote.filename, marker)
        if remote.url_list:
            sub = list_folder(remote)
            for listed in listed_files(remote, path):
                key = f"{sub}/{listed.filename}"
                verify_consumed(downloads / key, listed, records, key, marker)
