"""``shapes-ade``: semantic segmentation pairs in the ADE20K layout.

The layout is the real release's (:mod:`frozenbench.data.formats.ade`).

Label maps are single-channel uint8 PNGs: 0 = unlabeled (ignored), 1..S are
"stuff" regions (each class a texture: stripe orientation, period and hue),
S+1..S+T are "thing" shapes. A one-pixel unlabeled ring surrounds every thing,
as ADE20K leaves object boundaries unlabeled.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from frozenbench.data.formats import ade as ade_format
from frozenbench.data.synth import shapes, sizes

STUFF_NAMES = ("wall", "floor", "sky", "grass", "water", "road", "sand", "ceiling")


def class_names(num_stuff: int, num_things: int) -> list[str]:
    return list(STUFF_NAMES[:num_stuff]) + list(shapes.SHAPES[:num_things])


def _stuff_texture(k: int, num_stuff: int, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Class ``k``'s texture: a fixed orientation, period and hue band, with random phase and shade."""
    theta = math.pi * k / num_stuff
    period = 5.0 + 3.0 * (k % 3)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = rng.uniform(0, 2 * math.pi)
    stripes = np.sin(2 * math.pi * (math.cos(theta) * xx + math.sin(theta) * yy) / period + phase)
    hue = (k / num_stuff + rng.uniform(-0.04, 0.04)) % 1.0
    base = _hsv_to_rgb(hue, rng.uniform(0.35, 0.6), rng.uniform(0.45, 0.7))
    return np.clip(base + 0.12 * stripes[..., None], 0, 1).astype(np.float32)


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i], dtype=np.float32)


def draw_pair(
    rng: np.random.Generator, width: int, height: int, num_stuff: int, num_things: int, texture: float
) -> tuple[np.ndarray, np.ndarray]:
    """One image (H, W, 3 uint8) and its label map (H, W uint8); shape radii scale with the short side."""
    size = min(width, height)
    extent = np.array([width, height], dtype=float)
    # Stuff: a Voronoi partition into 2-4 regions, each of a random stuff class.
    num_regions = int(rng.integers(2, 5))
    seeds = rng.uniform(0, 1, size=(num_regions, 2)) * extent
    region_class = rng.integers(num_stuff, size=num_regions)
    yy, xx = np.mgrid[0:height, 0:width]
    dist = (xx[None] - seeds[:, 0, None, None]) ** 2 + (yy[None] - seeds[:, 1, None, None]) ** 2
    region = dist.argmin(axis=0)
    img = np.zeros((height, width, 3), np.float32)
    label = np.zeros((height, width), np.uint8)
    for r in range(num_regions):
        k = int(region_class[r])
        sel = region == r
        img[sel] = _stuff_texture(k, num_stuff, rng, height, width)[sel]
        label[sel] = k + 1
    if texture > 0:
        clutter = shapes.smooth_noise(rng, height, width, cells=int(rng.integers(3, 8)))[..., None] - 0.5
        img = np.clip(img + texture * 0.5 * clutter * rng.uniform(-1, 1, size=3), 0, 1)

    for _ in range(int(rng.integers(1, 5))):
        j = int(rng.integers(num_things))
        r = rng.uniform(0.08, 0.2) * size
        cx, cy = rng.uniform(r, extent - r)
        poly = shapes.shape_polygon(shapes.SHAPES[j], cx, cy, r, rng.uniform(-1, 1) * shapes.MAX_ROTATION)
        mask = shapes.rasterize(poly, height, width)
        if mask.sum() < 16:
            continue
        ring = _dilate(mask) & ~mask
        img[mask] = shapes.contrasting_color(rng, img[mask].mean(axis=0))
        label[ring] = 0
        label[mask] = num_stuff + j + 1
    noise = rng.normal(0, 0.02, size=img.shape).astype(np.float32)
    return shapes.to_uint8(img + noise), label


def _dilate(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


def generate(spec: dict[str, Any], out: Path) -> dict[str, int]:
    params = spec["synth"]
    num_stuff, num_things = params["num_stuff"], params["num_things"]
    names = class_names(num_stuff, num_things)
    pixel_counts = np.zeros(len(names), np.int64)
    images_with = {split: np.zeros(len(names), np.int64) for split in ade_format.SPLIT_FOLDERS}
    counts = {}
    for split_index, split in enumerate(ade_format.SPLIT_FOLDERS):
        image_dir, label_dir = out / ade_format.image_dir(split), out / ade_format.label_dir(split)
        image_dir.mkdir(parents=True)
        label_dir.mkdir(parents=True)
        num = params[f"num_{split}"]
        for i in range(num):
            rng = np.random.default_rng([params["seed"], split_index, i])
            width, height = sizes.image_size(params, sizes.ADE_REAL_SIZES, i)
            pixels, label = draw_pair(rng, width, height, num_stuff, num_things, params["texture"])
            stem = ade_format.file_stem(split, i + 1)
            buf = io.BytesIO()
            Image.fromarray(pixels).save(buf, format="JPEG", quality=92)
            (image_dir / f"{stem}{ade_format.IMAGE_SUFFIX}").write_bytes(buf.getvalue())
            Image.fromarray(label).save(label_dir / f"{stem}{ade_format.LABEL_SUFFIX}")
            hist = np.bincount(label.reshape(-1), minlength=len(names) + 1)[1:]
            pixel_counts += hist
            images_with[split] += hist > 0
        counts[split] = num
    ade_format.write_object_info(out, names, pixel_counts, images_with["train"], images_with["val"])
    return counts
