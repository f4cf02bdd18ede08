"""Downloads against a local faulty server, and prepare on archives with the real layouts."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest

from frozenbench.data.download import ChecksumMismatch, DownloadError, RemoteFile, RetryPolicy, fetch
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
    return RetryPolicy(backoff=0.01, timeout=kw.pop("timeout", 2.0), sleep=sleeps.append, **kw)


def remote(url: str, body: bytes = BODY, algorithm: str = "md5", **kw) -> RemoteFile:
    return RemoteFile(url=url, filename=url.rsplit("/", 1)[-1],
                      checksum={algorithm: hashlib.new(algorithm, body).hexdigest()}, **kw)


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
    records = json.loads((tmp_path / "checksums.recorded.json").read_text())
    assert records == {"train.csv": hashlib.sha256(b"label,youtube_id\n").hexdigest()}
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
            if (path.is_file() and (only is None or rel.parts[0] == only) and path.match(names)
                    and rel.name != "frozenbench_dataset.json"):
                zf.write(path, f"{arc_prefix}{rel}")
    return buf.getvalue()


def spec_for(name: str, fmt: str, files: list[tuple[str, bytes, dict]], **extra) -> dict:
    entries = []
    for url, body, opts in files:
        entry = {"url": url, "filename": url.rsplit("/", 1)[-1], **opts}
        entry.setdefault("checksum", {"md5": hashlib.md5(body).hexdigest()})
        entries.append(entry)
    return {"source": "download", "format": fmt, "download": {"files": entries}, **extra}


def download_and_prepare(spec: dict, tmp_path: Path, name: str) -> tuple[Path, str]:
    downloads, out = tmp_path / "downloads" / name, tmp_path / "data" / name
    spec_json = json.dumps(spec)
    run_cmd(["frozenbench", "download", "--spec", spec_json, "--out", str(downloads), "--backoff", "0.01"],
            check=True, timeout=120)
    proc = run_cmd(["frozenbench", "prepare", "--spec", spec_json, "--downloads", str(downloads), "--out", str(out)],
                   check=True, timeout=300)
    return out, proc.stdout + proc.stderr


def test_coco_archives_download_and_prepare(server, tmp_path):
    synth = tmp_path / "synth-coco"
    synthesize(tiny_spec("shapes-coco"), synth)
    files = []
    # the archives as COCO publishes them: images per split, train/val annotations, and the
    # test image lists (image_info_test-dev2017.json) in their own archive
    for member, names, path in [("train2017", "*", "/zips/train2017.zip"), ("val2017", "*", "/zips/val2017.zip"),
                                ("test2017", "*", "/zips/test2017.zip"),
                                ("annotations", "instances_*", "/annotations/annotations_trainval2017.zip"),
                                ("annotations", "image_info_*", "/annotations/image_info_test2017.zip")]:
        body = zip_tree(synth, only=member, names=names)
        files.append((server.add(path, body, ["drop:500"]), body, {}))
    out, _ = download_and_prepare(spec_for("coco", "coco", files), tmp_path, "coco2017")
    assert sorted(p.name for p in out.iterdir()) == ["annotations", "frozenbench_dataset.json", "test2017",
                                                     "train2017", "val2017"]
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


def test_kinetics_tarballs_prepare_resizes_and_reports_bad_clips(server, tmp_path):
    synth = tmp_path / "synth-k400"
    synthesize(tiny_spec("shapes-k400"), synth)
    files = []
    for split in ("train", "val"):
        csv_body = (synth / "annotations" / f"{split}.csv").read_bytes()
        files.append((server.add(f"/kinetics/400/annotations/{split}.csv", csv_body),
                      csv_body, {"checksum": {"unpublished": "no digests"}, "extract": False}))
        clips = sorted((synth / "videos" / split).glob("*.mp4"))
        if split == "train":
            missing, corrupt = clips[0], clips[1]
            clips = clips[1:]  # the mirror lost one clip
        tar_urls = []
        for part in range(2):  # the CVDF mirror ships flat tarballs of clips
            body = clips_tarball(clips[part::2], cut=corrupt if split == "train" else None)
            tar_urls.append(server.add(f"/kinetics/400/{split}/part_{part}.tar.gz", body, ["drop:100"]))
        listing = ("\n".join(tar_urls) + "\n").encode()
        files.append((server.add(f"/kinetics/400/{split}/k400_{split}_path.txt", listing), listing,
                      {"checksum": {"unpublished": "no digests"}, "url_list": True}))
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
