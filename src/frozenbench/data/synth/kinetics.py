"""``shapes-k400``: short H.264 clips in the Kinetics-400 layout, classed by *motion*.

The layout is the one ``frozenbench prepare`` writes for the real K400, with the same writers
(:mod:`frozenbench.data.formats.kinetics`).

A clip's class is how a single shape moves (translate in 4 directions, rotate
either way, grow, shrink). Every class draws its mid-clip position, size and
angle from the same distribution, so one frame does not tell the class.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import av
import numpy as np

from frozenbench.data.formats import kinetics as kinetics_format
from frozenbench.data.formats.kinetics import YOUTUBE_ID_ALPHABET, clip_filename, write_csv, write_lists

# re-exported from the module that wrote clips before the formats had a home (tests import it here)
from frozenbench.data.formats.kinetics import source_clip_name as source_clip_name
from frozenbench.data.synth import shapes, sizes

MOTIONS = (
    "moving right",
    "moving left",
    "moving up",
    "moving down",
    "rotating clockwise",
    "rotating counterclockwise",
    "growing",
    "shrinking",
)
# Circles look the same under rotation; every other shape shows the motion.
VIDEO_SHAPES = tuple(s for s in shapes.SHAPES if s != "circle")
CLIP_SECONDS = 10


def render_clip(
    rng: np.random.Generator,
    motion: str,
    width: int,
    height: int,
    num_frames: int,
    texture: float,
    static_noise: bool = False,
) -> np.ndarray:
    """Frames (T, H, W, 3) uint8 of one shape performing ``motion`` on a static background
    (sizes and travel scale with the short side). Pixel noise is drawn per frame, or once per clip
    with ``static_noise`` (real-length clips: fresh noise in each of 300 frames would make them
    ~4x larger than real Kinetics clips and dominate encoding time)."""
    bg = shapes.background(rng, height, width, texture)
    size = min(width, height)
    kind = VIDEO_SHAPES[int(rng.integers(len(VIDEO_SHAPES)))]
    r_mid = rng.uniform(0.14, 0.2) * size
    travel = 0.3 * size
    margin = r_mid * 1.5 + travel / 2
    cx, cy = rng.uniform(margin, np.array([width, height], dtype=float) - margin)
    angle0 = rng.uniform(-1, 1) * shapes.MAX_ROTATION
    color = shapes.contrasting_color(rng, bg[int(cy), int(cx)])
    frames = []
    noise = rng.normal(0, 0.015, size=bg.shape) if static_noise else None
    for t in range(num_frames):
        u = t / (num_frames - 1) - 0.5  # -0.5 .. 0.5, 0 at mid-clip
        x, y, r, a = cx, cy, r_mid, angle0
        if motion == "moving right":
            x += u * travel
        elif motion == "moving left":
            x -= u * travel
        elif motion == "moving up":
            y -= u * travel
        elif motion == "moving down":
            y += u * travel
        elif motion == "rotating clockwise":  # image y points down: positive angle turns clockwise
            a += u * math.pi
        elif motion == "rotating counterclockwise":
            a -= u * math.pi
        elif motion == "growing":
            r *= math.exp(u * math.log(2.2))
        elif motion == "shrinking":
            r *= math.exp(-u * math.log(2.2))
        else:
            raise KeyError(motion)
        frame = bg.copy()
        frame[shapes.rasterize(shapes.shape_polygon(kind, x, y, r, a), height, width)] = color
        frames.append(shapes.to_uint8(frame + (noise if static_noise else rng.normal(0, 0.015, size=frame.shape))))
    return np.stack(frames)


def encode_mp4(frames: np.ndarray, fps: int) -> bytes:
    """H.264 (yuv420p, or yuv444p for odd sizes) in an mp4 container, with reproducible bytes.

    Measured here: x264's rate-control lookahead (mbtree) makes the output vary
    from run to run even with threads=1; without it 10 of 10 encodes matched.
    """
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        # 4:2:0 chroma needs even sizes; real uploads come in odd sizes too (341x255), which
        # x264 encodes in 4:4:4.
        even = frames.shape[1] % 2 == 0 and frames.shape[2] % 2 == 0
        stream.pix_fmt = "yuv420p" if even else "yuv444p"
        stream.options = {
            "crf": "18",
            "preset": "veryfast",
            "x264-params": "threads=1:lookahead-threads=1:rc-lookahead=0:no-mbtree=1",
        }
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def youtube_id(rng: np.random.Generator) -> str:
    return "".join(YOUTUBE_ID_ALPHABET[i] for i in rng.integers(len(YOUTUBE_ID_ALPHABET), size=11))


def generate(spec: dict[str, Any], out: Path) -> dict[str, int]:
    params = spec["synth"]
    classes = sorted(MOTIONS)
    rows_by_split: dict[str, list[dict[str, Any]]] = {}
    for split_index, split in enumerate(kinetics_format.SPLITS):
        folder = kinetics_format.video_dir(out, split)
        folder.mkdir(parents=True)
        per_class = params[f"num_{split}_per_class"]
        rows = []
        for c, motion in enumerate(MOTIONS):
            for i in range(per_class):
                rng = np.random.default_rng([params["seed"], split_index, c, i])
                ytid = youtube_id(rng)
                start = int(rng.integers(0, 300))
                width, height, fps, num_frames = sizes.clip_shape(params, c * per_class + i)
                frames = render_clip(
                    rng,
                    motion,
                    width,
                    height,
                    num_frames,
                    params["texture"],
                    static_noise=params.get("size_profile") == "real",
                )
                (folder / clip_filename(ytid, start, start + CLIP_SECONDS)).write_bytes(encode_mp4(frames, fps))
                rows.append(
                    {
                        "label": motion,
                        "youtube_id": ytid,
                        "time_start": start,
                        "time_end": start + CLIP_SECONDS,
                        "split": split,
                    }
                )
        rows.sort(key=lambda r: (r["label"], r["youtube_id"]))
        write_csv(kinetics_format.csv_path(out, split), rows)
        rows_by_split[split] = rows
    write_lists(out, rows_by_split, classes)
    return {split: len(rows) for split, rows in rows_by_split.items()}
