"""Dataset validators: report *every* problem found, each naming the file.

One checker per format (``coco``, ``ade``, ``kinetics``, ``imagefolder``) walks
a dataset folder in the layout the readers consume and returns a list of
:class:`Problem`. Nothing here stops at the first problem: a researcher fixing a
broken download wants the whole list at once.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from frozenbench.data.images import ORIENTATION_BY_FORMAT, ImageError, ImageInfo, inspect_image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
KINETICS_COLUMNS = ["label", "youtube_id", "time_start", "time_end", "split"]


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class Report:
    problems: list[Problem]
    files_checked: int
    warnings: list[Problem] = field(default_factory=list)
    """Legal but worth knowing (an EXIF orientation tag): printed, never a failure."""

    @property
    def ok(self) -> bool:
        return not self.problems


def check_image(path: Path) -> tuple[ImageInfo | None, str | None]:
    """(its :class:`ImageInfo`, None) for a fully decodable image, else (None, reason)."""
    try:
        return inspect_image(path), None
    except ImageError as err:
        return None, err.reason


ORIENTATION_NAMES = {
    2: "mirrored",
    3: "rotated 180°",
    4: "flipped upside down",
    5: "mirrored and rotated 90° counter-clockwise",
    6: "rotated 90° clockwise",
    7: "mirrored and rotated 90° clockwise",
    8: "rotated 90° counter-clockwise",
}


def _orientation_warning(path: Path, info: ImageInfo, applied: bool) -> Problem:
    how = ORIENTATION_NAMES[info.orientation]
    if applied:
        return Problem(
            str(path), f"EXIF orientation {info.orientation} ({how} for display): read upright, the tag applied"
        )
    return Problem(
        str(path),
        f"EXIF orientation {info.orientation} ({how} for display): read as stored, the tag ignored, "
        "as the annotations are in the stored frame",
    )


def _image_info(path: Path, report: Report, fmt: str) -> ImageInfo | None:
    """Decode ``path``: its info, else None with the problem reported; warns about an EXIF
    orientation (read as ``fmt``'s labels need, :data:`ORIENTATION_BY_FORMAT`)."""
    info, reason = check_image(path)
    if reason:
        report.problems.append(Problem(str(path), reason))
        return None
    if info.orientation != 1:
        report.warnings.append(_orientation_warning(path, info, ORIENTATION_BY_FORMAT[fmt]))
    return info


def _drawn_on_rotated_view(path: Path, info: ImageInfo, annotated_size, what: str) -> Problem | None:
    """The problem when labels of size ``annotated_size`` (width, height) fit the image only as a
    viewer shows it (the EXIF rotation applied), which the stored-frame reader cannot line up."""
    if tuple(annotated_size) == info.size or tuple(annotated_size) != info.displayed_size:
        return None
    (w, h), (dw, dh) = info.size, info.displayed_size
    return Problem(
        str(path),
        f"stored {w}x{h} with EXIF orientation {info.orientation} (shown {dw}x{dh}), and {what} says "
        f"{annotated_size[0]}x{annotated_size[1]}: the labels were drawn on the rotated view, but frozenbench "
        "reads stored pixels; rotate the pixels (PIL ImageOps.exif_transpose) and save without the tag",
    )


def _check_coco_image(path: Path, annotated_size, what: str, report: Report) -> None:
    info = _image_info(path, report, "coco")
    if info is None or tuple(annotated_size) == info.size:
        return
    rotated = _drawn_on_rotated_view(path, info, annotated_size, what)
    w, h = info.size
    report.problems.append(
        rotated or Problem(str(path), f"image is {w}x{h} but {what} says {annotated_size[0]}x{annotated_size[1]}")
    )


def check_video(path: Path) -> tuple[int, str | None]:
    """(decoded frame count, None) for a decodable video, else (0, reason)."""
    from frozenbench.data.validate_video import clip_frame_counts

    _, frames, reason = clip_frame_counts(path)
    return frames, reason


def _finite_numbers(values: Iterable) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)


def _load_json(path: Path, problems: list[Problem]):
    try:
        # NaN/Infinity literals parse (as in pycocotools) and are reported per field below
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        problems.append(Problem(str(path), f"invalid JSON: {err}"))
        return None


