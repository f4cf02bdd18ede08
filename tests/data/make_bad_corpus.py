"""Regenerate tests/data/bad/: small, committed, broken inputs (run from the repo root).

    .venv/bin/python tests/data/make_bad_corpus.py
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

OUT = Path(__file__).resolve().parent / "bad"


class PrintsOnLoad:
    """Unpickling calls a global (builtins.print): harmless, but no weights-only loader may accept it."""

    def __reduce__(self):
        return (print, ("this checkpoint ran code while loading",))


def jpeg(size: int = 32, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def coco(bbox=None, category_id=1, segmentation=None) -> dict:
    ann = {"id": 1, "image_id": 1, "category_id": category_id, "bbox": bbox or [2.0, 2.0, 10.0, 10.0],
           "area": 100.0, "iscrowd": 0, "segmentation": segmentation or [[2, 2, 12, 2, 12, 12, 2, 12]]}
    return {"images": [{"id": 1, "file_name": "000000000001.jpg", "width": 32, "height": 32}],
            "annotations": [ann], "categories": [{"id": 1, "name": "square"}]}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    good = jpeg()
    (OUT / "image.jpg").write_bytes(good)
    (OUT / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (OUT / "empty.mp4").write_bytes(b"")
    from frozenbench.data.synth.kinetics import encode_mp4

    clip = encode_mp4(np.zeros((8, 32, 32, 3), np.uint8) + 100, fps=8)
    (OUT / "truncated.mp4").write_bytes(clip[: len(clip) // 3])
    # json.dumps writes NaN as the bare literal NaN, as a broken exporter would
    (OUT / "coco_nan_bbox.json").write_text(json.dumps(coco(bbox=[2.0, 2.0, float("nan"), 10.0])))
    (OUT / "coco_negative_bbox.json").write_text(json.dumps(coco(bbox=[2.0, 2.0, -4.0, 10.0])))
    (OUT / "coco_unknown_category.json").write_text(json.dumps(coco(category_id=42)))
    (OUT / "coco_short_polygon.json").write_text(json.dumps(coco(segmentation=[[2, 2, 12, 2]])))
    label = np.zeros((32, 32), np.uint8)
    label[4:8, 4:8] = 200
    Image.fromarray(label).save(OUT / "ade_out_of_range.png")
    Image.fromarray(np.zeros((20, 24), np.uint8)).save(OUT / "ade_size_mismatch.png")
    torch.save({"model": {"patch_embed.proj.weight": torch.zeros(96, 3, 4, 4)}}, OUT / "ckpt_missing_keys.pth")
    torch.save({"model": {"patch_embed.proj.weight": torch.zeros(96, 3, 4, 4),
                          "layers.0.blocks.0.attn.qkv.weight": torch.zeros(5, 5)}}, OUT / "ckpt_wrong_shape.pth")
    torch.save({"model": {"patch_embed.proj.weight": torch.zeros(96, 3, 4, 4), "not_a_swin_key": torch.zeros(1)}},
               OUT / "ckpt_extra_keys.pth")
    torch.save({"model": {"w": torch.zeros(1)}, "payload": PrintsOnLoad()}, OUT / "ckpt_runs_code.pth")
    config = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs" / "ci.yaml").read_text())
    wrong_type = json.loads(json.dumps(config))
    wrong_type["datasets"]["shapes-coco"]["synth"]["num_train"] = "lots"
    (OUT / "config_wrong_type.yaml").write_text(yaml.safe_dump(wrong_type, sort_keys=False))
    unknown_key = json.loads(json.dumps(config))
    unknown_key["datasets"]["shapes-ade"]["synth"]["colour"] = "red"
    (OUT / "config_unknown_key.yaml").write_text(yaml.safe_dump(unknown_key, sort_keys=False))


if __name__ == "__main__":
    main()
