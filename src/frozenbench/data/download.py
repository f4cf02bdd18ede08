"""Fetch files over HTTP with resume, retries and checksum verification.

A file is only ever visible under its final name once its digest matched; until
then it lives in ``.<name>.part``, which a later attempt resumes with an HTTP
Range request. Nothing downstream (extraction, conversion) may touch a file
that has not gone through :func:`fetch`, and consumers check it again with
:func:`verify_consumed` (cheaply, through the download's verified marker).

Files whose source publishes no digest are *trusted on first use*: the sha256 of
the first complete copy is recorded in a sha256sum-format file meant to be
committed (``checksums/<name>.sha256``), and every later copy, on any machine
that shares the file, must match it. A wrong first copy would make every
collaborator refuse the real file, so a copy is recorded only when it is provably
the file:

- every answer is a 200, or a 206 to a Range request, whose Content-Range and
  Content-Length agree with the request and with each other (a 206 or a partial
  Content-Range answering a plain request is a part, not the file);
- the body is the raw file: no HTML page (an error or login page) where an archive
  or checkpoint is expected, no Content-Encoding (urllib does not decode it), and
  not longer than its Content-Length (read to the end of the connection);
- its length was announced (Content-Length, Content-Range or a chunked body that
  ended properly), and each resumed part continued the same remote file: the part's
  ETag / Last-Modified is sent as If-Range and must come back unchanged or, from a
  server that sends neither, the resume re-fetches the last bytes held and they must
  match;
- a redirect to another host (host:port) is followed only when the config lists
  that host in ``allowed_hosts``.

A refusal names the URL with its credentials masked (:func:`mask_url`) and says what
to pin; a published (or already recorded) digest decides on its own.
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

from frozenbench.config import mask_secrets as mask_url  # one masking rule for config and downloads
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
    allowed_hosts: tuple[str, ...] = ()  # hosts a redirect may lead to besides the URL's own

    @classmethod
    def from_config(cls, entry: dict[str, Any], allowed_hosts: list[str] | tuple[str, ...] = ()) -> "RemoteFile":
        """``entry``: a download file (or checkpoint) config entry; ``allowed_hosts``: its dataset's."""
        return cls(
            url=entry["url"],
            filename=entry["filename"],
            checksum=dict(entry["checksum"]),
            extract=entry.get("extract", True),
            size=entry.get("size"),
            url_list=entry.get("url_list", False),
            allowed_hosts=(*allowed_hosts, *entry.get("allowed_hosts", ())),
        )

    @property
    def published(self) -> bool:
        return "unpublished" not in self.checksum

    @property
    def shown(self) -> str:
        """The URL as messages print it: credentials masked."""
        return mask_url(self.url)


@dataclass
class RetryPolicy:
    attempts: int = 6
    backoff: float = 1.0  # seconds before the 2nd attempt; doubles each time
    max_backoff: float = 60.0
    timeout: float = 60.0  # per socket read: a stalled server counts as a failed attempt
    deadline: float = 12 * 3600.0  # per file, all attempts together: a trickling server never stalls a read
    overlap: int = 1 << 16  # bytes a resume fetches again before the held end, compared with the part
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
        raise ChecksumMismatch(
            f"{remote.shown}: size mismatch: expected {remote.size} bytes, got {path.stat().st_size}"
        )
    algorithm, expected = expected_digest(remote, records, key)
    actual = file_digest(path, algorithm)
    if expected is None:
        if not provably_whole:
            raise DownloadError(
                f"{remote.shown}: the server announced no length (no Content-Length, no chunked encoding), so a "
                f"copy cut short cannot be told from a whole one and its digest is not recorded; check the file and "
                f"pin `checksum: {{sha256: {actual}}}` in the config"
            )
        if records is None:
            raise DownloadError(f"{remote.shown}: publishes no digest and no checksum record file was given")
        records.add(key, actual)
        return actual
    if actual != expected:
        source = f"recorded in {records.path}" if not remote.published and records is not None else "published"
        raise ChecksumMismatch(f"{remote.shown}: {algorithm} mismatch: expected {expected} ({source}), got {actual}")
    return actual


