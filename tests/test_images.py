"""The one image reader: EXIF orientation, bit depths and modes, bad files; and that the boxes and
label maps line up with the pixels the real mmdet / mmseg pipelines load."""

from __future__ import annotations

import io
import json
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from frozenbench.data.images import ImageError, decode_image, inspect_image, read_image
from frozenbench.pretrain.data import load_imagefolder

# a non-square image, stored 96 wide x 48 high, a bright rectangle in the stored frame
WIDTH, HEIGHT = 96, 48
BOX = (10, 8, 40, 30)  # x1, y1, x2, y2 of the object in stored pixels


def object_image() -> np.ndarray:
    pixels = np.full((HEIGHT, WIDTH, 3), 20, np.uint8)
    x1, y1, x2, y2 = BOX
    pixels[y1:y2, x1:x2] = 235
    return pixels


def save_with_orientation(pixels: np.ndarray, path: Path, orientation: int, fmt: str = "JPEG") -> Path:
    """Save ``pixels`` as stored, tagged with EXIF orientation ``orientation`` (tag 274), as phones do."""
    img = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[274] = orientation
    img.save(path, fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))
    return path


@pytest.mark.parametrize(
    "orientation, upright_shape", [(6, (WIDTH, HEIGHT)), (8, (WIDTH, HEIGHT)), (3, (HEIGHT, WIDTH))]
)
def test_exif_orientation_ignored_or_applied(tmp_path, orientation, upright_shape):
    path = save_with_orientation(object_image(), tmp_path / "phone.jpg", orientation)
    assert inspect_image(path).orientation == orientation
    stored = read_image(path, apply_orientation=False)
    assert stored.shape == (HEIGHT, WIDTH, 3)
    x1, y1, x2, y2 = BOX
    assert stored[y1 + 2 : y2 - 2, x1 + 2 : x2 - 2].min() > 200 and stored[:, x2 + 2 :].max() < 60
    upright = read_image(path, apply_orientation=True)
    assert upright.shape[:2] == upright_shape
    expected = np.asarray(
        Image.fromarray(stored).transpose(
            {6: Image.Transpose.ROTATE_270, 8: Image.Transpose.ROTATE_90, 3: Image.Transpose.ROTATE_180}[orientation]
        )
    )
    assert np.abs(upright.astype(int) - expected.astype(int)).max() <= 1


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 256).astype(np.uint16).reshape(16, 16)
    Image.fromarray(ramp).save(tmp_path / "depth.png")
    assert Image.open(tmp_path / "depth.png").mode.startswith("I")
    pixels = read_image(tmp_path / "depth.png", apply_orientation=False)
    assert pixels.shape == (16, 16, 3) and pixels.dtype == np.uint8
    expected = np.round(ramp.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert (pixels[..., 0] == expected).all() and (pixels[..., 1] == expected).all()
    assert pixels[0, 1, 0] == 1 and pixels[8, 0, 0] == 128  # PIL's convert("RGB") made these 255
    # pretraining reads through the same reader
    (tmp_path / "set" / "train" / "depth").mkdir(parents=True)
    Image.fromarray(ramp).save(tmp_path / "set" / "train" / "depth" / "a.png")
    loaded = load_imagefolder(tmp_path / "set", "train", 16)
    assert loaded.images[0, 0].numpy().tolist() == expected.tolist()


def test_palette_cmyk_gray_and_alpha_become_rgb(tmp_path):
    palette = Image.new("P", (8, 4))
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    palette.putpixel((1, 1), 1)
    palette.putpixel((2, 2), 2)
    palette.save(tmp_path / "palette.png")
    pixels = read_image(tmp_path / "palette.png", apply_orientation=False)
    assert pixels[1, 1].tolist() == [255, 0, 0] and pixels[2, 2].tolist() == [0, 0, 255] and pixels[0, 0].sum() == 0

    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=100)  # pure red in ink
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    red = read_image(tmp_path / "cmyk.jpg", apply_orientation=False)
    assert red.shape == (8, 8, 3) and red[..., 0].min() > 240 and red[..., 1:].max() < 15

    Image.new("L", (8, 8), 77).save(tmp_path / "gray.jpg", quality=100)
    gray = read_image(tmp_path / "gray.jpg", apply_orientation=False)
    assert gray.shape == (8, 8, 3) and np.abs(gray.astype(int) - 77).max() <= 1

    Image.new("RGBA", (4, 4), (10, 20, 30, 0)).save(tmp_path / "alpha.png")
    assert read_image(tmp_path / "alpha.png", apply_orientation=False)[0, 0].tolist() == [10, 20, 30]


