"""Downloads against a local faulty server, and prepare on archives with the real layouts."""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from pathlib import Path

import pytest

from frozenbench.data.download import (
    ChecksumMismatch,
    ChecksumRecords,
    DownloadError,
    RemoteFile,
    RetryPolicy,
    fetch,
    fetch_all,
)
from frozenbench.data.synth import synthesize
from frozenbench.data.validate import validate

from .conftest import clips_tarball, run_cmd
from .fault_server import FaultServer
from .test_synth import tiny_spec

BODY = bytes(range(256)) * 400  # 100 KiB


@pytest.fixture
def server():
    with FaultServer() as srv:
        yield srv


def fast_policy(sleeps: list[float] | None = None, **kw) -> RetryPolicy:
    sleeps = sleeps if sleeps is not None else []
    kw.setdefault("overlap", 500)  # less than the test files: a resume without validators shows in the Range
    return RetryPolicy(backoff=0.01, timeout=kw.pop("timeout", 2.0), sleep=sleeps.append, **kw)


def remote(url: str, body: bytes = BODY, algorithm: str = "md5", **kw) -> RemoteFile:
    return RemoteFile(
        url=url, filename=url.rsplit("/", 1)[-1], checksum={algorithm: hashlib.new(algorithm, body).hexdigest()}, **kw
    )


def test_resumes_after_dropped_connections_with_range_requests(server, tmp_path):
    url = server.add("/a.zip", BODY, ["drop:1000", "drop:30000"])
    path = fetch(remote(url), tmp_path, fast_policy(), log=lambda m: None)
    assert path.read_bytes() == BODY
    assert [r for _, r in server.requests] == [None, "bytes=1000-", "bytes=31000-"]
    assert not list(tmp_path.glob(".*.part"))


def test_retries_server_errors_with_exponential_backoff(server, tmp_path):
    url = server.add("/b.zip", BODY, ["status:503", "status:500", "status:503"])
    sleeps: list[float] = []
    fetch(remote(url, algorithm="sha256"), tmp_path, fast_policy(sleeps), log=lambda m: None)
    assert sleeps == [0.01, 0.02, 0.04]
    assert (tmp_path / "b.zip").read_bytes() == BODY


def test_stalled_server_times_out_and_is_retried(server, tmp_path):
    url = server.add("/c.zip", BODY, ["stall:3"])
    fetch(remote(url), tmp_path, fast_policy(timeout=0.5), log=lambda m: None)
    assert (tmp_path / "c.zip").read_bytes() == BODY
    assert len(server.requests) == 2


def test_wrong_checksum_names_url_and_digests_and_leaves_nothing(server, tmp_path):
    url = server.add("/d.zip", BODY, ["corrupt", "corrupt"])
    good = remote(url)
    with pytest.raises(ChecksumMismatch) as info:
        fetch(good, tmp_path, fast_policy(), log=lambda m: None)
    bad_md5 = hashlib.md5(bytes(b ^ 0xFF for b in BODY)).hexdigest()
    message = str(info.value)
    assert url in message and good.checksum["md5"] in message and bad_md5 in message
    assert list(tmp_path.iterdir()) == []  # neither the file nor a partial survives
    # a mismatch on the first transfer alone is healed by one fresh download
    server.faults["/d.zip"].append("corrupt")
    assert fetch(good, tmp_path, fast_policy(), log=lambda m: None).read_bytes() == BODY


def test_missing_file_fails_at_once(server, tmp_path):
    sleeps: list[float] = []
    with pytest.raises(DownloadError, match=r"/nope.zip: HTTP 404"):
        fetch(remote(server.url + "/nope.zip"), tmp_path, fast_policy(sleeps), log=lambda m: None)
    assert sleeps == []


def test_gives_up_after_the_last_attempt(server, tmp_path):
    url = server.add("/e.zip", BODY, ["status:503"] * 10)
    with pytest.raises(DownloadError, match=r"giving up after 3 attempts \(HTTP 503\)"):
        fetch(remote(url), tmp_path, fast_policy(attempts=3), log=lambda m: None)
    assert not (tmp_path / "e.zip").exists()


