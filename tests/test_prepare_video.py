"""Kinetics ``prepare`` keeps what the clips and rows mean: their timing, their frames, their ids
and labels; and it never marks finished a dataset that fails validation."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import urllib.parse
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from frozenbench.data.download import ChecksumRecords
from frozenbench.data.manifest import MANIFEST
from frozenbench.data.prepare import prepare
from frozenbench.data.synth.kinetics import clip_filename, source_clip_name, write_csv, write_lists
from frozenbench.data.validate import validate
from frozenbench.errors import UserError

from .conftest import run_cmd

MS = Fraction(1, 1000)


def write_clip(path: Path, pts_ms: list[int], faststart: bool = False, rate: int = 30) -> Path:
    """An H.264 mp4 whose frames carry the given timestamps (milliseconds): irregular ones make a
    variable-frame-rate clip, a jump a clip with dropped frames."""
    with av.open(str(path), "w", format="mp4", options={"movflags": "faststart"} if faststart else {}) as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = stream.time_base = MS
        for i, pts in enumerate(pts_ms):
            array = np.zeros((48, 64, 3), np.uint8)
            array[:, (i * 3) % 64] = 255  # a moving bar: every frame differs
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts, frame.time_base = pts, MS
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def lying_clip(path: Path, keep: int) -> Path:
    """A clip whose header announces 60 frames of which only the first ``keep`` are in the file (a
    download cut at a packet boundary: the index comes first, the data ends early)."""
    write_clip(path, [round(i * 1000 / 30) for i in range(60)], faststart=True)
    with av.open(str(path)) as container:
        starts = [packet.pos for packet in container.demux(video=0) if packet.size]
    path.write_bytes(path.read_bytes()[: starts[keep]])  # cut where a packet starts: no partial packet
    return path


def timestamps(path: Path) -> list[float]:
    """Each decoded frame's presentation time, in seconds from the first."""
    with av.open(str(path)) as container:
        times = [float(frame.pts * frame.time_base) for frame in container.decode(video=0)]
    return [t - times[0] for t in times]


def kinetics_downloads(tmp: Path, rows: dict[str, list[tuple[dict, Path]]]) -> tuple[dict, Path, ChecksumRecords]:
    """What `frozenbench download` leaves for Kinetics: a csv and a url list per split, one tarball
    of clips named as the mirror names them, and the digests recorded on first use."""
    downloads = tmp / "downloads"
    files = []
    for split, entries in rows.items():
        (downloads / f"k_{split}").mkdir(parents=True)
        write_csv(downloads / f"{split}.csv", [row for row, _ in entries])
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tf:
            names = {source_clip_name(r["youtube_id"], r["time_start"], r["time_end"]): clip for r, clip in entries}
            for name, clip in names.items():
                tf.add(clip, name)
        (downloads / f"k_{split}" / "part_0.tar.gz").write_bytes(buf.getvalue())
        (downloads / f"k_{split}.txt").write_text(f"http://127.0.0.1/k_{split}/part_0.tar.gz\n")
        files.append({"url": f"http://127.0.0.1/{split}.csv", "filename": f"{split}.csv", "extract": False})
        files.append({"url": f"http://127.0.0.1/k_{split}.txt", "filename": f"k_{split}.txt", "url_list": True})
    for entry in files:
        entry["checksum"] = {"unpublished": "test"}
    records = ChecksumRecords(tmp / "checksums.sha256")
    for path in sorted(p for p in downloads.rglob("*") if p.is_file()):
        records.add(path.relative_to(downloads).as_posix(), hashlib.sha256(path.read_bytes()).hexdigest())
    spec = {"source": "download", "format": "kinetics", "download": {"files": files}, "prepare": {"short_side": 32}}
    return spec, downloads, records


def row(ytid: str, label: str, split: str, start: int = 0) -> dict:
    return {"label": label, "youtube_id": ytid, "time_start": start, "time_end": start + 10, "split": split}


def prepared(tmp: Path, rows: dict[str, list[tuple[dict, Path]]]) -> tuple[Path, list[str]]:
    spec, downloads, records = kinetics_downloads(tmp, rows)
    out, log = tmp / "data" / "k", []
    prepare(spec, downloads, out, log=log.append, records=records)
    return out, log


