"""COCO 2017 (detection + instance segmentation): layout, class names, orientation rule, validator
and the annotation writer that the mini dataset and ``prepare`` share.

Layout (as extracted from the real COCO archives; the mini dataset writes the same)::

    train2017/000000000001.jpg ...
    val2017/...
    test2017/...                                  (test-dev images, when there are any)
    annotations/instances_train2017.json
    annotations/instances_val2017.json
    annotations/image_info_test-dev2017.json      (images and categories, no annotations)

Stdlib only at import: the Snakefile and the config checks may import it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from frozenbench.data.formats.checks import (
    Problem,
    Report,
    drawn_on_rotated_view,
    finite_numbers,
    image_info,
    is_id,
    load_json,
)
from frozenbench.errors import UserError
from frozenbench.utils.atomic import write_json

ANNOTATIONS_FOLDER = "annotations"
SPLIT_FOLDERS = {"train": "train2017", "val": "val2017", "test-dev": "test2017"}
# test-dev annotations are withheld: the image list is all there is
ANNOTATION_FILES = {
    "train": "instances_train2017.json",
    "val": "instances_val2017.json",
    "test-dev": "image_info_test-dev2017.json",
}
ANNOTATED_SPLITS = ("train", "val")
# the validator checks every annotation file it finds by these name patterns, not only the three
# above: ``instances_<folder>.json`` annotates ``<folder>/``, ``image_info_*.json`` lists test2017/
INSTANCES_PREFIX = "instances_"
IMAGE_INFO_PREFIX = "image_info_"

# COCO boxes, polygons and RLE are in the *stored* frame (``width`` and ``height`` are the stored
# size): images are read as stored, the EXIF orientation ignored (:mod:`frozenbench.data.images`).
APPLY_EXIF_ORIENTATION = False


def annotation_path(root: str | Path, split: str) -> Path:
    """Where ``split``'s annotation file lies (whether or not it exists)."""
    return Path(root) / ANNOTATIONS_FOLDER / ANNOTATION_FILES[split]


def annotation_file(root: str | Path, split: str) -> Path:
    """``split``'s annotation file; a UserError naming it when it is missing."""
    path = annotation_path(root, split)
    if not path.exists():
        raise UserError(f"{path}: missing COCO annotation file")
    return path


def image_folder(root: str | Path, split: str) -> Path:
    return Path(root) / SPLIT_FOLDERS[split]


def class_names(root: str | Path) -> list[str]:
    """Names of the training labels: label ``k`` is the ``k``-th category id in increasing order."""
    # the label <-> category id mapping has one definition, shared with training and evaluation;
    # imported here, not with the module, so that importing this module stays free of pycocotools
    from frozenbench.evaluation.coco import category_ids

    categories = json.loads(annotation_file(root, "val").read_text())["categories"]
    names = {c["id"]: c["name"] for c in categories}
    return [names[cid] for cid in category_ids(categories)]


def write_annotations(root: str | Path, split: str, content: dict[str, Any]) -> None:
    """``split``'s annotation file (compact, sorted keys: the same bytes for the same content)."""
    write_json(annotation_path(root, split), content, indent=None)


def _check_image(path: Path, annotated_size, what: str, report: Report) -> None:
    info = image_info(path, report, APPLY_EXIF_ORIENTATION)
    if info is None or tuple(annotated_size) == info.size:
        return
    rotated = drawn_on_rotated_view(path, info, annotated_size, what)
    w, h = info.size
    report.problems.append(
        rotated or Problem(str(path), f"image is {w}x{h} but {what} says {annotated_size[0]}x{annotated_size[1]}")
    )


