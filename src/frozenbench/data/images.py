"""The one image reader of frozenbench: training pipelines, pretraining and ``frozenbench validate``.

Every image any task reads goes through :func:`decode_image`, so the three agree on what an image
file means:

* **EXIF orientation.** A phone photo is often stored sideways with an EXIF tag (274) that tells
  viewers to rotate it. Whether to apply the tag depends on the frame the labels were drawn in:

  - COCO boxes / polygons / RLE and ADE20K label maps are in the *stored* frame (COCO's ``width``
    and ``height`` are the stored size, and a label map is a pixel grid of the stored image), so
    detection and segmentation read the stored pixels and ignore the tag
    (``apply_orientation=False``, :data:`frozenbench.data.formats.ORIENTATION_BY_FORMAT`, gathered from each format
    module's ``APPLY_EXIF_ORIENTATION``). OpenCV's default decode (``cv2.IMREAD_COLOR``, mmcv's
    ``color_type='color'``) applies the tag and would train on pixels rotated away from their labels.
  - An image-folder classification label holds for the whole image in any orientation, so
    pretraining applies the tag and the backbone sees photos upright, as a person does.

  ``frozenbench validate`` warns about every tagged image, and refuses one whose annotation size
  is the *displayed* size (annotations drawn on the rotated view, which the stored-frame reader
  cannot line up).
* **Bit depth and modes.** 16-bit PNGs are scaled to 8 bit (``v * 255 / 65535``), never clipped;
  palette, grayscale, bilevel, CMYK and alpha images become RGB (alpha dropped, as OpenCV does).
* **Bad files** become one :class:`~frozenbench.errors.UserError` line naming the file: empty,
  an HTML page under an image name, a size header over the decompression-bomb limit, or bytes
  that do not decode.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from frozenbench.errors import UserError

EXIF_ORIENTATION = 274  # the EXIF Orientation tag: 1 = stored upright, 2..8 = flips / rotations
ROTATING_ORIENTATIONS = {5, 6, 7, 8}  # the ones that swap width and height when applied

# PIL refuses to decode an image over twice its MAX_IMAGE_PIXELS (DecompressionBombError);
# frozenbench uses the same limit and says so in its own words.
_BOMB = re.compile(r"Image size \((\d+) pixels\) exceeds limit of (\d+) pixels")

_SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


class ImageError(UserError):
    """An image file that cannot be used: ``reason`` says why, the message names the file."""

    def __init__(self, path: str | Path, reason: str = "") -> None:
        # one-argument form too: torch's DataLoader re-raises a worker's error as type(err)(message)
        super().__init__(f"{path}: {reason}" if reason else str(path))
        self.path, self.reason = str(path), reason


@dataclass(frozen=True)
class ImageInfo:
    """What validation needs of a decodable image: stored size, EXIF orientation, file format."""

    size: tuple[int, int]  # (width, height) as stored, before any orientation
    orientation: int
    format: str  # PIL's name: "JPEG", "PNG", ...

    @property
    def displayed_size(self) -> tuple[int, int]:
        """(width, height) as a viewer shows it, the orientation applied."""
        w, h = self.size
        return (h, w) if self.orientation in ROTATING_ORIENTATIONS else (w, h)


def _not_an_image(head: bytes) -> str | None:
    """Why ``head`` (a file's first bytes) is plainly no image, else None."""
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml")):
        return "an HTML/XML page, not an image (an error or login page saved under an image name?)"
    if text.startswith((b"{", b"[")):
        return "JSON text, not an image"
    return None


def _open(data: bytes, name: str | Path) -> Image.Image:
    """``data`` opened by PIL (header only), every failure one UserError naming ``name``."""
    if not data:
        raise ImageError(name, "empty file (0 bytes)")
    reason = _not_an_image(data[:64])
    if reason:
        raise ImageError(name, reason)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:
        found = _BOMB.search(str(err))
        size = f"{int(found[1]):,} pixels, over the {int(found[2]):,}-pixel limit" if found else str(err)
        raise ImageError(
            name, f"image size header says {size} (a decompression bomb or a corrupt header); not decoded"
        ) from None
    except Exception as err:  # PIL raises UnidentifiedImageError, SyntaxError, ValueError... on foreign bytes
        raise ImageError(name, f"unreadable image ({type(err).__name__}: {err})") from None


def _load(img: Image.Image, name: str | Path) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()  # decodes every byte: a truncated JPEG fails here, not at open()
    except Exception as err:  # OSError (truncated), SyntaxError, ValueError... from the codecs
        raise ImageError(name, f"unreadable image ({type(err).__name__}: {err})") from None


def orientation_of(img: Image.Image) -> int:
    value = img.getexif().get(EXIF_ORIENTATION, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def to_rgb8(img: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB of any PIL mode; 16-bit samples scaled to 8 bit."""
    if img.mode in _SIXTEEN_BIT:
        # PIL's convert() clips 16-bit values at 255: a 16-bit PNG would come out almost all white
        wide = np.clip(np.asarray(img).astype(np.int64), 0, 65535)
        gray = ((wide * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode == "F":
        raise ValueError("floating-point images have no defined 8-bit range")
    # P, PA, L, LA, 1, CMYK, YCbCr, RGBA...: PIL's conversions (CMYK JPEGs inverted as Adobe writes them)
    return np.asarray(img.convert("RGB"))


def decode_image(data: bytes, name: str | Path, apply_orientation: bool) -> np.ndarray:
    """The (H, W, 3) uint8 RGB pixels of an encoded image; ``name`` (the file) heads any error."""
    img = _open(data, name)
    _load(img, name)
    if apply_orientation:
        img = ImageOps.exif_transpose(img)
    try:
        return to_rgb8(img)
    except ValueError as err:
        raise ImageError(name, f"unsupported image mode {img.mode} ({err})") from None


def read_image(path: str | Path, apply_orientation: bool) -> np.ndarray:
    """:func:`decode_image` of a file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ImageError(path, f"cannot read ({err.strerror or err})") from None
    return decode_image(data, path, apply_orientation)


def inspect_image(path: str | Path) -> ImageInfo:
    """Stored size, orientation and format of a fully decodable image file (every byte decoded)."""
    path = Path(path)
    if not path.exists():
        raise ImageError(path, "missing")
    img = _open(path.read_bytes(), path)
    _load(img, path)
    return ImageInfo(img.size, orientation_of(img), img.format or "")
