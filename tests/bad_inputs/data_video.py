"""Kinetics csvs and clips that would change what a dataset means (a clip under two labels, a list
that trains a clip as another class, an id that points out of the dataset, a header that lies), and
a prepared dataset that fails validation: ``prepare`` and ``validate`` refuse them, naming the file."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import zipfile
from pathlib import Path

from frozenbench.data.download import ChecksumRecords
from frozenbench.data.synth.kinetics import clip_filename, write_csv, write_lists

from ..test_prepare_video import lying_clip, row, write_clip
from .case import BAD, Builder, Case

KIND = "data"
HEADER = b"label,youtube_id,time_start,time_end,split\n"


def prepare_args(tmp: Path, spec: dict, downloads: Path, out: Path, records: Path) -> list[str]:
    return ["frozenbench", "prepare", "--spec", json.dumps(spec), "--downloads", str(downloads)] + [
        "--checksums",
        str(records),
        "--out",
        str(out),
    ]


def kinetics_prepare(csvs: dict[str, bytes], expected: str, line: int = 2, named_split: str = "val") -> Builder:
    """``frozenbench prepare`` of Kinetics downloads whose split csvs hold ``csvs`` (their digests
    recorded, as `frozenbench download` does on first use); the error names ``<split>.csv:<line>``
    and no work folder or dataset is left."""

    def case(tmp: Path) -> Case:
        downloads, files = tmp / "downloads", []
        records = tmp / "checksums.sha256"
        for split, body in csvs.items():
            (downloads / f"k_{split}").mkdir(parents=True)
            (downloads / f"{split}.csv").write_bytes(body)
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w:gz"):
                pass  # the clips never matter: the csv is refused before any tarball is opened
            (downloads / f"k_{split}" / "part_0.tar.gz").write_bytes(buf.getvalue())
            (downloads / f"k_{split}.txt").write_text(f"http://127.0.0.1/k_{split}/part_0.tar.gz\n")
            files.append({"url": f"http://127.0.0.1/{split}.csv", "filename": f"{split}.csv", "extract": False})
            files.append({"url": f"http://127.0.0.1/k_{split}.txt", "filename": f"k_{split}.txt", "url_list": True})
        for entry in files:
            entry["checksum"] = {"unpublished": "none"}
        trusted = ChecksumRecords(records)
        for path in sorted(p for p in downloads.rglob("*") if p.is_file()):
            trusted.add(path.relative_to(downloads).as_posix(), hashlib.sha256(path.read_bytes()).hexdigest())
        spec = {"source": "download", "format": "kinetics", "download": {"files": files}}
        out = tmp / "data" / "k400"
        named = f"{downloads / f'{named_split}.csv'}:{line}" if line else downloads / f"{named_split}.csv"
        return Case(prepare_args(tmp, spec, downloads, out, records), named, expected, output=out, records=records)

    return case


def coco_output_fails_validation(tmp: Path) -> Case:
    """COCO archives whose annotations hold a NaN box: the old prepare wrote a dataset that looked
    finished (its manifest) and only training failed, hours later; now prepare's own validation
    refuses it and names the annotation file as it would stand in the dataset."""
    downloads, out = tmp / "downloads", tmp / "data" / "coco"
    downloads.mkdir()
    files = []
    for name, members in {
        "val2017.zip": {"val2017/000000000001.jpg": BAD / "image.jpg"},
        "annotations_trainval2017.zip": {"annotations/instances_val2017.json": BAD / "coco_nan_bbox.json"},
    }.items():
        with zipfile.ZipFile(downloads / name, "w") as zf:
            for arcname, source in members.items():
                zf.write(source, arcname)
        digest = hashlib.sha256((downloads / name).read_bytes()).hexdigest()
        files.append({"url": f"http://127.0.0.1/{name}", "filename": name, "checksum": {"sha256": digest}})
    spec = {"source": "download", "format": "coco", "download": {"files": files}}
    records = tmp / "checksums.sha256"
    named = out / "annotations" / "instances_val2017.json"
    return Case(prepare_args(tmp, spec, downloads, out, records), named, "bbox must be 4 finite", output=out)


def kinetics_dataset(tmp: Path, rows: list[dict], clip: Path | bool | None = None) -> Path:
    """A prepared-layout Kinetics folder (csvs, classes.txt, lists) whose val clips are ``clip``
    (none when ``clip`` is False)."""
    root = tmp / "k400"
    (root / "videos" / "val").mkdir(parents=True)
    if clip is not False:
        clip = clip or write_clip(tmp / "clip.mp4", [round(i * 1000 / 30) for i in range(10)])
        for r in rows:
            shutil.copy(clip, root / "videos" / "val" / clip_filename(r["youtube_id"], r["time_start"], r["time_end"]))
    write_csv(root / "annotations" / "train.csv", [])
    write_csv(root / "annotations" / "val.csv", rows)
    unique = {clip_filename(r["youtube_id"], 0, 10): r for r in rows}
    write_lists(root, {"train": [], "val": list(unique.values())}, ["a", "b"])
    return root


def validate_case(build, named, expected: str) -> Builder:
    def case(tmp: Path) -> Case:
        root = build(tmp)
        return Case(["frozenbench", "validate", "--format", "kinetics", str(root)], named(root), expected)

    return case


def outside_id(tmp: Path) -> Path:
    """A csv row whose id climbs out of the dataset, to a clip that decodes there: the old
    validator read it and called the dataset ok."""
    root = kinetics_dataset(tmp, [row("../../../outside", "a", "val")], clip=False)
    write_clip(tmp / "outside_000000_000010.mp4", [round(i * 1000 / 30) for i in range(10)])
    return root


def lying_dataset(tmp: Path) -> Path:
    return kinetics_dataset(tmp, [row("liar0000000", "a", "val")], lying_clip(tmp / "lying.mp4", keep=0))


def wrong_list(tmp: Path) -> Path:
    root = kinetics_dataset(tmp, [row("clip000000a", "a", "val"), row("clip000000b", "b", "val")])
    listed = root / "val_list_videos.txt"
    listed.write_text(listed.read_text().replace(" 1\n", " 0\n"))  # clip b would train as class a
    return root


def val_clip(ytid: str):
    return lambda root: root / "videos" / "val" / clip_filename(ytid, 0, 10)


CASES: dict[str, Builder] = {
    "kinetics_clip_under_two_labels": kinetics_prepare(
        {"train": HEADER + b"a,clip000000a,0,10,train\n", "val": HEADER + b"b,clip000000a,0,10,val\n"},
        "is also listed at",
    ),
    "kinetics_csv_not_utf8": kinetics_prepare(
        {"train": HEADER, "val": HEADER + "caf\u00e9,clip000000a,0,10,val\n".encode("latin-1")}, "not UTF-8", line=0
    ),
    "kinetics_csv_time_not_integer": kinetics_prepare(
        {"train": HEADER, "val": HEADER + b"a,clip000000a,12.5,22.5,val\n"}, "must be integers"
    ),
    "prepare_coco_output_fails_validation": coco_output_fails_validation,
    "kinetics_id_climbing_out": validate_case(outside_id, val_clip("../../../outside"), "missing"),
    "kinetics_header_lies_nothing_decodes": validate_case(
        lying_dataset, val_clip("liar0000000"), "no decodable frames (its header announces 60)"
    ),
    "kinetics_list_trains_a_clip_as_another_class": validate_case(
        wrong_list, lambda root: root / "val_list_videos.txt", "label index 0"
    ),
    "kinetics_clip_listed_twice": validate_case(
        lambda tmp: kinetics_dataset(tmp, [row("clip000000a", "a", "val"), row("clip000000a", "b", "val")]),
        lambda root: root / "annotations" / "val.csv",
        "is listed twice",
    ),
}
