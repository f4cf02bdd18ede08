"""Datasets a user points ``frozenbench validate`` at: broken images, clips, labels and COCO files."""

from __future__ import annotations

import shutil
from pathlib import Path

from .case import BAD, Builder, Case

KIND = "data"


def coco_dataset(tmp: Path, annotations: str) -> tuple[Path, Path]:
    root = tmp / "coco"
    (root / "val2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    shutil.copy(BAD / "image.jpg", root / "val2017" / "000000000001.jpg")
    shutil.copy(BAD / annotations, root / "annotations" / "instances_val2017.json")
    return root, root / "annotations" / "instances_val2017.json"


def ade_dataset(tmp: Path, label: str) -> tuple[Path, Path]:
    root = tmp / "ade"
    for split in ("training", "validation"):
        (root / "images" / split).mkdir(parents=True)
        (root / "annotations" / split).mkdir(parents=True)
    shutil.copy(BAD / "image.jpg", root / "images" / "validation" / "ADE_val_00000001.jpg")
    shutil.copy(BAD / label, root / "annotations" / "validation" / "ADE_val_00000001.png")
    return root, root / "annotations" / "validation" / "ADE_val_00000001.png"


def imagefolder(tmp: Path, bad: str) -> tuple[Path, Path]:
    root = tmp / "folder"
    for split in ("train", "val"):
        (root / split / "square").mkdir(parents=True)
        shutil.copy(BAD / "image.jpg", root / split / "square" / "ok.jpg")
    shutil.copy(BAD / bad, root / "train" / "square" / bad)
    return root, root / "train" / "square" / bad


def kinetics(tmp: Path, bad: str) -> tuple[Path, Path]:
    root = tmp / "k400"
    (root / "annotations").mkdir(parents=True)
    (root / "videos" / "val").mkdir(parents=True)
    (root / "videos" / "train").mkdir(parents=True)
    (root / "classes.txt").write_text("growing\n")
    header = "label,youtube_id,time_start,time_end,split\n"
    (root / "annotations" / "train.csv").write_text(header)
    (root / "annotations" / "val.csv").write_text(header + "growing,abcdefghijk,0,10,val\n")
    clip = root / "videos" / "val" / "abcdefghijk_000000_000010.mp4"
    shutil.copy(BAD / bad, clip)
    return root, clip


def validate_case(fmt: str, build, expected: str) -> Builder:
    """``frozenbench validate --format fmt`` on the dataset ``build`` makes; it names the bad file."""

    def case(tmp: Path) -> Case:
        root, named = build(tmp)
        return Case(["frozenbench", "validate", "--format", fmt, str(root)], named, expected)

    return case


CASES: dict[str, Builder] = {
    "truncated_jpeg": validate_case("imagefolder", lambda t: imagefolder(t, "truncated.jpg"), "unreadable image"),
    "zero_byte_mp4": validate_case("kinetics", lambda t: kinetics(t, "empty.mp4"), "empty file (0 bytes)"),
    "truncated_mp4": validate_case("kinetics", lambda t: kinetics(t, "truncated.mp4"), "undecodable video"),
    "coco_nan_bbox": validate_case("coco", lambda t: coco_dataset(t, "coco_nan_bbox.json"), "bbox must be 4 finite"),
    "coco_negative_bbox": validate_case(
        "coco", lambda t: coco_dataset(t, "coco_negative_bbox.json"), "negative width or height"
    ),
    "coco_unknown_category": validate_case(
        "coco", lambda t: coco_dataset(t, "coco_unknown_category.json"), "unknown category_id 42"
    ),
    "coco_short_polygon": validate_case(
        "coco", lambda t: coco_dataset(t, "coco_short_polygon.json"), "polygon with 2 points"
    ),
    "ade_out_of_range": validate_case("ade", lambda t: ade_dataset(t, "ade_out_of_range.png"), "out of range"),
    "ade_size_mismatch": validate_case(
        "ade", lambda t: ade_dataset(t, "ade_size_mismatch.png"), "label map is 24x20 but its image is 32x32"
    ),
}
