"""Dataset validators: report *every* problem found, each naming the file.

One checker per format walks a dataset folder in the layout the readers consume and returns a
:class:`Report` of :class:`Problem`; each lives with its format in :mod:`frozenbench.data.formats`
(``coco.validate``, ``ade.validate``, ``kinetics.validate``, ``imagefolder.validate``). This module
is the entry point ``frozenbench validate``, the generators and ``prepare`` call, and keeps the
names the validators had here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from frozenbench.data.formats import MODULES, ade, coco, imagefolder, kinetics
from frozenbench.data.formats.checks import (  # noqa: F401 (the names this module has always offered)
    IMAGE_SUFFIXES,
    ORIENTATION_NAMES,
    Problem,
    Report,
    check_image,
)
from frozenbench.data.formats.coco import coco_meaning_problems  # noqa: F401 (training checks with it)

KINETICS_COLUMNS = kinetics.CSV_COLUMNS
read_ade_num_classes = ade.read_num_classes
validate_coco = coco.validate
validate_ade = ade.validate
validate_kinetics = kinetics.validate
validate_imagefolder = imagefolder.validate


def check_video(path: Path) -> tuple[int, str | None]:
    """(decoded frame count, None) for a decodable video, else (0, reason)."""
    from frozenbench.data.validate_video import clip_frame_counts

    _, frames, reason = clip_frame_counts(path)
    return frames, reason


VALIDATORS: dict[str, Callable[[Path], Report]] = {name: module.validate for name, module in MODULES.items()}


def validate(fmt: str, root: str | Path) -> Report:
    root = Path(root)
    if not root.is_dir():
        return Report([Problem(str(root), "not a folder")], 0)
    return VALIDATORS[fmt](root)
