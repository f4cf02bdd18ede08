"""Dataset validators: report *every* problem found, each naming the file.

One checker per format (``coco``, ``ade``, ``kinetics``, ``imagefolder``) walks
a dataset folder in the layout the readers consume and returns a list of
:class:`Problem`. Nothing here stops at the first problem: a researcher fixing a
broken download wants the whole list at once.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

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

    @property
    def ok(self) -> bool:
        return not self.problems


def check_image(path: Path) -> tuple[tuple[int, int] | None, str | None]:
    """((width, height), None) for a fully decodable image, else (None, reason)."""
    if not path.exists():
        return None, "missing"
    if path.stat().st_size == 0:
        return None, "empty file (0 bytes)"
    try:
        with Image.open(path) as img:
            img.load()  # decodes every byte: a truncated JPEG fails here, not at open()
            return img.size, None
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError... for corrupt files
        return None, f"unreadable image ({type(err).__name__}: {err})"


def check_video(path: Path) -> tuple[int, str | None]:
    """(decoded frame count, None) for a decodable video, else (0, reason)."""
    import av

    if not path.exists():
        return 0, "missing"
    if path.stat().st_size == 0:
        return 0, "empty file (0 bytes)"
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return 0, "no video stream"
            frames = sum(1 for _ in container.decode(video=0))
    except Exception as err:  # av.error.* for truncated or foreign files
        return 0, f"undecodable video ({type(err).__name__}: {err})"
    if frames == 0:
        return 0, "video has no decodable frames"
    return frames, None


def _finite_numbers(values: Iterable) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)


def _load_json(path: Path, problems: list[Problem]):
    try:
        # NaN/Infinity literals parse (as in pycocotools) and are reported per field below
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        problems.append(Problem(str(path), f"invalid JSON: {err}"))
        return None


def validate_coco(root: Path) -> Report:
    problems: list[Problem] = []
    checked = 0
    ann_files = sorted((root / "annotations").glob("instances_*.json"))
    if not ann_files:
        return Report([Problem(str(root / "annotations"), "no instances_*.json annotation files")], 0)
    for ann_path in ann_files:
        checked += 1
        coco = _load_json(ann_path, problems)
        if coco is None:
            continue
        missing = [k for k in ("images", "annotations", "categories") if k not in coco]
        if missing:
            problems.append(Problem(str(ann_path), f"missing top-level keys: {', '.join(missing)}"))
            continue
        split_dir = root / ann_path.stem.removeprefix("instances_")
        category_ids = {c.get("id") for c in coco["categories"]}
        images = {}
        for img in coco["images"]:
            where = f"{ann_path} (image id {img.get('id')})"
            if not isinstance(img.get("id"), int) or "file_name" not in img:
                problems.append(Problem(where, "image entry needs an integer id and a file_name"))
                continue
            if img["id"] in images:
                problems.append(Problem(where, "duplicate image id"))
            images[img["id"]] = img
            checked += 1
            size, reason = check_image(split_dir / img["file_name"])
            if reason:
                problems.append(Problem(str(split_dir / img["file_name"]), reason))
            elif size != (img.get("width"), img.get("height")):
                problems.append(
                    Problem(
                        str(split_dir / img["file_name"]),
                        f"image is {size[0]}x{size[1]} but the annotation says {img.get('width')}x{img.get('height')}",
                    )
                )
        ann_ids = set()
        for ann in coco["annotations"]:
            where = f"{ann_path} (annotation id {ann.get('id')})"
            if ann.get("id") in ann_ids:
                problems.append(Problem(where, "duplicate annotation id"))
            ann_ids.add(ann.get("id"))
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
        checked += 1
        info = _load_json(info_path, problems)
        if info is None:
            continue
        if "images" not in info or "categories" not in info:
            problems.append(Problem(str(info_path), "missing top-level keys images/categories"))
            continue
        for img in info["images"]:
            checked += 1
            path = root / "test2017" / str(img.get("file_name"))
            size, reason = check_image(path)
            if reason:
                problems.append(Problem(str(path), reason))
            elif size != (img.get("width"), img.get("height")):
                problems.append(
                    Problem(
                        str(path),
                        f"image is {size[0]}x{size[1]} but {info_path.name} says "
                        f"{img.get('width')}x{img.get('height')}",
                    )
                )
    return Report(problems, checked)


def _check_segmentation(seg, img: dict, where: str, problems: list[Problem]) -> None:
    if seg is None:
        return  # detection-only annotations are allowed
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
    problems: list[Problem] = []
    checked = 0
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
            checked += 2
            size, reason = check_image(images[stem])
            if reason:
                problems.append(Problem(str(images[stem]), reason))
            lsize, lreason = check_image(labels[stem])
            if lreason:
                problems.append(Problem(str(labels[stem]), lreason))
                continue
            with Image.open(labels[stem]) as lab:
                if lab.mode not in ("L", "P"):
                    problems.append(
                        Problem(str(labels[stem]), f"label map must be single-channel (L or P), got {lab.mode}")
                    )
                    continue
                values = np.asarray(lab)
            if size and lsize != size:
                problems.append(
                    Problem(
                        str(labels[stem]), f"label map is {lsize[0]}x{lsize[1]} but its image is {size[0]}x{size[1]}"
                    )
                )
            top = int(values.max()) if values.size else 0
            if top > num_classes:
                bad = sorted(int(v) for v in np.unique(values) if v > num_classes)
                problems.append(Problem(str(labels[stem]), f"label values {bad[:5]} out of range 0..{num_classes}"))
    return Report(problems, checked)


def validate_kinetics(root: Path) -> Report:
    problems: list[Problem] = []
    checked = 0
    classes_path = root / "classes.txt"
    classes = classes_path.read_text().splitlines() if classes_path.exists() else None
    for split in ("train", "val"):
        csv_path = root / "annotations" / f"{split}.csv"
        if not csv_path.exists():
            problems.append(Problem(str(csv_path), "missing"))
            continue
        checked += 1
        with open(csv_path, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames != KINETICS_COLUMNS:
                problems.append(
                    Problem(
                        str(csv_path),
                        f"header must be {','.join(KINETICS_COLUMNS)}, got {','.join(reader.fieldnames or [])}",
                    )
                )
                continue
            for line_no, row in enumerate(reader, start=2):
                where = f"{csv_path}:{line_no}"
                try:
                    start, end = int(row["time_start"]), int(row["time_end"])
                except (TypeError, ValueError):
                    problems.append(Problem(where, "time_start/time_end must be integers"))
                    continue
                if end <= start:
                    problems.append(Problem(where, f"time_end {end} <= time_start {start}"))
                if classes is not None and row["label"] not in classes:
                    problems.append(Problem(where, f"label {row['label']!r} not in classes.txt"))
                video = root / "videos" / split / f"{row['youtube_id']}_{start:06d}_{end:06d}.mp4"
                checked += 1
                _, reason = check_video(video)
                if reason:
                    problems.append(Problem(str(video), reason))
    return Report(problems, checked)


def validate_imagefolder(root: Path) -> Report:
    problems: list[Problem] = []
    checked = 0
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
                checked += 1
                if path.suffix.lower() not in IMAGE_SUFFIXES:
                    problems.append(Problem(str(path), f"unexpected file type {path.suffix!r}"))
                    continue
                _, reason = check_image(path)
                if reason:
                    problems.append(Problem(str(path), reason))
    if len(class_sets) == 2 and class_sets["train"] != class_sets["val"]:
        diff = sorted(class_sets["train"] ^ class_sets["val"])
        problems.append(Problem(str(root), f"train and val have different classes: {', '.join(diff)}"))
    return Report(problems, checked)


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