def test_unpublished_checksum_is_recorded_then_enforced(server, tmp_path):
    url = server.add("/train.csv", b"label,youtube_id\n")
    unpublished = RemoteFile(url=url, filename="train.csv", checksum={"unpublished": "none"}, extract=False)
    fetch(unpublished, tmp_path, fast_policy(), log=lambda m: None)
    assert ChecksumRecords(tmp_path / "checksums.sha256").read() == {
        "train.csv": hashlib.sha256(b"label,youtube_id\n").hexdigest()
    }
    (tmp_path / "train.csv").unlink()
    server.files["/train.csv"] = b"label,youtube_id\nchanged\n"
    with pytest.raises(ChecksumMismatch, match="sha256 mismatch"):
        fetch(unpublished, tmp_path, fast_policy(), log=lambda m: None)


# -- end to end: archives with the real layouts, through the CLI -------------------------------


def zip_tree(root: Path, arc_prefix: str = "", only: str | None = None, names: str = "*") -> bytes:
    """The files under ``root`` (under its folder ``only``, matching the glob ``names``) as a zip."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root)
            if (
                path.is_file()
                and (only is None or rel.parts[0] == only)
                and path.match(names)
                and rel.name != "frozenbench_dataset.json"
            ):
                zf.write(path, f"{arc_prefix}{rel}")
    return buf.getvalue()


def spec_for(name: str, fmt: str, files: list[tuple[str, bytes, dict]], **extra) -> dict:
    entries = []
    for url, body, opts in files:
        entry = {"url": url, "filename": url.rsplit("/", 1)[-1], **opts}
        entry.setdefault("checksum", {"md5": hashlib.md5(body).hexdigest()})
        entries.append(entry)
    return {"source": "download", "format": fmt, "download": {"files": entries}, **extra}


def download_and_prepare(spec: dict, tmp_path: Path, name: str, tamper=None) -> tuple[Path, str]:
    """`frozenbench download` then `frozenbench prepare` as the rules run them; ``tamper(downloads)``
    runs between the two (prepare must then refuse)."""
    downloads, out = tmp_path / "downloads" / name, tmp_path / "data" / name
    spec_json = json.dumps(spec)
    checks = [
        "--checksums",
        str(tmp_path / "checksums" / f"{name}.sha256"),
        "--verified",
        str(tmp_path / "downloads" / f"{name}.verified.json"),
    ]
    run_cmd(
        ["frozenbench", "download", "--spec", spec_json, "--out", str(downloads), "--backoff", "0.01", *checks],
        check=True,
        timeout=120,
    )
    if tamper is not None:
        tamper(downloads)
    proc = run_cmd(
        ["frozenbench", "prepare", "--spec", spec_json, "--downloads", str(downloads), "--out", str(out), *checks],
        check=tamper is None,
        timeout=300,
    )
    return out, proc.stdout + proc.stderr


def test_coco_archives_download_and_prepare(server, tmp_path):
    synth = tmp_path / "synth-coco"
    synthesize(tiny_spec("shapes-coco"), synth)
    files = []
    # the archives as COCO publishes them: images per split, train/val annotations, and the
    # test image lists (image_info_test-dev2017.json) in their own archive
    for member, names, path in [
        ("train2017", "*", "/zips/train2017.zip"),
        ("val2017", "*", "/zips/val2017.zip"),
        ("test2017", "*", "/zips/test2017.zip"),
        ("annotations", "instances_*", "/annotations/annotations_trainval2017.zip"),
        ("annotations", "image_info_*", "/annotations/image_info_test2017.zip"),
    ]:
        body = zip_tree(synth, only=member, names=names)
        files.append((server.add(path, body, ["drop:500"]), body, {}))
    out, _ = download_and_prepare(spec_for("coco", "coco", files), tmp_path, "coco2017")
    assert sorted(p.name for p in out.iterdir()) == [
        "annotations",
        "frozenbench_dataset.json",
        "test2017",
        "train2017",
        "val2017",
    ]
    assert (out / "annotations" / "image_info_test-dev2017.json").exists()
    report = validate("coco", out)
    assert report.ok, report.problems


def test_ade_archive_download_and_prepare(server, tmp_path):
    synth = tmp_path / "synth-ade"
    synthesize(tiny_spec("shapes-ade"), synth)
    body = zip_tree(synth, arc_prefix="ADEChallengeData2016/")
    url = server.add("/places/ADEchallenge/ADEChallengeData2016.zip", body, ["status:503"])
    spec = spec_for("ade", "ade", [(url, body, {"checksum": {"sha1": hashlib.sha1(body).hexdigest()}})])
    out, _ = download_and_prepare(spec, tmp_path, "ade20k")
    assert (out / "images" / "training").is_dir() and (out / "objectInfo150.txt").exists()
    assert validate("ade", out).ok


def test_prepare_refuses_an_archive_changed_after_its_download(server, tmp_path):
    """The download's marker spares a second hash only while size and mtime are unchanged; an
    archive modified in place (same size) is hashed again and refused, and nothing is extracted."""
    synth = tmp_path / "synth-ade"
    synthesize(tiny_spec("shapes-ade"), synth)
    body = zip_tree(synth, arc_prefix="ADEChallengeData2016/")
    url = server.add("/ADEChallengeData2016.zip", body)
    spec = spec_for("ade", "ade", [(url, body, {"checksum": {"sha256": hashlib.sha256(body).hexdigest()}})])

    def tamper(downloads):
        archive = downloads / "ADEChallengeData2016.zip"
        data = bytearray(archive.read_bytes())
        data[-30] ^= 0xFF
        archive.write_bytes(bytes(data))

    out, output = download_and_prepare(spec, tmp_path, "ade20k", tamper=tamper)
    assert "ADEChallengeData2016.zip: sha256 mismatch" in output and "changed after it was downloaded" in output
    assert "Traceback" not in output and not out.exists()


def test_kinetics_tarballs_prepare_resizes_and_reports_bad_clips(server, tmp_path):
    synth = tmp_path / "synth-k400"
    synthesize(tiny_spec("shapes-k400"), synth)
    files = []
    for split in ("train", "val"):
        csv_body = (synth / "annotations" / f"{split}.csv").read_bytes()
        files.append(
            (
                server.add(f"/kinetics/400/annotations/{split}.csv", csv_body),
                csv_body,
                {"checksum": {"unpublished": "no digests"}, "extract": False},
            )
        )
        clips = sorted((synth / "videos" / split).glob("*.mp4"))
        if split == "train":
            missing, corrupt = clips[0], clips[1]
            clips = clips[1:]  # the mirror lost one clip
        tar_urls = []
        for part in range(2):  # the CVDF mirror ships flat tarballs of clips
            body = clips_tarball(clips[part::2], cut=corrupt if split == "train" else None)
            tar_urls.append(server.add(f"/kinetics/400/{split}/part_{part}.tar.gz", body, ["drop:100"]))
        listing = ("\n".join(tar_urls) + "\n").encode()
        files.append(
            (
                server.add(f"/kinetics/400/{split}/k400_{split}_path.txt", listing),
                listing,
                {"checksum": {"unpublished": "no digests"}, "url_list": True},
            )
        )
    spec = spec_for("k400", "kinetics", files, prepare={"short_side": 32})
    out, log = download_and_prepare(spec, tmp_path, "kinetics400")
    report = json.loads((out / "prepare_report.json").read_text())
    assert [e["clip"] for e in report["missing"]] == [missing.name]
    assert [e["clip"] for e in report["corrupt"]] == [corrupt.name]
    assert "1 missing clip(s)" in log and "1 corrupt clip(s)" in log
    train_list = (out / "train_list_videos.txt").read_text().splitlines()
    assert len(train_list) == 8 * 2 - 2
    assert validate("kinetics", out).ok
    import av

    with av.open(str(out / train_list[0].split(" ")[0])) as container:
        frame = next(container.decode(video=0))
    assert min(frame.width, frame.height) == 32


def test_partial_file_survives_the_output_folder_being_deleted(server, tmp_path):
    """A workflow deletes a failed job's output folder: the partial lives in the state folder beside it."""
    url = server.add("/big.zip", BODY, ["drop:40000", "drop:40000"])
    out, state = tmp_path / "downloads" / "x", tmp_path / "downloads" / ".x.state"
    with pytest.raises(DownloadError):
        fetch(remote(url), out, fast_policy(attempts=1), log=lambda m: None, state_dir=state)
    import shutil

    shutil.rmtree(out)
    assert (state / ".big.zip.part").stat().st_size == 40000
    fetch(remote(url), out, fast_policy(attempts=3), log=lambda m: None, state_dir=state)
    assert (out / "big.zip").read_bytes() == BODY
    assert ("/big.zip", "bytes=40000-") in server.requests