def _origin(url: str) -> tuple[str, int | None]:
    parts = urllib.parse.urlsplit(url)
    return (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}.get(parts.scheme)


def _host_allowed(url: str, home: str, allowed: tuple[str, ...]) -> bool:
    """Whether a redirect to ``url`` stays on the host of ``home`` (an upgrade from http to https
    on the default ports included) or goes to a host in ``allowed`` (``name`` or ``name:port``)."""
    host, port = _origin(url)
    home_host, home_port = _origin(home)
    if host == home_host and (port == home_port or (home_port, port) == (80, 443)):
        return True
    for entry in allowed:
        name, _, entry_port = entry.lower().partition(":")
        if name == host and (not entry_port or (entry_port.isdigit() and int(entry_port) == port)):
            return True
    return False


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to http(s), never from https to plain http, and to another host
    (host:port origin) only when the config allows that host: a mirror that sends the request
    elsewhere must not decide, unseen, which bytes become the trusted first copy."""

    def __init__(self, remote: RemoteFile) -> None:
        super().__init__()
        self.remote = remote

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        shown, old, new = self.remote.shown, urllib.parse.urlsplit(req.full_url).scheme, urllib.parse.urlsplit(newurl)
        if new.scheme not in ("http", "https") or (old == "https" and new.scheme != "https"):
            raise DownloadError(
                f"{shown}: refusing a redirect from {old} to {mask_url(newurl)}; "
                f"set `url` to the file's https location or pin its sha256 in the config"
            )
        if not _host_allowed(newurl, self.remote.url, self.remote.allowed_hosts):
            host = new.hostname if new.port is None else f"{new.hostname}:{new.port}"
            raise DownloadError(
                f"{shown}: redirected to another host, {mask_url(newurl)}; refused: add host {host} to "
                f"allowed_hosts in the config (of this file, its dataset's download or its checkpoint) if that "
                f"host serves this file"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _request(url: str) -> urllib.request.Request:
    """A GET for the raw bytes of ``url``: urllib does not decode a Content-Encoding."""
    return urllib.request.Request(url, headers={"User-Agent": "frozenbench", "Accept-Encoding": "identity"})


def check_url(url: str, where: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or any(c.isspace() for c in url):
        raise DownloadError(f"{where}: only http(s) URLs are fetched, got {mask_url(url)!r}")
    if "@" in parts.netloc:  # urllib would take the password for a port and print it in its error
        raise DownloadError(
            f"{where}: credentials in the URL {mask_url(url)}: the downloader sends none; remove them, fetch "
            f"the file by hand and pin its sha256 in the config"
        )


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


def _if_range(saved: dict[str, Any]) -> str | None:
    """The validator a resume sends as If-Range (a weak ETag may not be: RFC 9110 13.1.5)."""
    etag = saved.get("etag")
    return etag if etag and not etag.startswith("W/") else saved.get("last_modified")


_NOT_RECORDED = "its digest is not recorded as trusted"


def _refuse_unlike_the_file(remote: RemoteFile, headers) -> None:
    """A first copy (no digest to check it against) is refused when the answer says it is not the
    file's raw bytes: an HTML page (an error or login page) or a body compressed for the transfer."""
    encoding = (headers.get("Content-Encoding") or "identity").strip().lower()
    if encoding != "identity":
        raise DownloadError(
            f"{remote.shown}: answered with Content-Encoding: {encoding} to a request for the raw bytes, so the "
            f"body is not the file itself; {_NOT_RECORDED}: check the file and pin its sha256 in the config"
        )
    content_type = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if content_type in ("text/html", "application/xhtml+xml") and not remote.filename.lower().endswith(
        (".html", ".htm")
    ):
        raise DownloadError(
            f"{remote.shown}: answered with an HTML page (Content-Type: {content_type}), not {remote.filename} "
            f"(an error or login page?); {_NOT_RECORDED}: check the URL, or pin its sha256 in the config"
        )


