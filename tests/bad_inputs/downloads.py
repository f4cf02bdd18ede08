"""Servers a download meets: cut bodies, corrupt bytes, hostile redirects and URL lists.

One faulty HTTP server on 127.0.0.1 (``tests/fault_server.py``) serves every case; no case
may leave a digest in the shared checksum records.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

from .case import Builder, Case

KIND = "downloads"

_SERVER = None
_SERVER_LOCK = threading.Lock()  # the corpus builds its cases on several threads


def server():
    """The faulty server, started on first use and left to the process's end."""
    global _SERVER
    with _SERVER_LOCK:
        if _SERVER is None:
            from ..fault_server import FaultServer

            _SERVER = FaultServer().__enter__()
    return _SERVER


def download_case(
    path: str,
    body: bytes,
    faults: list[str],
    expected: str,
    checksum: str = "unpublished",
    url_list: bool = False,
    recorded: bytes | None = None,
    validators: bool = True,
) -> Builder:
    """`frozenbench download` of one file served with ``faults`` (``{url}`` in one stands for the
    file's own URL); ``recorded``: the bytes whose digest another machine already recorded in the
    shared checksum file; ``validators``: whether the server sends ETag / Last-Modified."""

    def case(tmp: Path) -> Case:
        filename = path.rsplit("/", 1)[-1]
        served = f"/{tmp.name}{path}"
        url = server().url + served
        server().add(served, body, [fault.format(url=url) for fault in faults], validators=validators)
        digest = {"unpublished": "none"} if checksum == "unpublished" else {"sha256": hashlib.sha256(body).hexdigest()}
        entry = {"url": url, "filename": filename, "checksum": digest, "extract": False, "url_list": url_list}
        spec = {"source": "download", "format": "kinetics", "download": {"files": [entry]}}
        records = tmp / "checksums" / "k400.sha256"
        if recorded is not None:
            records.parent.mkdir(parents=True)
            records.write_text(f"{hashlib.sha256(recorded).hexdigest()}  {filename}\n")
        out = tmp / "downloads" / "k400"
        args = ["frozenbench", "download", "--spec", json.dumps(spec), "--out", str(out)]
        args += ["--checksums", str(records), "--backoff", "0.01", "--attempts", "2"]
        # a refused body may stay as a partial (never under the final name) for a later resume
        return Case(args, url, expected, output=out / filename, records=records, leaves=("downloads/k400/*.part",))

    return case


def checkpoint_case(faults: list[str], expected: str, credentials: bool = False) -> Builder:
    """`frozenbench fetch-checkpoint` of a checkpoint whose source publishes no digest (its first
    copy would be recorded), served with ``faults``: the same rules as a dataset's files.
    ``credentials``: the URL carries a user and password, which no message may show."""

    def case(tmp: Path) -> Case:
        url = server().add(f"/{tmp.name}/swin_tiny_patch4_window7_224.pth", BODY, faults)
        named, secrets = url, ()
        if credentials:
            url = url.replace("http://", "http://reader:pa55-s3cret@")
            named, secrets = url.replace("reader:pa55-s3cret@", "***@"), ("pa55-s3cret",)
        spec = {"url": url, "filename": "swin_tiny_patch4_window7_224.pth", "checksum": {"unpublished": "none"}}
        spec |= {"layout": "official_swin", "objective": "supervised", "data": "in1k"}
        records, out = tmp / "checksums" / "checkpoints.sha256", tmp / "downloads" / "checkpoints" / "swin_t"
        args = ["frozenbench", "fetch-checkpoint", "--spec", json.dumps(spec), "--out-dir", str(out)]
        args += ["--checksums", str(records), "--backoff", "0.01", "--attempts", "2"]
        return Case(args, named, expected, output=out / spec["filename"], records=records, secrets=secrets)

    return case