# -- trust on first use: a bad first copy is never recorded as the true digest -----------------


def unpublished(url: str, name: str | None = None) -> RemoteFile:
    return RemoteFile(url=url, filename=name or url.rsplit("/", 1)[-1], checksum={"unpublished": "test"}, extract=False)


def records_in(tmp_path: Path) -> ChecksumRecords:
    return ChecksumRecords(tmp_path / "checksums" / "x.sha256")


def true_digest(body: bytes = BODY) -> str:
    return hashlib.sha256(body).hexdigest()


def test_a_206_with_the_wrong_range_is_discarded_not_spliced(server, tmp_path):
    url = server.add("/w.tar", BODY, ["drop:5000", "badrange:0"])
    records = records_in(tmp_path)
    path = fetch(unpublished(url), tmp_path / "d", fast_policy(), log=lambda m: None, records=records)
    assert path.read_bytes() == BODY and records.read() == {"w.tar": true_digest()}


def test_a_resume_onto_a_changed_remote_file_starts_over(server, tmp_path):
    """The file changes between the dropped attempt and the resume; the mirror ignores If-Range,
    so only the ETag / Last-Modified of the 206 tells: the old bytes are not spliced onto the new."""
    old, new = BODY, bytes(reversed(BODY))
    url = server.add("/v.tar", old, ["drop:30000"])
    records, log = records_in(tmp_path), []
    with pytest.raises(DownloadError):
        fetch(unpublished(url), tmp_path / "d", fast_policy(attempts=1), log=log.append, records=records)
    server.files["/v.tar"] = new
    server.last_modified["/v.tar"] = "Wed, 02 Dec 2026 00:00:00 GMT"
    server.honour_if_range = False
    path = fetch(unpublished(url), tmp_path / "d", fast_policy(), log=log.append, records=records)
    assert path.read_bytes() == new and records.read() == {"v.tar": true_digest(new)}
    assert any("changed since the partial copy" in line for line in log)


