"""``shapes-coco``: instance detection/segmentation images in the COCO 2017 layout.

The layout is the real archives' (:mod:`frozenbench.data.formats.coco`); test-dev images and their
image list only with ``num_test_dev`` > 0.

Unoccluded instances carry polygon masks, occluded ones compressed RLE of their
visible part, and crowd groups (``iscrowd=1``) uncompressed RLE, as in COCO.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from frozenbench.data.formats import coco as coco_format
from frozenbench.data.synth import shapes, sizes

TEST_DEV_FIRST_ID = 1_000_001  # image ids disjoint from train/val, as in COCO
MAX_OCCLUSION = 0.5  # placements hiding more of an earlier instance are retried
CROWD_FRACTION = 0.1  # images that also get one iscrowd=1 group of small shapes


def categories(num_classes: int) -> list[dict[str, Any]]:
    return [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(shapes.SHAPES[:num_classes])]


def _encode_rle(mask: np.ndarray, compressed: bool) -> dict[str, Any]:
    if compressed:
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
    flat = mask.astype(np.uint8).reshape(-1, order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:  # COCO RLE starts with a run of zeros
        counts = [0] + counts
    return {"size": list(mask.shape), "counts": [int(c) for c in counts]}


def draw_image(
    rng: np.random.Generator, width: int, height: int, num_classes: int, max_instances: int, texture: float, crowd: bool
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """One ``height`` x ``width`` image and its instances: dicts with category_id, visible mask,
    segmentation, iscrowd. Shape radii scale with the short side."""
    # the draws from rng keep their order (background, crowd, instances, noise): a seed's dataset stays the same
    img = shapes.background(rng, height, width, texture)
    placed: list[dict[str, Any]] = []  # in paint order
    if crowd:
        placed.append(_draw_crowd(rng, img, num_classes))
    for _ in range(int(rng.integers(1, max_instances + 1))):
        found = _find_placement(rng, placed, img.shape[:2], num_classes)
        if found is None:
            continue
        cat, poly, mask = found
        for inst in placed:
            inst["mask"] = inst["mask"] & ~mask
        img[mask] = shapes.contrasting_color(rng, img[mask].mean(axis=0))
        placed.append(
            {"category_id": cat + 1, "mask": mask, "full_area": int(mask.sum()), "iscrowd": 0, "polygon": poly}
        )
    for inst in placed:
        inst["segmentation"] = _segmentation(inst)
    noise = rng.normal(0, 0.02, size=img.shape).astype(np.float32)
    return shapes.to_uint8(img + noise), placed


def _draw_crowd(rng: np.random.Generator, img: np.ndarray, num_classes: int) -> dict[str, Any]:
    """Paint one iscrowd=1 group of small shapes of one class onto ``img``: the group's instance."""
    height, width = img.shape[:2]
    size = min(width, height)
    extent = np.array([width, height], dtype=float)
    cat = int(rng.integers(num_classes))
    cx, cy = rng.uniform(0.25, 0.75, size=2) * extent
    union = np.zeros((height, width), bool)
    color = shapes.contrasting_color(rng, img[int(cy), int(cx)])
    for _ in range(int(rng.integers(4, 8))):
        r = rng.uniform(0.03, 0.05) * size
        px, py = np.clip([cx, cy] + rng.normal(0, 0.06 * size, size=2), r, extent - r)
        poly = shapes.shape_polygon(shapes.SHAPES[cat], px, py, r, rng.uniform(-1, 1) * shapes.MAX_ROTATION)
        union |= shapes.rasterize(poly, height, width)
    img[union] = color
    return {"category_id": cat + 1, "mask": union, "full_area": int(union.sum()), "iscrowd": 1, "polygon": None}


def _find_placement(
    rng: np.random.Generator, placed: list[dict[str, Any]], shape: tuple[int, int], num_classes: int
) -> tuple[int, np.ndarray, np.ndarray] | None:
    """A new instance's (class index, polygon, mask) in at most 10 tries; None when none fits."""
    height, width = shape
    size = min(width, height)
    extent = np.array([width, height], dtype=float)
    for _attempt in range(10):
        cat = int(rng.integers(num_classes))
        r = rng.uniform(0.08, 0.2) * size
        cx, cy = rng.uniform(r, extent - r)
        poly = shapes.shape_polygon(shapes.SHAPES[cat], cx, cy, r, rng.uniform(-1, 1) * shapes.MAX_ROTATION)
        mask = shapes.rasterize(poly, height, width)
        if mask.sum() >= 16 and not _occludes_too_much(placed, mask):
            return cat, poly, mask
    return None


