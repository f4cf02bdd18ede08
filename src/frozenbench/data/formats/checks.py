"""What every format's validator shares: :class:`Problem` and :class:`Report`, and the image checks.

Nothing here stops at the first problem: a researcher fixing a broken download wants the whole list
at once. The image reader (:mod:`frozenbench.data.images`) is imported where an image is checked,
not with this module: it asks the format modules for their orientation rule, so importing it here
would make each import the other's first.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from frozenbench.data.images import ImageInfo

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


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
    from frozenbench.data.images import ImageError, inspect_image

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


def orientation_warning(path: Path, info: ImageInfo, applied: bool) -> Problem:
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


def image_info(path: Path, report: Report, apply_orientation: bool) -> ImageInfo | None:
    """Decode ``path``: its info, else None with the problem reported; warns about an EXIF
    orientation, saying whether the format's reader applies it (``apply_orientation``, the format
    module's ``APPLY_EXIF_ORIENTATION``)."""
    info, reason = check_image(path)
    if reason:
        report.problems.append(Problem(str(path), reason))
        return None
    if info.orientation != 1:
        report.warnings.append(orientation_warning(path, info, apply_orientation))
    return info


def drawn_on_rotated_view(path: Path, info: ImageInfo, annotated_size, what: str) -> Problem | None:
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


def finite_numbers(values: Iterable) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)


def load_json(path: Path, problems: list[Problem]):
    try:
        # NaN/Infinity literals parse (as in pycocotools) and are reported per field by the caller
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        problems.append(Problem(str(path), f"invalid JSON: {err}"))
        return None


def is_id(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