def test_a_resume_onto_a_changed_file_is_sent_whole_by_a_server_honouring_if_range(server, tmp_path):
    url = server.add("/i.tar", BODY, ["drop:30000"])
    records = records_in(tmp_path)
    with pytest.raises(DownloadError):
        fetch(unpublished(url), tmp_path / "d", fast_policy(attempts=1), log=lambda m: None, records=records)
    server.files["/i.tar"] = BODY[::-1]
    path = fetch(unpublished(url), tmp_path / "d", fast_policy(), log=lambda m: None, records=records)
    assert path.read_bytes() == BODY[::-1] and records.read() == {"i.tar": true_digest(BODY[::-1])}


def test_a_body_without_length_is_not_recorded(server, tmp_path):
    url = server.add("/n.tar", BODY, ["nolength-cut:1000"])
    records = records_in(tmp_path)
    with pytest.raises(DownloadError, match="announced no length.*pin `checksum: {sha256: "):
        fetch(unpublished(url), tmp_path / "d", fast_policy(), log=lambda m: None, records=records)
    assert records.read() == {} and not (tmp_path / "d" / "n.tar").exists()
    published = remote(url)  # with a published digest the same server is fine: the digest decides
    server.faults["/n.tar"].append("nolength")
    assert fetch(published, tmp_path / "p", fast_policy(), log=lambda m: None).read_bytes() == BODY


def test_a_stale_oversized_part_answered_with_416_restarts_cleanly(server, tmp_path):
    url = server.add("/s.tar", BODY)
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / ".s.tar.part").write_bytes(BODY + b"left over from a larger, older file")
    (dest / ".s.tar.part.json").write_text(
        json.dumps({"url": url, "etag": None, "last_modified": None, "total": len(BODY) + 35})
    )
    records = records_in(tmp_path)
    path = fetch(unpublished(url), dest, fast_policy(), log=lambda m: None, records=records)
    assert path.read_bytes() == BODY and records.read() == {"s.tar": true_digest()}
    assert not list(dest.glob(".s.tar.part*"))


