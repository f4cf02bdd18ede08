"""Procedural shapes and backgrounds shared by the mini datasets.

Shapes are polygons rasterised with pycocotools' own polygon rasteriser, so a
COCO polygon annotation decoded by ``annToMask`` reproduces the painted pixels
exactly. Every function takes an explicit ``numpy.random.Generator``: the same
seed gives the same pixels.
"""

from __future__ import annotations

import math

import numpy as np
from pycocotools import mask as mask_utils

# Order matters: a dataset with K classes uses the first K. Rotations are kept
# within +-15 degrees so that square and diamond stay different classes.
SHAPES = (
    "circle",
    "square",
    "triangle",
    "star",
    "hexagon",
    "cross",
    "diamond",
    "pentagon",
    "ellipse",
    "arrow",
    "heart",
    "trapezoid",
)
MAX_ROTATION = math.radians(15)


def _regular(n: int, phase: float = 0.0) -> np.ndarray:
    t = phase + np.arange(n) * 2 * math.pi / n
    return np.stack([np.cos(t), np.sin(t)], axis=1)


def _unit_polygon(kind: str) -> np.ndarray:
    """Vertices of a shape of radius ~1 centred on the origin (y axis pointing down)."""
    if kind == "circle":
        return _regular(32)
    if kind == "square":
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * 0.8
    if kind == "triangle":
        return _regular(3, -math.pi / 2)
    if kind == "star":
        outer, inner = _regular(5, -math.pi / 2), 0.45 * _regular(5, -math.pi / 2 + math.pi / 5)
        return np.stack([outer, inner], axis=1).reshape(-1, 2)
    if kind == "hexagon":
        return _regular(6)
    if kind == "cross":
        a, b = 1.0, 0.33
        return np.array(
            [[-b, -a], [b, -a], [b, -b], [a, -b], [a, b], [b, b], [b, a], [-b, a], [-b, b], [-a, b], [-a, -b], [-b, -b]]
        )
    if kind == "diamond":
        return np.array([[0, -1], [0.7, 0], [0, 1], [-0.7, 0]])
    if kind == "pentagon":
        return _regular(5, -math.pi / 2)
    if kind == "ellipse":
        return _regular(32) * np.array([1.0, 0.5])
    if kind == "arrow":
        return np.array([[-1, -0.3], [0.2, -0.3], [0.2, -0.75], [1, 0], [0.2, 0.75], [0.2, 0.3], [-1, 0.3]])
    if kind == "heart":
        t = np.linspace(0, 2 * math.pi, 32, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        return np.stack([x, y + 2.5], axis=1) / 17.0
    if kind == "trapezoid":
        return np.array([[-0.5, -0.7], [0.5, -0.7], [1, 0.7], [-1, 0.7]])
    raise KeyError(f"unknown shape {kind!r}; known: {', '.join(SHAPES)}")


UNIT_POLYGONS = {kind: _unit_polygon(kind) for kind in SHAPES}


def shape_polygon(kind: str, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    """Vertices (N, 2) in pixel coordinates of ``kind`` rotated by ``angle`` radians."""
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    return UNIT_POLYGONS[kind] @ rot.T * radius + np.array([cx, cy])


def rasterize(polygon: np.ndarray, height: int, width: int) -> np.ndarray:
    """Boolean mask of ``polygon`` exactly as pycocotools' ``annToMask`` decodes it."""
    flat = [np.round(polygon, 2).reshape(-1).tolist()]
    rles = mask_utils.frPyObjects(flat, height, width)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def polygon_for_coco(polygon: np.ndarray) -> list[list[float]]:
    """The COCO ``segmentation`` field for one polygon (same rounding as :func:`rasterize`)."""
    return [[float(v) for v in np.round(polygon, 2).reshape(-1)]]


def smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Value noise in [0, 1]: a coarse random grid bilinearly upsampled."""
    grid = rng.random((cells + 1, cells + 1))
    ys = np.linspace(0, cells, height, endpoint=False)
    xs = np.linspace(0, cells, width, endpoint=False)
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    g00, g01 = grid[y0][:, x0], grid[y0][:, x0 + 1]
    g10, g11 = grid[y0 + 1][:, x0], grid[y0 + 1][:, x0 + 1]
    return (g00 * (1 - fy) * (1 - fx) + g01 * (1 - fy) * fx + g10 * fy * (1 - fx) + g11 * fy * fx).astype(np.float32)


def background(rng: np.random.Generator, height: int, width: int, texture: float) -> np.ndarray:
    """An RGB float image in [0, 1]: a low-contrast gradient plus ``texture``-scaled clutter.

    ``texture`` = 0 gives smooth backgrounds (easy); 1 gives strong stripes and blobs
    with the same statistics as the shapes' edges (hard).
    """
    base = rng.uniform(0.25, 0.75, size=3)
    direction = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (np.cos(direction) * xx / width + np.sin(direction) * yy / height)[..., None]
    img = base + 0.15 * (ramp - 0.5) * rng.uniform(-1, 1, size=3)
    if texture > 0:
        period = rng.uniform(4, 12)
        theta = rng.uniform(0, math.pi)
        stripes = np.sin(2 * math.pi * (np.cos(theta) * xx + np.sin(theta) * yy) / period)[..., None]
        blobs = smooth_noise(rng, height, width, cells=int(rng.integers(3, 8)))[..., None] - 0.5
        img = img + texture * (0.18 * stripes * rng.uniform(-1, 1, size=3) + 0.5 * blobs * rng.uniform(-1, 1, size=3))
    return np.clip(img, 0, 1).astype(np.float32)


def contrasting_color(rng: np.random.Generator, against: np.ndarray, min_distance: float = 0.35) -> np.ndarray:
    """A random RGB colour at least ``min_distance`` (L2 in [0,1]^3) from ``against``."""
    for _ in range(32):
        color = rng.uniform(0, 1, size=3)
        if np.linalg.norm(color - against) >= min_distance:
            return color.astype(np.float32)
    return (1.0 - against).astype(np.float32)


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)
