"""``shapes-pretrain``: an ImageNet-style folder for pretraining the mini backbones.

The layout is :mod:`frozenbench.data.formats.imagefolder`'s, files named ``<class>_00000.jpg``.

One large shape per image on a background whose clutter is ``texture``; the
class is the shape. ``val`` is the held-out split the pretraining probe scores.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from frozenbench.data.formats import imagefolder as imagefolder_format
from frozenbench.data.synth import shapes


def draw_image(rng: np.random.Generator, kind: str, size: int, texture: float, shapes_per_image: int = 1) -> np.ndarray:
    """One large shape, or ``shapes_per_image`` smaller ones of the same class (each its own colour,
    size and place), so that two crops of one image usually show different objects that share
    only their class, as crops of an ImageNet photo share its category."""
    img = shapes.background(rng, size, size, texture)
    if shapes_per_image == 1:
        radii = [rng.uniform(0.25, 0.42) * size]
    else:
        radii = list(rng.uniform(0.12, 0.2, size=shapes_per_image) * size)
    for r in radii:
        cx, cy = rng.uniform(r, size - r, size=2)
        mask = shapes.rasterize(
            shapes.shape_polygon(kind, cx, cy, r, rng.uniform(-1, 1) * shapes.MAX_ROTATION), size, size
        )
        img[mask] = shapes.contrasting_color(rng, img[mask].mean(axis=0))
    return shapes.to_uint8(img + rng.normal(0, 0.02, size=img.shape))


def generate(spec: dict[str, Any], out: Path) -> dict[str, int]:
    params = spec["synth"]
    size, num_classes = params["image_size"], params["num_classes"]
    counts = {}
    for split_index, split in enumerate(imagefolder_format.SPLITS):
        per_class = params[f"{split}_per_class"]
        for c, kind in enumerate(shapes.SHAPES[:num_classes]):
            folder = imagefolder_format.class_dir(out, split, kind)
            folder.mkdir(parents=True)
            for i in range(per_class):
                rng = np.random.default_rng([params["seed"], split_index, c, i])
                buf = io.BytesIO()
                Image.fromarray(draw_image(rng, kind, size, params["texture"], params.get("shapes_per_image", 1))).save(
                    buf, format="JPEG", quality=92
                )
                (folder / f"{kind}_{i:05d}.jpg").write_bytes(buf.getvalue())
        counts[split] = per_class * num_classes
    return counts