def test_the_recorded_digest_is_shared_and_a_poisoned_copy_elsewhere_is_refused(server, tmp_path):
    """Machine A records the first copy in the committed file; machine B, sharing it, gets a
    tampered copy from its mirror and refuses it."""
    url = server.add("/k.tar", BODY)
    shared = records_in(tmp_path)
    fetch(unpublished(url), tmp_path / "machine-a", fast_policy(), log=lambda m: None, records=shared)
    assert shared.path.read_text().splitlines()[-1] == f"{true_digest()}  k.tar"  # sha256sum -c format
    server.faults["/k.tar"].extend(["corrupt", "corrupt"])
    with pytest.raises(ChecksumMismatch, match=f"expected {true_digest()} \\(recorded in "):
        fetch(unpublished(url), tmp_path / "machine-b", fast_policy(), log=lambda m: None, records=shared)
    assert not (tmp_path / "machine-b" / "k.tar").exists()


def test_redirects_never_leave_http_s_and_https_never_downgrades(server, tmp_path):
    import urllib.request

    from frozenbench.data.download import _Redirects

    url = server.add("/r.tar", BODY, ["redirect:ftp://127.0.0.1/r.tar"])
    with pytest.raises(DownloadError, match="refusing a redirect from http to ftp://"):
        fetch(remote(url), tmp_path, fast_policy(), log=lambda m: None)
    request = urllib.request.Request("https://mirror.example/a.tar")
    redirects = _Redirects(remote("https://mirror.example/a.tar", allowed_hosts=("cdn.example",)))
    with pytest.raises(DownloadError, match="refusing a redirect from https to http://"):
        redirects.redirect_request(request, None, 302, "Found", {}, "http://mirror.example/a.tar")
    assert redirects.redirect_request(request, None, 302, "Found", {}, "https://mirror.example/b.tar")
    assert redirects.redirect_request(request, None, 302, "Found", {}, "https://cdn.example/a.tar")
    with pytest.raises(DownloadError, match="add host other.example to allowed_hosts in the config"):
        redirects.redirect_request(request, None, 302, "Found", {}, "https://other.example/a.tar")


def test_one_deadline_per_file_stops_a_trickling_server_and_keeps_the_part(server, tmp_path):
    url = server.add("/t.tar", BODY, ["trickle:0.05"])
    with pytest.raises(DownloadError, match="deadline of 1 s.*the next run resumes it"):
        fetch(remote(url), tmp_path, fast_policy(deadline=1.0), log=lambda m: None)
    kept = (tmp_path / ".t.tar.part").stat().st_size
    assert 0 < kept < len(BODY)
    assert fetch(remote(url), tmp_path, fast_policy(), log=lambda m: None).read_bytes() == BODY
    assert ("/t.tar", f"bytes={kept}-") in server.requests


@pytest.mark.parametrize(
    "lines, error",
    [
        (["file:///etc/passwd"], "only http(s) URLs"),
        (["{url}/a/part.tar", "{url}/b/part.tar"], "'part.tar' is already listed on line 1"),
        (["{url}/..%2F..%2Fevil.tar"], "unsafe file name '../../evil.tar'"),
    ],
)
def test_url_lists_take_http_s_only_and_unique_safe_names(server, tmp_path, lines, error):
    listing = "\n".join(line.format(url=server.url) for line in lines).encode()
    url = server.add("/k400_train.txt", listing)
    entry = RemoteFile(
        url=url, filename="k400_train.txt", checksum={"md5": hashlib.md5(listing).hexdigest()}, url_list=True
    )
    with pytest.raises(DownloadError, match=re.escape(error)):
        fetch_all([entry], tmp_path, fast_policy(), log=lambda m: None, records=records_in(tmp_path))


# -- a first copy is trusted only when it is provably the file (issue 25) -----------------------


def test_mask_url_hides_credentials_and_tokens():
    from frozenbench.data.download import mask_url  # the config's rule: one masking for both

    assert (
        mask_url("https://me:s3cret@mirror.example/a.tar?X-Amz-Signature=abc&part=2&access_token=t0k")
        == "https://***@mirror.example/a.tar?X-Amz-Signature=***&part=2&access_token=***"
    )
    assert mask_url("http://127.0.0.1:8000/a.tar?x=1") == "http://127.0.0.1:8000/a.tar?x=1"


