"""Image and clip sizes of the mini datasets: one square size (``size_profile: square``, the
mini-study) or the shapes of the real datasets (``size_profile: real``, the test world of the
paper study).

The real profiles list sizes that occur in the real releases (COCO 2017 images have their long
side at 640 with a few exceptions; ADE20K images range from thumbnails to 2100 px; Kinetics
clips are 10 s at 25-30 fps, most at 340x256 after the common re-encode, some portrait, some
odd-sized, a few cut short). Item ``i`` of a split takes entry ``i mod len(profile)``, so a
dataset of at least ``len(profile)`` items has every shape, including the awkward ones, and the
same seed still gives the same files.
"""

from __future__ import annotations

from typing import Any

# (width, height)
COCO_REAL_SIZES = (
    (640, 480),
    (480, 640),
    (640, 427),
    (500, 375),
    (612, 612),
    (640, 360),
    (427, 640),
    (320, 240),
    (1280, 960),
)
ADE_REAL_SIZES = (
    (683, 512),
    (512, 683),
    (2100, 1400),
    (512, 512),
    (800, 600),
    (256, 341),
    (640, 480),
)
# (width, height, fps, seconds)
KINETICS_REAL_CLIPS = (
    (340, 256, 30, 10),
    (256, 340, 25, 10),
    (640, 360, 30, 10),
    (341, 255, 25, 10),
    (340, 256, 30, 2),
)

PROFILES = ("square", "real")


def _profile(params: dict[str, Any]) -> str:
    profile = params.get("size_profile", "square")
    if profile not in PROFILES:
        raise ValueError(f"size_profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    return profile


def image_size(params: dict[str, Any], table: tuple[tuple[int, int], ...], index: int) -> tuple[int, int]:
    """(width, height) of image ``index`` of a split."""
    if _profile(params) == "real":
        return table[index % len(table)]
    return params["image_size"], params["image_size"]


def clip_shape(params: dict[str, Any], index: int) -> tuple[int, int, int, int]:
    """(width, height, fps, number of frames) of clip ``index`` of a split."""
    if _profile(params) == "real":
        width, height, fps, seconds = KINETICS_REAL_CLIPS[index % len(KINETICS_REAL_CLIPS)]
        return width, height, fps, fps * seconds
    size = params["frame_size"]
    return size, size, params.get("fps", 8), params["num_frames"]