def _content_length(remote: RemoteFile, headers) -> int | None:
    value = headers.get("Content-Length")
    if value is None:
        return None
    if not value.strip().isdigit():
        raise DownloadError(f"{remote.shown}: unreadable Content-Length {value!r}; pin its sha256 in the config")
    return int(value)


def _read_content_range(content_range: str | None, length: int | None) -> tuple[int | None, int | None, bool]:
    """(first byte, total size, whether the range describes a body that runs to the file's end)."""
    match = _CONTENT_RANGE.match(content_range or "")
    first, last = (int(match.group(1)), int(match.group(2))) if match else (None, None)
    total = int(match.group(3)) if match and match.group(3) != "*" else None
    # a whole answer: the range covers the body and ends at the total; a resume runs to the end too
    consistent = (
        match is not None
        and total is not None
        and last + 1 == total
        and first <= last
        and (length is None or length == last - first + 1)
    )
    return first, total, consistent


def _check_answer(
    remote: RemoteFile,
    response,
    have: int,
    start: int,
    saved: dict[str, Any] | None,
    validator: str | None,
    first_copy: bool,
) -> tuple[str, int | None, int | None]:
    """How the answer to a request for bytes ``start``- (``have`` held, ``validator`` sent as
    If-Range) continues the copy:
    (open mode, the file's total size if known, Content-Length). Refuses (DownloadError) an answer
    that cannot be the file; raises _Restart when the held part cannot be continued."""
    headers, status = response.headers, response.status
    if status not in (200, 206):
        raise DownloadError(
            f"{remote.shown}: answered HTTP {status} {response.reason}, neither the file (200) nor a part "
            f"of it (206); {_NOT_RECORDED}: check the URL"
        )
    if first_copy:
        _refuse_unlike_the_file(remote, headers)
    length = _content_length(remote, headers)
    content_range = headers.get("Content-Range")
    first, total, consistent = _read_content_range(content_range, length)
    if status == 206 and not have:
        raise DownloadError(
            f"{remote.shown}: answered a request without Range with 206 Partial Content "
            f"(Content-Range {content_range!r}): a part of the file, not the file; {_NOT_RECORDED}: try again "
            f"later or pin its sha256 in the config"
        )
    if status == 206:
        if first != start:
            raise _Restart(f"answered Range bytes={start}- with Content-Range {content_range!r}")
        if not consistent:
            raise _Restart(f"answered Range bytes={start}- with an inconsistent Content-Range {content_range!r}")
        if not _same_remote(saved, headers, total):
            raise _Restart("the remote file changed since the partial copy was made (another ETag, date or size)")
        if validator and validator not in (headers.get("ETag"), headers.get("Last-Modified")):
            raise _Restart(f"the partial answer does not carry the validator {validator} it was asked for")
        return "ab", total, length
    if content_range is not None and not (consistent and first == 0):
        raise DownloadError(
            f"{remote.shown}: answered 200 with Content-Range {content_range!r} and Content-Length {length}, "
            f"which do not describe one whole file; {_NOT_RECORDED}: pin its sha256 in the config"
        )
    return "wb", total if content_range is not None else length, length


def _shorten_read_timeout(response, seconds: float) -> None:
    """Once the announced length has arrived, wait only briefly for more: a server keeping the
    connection open despite ``Connection: close`` then costs a second, not a full read timeout."""
    sock = getattr(getattr(response.fp, "raw", None), "_sock", None)
    if sock is not None:
        sock.settimeout(seconds)


def _longer_than_announced(remote: RemoteFile, length: int) -> DownloadError:
    """The refusal of a first copy whose body runs past its Content-Length."""
    return DownloadError(
        f"{remote.shown}: the body is longer than its Content-Length ({length} bytes), so a whole "
        f"copy cannot be told from a cut one; {_NOT_RECORDED}: pin its sha256 in the config"
    )