@pytest.mark.parametrize(
    "fault, error",
    [
        ("html", "answered with an HTML page (Content-Type: text/html)"),
        ("partial206", "answered a request without Range with 206 Partial Content"),
        ("partial200", "answered 200 with Content-Range 'bytes 0-51199/102400'"),
        ("gzip", "answered with Content-Encoding: gzip"),
        ("longer:1000", "the body is longer than its Content-Length (1000 bytes)"),
    ],
)
def test_a_first_copy_that_is_not_the_file_is_refused_and_not_recorded(server, tmp_path, fault, error):
    url = server.add(f"/{fault.split(':')[0]}.tar", BODY, [fault])
    records = records_in(tmp_path)
    with pytest.raises(DownloadError, match=re.escape(error) + ".*pin its sha256 in the config"):
        fetch(unpublished(url), tmp_path / "d", fast_policy(), log=lambda m: None, records=records)
    assert records.read() == {} and list((tmp_path / "d").iterdir()) == []
    assert len(server.requests) == 1  # refused, not retried into a trusted copy


@pytest.mark.parametrize("fault", ["gzip", "longer:1000"])
def test_a_published_digest_decides_on_its_own(server, tmp_path, fault):
    """A pinned digest needs none of the first-copy rules: a mirror that labels a .tar.gz with
    Content-Encoding or announces a short length is judged by the bytes."""
    url = server.add("/p.tar.gz", BODY, [fault])
    log: list[str] = []
    assert fetch(remote(url, algorithm="sha256"), tmp_path, fast_policy(), log=log.append).read_bytes() == BODY
    assert any("checksum mismatch" in line for line in log) == (fault == "gzip")  # gzip bytes: fetched again


def test_a_proven_resume_sends_the_etag_as_if_range_and_records_the_file(server, tmp_path):
    url = server.add("/e.tar", BODY, ["drop:30000"])
    records = records_in(tmp_path)
    fetch(unpublished(url), tmp_path / "d", fast_policy(), log=lambda m: None, records=records)
    assert server.requests == [("/e.tar", None), ("/e.tar", "bytes=30000-")]
    assert server.headers[1]["If-Range"].startswith('"') and server.headers[0]["Accept-Encoding"] == "identity"
    assert records.read() == {"e.tar": true_digest()}


def test_a_partial_answer_without_the_validator_asked_for_is_not_spliced(server, tmp_path):
    """The first answer had an ETag; the 206 to the resume carries none (a mirror behind another
    cache): nothing proves it is the same file, so the part is discarded, not continued."""
    url = server.add("/q.tar", BODY, ["drop:30000"])
    records, log = records_in(tmp_path), []
    with pytest.raises(DownloadError):
        fetch(unpublished(url), tmp_path / "d", fast_policy(attempts=1), log=log.append, records=records)
    server.no_validators.add("/q.tar")
    path = fetch(unpublished(url), tmp_path / "d", fast_policy(), log=log.append, records=records)
    assert path.read_bytes() == BODY and records.read() == {"q.tar": true_digest()}
    assert any("does not carry the validator" in line for line in log)
    assert [r for _, r in server.requests] == [None, "bytes=30000-", None]


def test_a_resume_without_validators_is_proven_by_the_overlap(server, tmp_path):
    url = server.add("/o.tar", BODY, ["drop:30000"], validators=False)
    records = records_in(tmp_path)
    path = fetch(unpublished(url), tmp_path / "d", fast_policy(), log=lambda m: None, records=records)
    assert server.requests == [("/o.tar", None), ("/o.tar", "bytes=29500-")] and "If-Range" not in server.headers[1]
    assert path.read_bytes() == BODY and records.read() == {"o.tar": true_digest()}


def test_a_resume_onto_a_file_changed_without_validators_is_not_spliced(server, tmp_path):
    """Same size, no ETag, no Last-Modified: only the re-fetched overlap shows the change (the old
    code spliced the new file's tail onto the old head and recorded the mix)."""
    url = server.add("/c.tar", BODY, ["drop:30000", "changed"], validators=False)
    records, log = records_in(tmp_path), []
    path = fetch(unpublished(url), tmp_path / "d", fast_policy(), log=log.append, records=records)
    assert path.read_bytes() == BODY[::-1] and records.read() == {"c.tar": true_digest(BODY[::-1])}
    assert any("the file changed on the server; discarding the partial copy" in line for line in log)
    assert [r for _, r in server.requests] == [None, "bytes=29500-", None]


def test_a_refused_resume_answer_keeps_the_proven_part(server, tmp_path):
    """An HTML page answering the resume is refused; the part held (a prefix of the earlier answer)
    stays for the next run, which completes and records the real file."""
    url = server.add("/h.tar", BODY, ["drop:30000", "html"])
    records = records_in(tmp_path)
    with pytest.raises(DownloadError, match="HTML page"):
        fetch(unpublished(url), tmp_path / "d", fast_policy(), log=lambda m: None, records=records)
    assert (tmp_path / "d" / ".h.tar.part").read_bytes() == BODY[:30000] and records.read() == {}
    assert fetch(unpublished(url), tmp_path / "d", fast_policy(), log=lambda m: None, records=records)
    assert records.read() == {"h.tar": true_digest()}