@pytest.fixture
def regular(tmp_path) -> Path:
    return write_clip(tmp_path / "regular.mp4", [round(i * 1000 / 30) for i in range(30)])


def test_variable_rate_and_dropped_frame_clips_keep_their_timing(tmp_path, regular):
    vfr = write_clip(tmp_path / "vfr.mp4", [0, 33, 66, 200, 233, 500, 533, 566, 1000, 1500, 1533, 1566, 2000])
    # 30 fps, with the frames of 0.5 s .. 2.0 s lost (a camera that stalled)
    dropped = write_clip(tmp_path / "dropped.mp4", [round(i * 1000 / 30) for i in range(90) if not 15 <= i < 60])
    clips = {"vfr0000000a": vfr, "dropped000a": dropped, "regular000a": regular}
    out, _ = prepared(tmp_path, {"train": [(row(y, "a", "train"), p) for y, p in clips.items()], "val": []})
    for ytid, source in clips.items():
        before, after = timestamps(source), timestamps(out / "videos" / "train" / clip_filename(ytid, 0, 10))
        assert len(after) == len(before), ytid
        # every frame where it was, within one frame at 30 fps: the duration and every gap kept
        assert max(abs(a - b) for a, b in zip(after, before)) < 1 / 30, (ytid, before, after)
    assert abs(timestamps(out / "videos" / "train" / clip_filename("vfr0000000a", 0, 10))[-1] - 2.0) < 1 / 30


def test_ids_with_any_csv_character_get_safe_unique_names_and_keep_their_labels(tmp_path, regular):
    ids = {
        'my clip "best"': "a",
        "my_clip__best_": "b",  # what a naive sanitizer would turn the first into
        "déjà vu, 日本": "c",
        ".hidden": "a",
        "a/b": "b",
        "50%": "c",
    }
    entries = [(row(ytid, label, "train"), regular) for ytid, label in ids.items()]
    out, _ = prepared(tmp_path, {"train": entries, "val": [(row("valclip0000", "a", "val"), regular)]})
    names = {ytid: clip_filename(ytid, 0, 10) for ytid in ids}
    assert len(set(names.values())) == len(ids)  # unique
    on_disk = {p.name for p in (out / "videos" / "train").iterdir()}
    assert on_disk == set(names.values())
    for ytid, name in names.items():
        assert re.fullmatch(r"[A-Za-z0-9_%-]+_000000_000010\.mp4", name), name  # no space, slash, dot, quote
        assert urllib.parse.unquote(name.removesuffix("_000000_000010.mp4")) == ytid  # reversible
    classes = (out / "classes.txt").read_text().splitlines()
    listed = dict(line.split(" ") for line in (out / "train_list_videos.txt").read_text().splitlines())
    for ytid, label in ids.items():
        assert classes[int(listed[f"videos/train/{names[ytid]}"])] == label
    import csv

    with open(out / "annotations" / "train.csv", newline="") as f:
        assert {r["youtube_id"]: r["label"] for r in csv.DictReader(f)} == ids
    assert validate("kinetics", out).ok


def test_a_header_that_announces_more_frames_than_decode_is_a_warning_and_prepare_keeps_the_decoded(tmp_path, regular):
    lying = lying_clip(tmp_path / "lying.mp4", keep=40)
    out, log = prepared(
        tmp_path,
        {"train": [(row("lying00000a", "a", "train"), lying)], "val": [(row("val0000000a", "a", "val"), regular)]},
    )
    kept = out / "videos" / "train" / clip_filename("lying00000a", 0, 10)
    assert len(timestamps(kept)) == 40
    report = json.loads((out / "prepare_report.json").read_text())
    assert [(e["clip"], e["note"]) for e in report["frame_count_mismatch"]] == [
        (kept.name, "the container announces 60 frames but 40 decode")
    ]
    assert any("header announces another frame count" in line for line in log)

    kept.write_bytes(lying.read_bytes())  # the lying clip itself in a dataset: validate warns, names both
    proc = run_cmd(["frozenbench", "validate", "--format", "kinetics", str(out)])
    assert proc.returncode == 0, proc.stderr
    assert f"warning: {kept}: the container announces 60 frames but 40 decode" in proc.stderr