def bomb_png(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` and holds almost no data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty file (0 bytes)"),
        (b"<!DOCTYPE html><html><body>Sign in</body></html>", "an HTML/XML page, not an image"),
        (bomb_png(100_000, 100_000), "image size header says 10,000,000,000 pixels, over the"),
        (b"\xff\xd8\xff\xe0garbage", "unreadable image"),
    ],
)
def test_bad_files_are_one_clear_error_naming_the_file(data, message):
    with pytest.raises(ImageError, match=re.escape(message)) as caught:
        decode_image(data, "data/x/photo.jpg", apply_orientation=False)
    assert str(caught.value).startswith("data/x/photo.jpg: ")


def test_truncated_jpeg_is_refused(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(object_image()).save(buffer, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageError, match="unreadable image"):
        read_image(tmp_path / "cut.jpg", apply_orientation=False)


# --- through the real OpenMMLab pipelines -------------------------------------------------------


def coco_with_rotated_photo(root: Path) -> Path:
    """A one-image COCO val split: the photo stored 96x48 with EXIF orientation 6, its box and
    polygon in the stored frame (the json's width/height are the stored size), categories listed
    out of id order."""
    (root / "annotations").mkdir(parents=True)
    (root / "val2017").mkdir()
    save_with_orientation(object_image(), root / "val2017" / "000000000001.jpg", 6)
    x1, y1, x2, y2 = BOX
    coco = {
        "images": [{"id": 1, "file_name": "000000000001.jpg", "width": WIDTH, "height": HEIGHT}],
        "annotations": [
            {
                "id": 0,
                "image_id": 1,
                "category_id": 3,
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": (x2 - x1) * (y2 - y1),
                "iscrowd": 0,
                "segmentation": [[x1, y1, x2, y1, x2, y2, x1, y2]],
            }
        ],
        "categories": [{"id": 3, "name": "phone"}, {"id": 1, "name": "cup"}],
    }
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(coco))
    return root


@pytest.mark.openmmlab
def test_coco_box_covers_the_object_in_the_pixels_mmdet_loads(tmp_path):
    from frozenbench.tasks import detection

    root = coco_with_rotated_photo(tmp_path / "coco")
    dataset = detection.build_dataset(root, "val", 96, train=False)
    sample = dataset[0]
    image = sample["inputs"].numpy().transpose(1, 2, 0)  # (H, W, 3) as the detector gets it
    assert image.shape[:2] == (HEIGHT, WIDTH)  # the stored frame, as the json's width/height say
    x1, y1, x2, y2 = sample["data_samples"].gt_instances.bboxes.tensor[0].round().int().tolist()
    inside = image[y1 + 2 : y2 - 2, x1 + 2 : x2 - 2]
    outside = np.concatenate([image[:, x2 + 2 :].reshape(-1, 3), image[y2 + 2 :].reshape(-1, 3)])
    assert inside.min() > 200 and outside.max() < 60
    # the label is the one the evaluator maps back to category 3 (ids in increasing order: [1, 3])
    assert detection.class_names(root) == ["cup", "phone"]
    assert sample["data_samples"].gt_instances.labels.tolist() == [1]


@pytest.mark.openmmlab
def test_ade_label_map_lines_up_with_the_pixels_mmseg_loads(tmp_path):
    from frozenbench.tasks import segmentation

    root = tmp_path / "ade"
    for split in ("training", "validation"):
        (root / "images" / split).mkdir(parents=True)
        (root / "annotations" / split).mkdir(parents=True)
    (root / "objectInfo150.txt").write_text("Idx\tRatio\tTrain\tVal\tName\n1\t0.1\t1\t1\tthing\n")
    label = np.zeros((HEIGHT, WIDTH), np.uint8)
    x1, y1, x2, y2 = BOX
    label[y1:y2, x1:x2] = 1
    save_with_orientation(object_image(), root / "images" / "training" / "ADE_train_1.jpg", 6)
    Image.fromarray(label).save(root / "annotations" / "training" / "ADE_train_1.png")
    dataset = segmentation.build_dataset(root, "train", 96, train=True)
    sample = dataset[0]
    image = sample["inputs"].numpy().transpose(1, 2, 0).astype(int)
    gt = sample["data_samples"].gt_sem_seg.data[0].numpy()  # reduce_zero_label: thing -> 0, rest -> 255
    assert image.shape[:2] == gt.shape == (HEIGHT, WIDTH)
    assert image[gt == 0].mean() > 200 and image[gt == 255].mean() < 60