def test_a_cross_host_redirect_needs_the_host_allowed(server, tmp_path):
    with FaultServer() as mirror:
        mirror.add("/m.tar", BODY)
        host = mirror.url.removeprefix("http://")
        url = server.add("/m.tar", BODY, [f"redirect:{mirror.url}/m.tar?X-Amz-Signature=s1g"] * 2)
        signed = url + "?X-Amz-Credential=cr3d&part=1"  # a pre-signed URL: its tokens are never printed
        records = records_in(tmp_path)
        with pytest.raises(DownloadError) as info:
            fetch(unpublished(signed, "m.tar"), tmp_path / "d", fast_policy(), log=lambda m: None, records=records)
        message = str(info.value)
        assert message.startswith(f"{url}?X-Amz-Credential=***&part=1: redirected to another host, {mirror.url}")
        assert f"add host {host} to allowed_hosts in the config" in message
        assert "s1g" not in message and "cr3d" not in message
        assert records.read() == {} and mirror.requests == [] and list((tmp_path / "d").iterdir()) == []
        allowed = RemoteFile(url=signed, filename="m.tar", checksum={"unpublished": "test"}, allowed_hosts=(host,))
        fetch(allowed, tmp_path / "d", fast_policy(), log=lambda m: None, records=records)
    assert records.read() == {"m.tar": true_digest()} and mirror.requests == [("/m.tar", None)]


def test_credentials_in_a_listed_url_are_refused_and_masked(server, tmp_path):
    listing = f"{server.url.replace('http://', 'http://me:pa55@')}/a.tar\n".encode()
    url = server.add("/k400_val.txt", listing)
    entry = RemoteFile(
        url=url, filename="k400_val.txt", checksum={"md5": hashlib.md5(listing).hexdigest()}, url_list=True
    )
    with pytest.raises(DownloadError, match=r"k400_val.txt:1: credentials in the URL http://\*\*\*@127") as info:
        fetch_all([entry], tmp_path, fast_policy(), log=lambda m: None, records=records_in(tmp_path))
    assert "pa55" not in str(info.value)


def test_a_redirect_loop_is_one_clear_error(server, tmp_path):
    url = server.url + "/loop.tar"
    server.add("/loop.tar", BODY, [f"redirect:{url}"] * 20)
    with pytest.raises(DownloadError, match="redirect loop.*set `url` to the file's direct location"):
        fetch(unpublished(url), tmp_path, fast_policy(), log=lambda m: None, records=records_in(tmp_path))


def test_the_cli_follows_a_redirect_its_config_allows(server, tmp_path):
    """Per dataset (`download.allowed_hosts`, through the config schema) and per checkpoint entry."""
    with FaultServer() as mirror:
        host = mirror.url.removeprefix("http://")
        files = []
        for name in ("train.csv", "w.pth"):
            mirror.add(f"/{name}", BODY)
            files.append(server.add(f"/{name}", BODY, [f"redirect:{mirror.url}/{name}"]))
        entry = {"url": files[0], "filename": "train.csv", "checksum": {"unpublished": "none"}, "extract": False}
        spec = {"source": "download", "format": "kinetics", "download": {"files": [entry], "allowed_hosts": [host]}}
        checksums = tmp_path / "checksums.sha256"
        common = ["--checksums", str(checksums), "--backoff", "0.01"]
        run_cmd(
            ["frozenbench", "download", "--spec", json.dumps(spec), "--out", str(tmp_path / "dl"), *common],
            check=True,
            timeout=120,
        )
        checkpoint = {"url": files[1], "filename": "w.pth", "checksum": {"unpublished": "x"}, "allowed_hosts": [host]}
        run_cmd(
            ["frozenbench", "fetch-checkpoint", "--spec", json.dumps(checkpoint), "--out-dir", str(tmp_path / "ck")]
            + common,
            check=True,
            timeout=120,
        )
    assert ChecksumRecords(checksums).read() == {"train.csv": true_digest(), "w.pth": true_digest()}