def _past_overlap(held: bytes, chunk: bytes) -> tuple[bytes, bytes]:
    """(the overlap still to compare, ``chunk`` after it); _Restart where the chunk differs from the held bytes."""
    n = min(len(held), len(chunk))
    if chunk[:n] != held[:n]:
        raise _Restart(
            "the re-fetched bytes before the end of the partial copy differ from it: the file changed on the server"
        )
    return held[n:], chunk[n:]


def _receive(
    remote: RemoteFile,
    response,
    part: Path,
    mode: str,
    held: bytes,
    length: int | None,
    first_copy: bool,
    deadline: float,
    policy: RetryPolicy,
) -> bool:
    """Write the body to ``part`` (appending after checking that it starts with ``held``, the
    overlap re-fetched before the held end). Reads past Content-Length to the end of the
    connection: a body longer than announced was cut by the length, so the copy is not whole.
    Returns whether the announced length can be trusted."""
    if length is not None and not response.chunked:
        response.length = None  # http.client would stop at Content-Length and hide the rest
    received, longer = 0, False
    with open(part, mode) as f:
        while True:
            try:
                chunk = response.read1(CHUNK)  # what has arrived: the deadline is checked often
            except TimeoutError:
                if length is not None and received >= length:
                    break  # the announced body is complete and nothing more came
                raise
            if not chunk:
                break
            received += len(chunk)
            if length is not None and received > length and not longer:
                if first_copy:
                    f.close()
                    part.unlink(missing_ok=True)
                    raise _longer_than_announced(remote, length)
                longer = True  # a published or recorded digest decides
            if held:
                held, chunk = _past_overlap(held, chunk)
            f.write(chunk)
            if length is not None and received == length:
                _shorten_read_timeout(response, min(1.0, policy.timeout))
            if time.monotonic() > deadline:
                raise DownloadError(
                    f"{remote.shown}: not complete after the deadline of {policy.deadline:.0f} s; the partial copy "
                    f"({part.stat().st_size} bytes) is kept and the next run resumes it"
                )
    if held:  # cut inside the overlap: nothing was appended, the part is as it was
        raise ConnectionError(f"connection closed inside the {len(held)}-byte overlap")
    return not longer


class _Incomplete(Exception):
    """The connection closed before the whole file arrived: the part is kept and resumed."""


@dataclass(frozen=True)
class _Held:
    """What the partial copy holds before an attempt, and where that attempt's request starts."""

    saved: dict[str, Any] | None  # the note of where the part came from (None: no part to resume)
    have: int  # bytes held
    start: int  # the first byte asked for (before ``have`` when no validator proves the same file)
    validator: str | None  # sent as If-Range


def _held(part: Path, meta_path: Path, overlap: int) -> _Held:
    """The part's state: the same file is proven by its validator (a changed file is sent whole, 200),
    or else by bytes re-fetched before the held end that must match the part."""
    saved = json.loads(meta_path.read_text()) if meta_path.exists() and part.exists() else None
    have = part.stat().st_size if part.exists() and saved is not None else 0
    validator = _if_range(saved) if have else None
    start = have if validator else max(0, have - overlap)
    return _Held(saved, have, start, validator)


def _resume_request(remote: RemoteFile, held: _Held) -> urllib.request.Request:
    """The request for ``remote`` from ``held.start`` on (If-Range where a validator is known)."""
    request = _request(remote.url)
    if held.have:
        request.add_header("Range", f"bytes={held.start}-")
        if held.validator:
            request.add_header("If-Range", held.validator)
    return request


