"""ImageNet-style image folders (the pretraining data): layout, class names, orientation rule and
validator.

Layout::

    train/<class>/<any name>.jpg ...
    val/<class>/...

A class is a folder; both splits hold the same classes, label ``k`` is the ``k``-th class name in
sorted order. Stdlib only at import: the Snakefile and the config checks may import it.
"""

from __future__ import annotations

from pathlib import Path

from frozenbench.data.formats.checks import IMAGE_SUFFIXES, Problem, Report, image_info
from frozenbench.errors import UserError

SPLITS = ("train", "val")

# A class label holds for the whole image in any orientation: images are read with the EXIF
# orientation applied, so the backbone sees phone photos upright (:mod:`frozenbench.data.images`).
APPLY_EXIF_ORIENTATION = True


def class_dir(root: str | Path, split: str, name: str) -> Path:
    return Path(root) / split / name


def class_names(root: str | Path, split: str = "train") -> list[str]:
    """The class folders of ``split``, sorted (label ``k`` is the ``k``-th); a UserError naming the
    folder when it is missing or holds no class."""
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        raise UserError(f"{split_dir}: missing split folder")
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    if not classes:
        raise UserError(f"{split_dir}: no class folders")
    return classes


def validate(root: Path) -> Report:
    report = Report([], 0)
    problems = report.problems
    class_sets = {}
    for split in SPLITS:
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
                image_info(path, report, APPLY_EXIF_ORIENTATION)
    if len(class_sets) == 2 and class_sets["train"] != class_sets["val"]:
        diff = sorted(class_sets["train"] ^ class_sets["val"])
        problems.append(Problem(str(root), f"train and val have different classes: {', '.join(diff)}"))
    return report