def listed_archive_case(fault: str, expected: str) -> Builder:
    """A published URL list (its digest pinned) naming a pre-signed archive URL (its signature in the
    query, never to be printed) that has no digest of its own, so that its first copy would be
    recorded; the archive is answered with ``fault``."""

    def case(tmp: Path) -> Case:
        archive = server().add(f"/{tmp.name}/train/part_0.tar.gz", BODY, [fault])
        signed = archive + "?X-Amz-Credential=AKIA-s3cret&X-Amz-Signature=5ig-s3cret"
        listed = download_case("/k400_train_path.txt", (signed + "\n").encode(), [], expected, checksum="sha256")
        listed = listed(tmp)
        spec = json.loads(listed.args[3])  # the list entry is a url_list
        spec["download"]["files"][0]["url_list"] = True
        listed.args[3] = json.dumps(spec)
        listed.named = archive + "?X-Amz-Credential=***&X-Amz-Signature=***"
        listed.secrets = ("AKIA-s3cret", "5ig-s3cret")
        listed.output = listed.output.parent / "k400_train_path" / "part_0.tar.gz"
        listed.leaves += ("downloads/k400/k400_train_path.txt",)
        return listed

    return case


def url_list_case(lines: list[str], expected: str) -> Builder:
    """A published list of archive URLs (Kinetics' ``k400_train_path.txt``) with a bad line."""

    def case(tmp: Path) -> Case:
        listing = "\n".join(line.format(url=server().url) for line in lines).encode()
        listed = download_case("/k400_train_path.txt", listing, [], expected, checksum="sha256", url_list=True)(tmp)
        # the error names the list's line (the downloaded list file); none of its archives is fetched
        listed.named, listed.output = listed.output, listed.output.parent / "k400_train_path"
        listed.leaves += ("downloads/k400/k400_train_path.txt",)
        return listed

    return case


BODY = bytes(range(256)) * 64
CASES: dict[str, Builder] = {
    # poisoned first downloads: never recorded, never used
    "download_cut_without_length": download_case(
        "/part_0.tar.gz", BODY, ["nolength-cut:1000"] * 2, "announced no length"
    ),
    "download_differs_from_shared_record": download_case(
        "/part_1.tar.gz", BODY, ["corrupt"] * 2, "sha256 mismatch", recorded=BODY
    ),
    "download_redirect_to_ftp": download_case(
        "/part_2.tar.gz", BODY, ["redirect:ftp://127.0.0.1/x"], "refusing a redirect from http to ftp://"
    ),
    # a first copy is trusted only when it is provably the file (issue 25): each of these was
    # recorded as the trusted digest before, and every collaborator then refused the real file
    "download_html_error_page_200": download_case("/part_3.tar.gz", BODY, ["html"], "answered with an HTML page"),
    "download_206_without_range": download_case(
        "/part_4.tar.gz", BODY, ["partial206"], "without Range with 206 Partial Content"
    ),
    "download_200_content_range_lies_about_the_total": download_case(
        "/part_5.tar.gz", BODY, ["partial200"], "answered 200 with Content-Range 'bytes 0-8191/16384'"
    ),
    "download_gzip_content_encoding": download_case(
        "/part_6.tar.gz", BODY, ["gzip"], "answered with Content-Encoding: gzip"
    ),
    "download_content_length_shorter_than_body": download_case(
        "/part_7.tar.gz", BODY, ["longer:1000"], "longer than its Content-Length (1000 bytes)"
    ),
    "download_resume_onto_changed_file_without_validators": download_case(
        "/part_8.tar.gz", BODY, ["drop:8000", "changed"], "the file changed on the server", validators=False
    ),
    "download_cross_host_redirect_not_allowed": download_case(
        "/part_9.tar.gz", BODY, ["redirect-host:localhost"], "to allowed_hosts in the config"
    ),
    "download_redirect_loop": download_case("/part_10.tar.gz", BODY, ["redirect:{url}"] * 12, "redirect loop"),
    "url_list_presigned_archive_is_an_html_page": listed_archive_case("html", "answered with an HTML page"),
    "checkpoint_credentials_in_the_url": checkpoint_case([], "credentials in the URL", credentials=True),
    "checkpoint_html_error_page_200": checkpoint_case(["html"], "answered with an HTML page"),
    "checkpoint_206_without_range": checkpoint_case(["partial206"], "206 Partial Content"),
    "checkpoint_cross_host_redirect_not_allowed": checkpoint_case(
        ["redirect-host:localhost"], "to allowed_hosts in the config"
    ),
    "url_list_file_scheme": url_list_case(["file:///etc/passwd"], "only http(s) URLs are fetched"),
    "url_list_duplicate_name": url_list_case(["{url}/a/part.tar.gz", "{url}/b/part.tar.gz"], "is already listed"),
    "url_list_unsafe_name": url_list_case(["{url}/..%2F..%2Fpart.tar.gz"], "unsafe file name"),
}