def _take_answer(
    remote: RemoteFile,
    response,
    part: Path,
    meta_path: Path,
    held: _Held,
    first_copy: bool,
    deadline: float,
    policy: RetryPolicy,
    log: Callable[[str], None],
) -> tuple[int | None, bool]:
    """The answer's body written to ``part`` (appended or from scratch): (the file's total size where
    the announced length can be trusted, else None; whether the body was chunked)."""
    mode, expected_total, length = _check_answer(
        remote, response, held.have, held.start, held.saved, held.validator, first_copy
    )
    overlap = b""
    if mode == "ab":
        with open(part, "rb") as f:
            f.seek(held.start)
            overlap = f.read(held.have - held.start)
    else:  # a first request, a server ignoring Range, or a changed file (If-Range)
        if held.have:
            log(f"{remote.shown}: sent whole ({response.status}), not resumed; starting over")
        write_json(meta_path, {"url": remote.shown, **_validators(response.headers), "total": length})
    trusted_length = _receive(remote, response, part, mode, overlap, length, first_copy, deadline, policy)
    return (expected_total if trusted_length else None), response.chunked


def _whole_copy(part: Path, meta_path: Path, expected_total: int | None, chunked: bool) -> bool:
    """Whether the finished part is provably whole; raises _Incomplete when it is short of the total
    and _Restart when it holds more."""
    size = part.stat().st_size
    if expected_total is not None and size < expected_total:
        raise _Incomplete(f"connection closed after {size} of {expected_total} bytes")
    if expected_total is not None and size > expected_total:
        raise _Restart(f"the partial copy holds {size} bytes, more than the file's {expected_total}")
    meta_path.unlink(missing_ok=True)
    return expected_total is not None or chunked


def _whole_already(
    remote: RemoteFile,
    err: urllib.error.HTTPError,
    part: Path,
    meta_path: Path,
    held: _Held,
    log: Callable[[str], None],
) -> bool:
    """After HTTP 416 to a resume: True when the part already holds the whole, same file; else the
    stale part is discarded."""
    match = _UNSATISFIED_RANGE.match(err.headers.get("Content-Range") or "")
    total = int(match.group(1)) if match else None
    if total == held.have and held.saved.get("total") == held.have and _same_remote(held.saved, err.headers, total):
        meta_path.unlink(missing_ok=True)
        return True
    log(
        f"{remote.shown}: the partial copy ({held.have} bytes) does not fit the file "
        f"({total if total is not None else 'unknown'} bytes); discarding it"
    )
    part.unlink(missing_ok=True)
    meta_path.unlink(missing_ok=True)
    return False


def _retryable_http(remote: RemoteFile, err: urllib.error.HTTPError) -> str:
    """The retry reason for an HTTP error worth another attempt; DownloadError for any other."""
    if 300 <= err.code < 400:
        raise DownloadError(
            f"{remote.shown}: a redirect that cannot be followed (HTTP {err.code}: a redirect loop, too many "
            f"redirects or no Location); set `url` to the file's direct location"
        ) from None
    if err.code not in RETRYABLE_STATUS:
        reason = str(err.reason).splitlines()[0] if err.reason else ""
        raise DownloadError(f"{remote.shown}: HTTP {err.code} {reason}") from None
    return f"HTTP {err.code}"


# what a lost connection or a cut read raises (IncompleteRead: a chunked body cut short)
_NETWORK_ERRORS = (
    urllib.error.URLError,
    socket.timeout,
    ConnectionError,
    TimeoutError,
    OSError,
    http.client.HTTPException,
)


def _network_reason(err: Exception) -> str:
    """The retry reason for a network failure; a DownloadError the redirect check wrapped in it is raised."""
    if isinstance(getattr(err, "reason", None), DownloadError):
        raise err.reason from None
    reason = getattr(err, "reason", err)
    return f"{type(err).__name__}: {reason}"


def _gave_up(remote: RemoteFile, policy: RetryPolicy, deadline: float, last_error: str) -> DownloadError:
    """The error once the attempts or the deadline ran out."""
    if time.monotonic() > deadline:
        return DownloadError(
            f"{remote.shown}: not complete after the deadline of {policy.deadline:.0f} s "
            f"({last_error}); the partial copy is kept and the next run resumes it"
        )
    return DownloadError(f"{remote.shown}: giving up after {policy.attempts} attempts ({last_error})")