def _occludes_too_much(placed: list[dict[str, Any]], new_mask: np.ndarray) -> bool:
    """Whether ``new_mask`` would hide more than ``MAX_OCCLUSION`` of an instance already placed."""
    for inst in placed:
        visible = inst["mask"] & ~new_mask
        if visible.sum() < (1 - MAX_OCCLUSION) * inst["full_area"]:
            return True
    return False


def _segmentation(inst: dict[str, Any]) -> Any:
    """An instance's COCO segmentation: uncompressed RLE (crowd), polygon (unoccluded) or compressed RLE."""
    if inst["iscrowd"]:
        return _encode_rle(inst["mask"], compressed=False)
    if inst["mask"].sum() == inst["full_area"]:
        return shapes.polygon_for_coco(inst["polygon"])
    return _encode_rle(inst["mask"], compressed=True)


def _annotation(inst: dict[str, Any], ann_id: int, image_id: int) -> dict[str, Any]:
    rle = mask_utils.encode(np.asfortranarray(inst["mask"].astype(np.uint8)))
    x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": inst["category_id"],
        "segmentation": inst["segmentation"],
        "area": float(mask_utils.area(rle)),
        "bbox": [x, y, w, h],
        "iscrowd": inst["iscrowd"],
    }


def _write_image(folder: Path, image_id: int, pixels: np.ndarray) -> dict[str, Any]:
    """Write the JPEG of ``image_id``; its ``images`` entry."""
    file_name = f"{image_id:012d}.jpg"
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=92)
    (folder / file_name).write_bytes(buf.getvalue())
    return {"id": image_id, "file_name": file_name, "width": int(pixels.shape[1]), "height": int(pixels.shape[0])}


def generate(spec: dict[str, Any], out: Path) -> dict[str, int]:
    """Write the dataset under ``out``; returns counts per split."""
    params = spec["synth"]
    counts = {}
    for split_index, split in enumerate(coco_format.ANNOTATED_SPLITS):
        folder = coco_format.image_folder(out, split)
        folder.mkdir(parents=True)
        images, annotations = [], []
        num = params[f"num_{split}"]
        for i in range(num):
            image_id = i + 1
            rng = np.random.default_rng([params["seed"], split_index, i])
            crowd = bool(rng.random() < CROWD_FRACTION)
            width, height = sizes.image_size(params, sizes.COCO_REAL_SIZES, i)
            pixels, instances = draw_image(
                rng, width, height, params["num_classes"], params["max_instances"], params["texture"], crowd
            )
            images.append(_write_image(folder, image_id, pixels))
            for inst in instances:
                annotations.append(_annotation(inst, len(annotations) + 1, image_id))
        coco = {
            "info": {
                "description": f"frozenbench shapes-coco ({split})",
                "version": "1.0",
                "year": 2017,
                "contributor": "frozenbench synth",
                "date_created": "1970-01-01",
            },
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": categories(params["num_classes"]),
        }
        coco_format.write_annotations(out, split, coco)
        counts[split] = num
    if params.get("num_test_dev", 0):
        counts["test-dev"] = _generate_test_dev(params, out)
    return counts


def _generate_test_dev(params: dict[str, Any], out: Path) -> int:
    """COCO's test-dev: images whose annotations are withheld (scored by the evaluation server)."""
    num = params["num_test_dev"]
    folder = coco_format.image_folder(out, "test-dev")
    folder.mkdir(parents=True)
    images = []
    for i in range(num):
        image_id = TEST_DEV_FIRST_ID + i
        # the split index after the annotated ones: test-dev images differ from theirs
        rng = np.random.default_rng([params["seed"], len(coco_format.ANNOTATED_SPLITS), i])
        width, height = sizes.image_size(params, sizes.COCO_REAL_SIZES, i)
        pixels, _ = draw_image(
            rng, width, height, params["num_classes"], params["max_instances"], params["texture"], False
        )
        images.append(_write_image(folder, image_id, pixels))
    info = {
        "description": "frozenbench shapes-coco (test-dev)",
        "version": "1.0",
        "year": 2017,
        "contributor": "frozenbench synth",
        "date_created": "1970-01-01",
    }
    coco_format.write_annotations(
        out,
        "test-dev",
        {"info": info, "licenses": [], "images": images, "categories": categories(params["num_classes"])},
    )
    return num