def test_prepare_whose_output_fails_validation_writes_no_dataset_and_keeps_the_clips(tmp_path, regular, monkeypatch):
    import frozenbench.data.prepare as prep

    real = prep.prepare_kinetics

    def breaks_a_clip(*args, **kwargs):
        summary = real(*args, **kwargs)
        out = args[2]
        clip = out / "videos" / "val" / clip_filename("val0000000a", 0, 10)
        clip.write_bytes(clip.read_bytes()[:200])  # a bug that leaves one produced clip cut short
        return summary

    monkeypatch.setattr(prep, "prepare_kinetics", breaks_a_clip)
    rows = {"train": [(row("train00000a", "a", "train"), regular)], "val": [(row("val0000000a", "a", "val"), regular)]}
    spec, downloads, records = kinetics_downloads(tmp_path, rows)
    out = tmp_path / "data" / "k"
    with pytest.raises(UserError) as err:
        prepare(spec, downloads, out, log=lambda m: None, records=records)
    message = str(err.value)
    assert message.startswith(str(out / "videos" / "val" / clip_filename("val0000000a", 0, 10)))
    assert "fails validation" in message
    assert not out.exists() and not list(out.parent.glob(f".k{'.tmp-'}*"))
    assert not (out / MANIFEST).exists()
    # the re-encoded clips wait in the work folder for the rerun
    assert (out.parent / ".k.work" / "videos" / "train" / clip_filename("train00000a", 0, 10)).exists()


def test_csv_rows_that_contradict_each_other_are_refused_before_any_clip_is_encoded(tmp_path, regular):
    rows = {
        "train": [(row("clip000000a", "a", "train"), regular), (row("clip000000a", "a", "train"), regular)],
        "val": [(row("clip000000a", "b", "val"), regular)],
    }
    spec, downloads, records = kinetics_downloads(tmp_path, rows)
    with pytest.raises(UserError, match=r"val\.csv:2: clip 'clip000000a' 0-10 is also listed at .*train\.csv:2"):
        prepare(spec, downloads, tmp_path / "out", log=lambda m: None, records=records)
    assert not (tmp_path / ".out.work" / "done").exists() or not list((tmp_path / ".out.work" / "done").iterdir())


def test_validate_reports_a_list_that_disagrees_with_the_csv(tmp_path, regular):
    root = tmp_path / "k"
    rows = [row("clip000000a", "a", "val"), row("clip000000b", "b", "val")]
    for r in rows:
        (root / "videos" / "val").mkdir(parents=True, exist_ok=True)
        (root / "videos" / "val" / clip_filename(r["youtube_id"], 0, 10)).write_bytes(regular.read_bytes())
    write_csv(root / "annotations" / "val.csv", rows)
    write_csv(root / "annotations" / "train.csv", [])
    write_lists(root, {"train": [], "val": rows}, ["a", "b"])
    assert validate("kinetics", root).ok
    listed = root / "val_list_videos.txt"
    listed.write_text(listed.read_text().replace(" 1\n", " 0\n"))  # clip b trained as class a
    problems = [str(p) for p in validate("kinetics", root).problems]
    assert any(f"{listed}:2: label index 0" in p and "gives the clip index 1" in p for p in problems), problems


def test_a_csv_saved_with_a_byte_order_mark_reads_as_the_same_columns(tmp_path):
    """Spreadsheets export csvs with a UTF-8 BOM: it is not part of the first column's name."""
    from frozenbench.data.download import RemoteFile
    from frozenbench.data.prepare import _read_kinetics_csvs

    (tmp_path / "val.csv").write_bytes(
        b"\xef\xbb\xbflabel,youtube_id,time_start,time_end,split\na,clip000000a,0,10,val\n"
    )
    remote = RemoteFile.from_config(
        {"url": "http://127.0.0.1/val.csv", "filename": "val.csv", "checksum": {"unpublished": "test"}}
    )
    rows = _read_kinetics_csvs([remote], tmp_path)
    assert rows == {
        "val": [{"label": "a", "youtube_id": "clip000000a", "time_start": 0, "time_end": 10, "split": "val"}]
    }