def coco_meaning_problems(coco: dict, ann_path: Path, annotated: bool = True) -> list[Problem]:
    """Problems that make a COCO file mean something else to mmdet or pycocotools than it says,
    without any error of theirs: category and annotation ids that are no integers or repeat (one
    dict entry silently replaces the other), and annotations without a segmentation (frozenbench's
    detectors all train a mask head). Training checks these too (:mod:`frozenbench.tasks.detection`)."""
    problems: list[Problem] = []
    seen: set[int] = set()
    for cat in coco.get("categories", []):
        cid = cat.get("id") if isinstance(cat, dict) else None
        if not is_id(cid):
            problems.append(Problem(str(ann_path), f"category id must be an integer, got {cid!r}"))
        elif cid in seen:
            problems.append(Problem(str(ann_path), f"duplicate category id {cid} ({cat.get('name')!r})"))
        else:
            seen.add(cid)
    if not annotated:
        return problems
    ann_ids: set[int] = set()
    for ann in coco.get("annotations", []):
        aid = ann.get("id")
        where = f"{ann_path} (annotation id {aid})"
        if not is_id(aid):
            problems.append(Problem(where, f"annotation id must be an integer, got {aid!r}"))
        elif aid in ann_ids:
            problems.append(Problem(where, "duplicate annotation id"))
        ann_ids.add(aid)
        if "segmentation" not in ann or ann["segmentation"] is None:
            # a box-only export (a detection labelling tool): the mask head would have no target.
            # Refused rather than filled with box-shaped masks, which would train and score a
            # rectangle as the instance's mask and report a meaningless mask AP.
            problems.append(
                Problem(
                    where,
                    "no segmentation: frozenbench's detectors (Mask R-CNN, Cascade Mask R-CNN, HTC) train a "
                    "mask head, so every annotation needs a polygon or RLE mask",
                )
            )
    return problems


def validate(root: Path) -> Report:
    report = Report([], 0)
    ann_files = sorted((root / ANNOTATIONS_FOLDER).glob(f"{INSTANCES_PREFIX}*.json"))
    if not ann_files:
        return Report([Problem(str(root / ANNOTATIONS_FOLDER), f"no {INSTANCES_PREFIX}*.json annotation files")], 0)
    for ann_path in ann_files:
        _check_instances_file(root, ann_path, report)
    # test-dev / test image lists: images only (their annotations are withheld), in test2017/
    for info_path in sorted((root / ANNOTATIONS_FOLDER).glob(f"{IMAGE_INFO_PREFIX}*.json")):
        _check_image_info_file(root, info_path, report)
    return report


def _load_counted(path: Path, keys: tuple[str, ...], report: Report) -> dict[str, Any] | None:
    """``path``'s JSON, counted as a checked file, when it parses and has every top-level key of
    ``keys``; else None with the problem reported."""
    report.files_checked += 1
    content = load_json(path, report.problems)
    if content is None:
        return None
    missing = [k for k in keys if k not in content]
    if missing:
        report.problems.append(Problem(str(path), f"missing top-level keys: {', '.join(missing)}"))
        return None
    return content


def _check_instances_file(root: Path, ann_path: Path, report: Report) -> None:
    """Check one ``instances_<split>.json``: its keys, its images on disk and every annotation."""
    problems = report.problems
    coco = _load_counted(ann_path, ("images", "annotations", "categories"), report)
    if coco is None:
        return
    split_dir = root / ann_path.stem.removeprefix(INSTANCES_PREFIX)
    problems.extend(coco_meaning_problems(coco, ann_path))
    category_ids = {c.get("id") for c in coco["categories"] if isinstance(c, dict)}
    images = _check_image_entries(coco["images"], ann_path, split_dir, report)
    for ann in coco["annotations"]:
        where = f"{ann_path} (annotation id {ann.get('id')})"
        img = images.get(ann.get("image_id"))
        if img is None:
            problems.append(Problem(where, f"unknown image_id {ann.get('image_id')}"))
            continue
        _check_annotation(ann, img, category_ids, where, problems)


