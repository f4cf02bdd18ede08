"""The paper's training augmentation for image tasks: "randomly resizes the original image, then
randomly crops a square part of the resized image", read from a task's ``augment`` entry; and the
check every task applies to the keys of its ``test`` and ``augment`` entries."""

from __future__ import annotations

from typing import Any

from frozenbench.errors import UserError

RESIZE_CROP_OPTIONS = ("scale_range", "crop_size")


def known_options(options: dict[str, Any] | None, known: tuple[str, ...], what: str) -> dict[str, Any]:
    """A copy of ``options`` (a task's ``test`` or ``augment`` entry); a key not in ``known`` is an
    error naming ``what`` (``"video test"``)."""
    options = dict(options or {})
    unknown = set(options) - set(known)
    if unknown:
        raise UserError(f"{what} options {sorted(unknown)} unknown; known: {', '.join(known)}")
    return options


def resize_crop_options(
    augment: dict[str, Any] | None,
    img_size: int,
    task: str,
    default_scale_range: tuple[float, float],
    max_crop: int | None = None,
) -> dict[str, Any] | None:
    """``{"scale_range": (low, high), "crop_size": n}`` (crop default ``img_size``), or None without
    ``augment``; an unknown key, an empty or inverted range or a crop above ``max_crop`` is an error
    naming the ``task`` type."""
    if not augment:
        return None
    augment = known_options(augment, RESIZE_CROP_OPTIONS, f"{task} augment")
    low, high = augment.get("scale_range", default_scale_range)
    if not 0 < low <= high:
        raise UserError(f"{task} augment scale_range must be 0 < low <= high, got {[low, high]}")
    crop = int(augment.get("crop_size", img_size))
    if max_crop is not None and crop > max_crop:
        raise UserError(f"{task} augment crop_size {crop} exceeds img_size {max_crop} (the padded input size)")
    return {"scale_range": (float(low), float(high)), "crop_size": crop}
