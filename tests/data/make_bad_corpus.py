"""Regenerate tests/data/bad/: small, committed, broken inputs (run from the repo root).

    .venv/bin/python tests/data/make_bad_corpus.py              # everything
    .venv/bin/python tests/data/make_bad_corpus.py --archives   # only the hostile archives

The archives are deterministic (fixed names, modes and times; the bomb is deflated at level 9,
so only another zlib build could change its bytes); tests/test_archives.py names what each must
be refused for (ARCHIVE_CASES).
"""

from __future__ import annotations

import io
import json
import os
import sys
import tarfile
import zipfile
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
    ann = {
        "id": 1,
        "image_id": 1,
        "category_id": category_id,
        "bbox": bbox or [2.0, 2.0, 10.0, 10.0],
        "area": 100.0,
        "iscrowd": 0,
        "segmentation": segmentation or [[2, 2, 12, 2, 12, 12, 2, 12]],
    }
    return {
        "images": [{"id": 1, "file_name": "000000000001.jpg", "width": 32, "height": 32}],
        "annotations": [ann],
        "categories": [{"id": 1, "name": "square"}],
    }


def _tar(path: Path, members: list[tuple[str, bytes, bytes | str]]) -> None:
    """A plain tar of (name, tar type, data or link target) with fixed owner, mode and time."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            info.type, info.mtime, info.mode = kind, 0, 0o755 if kind == tarfile.DIRTYPE else 0o644
            if kind == tarfile.REGTYPE:
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
            else:
                info.linkname = payload
                tf.addfile(info)


def symlink_chain(steps: str = "abcdefghijklmnop", component: int = 247) -> list[tuple[str, bytes, bytes | str]]:
    """The members of the long-symlink-chain bypass of tarfile's ``data`` filter (CVE-2025-4517):
    16 symlinks to long folder names make ``os.path.realpath`` give up past PATH_MAX, so a link
    that climbs out of the target (``escape``) passes the filter, and so does a file under it."""
    comp = "d" * component
    members, path = [], ""
    for step in steps:
        members.append((os.path.join(path, comp), tarfile.DIRTYPE, ""))
        members.append((os.path.join(path, step), tarfile.SYMTYPE, comp))
        path = os.path.join(path, comp)
    link = os.path.join(*steps, "l" * 254)
    members.append((link, tarfile.SYMTYPE, "/".join([".."] * len(steps))))
    members.append(("escape", tarfile.SYMTYPE, link + "/.."))
    members.append(("escape/escaped.txt", tarfile.REGTYPE, b"written outside the target folder\n"))
    return members


def archives(out: Path) -> None:
    """Hostile archives: every one must be refused before anything lands outside the target."""
    inner = "ADEChallengeData2016/"
    _tar(
        out / "archive_traversal.tar",
        [
            (inner + "images/ok.txt", tarfile.REGTYPE, b"ok\n"),
            (inner + "../../escaped.txt", tarfile.REGTYPE, b"escaped\n"),
        ],
    )
    with zipfile.ZipFile(out / "archive_absolute.zip", "w") as zf:  # stored: no compression
        zf.writestr(zipfile.ZipInfo(inner + "objectInfo150.txt"), b"ok\n")
        zf.writestr(zipfile.ZipInfo("/tmp/frozenbench-escaped.txt"), b"escaped\n")
    _tar(
        out / "archive_symlink_escape.tar",
        [
            (inner + "images", tarfile.SYMTYPE, "../../.."),
            (inner + "images/escaped.txt", tarfile.REGTYPE, b"escaped\n"),
        ],
    )
    _tar(out / "archive_hardlink.tar", [(inner + "objectInfo150.txt", tarfile.LNKTYPE, "../../outside.txt")])
    _tar(out / "archive_symlink_chain.tar", symlink_chain())
    # 300 MiB of zeros in ~300 KB: past the default limit of max(256 MiB, 100 x the archive's size)
    with zipfile.ZipFile(out / "archive_bomb.zip", "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open(inner + "zeros.bin", "w") as f:
            zeros = bytes(1 << 20)
            for _ in range(300):
                f.write(zeros)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    archives(OUT)
    if "--archives" in sys.argv[1:]:
        return
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
    torch.save(
        {
            "model": {
                "patch_embed.proj.weight": torch.zeros(96, 3, 4, 4),
                "layers.0.blocks.0.attn.qkv.weight": torch.zeros(5, 5),
            }
        },
        OUT / "ckpt_wrong_shape.pth",
    )
    torch.save(
        {"model": {"patch_embed.proj.weight": torch.zeros(96, 3, 4, 4), "not_a_swin_key": torch.zeros(1)}},
        OUT / "ckpt_extra_keys.pth",
    )
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