def _check_image_entries(entries: list, ann_path: Path, split_dir: Path, report: Report) -> dict:
    """Check an annotation file's image entries and their files: the valid entries by image id."""
    images = {}
    for img in entries:
        where = f"{ann_path} (image id {img.get('id')})"
        if not is_id(img.get("id")) or "file_name" not in img:
            report.problems.append(Problem(where, "image entry needs an integer id and a file_name"))
            continue
        if img["id"] in images:
            report.problems.append(Problem(where, "duplicate image id"))
        images[img["id"]] = img
        report.files_checked += 1
        annotated_size = (img.get("width"), img.get("height"))
        _check_image(split_dir / img["file_name"], annotated_size, "the annotation", report)
    return images


def _check_annotation(ann: dict, img: dict, category_ids: set, where: str, problems: list[Problem]) -> None:
    """Check one annotation against its image: category, iscrowd, bbox, area and segmentation."""
    if ann.get("category_id") not in category_ids:
        problems.append(Problem(where, f"unknown category_id {ann.get('category_id')}"))
    if ann.get("iscrowd", 0) not in (0, 1):
        problems.append(Problem(where, f"iscrowd must be 0 or 1, got {ann.get('iscrowd')!r}"))
    bbox = ann.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4 or not finite_numbers(bbox):
        problems.append(Problem(where, f"bbox must be 4 finite numbers [x, y, w, h], got {bbox!r}"))
    else:
        x, y, w, h = bbox
        if w < 0 or h < 0:
            problems.append(Problem(where, f"bbox has negative width or height: {bbox}"))
        if x < 0 or y < 0 or x + w > img["width"] + 1e-3 or y + h > img["height"] + 1e-3:
            problems.append(Problem(where, f"bbox {bbox} lies outside the {img['width']}x{img['height']} image"))
    area = ann.get("area")
    if not finite_numbers([area]) or area < 0:
        problems.append(Problem(where, f"area must be a finite non-negative number, got {area!r}"))
    _check_segmentation(ann.get("segmentation"), img, where, problems)


def _check_image_info_file(root: Path, info_path: Path, report: Report) -> None:
    """Check one ``image_info_<split>.json`` (test-dev / test): its keys and its images on disk."""
    problems = report.problems
    info = _load_counted(info_path, ("images", "categories"), report)
    if info is None:
        return
    problems.extend(coco_meaning_problems(info, info_path, annotated=False))
    for img in info["images"]:
        report.files_checked += 1
        path = image_folder(root, "test-dev") / str(img.get("file_name"))
        _check_image(path, (img.get("width"), img.get("height")), info_path.name, report)


def _check_segmentation(seg, img: dict, where: str, problems: list[Problem]) -> None:
    if seg is None:
        return  # reported by coco_meaning_problems
    if isinstance(seg, list):
        if not seg:
            problems.append(Problem(where, "empty polygon list"))
        for poly in seg:
            if not isinstance(poly, list) or not finite_numbers(poly):
                problems.append(Problem(where, "polygon coordinates must be finite numbers"))
            elif len(poly) % 2 or len(poly) < 6:
                problems.append(Problem(where, f"polygon with {len(poly) / 2:g} points (needs >= 3 x,y pairs)"))
    elif isinstance(seg, dict):
        if seg.get("size") != [img["height"], img["width"]]:
            problems.append(
                Problem(
                    where,
                    f"RLE size {seg.get('size')} does not match image {img['height']}x{img['width']} (height, width)",
                )
            )
        counts = seg.get("counts")
        if isinstance(counts, list):
            if not all(isinstance(c, int) and c >= 0 for c in counts) or sum(counts) != img["height"] * img["width"]:
                problems.append(Problem(where, "uncompressed RLE counts must be non-negative and sum to height*width"))
        elif not isinstance(counts, str):
            problems.append(Problem(where, "RLE counts must be a list (uncompressed) or a string (compressed)"))
    else:
        problems.append(Problem(where, f"segmentation must be polygons or RLE, got {type(seg).__name__}"))
