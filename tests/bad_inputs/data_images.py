"""Images and COCO files that decode but mean something else than they say, or are no images at all:
``frozenbench validate`` names the file and the problem (made on the fly, in the case's folder)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from ..test_images import bomb_png, save_with_orientation
from .case import BAD, Builder, Case

KIND = "data"


def annotation(ann_id=1, **fields) -> dict:
    return {
        "id": ann_id,
        "image_id": 1,
        "category_id": 1,
        "bbox": [2.0, 2.0, 10.0, 10.0],
        "area": 100.0,
        "iscrowd": 0,
        "segmentation": [[2, 2, 12, 2, 12, 12, 2, 12]],
        **fields,
    }


def coco_case(expected: str, edit=None, image: bytes | None = None, names_image: bool = False) -> Builder:
    """A one-image COCO val split (the committed 32x32 JPEG, or ``image``'s bytes under its .jpg
    name), its json changed by ``edit``; the error names the json, or the image when ``names_image``."""

    def case(tmp: Path) -> Case:
        root = tmp / "coco"
        (root / "val2017").mkdir(parents=True)
        (root / "annotations").mkdir()
        photo = root / "val2017" / "000000000001.jpg"
        if image is None:
            shutil.copy(BAD / "image.jpg", photo)
        else:
            photo.write_bytes(image)
        coco = {
            "images": [{"id": 1, "file_name": photo.name, "width": 32, "height": 32}],
            "annotations": [annotation()],
            "categories": [{"id": 1, "name": "square"}, {"id": 2, "name": "circle"}],
        }
        if edit is not None:
            edit(coco)
        ann_path = root / "annotations" / "instances_val2017.json"
        ann_path.write_text(json.dumps(coco))
        return Case(
            ["frozenbench", "validate", "--format", "coco", str(root)], photo if names_image else ann_path, expected
        )

    return case


def rotated_photo_case(tmp: Path) -> Case:
    """A phone photo stored 48x32 with EXIF orientation 6, annotated (by a tool that applied the
    tag) as the 32x48 view a viewer shows: its boxes cannot line up with the stored pixels."""
    build = coco_case("labels were drawn on the rotated view", names_image=True)
    made = build(tmp)
    photo = made.named
    save_with_orientation(np.full((32, 48, 3), 128, np.uint8), photo, 6)
    ann_path = photo.parent.parent / "annotations" / "instances_val2017.json"
    coco = json.loads(ann_path.read_text())
    coco["images"][0].update(width=32, height=48)
    ann_path.write_text(json.dumps(coco))
    return made


def ade_jpeg_label_case(tmp: Path) -> Case:
    """An ADE20K label map saved as JPEG under its .png name: its class borders blur into other classes."""
    root = tmp / "ade"
    for split in ("training", "validation"):
        (root / "images" / split).mkdir(parents=True)
        (root / "annotations" / split).mkdir(parents=True)
    shutil.copy(BAD / "image.jpg", root / "images" / "validation" / "ADE_val_00000001.jpg")
    labels = np.zeros((32, 32), np.uint8)
    labels[8:24, 8:24] = 3
    buffer = io.BytesIO()
    Image.fromarray(labels).save(buffer, "JPEG")
    label = root / "annotations" / "validation" / "ADE_val_00000001.png"
    label.write_bytes(buffer.getvalue())
    return Case(["frozenbench", "validate", "--format", "ade", str(root)], label, "a JPEG file under a .png name")


def imagefolder_case(name: str, data: bytes, expected: str) -> Builder:
    def case(tmp: Path) -> Case:
        root = tmp / "folder"
        for split in ("train", "val"):
            (root / split / "square").mkdir(parents=True)
            shutil.copy(BAD / "image.jpg", root / split / "square" / "ok.jpg")
        bad = root / "train" / "square" / name
        bad.write_bytes(data)
        return Case(["frozenbench", "validate", "--format", "imagefolder", str(root)], bad, expected)

    return case


CASES: dict[str, Builder] = {
    # two categories sharing an id: pycocotools keeps one, mmdet's labels and the scores disagree
    "coco_duplicate_category_id": coco_case(
        "duplicate category id 1", lambda c: c["categories"].append({"id": 1, "name": "triangle"})
    ),
    "coco_category_id_not_integer": coco_case(
        "category id must be an integer, got '1'",
        lambda c: (c["categories"][0].update(id="1"), c["annotations"][0].update(category_id="1")),
    ),
    "coco_annotation_id_not_integer": coco_case(
        "annotation id must be an integer, got '7'", lambda c: c["annotations"][0].update(id="7")
    ),
    # a detection tool's export: mmdet's mask loading would stop on a KeyError mid-training
    "coco_box_only_annotation": coco_case("no segmentation", lambda c: c["annotations"][0].pop("segmentation")),
    "coco_image_is_html": coco_case(
        "an HTML/XML page, not an image",
        image=b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Please sign in</body></html>\n",
        names_image=True,
    ),
    "coco_rotated_photo_annotated_upright": rotated_photo_case,
    "ade_label_map_is_jpeg": ade_jpeg_label_case,
    "imagefolder_decompression_bomb": imagefolder_case(
        "huge.png", bomb_png(100_000, 100_000), "image size header says 10,000,000,000 pixels"
    ),
}