def _is_id(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def coco_meaning_problems(coco: dict, ann_path: Path, annotated: bool = True) -> list[Problem]:
    """Problems that make a COCO file mean something else to mmdet or pycocotools than it says,
    without any error of theirs: category and annotation ids that are no integers or repeat (one
    dict entry silently replaces the other), and annotations without a segmentation (frozenbench's
    detectors all train a mask head). Training checks these too (:mod:`frozenbench.tasks.detection`)."""
    problems: list[Problem] = []
    seen: set[int] = set()
    for cat in coco.get("categories", []):
        cid = cat.get("id") if isinstance(cat, dict) else None
        if not _is_id(cid):
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
        if not _is_id(aid):
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


def validate_coco(root: Path) -> Report:
    report = Report([], 0)
    problems = report.problems
    ann_files = sorted((root / "annotations").glob("instances_*.json"))
    if not ann_files:
        return Report([Problem(str(root / "annotations"), "no instances_*.json annotation files")], 0)
    for ann_path in ann_files:
        report.files_checked += 1
        coco = _load_json(ann_path, problems)
        if coco is None:
            continue
        missing = [k for k in ("images", "annotations", "categories") if k not in coco]
        if missing:
            problems.append(Problem(str(ann_path), f"missing top-level keys: {', '.join(missing)}"))
            continue
        split_dir = root / ann_path.stem.removeprefix("instances_")
        problems.extend(coco_meaning_problems(coco, ann_path))
        category_ids = {c.get("id") for c in coco["categories"] if isinstance(c, dict)}
        images = {}
        for img in coco["images"]:
            where = f"{ann_path} (image id {img.get('id')})"
            if not _is_id(img.get("id")) or "file_name" not in img:
                problems.append(Problem(where, "image entry needs an integer id and a file_name"))
                continue
            if img["id"] in images:
                problems.append(Problem(where, "duplicate image id"))
            images[img["id"]] = img
            report.files_checked += 1
            annotated_size = (img.get("width"), img.get("height"))
            _check_coco_image(split_dir / img["file_name"], annotated_size, "the annotation", report)
        for ann in coco["annotations"]:
            where = f"{ann_path} (annotation id {ann.get('id')})"
            img = images.get(ann.get("image_id"))
            if img is None:
                problems.append(Problem(where, f"unknown image_id {ann.get('image_id')}"))
                continue
            if ann.get("category_id") not in category_ids:
                problems.append(Problem(where, f"unknown category_id {ann.get('category_id')}"))
            if ann.get("iscrowd", 0) not in (0, 1):
                problems.append(Problem(where, f"iscrowd must be 0 or 1, got {ann.get('iscrowd')!r}"))
            bbox = ann.get("bbox")
            if not isinstance(bbox, list) or len(bbox) != 4 or not _finite_numbers(bbox):
                problems.append(Problem(where, f"bbox must be 4 finite numbers [x, y, w, h], got {bbox!r}"))
            else:
                x, y, w, h = bbox
                if w < 0 or h < 0:
                    problems.append(Problem(where, f"bbox has negative width or height: {bbox}"))
                if x < 0 or y < 0 or x + w > img["width"] + 1e-3 or y + h > img["height"] + 1e-3:
                    problems.append(
                        Problem(where, f"bbox {bbox} lies outside the {img['width']}x{img['height']} image")
                    )
            area = ann.get("area")
            if not _finite_numbers([area]) or area < 0:
                problems.append(Problem(where, f"area must be a finite non-negative number, got {area!r}"))
            _check_segmentation(ann.get("segmentation"), img, where, problems)
    # test-dev / test image lists: images only (their annotations are withheld), in test2017/
    for info_path in sorted((root / "annotations").glob("image_info_*.json")):
        report.files_checked += 1
        info = _load_json(info_path, problems)
        if info is None:
            continue
        if "images" not in info or "categories" not in info:
            problems.append(Problem(str(info_path), "missing top-level keys images/categories"))
            continue
        problems.extend(coco_meaning_problems(info, info_path, annotated=False))
        for img in info["images"]:
            report.files_checked += 1
            path = root / "test2017" / str(img.get("file_name"))
            _check_coco_image(path, (img.get("width"), img.get("height")), info_path.name, report)
    return report


def _check_segmentation(seg, img: dict, where: str, problems: list[Problem]) -> None:
    if seg is None:
        return  # reported by coco_meaning_problems
    if isinstance(seg, list):
        if not seg:
            problems.append(Problem(where, "empty polygon list"))
        for poly in seg:
            if not isinstance(poly, list) or not _finite_numbers(poly):
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


def read_ade_num_classes(root: Path) -> int | None:
    info = root / "objectInfo150.txt"
    if not info.exists():
        return None
    rows = [line for line in info.read_text().splitlines()[1:] if line.strip()]
    return len(rows)


def validate_ade(root: Path, num_classes: int | None = None) -> Report:
    report = Report([], 0)
    problems = report.problems
    num_classes = num_classes or read_ade_num_classes(root) or 150
    for split in ("training", "validation"):
        img_dir, ann_dir = root / "images" / split, root / "annotations" / split
        if not img_dir.is_dir() or not ann_dir.is_dir():
            problems.append(Problem(str(root), f"missing images/{split} or annotations/{split}"))
            continue
        images = {p.stem: p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
        labels = {p.stem: p for p in ann_dir.iterdir() if p.suffix.lower() == ".png"}
        for stem in sorted(set(images) - set(labels)):
            problems.append(Problem(str(images[stem]), "no label map in annotations/" + split))
        for stem in sorted(set(labels) - set(images)):
            problems.append(Problem(str(labels[stem]), "label map without an image in images/" + split))
        for stem in sorted(set(images) & set(labels)):
            report.files_checked += 2
            info = _image_info(images[stem], report, "ade")
            linfo, lreason = check_image(labels[stem])
            if lreason:
                problems.append(Problem(str(labels[stem]), lreason))
                continue
            if linfo.format != "PNG":
                # JPEG's lossy compression blurs label values across class borders: wrong classes
                problems.append(
                    Problem(
                        str(labels[stem]), f"label map is a {linfo.format} file under a .png name (needs lossless PNG)"
                    )
                )
                continue
            # a label map is a grid of the image's stored pixels: its size is the image's stored size
            if info and linfo.size != info.size:
                (lw, lh), (w, h) = linfo.size, info.size
                problems.append(
                    _drawn_on_rotated_view(images[stem], info, linfo.size, "its label map")
                    or Problem(str(labels[stem]), f"label map is {lw}x{lh} but its image is {w}x{h}")
                )
            with Image.open(labels[stem]) as lab:
                if lab.mode not in ("L", "P"):
                    problems.append(
                        Problem(str(labels[stem]), f"label map must be single-channel (L or P), got {lab.mode}")
                    )
                    continue
                values = np.asarray(lab)
            top = int(values.max()) if values.size else 0
            if top > num_classes:
                bad = sorted(int(v) for v in np.unique(values) if v > num_classes)
                problems.append(Problem(str(labels[stem]), f"label values {bad[:5]} out of range 0..{num_classes}"))
    return report


def validate_kinetics(root: Path, workers: int = 1) -> Report:
    """See :mod:`frozenbench.data.validate_video`."""
    from frozenbench.data import validate_video

    return validate_video.validate_kinetics(root, workers)


def validate_imagefolder(root: Path) -> Report:
    report = Report([], 0)
    problems = report.problems
    class_sets = {}
    for split in ("train", "val"):
        split_dir = root / split
        if not split_dir.is_dir():
            problems.append(Problem(str(split_dir), "missing split folder"))
            continue
        classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
        class_sets[split] = set(classes)
        if not classes:
            problems.append(Problem(str(split_dir), "no class folders"))
        for name in classes:
            files = sorted(p for p in (split_dir / name).iterdir() if p.is_file())
            if not files:
                problems.append(Problem(str(split_dir / name), "empty class folder"))
            for path in files:
                report.files_checked += 1
                if path.suffix.lower() not in IMAGE_SUFFIXES:
                    problems.append(Problem(str(path), f"unexpected file type {path.suffix!r}"))
                    continue
                _image_info(path, report, "imagefolder")
    if len(class_sets) == 2 and class_sets["train"] != class_sets["val"]:
        diff = sorted(class_sets["train"] ^ class_sets["val"])
        problems.append(Problem(str(root), f"train and val have different classes: {', '.join(diff)}"))
    return report


VALIDATORS: dict[str, Callable[[Path], Report]] = {
    "coco": validate_coco,
    "ade": validate_ade,
    "kinetics": validate_kinetics,
    "imagefolder": validate_imagefolder,
}


def validate(fmt: str, root: str | Path) -> Report:
    root = Path(root)
    if not root.is_dir():
        return Report([Problem(str(root), "not a folder")], 0)
    return VALIDATORS[fmt](root)
