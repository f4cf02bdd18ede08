"""ADE20K (semantic segmentation, ADEChallengeData2016): layout, class names, orientation rule,
validator and the ``objectInfo150.txt`` writer the mini dataset uses.

Layout (the content of the real ``ADEChallengeData2016/`` folder, which ``prepare`` flattens)::

    images/training/ADE_train_00000001.jpg     annotations/training/ADE_train_00000001.png
    images/validation/ADE_val_00000001.jpg     annotations/validation/ADE_val_00000001.png
    objectInfo150.txt                          Idx, Ratio, Train, Val, Name (tab-separated)

Label maps are single-channel PNGs: 0 = unlabeled (ignored), ``k`` = the ``k``-th line of
``objectInfo150.txt``. Stdlib only at import (numpy and PIL load when a dataset is validated): the
Snakefile and the config checks may import it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from frozenbench.data.formats.checks import (
    IMAGE_SUFFIXES,
    Problem,
    Report,
    check_image,
    drawn_on_rotated_view,
    image_info,
)
from frozenbench.errors import UserError
from frozenbench.utils.atomic import write_text

ARCHIVE_FOLDER = "ADEChallengeData2016"  # the release's top folder; the dataset is its content
INFO_FILE = "objectInfo150.txt"
IMAGES_FOLDER = "images"
LABELS_FOLDER = "annotations"
SPLIT_FOLDERS = {"train": "training", "val": "validation"}
FILE_PREFIXES = {"train": "ADE_train", "val": "ADE_val"}
IMAGE_SUFFIX = ".jpg"
LABEL_SUFFIX = ".png"
# the release's class count: a dataset without objectInfo150.txt is validated against it
DEFAULT_NUM_CLASSES = 150

# A label map is a pixel grid of the *stored* image: images are read as stored, the EXIF
# orientation ignored (:mod:`frozenbench.data.images`).
APPLY_EXIF_ORIENTATION = False


def image_dir(split: str) -> str:
    """``split``'s image folder, relative to the dataset root (mmseg's ``data_prefix`` takes it so)."""
    return f"{IMAGES_FOLDER}/{SPLIT_FOLDERS[split]}"


def label_dir(split: str) -> str:
    """``split``'s label map folder, relative to the dataset root."""
    return f"{LABELS_FOLDER}/{SPLIT_FOLDERS[split]}"


def file_stem(split: str, number: int) -> str:
    """The release's name of image ``number`` (from 1) of ``split``, without suffix: ADE_train_00000001."""
    return f"{FILE_PREFIXES[split]}_{number:08d}"


def _class_rows(root: Path) -> list[str] | None:
    info = Path(root) / INFO_FILE
    if not info.exists():
        return None
    return [line for line in info.read_text().splitlines()[1:] if line.strip()]


def read_num_classes(root: str | Path) -> int | None:
    """The number of classes ``objectInfo150.txt`` lists; None without the file."""
    rows = _class_rows(Path(root))
    return None if rows is None else len(rows)


def class_names(root: str | Path) -> list[str]:
    """Label ``k`` (from 1) is the ``k``-th name of ``objectInfo150.txt``; a UserError when it is missing."""
    rows = _class_rows(Path(root))
    if rows is None:
        raise UserError(f"{Path(root) / INFO_FILE}: missing (needed for the class names)")
    return [line.split("\t")[-1] for line in rows]


def write_object_info(
    root: str | Path, names: list[str], pixel_counts: Any, train_images: Any, val_images: Any
) -> None:
    """``objectInfo150.txt`` in the release format: Idx, Ratio (of labelled pixels), Train and Val
    (images holding the class), Name; ``pixel_counts``, ``train_images`` and ``val_images`` hold one
    count per name (numpy arrays or lists)."""
    total = max(int(sum(pixel_counts)), 1)
    lines = ["Idx\tRatio\tTrain\tVal\tName"]
    for i, name in enumerate(names):
        lines.append(f"{i + 1}\t{pixel_counts[i] / total:.4f}\t{train_images[i]}\t{val_images[i]}\t{name}")
    write_text(Path(root) / INFO_FILE, "\n".join(lines) + "\n")


def validate(root: Path, num_classes: int | None = None) -> Report:
    report = Report([], 0)
    problems = report.problems
    num_classes = num_classes or read_num_classes(root) or DEFAULT_NUM_CLASSES
    for split in SPLIT_FOLDERS:
        images_rel, labels_rel = image_dir(split), label_dir(split)
        img_dir, ann_dir = root / images_rel, root / labels_rel
        if not img_dir.is_dir() or not ann_dir.is_dir():
            problems.append(Problem(str(root), f"missing {images_rel} or {labels_rel}"))
            continue
        images = {p.stem: p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
        labels = {p.stem: p for p in ann_dir.iterdir() if p.suffix.lower() == LABEL_SUFFIX}
        for stem in sorted(set(images) - set(labels)):
            problems.append(Problem(str(images[stem]), "no label map in " + labels_rel))
        for stem in sorted(set(labels) - set(images)):
            problems.append(Problem(str(labels[stem]), "label map without an image in " + images_rel))
        for stem in sorted(set(images) & set(labels)):
            _check_labelled_image(images[stem], labels[stem], num_classes, report)
    return report


def _check_labelled_image(image: Path, label: Path, num_classes: int, report: Report) -> None:
    """Check one image and its label map: lossless, single-channel, the image's size, values in range."""
    import numpy as np
    from PIL import Image

    problems = report.problems
    report.files_checked += 2
    info = image_info(image, report, APPLY_EXIF_ORIENTATION)
    linfo, lreason = check_image(label)
    if lreason:
        problems.append(Problem(str(label), lreason))
        return
    if linfo.format != "PNG":
        # JPEG's lossy compression blurs label values across class borders: wrong classes
        problems.append(
            Problem(str(label), f"label map is a {linfo.format} file under a .png name (needs lossless PNG)")
        )
        return
    # a label map is a grid of the image's stored pixels: its size is the image's stored size
    if info and linfo.size != info.size:
        (lw, lh), (w, h) = linfo.size, info.size
        problems.append(
            drawn_on_rotated_view(image, info, linfo.size, "its label map")
            or Problem(str(label), f"label map is {lw}x{lh} but its image is {w}x{h}")
        )
    with Image.open(label) as lab:
        if lab.mode not in ("L", "P"):
            problems.append(Problem(str(label), f"label map must be single-channel (L or P), got {lab.mode}"))
            return
        values = np.asarray(lab)
    top = int(values.max()) if values.size else 0
    if top > num_classes:
        bad = sorted(int(v) for v in np.unique(values) if v > num_classes)
        problems.append(Problem(str(label), f"label values {bad[:5]} out of range 0..{num_classes}"))