def _download_to_part(
    remote: RemoteFile, part: Path, policy: RetryPolicy, log: Callable[[str], None], first_copy: bool = False
) -> bool:
    """Fill ``part`` with the whole body, resuming and retrying as needed. Returns whether the copy is
    provably whole (its length was announced and held, or a chunked body ended properly).

    A resume sends the part's ETag / Last-Modified as If-Range and needs it back unchanged; without
    one it re-fetches the last ``policy.overlap`` bytes it holds and compares them: a file that
    changed on the server is never spliced onto the old bytes, even by a server that sends no
    validators or ignores If-Range."""
    check_url(remote.url, remote.filename)
    meta_path = part.with_name(part.name + ".json")  # where the part came from: resume only the same file
    opener = urllib.request.build_opener(_Redirects(remote))
    deadline = time.monotonic() + policy.deadline
    last_error = "no attempt made"
    for attempt in range(policy.attempts):
        if attempt:
            delay = policy.delay(attempt - 1)
            log(f"retry {attempt}/{policy.attempts - 1} of {remote.shown} in {delay:.1f}s ({last_error})")
            policy.sleep(delay)
        if time.monotonic() > deadline:
            break
        held = _held(part, meta_path, policy.overlap)
        try:
            timeout = min(policy.timeout, max(1.0, deadline - time.monotonic()))
            with opener.open(_resume_request(remote, held), timeout=timeout) as response:
                answer = _take_answer(remote, response, part, meta_path, held, first_copy, deadline, policy, log)
            return _whole_copy(part, meta_path, *answer)
        except _Incomplete as err:
            last_error = str(err)
        except DownloadError:
            if not part.exists():  # a refused body was discarded: so is the note of where it came from
                meta_path.unlink(missing_ok=True)
            raise
        except _Restart as err:
            log(f"{remote.shown}: {err}; discarding the partial copy")
            last_error = str(err)
            part.unlink(missing_ok=True)
            meta_path.unlink(missing_ok=True)
        except urllib.error.HTTPError as err:
            if err.code == 416 and held.have:
                if _whole_already(remote, err, part, meta_path, held, log):
                    return True
                last_error = "HTTP 416 on a stale partial copy"
                continue
            last_error = _retryable_http(remote, err)
        except _NETWORK_ERRORS as err:
            last_error = _network_reason(err)
    raise _gave_up(remote, policy, deadline, last_error)


def _verified_existing(
    final: Path, remote: RemoteFile, records: ChecksumRecords, key: str, log: Callable[[str], None]
) -> bool:
    """Whether the file already at ``final`` verifies; one that does not is removed."""
    try:
        verify(final, remote, records, key, provably_whole=False)
        log(f"verified existing {final}")
        return True
    except ChecksumMismatch:
        final.unlink()
    except DownloadError:  # unpublished, unrecorded: a file of unknown origin is not trusted
        final.unlink()
    return False


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
    if final.exists() and _verified_existing(final, remote, records, key, log):
        return final
    first_copy = expected_digest(remote, records, key)[1] is None  # nothing to check it against: it is recorded
    for fresh_try in range(2):
        whole = _download_to_part(remote, part, policy, log, first_copy)
        try:
            verify(part, remote, records, key, provably_whole=whole)
        except ChecksumMismatch:
            part.unlink(missing_ok=True)
            if fresh_try:
                raise
            log(f"checksum mismatch for {remote.shown}; downloading it again from scratch")
            continue
        except DownloadError:
            part.unlink(missing_ok=True)
            raise
        os.replace(part, final)
        log(f"fetched {remote.shown} -> {final}")
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
            raise DownloadError(f"{where}: unsafe file name {name!r} in {mask_url(url)}")
        if name in seen:
            raise DownloadError(f"{where}: file name {name!r} is already listed on line {seen[name]}")
        seen[name] = number
        listed.append(
            RemoteFile(
                url=url,
                filename=name,
                checksum={"unpublished": f"listed in {remote.filename}"},
                allowed_hosts=remote.allowed_hosts,  # the list's mirrors redirect as the list's own host does
            )
        )
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
