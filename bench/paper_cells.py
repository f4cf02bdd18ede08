"""Every cell type of the paper study at paper resolution: seconds per training step, peak memory,
seconds per evaluated image.

    PYTHONPATH=src python bench/paper_cells.py [--device cuda] [--steps 3] [--arch swin_tiny]

The heads, input sizes, augmentation and frame sampling are read from ``configs/paper.yaml``
(HTC and Mask R-CNN at 1024 with random resize + 1024 square crops, Mask2Former 1 + 4 blocks at
640 with 640 crops and the sliding-window test, the temporal head at 224 on 16 frames 4 apart), on
the real-shaped mini datasets (portrait and 1280x960 COCO images, ADE images up to 2100x1400,
10 s 30 fps clips). The backbone is Swin-T with random weights (the smallest of the paper's; the
speed does not depend on the weights). Each (cell type, mode) runs in its own process: the peak
memory is that process's peak RSS (on a GPU ``max_memory_allocated``) during training, the model
included. The per-GPU batch is the paper's for images (2) and 2 clips for video (the paper's 8 at
16 frames does not fit a CPU's memory when fine-tuning).

A benchmark, not a test: the figures are for planning (``frozenbench`` GPU-hour estimates, the
docs/performance.md's CPU table), never asserted.
"""

from __future__ import annotations

import argparse
import importlib
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from frozenbench.tasks.registry import BackboneRequest, get_task_type
from frozenbench.config import read_yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import write_record  # noqa: E402

REPO = HERE.parent
CELL_TYPES = {  # name -> (paper.yaml task, head, dataset, batch)
    "coco_mask_rcnn": ("coco", "mrcnn_fpn", "shapes-coco", 2),
    "coco_htc": ("coco", "htc", "shapes-coco", 2),
    "ade_mask2former": ("ade", "m2f_b4", "shapes-ade", 2),
    "k400_temporal": ("k400", "temporal_b2", "shapes-k400", 2),
}
TYPES = {"coco": "detection", "ade": "segmentation", "k400": "video"}
DATASETS = {
    "shapes-coco": {
        "source": "synth",
        "format": "coco",
        "synth": {
            "seed": 1,
            "image_size": 128,
            "num_classes": 4,
            "num_train": 9,
            "num_val": 2,
            "max_instances": 4,
            "texture": 0.2,
            "size_profile": "real",
        },
    },
    "shapes-ade": {
        "source": "synth",
        "format": "ade",
        "synth": {
            "seed": 1,
            "image_size": 128,
            "num_stuff": 3,
            "num_things": 4,
            "num_train": 7,
            "num_val": 3,
            "texture": 0.2,
            "size_profile": "real",
        },
    },
    "shapes-k400": {
        "source": "synth",
        "format": "kinetics",
        "synth": {
            "seed": 1,
            "frame_size": 64,
            "num_frames": 12,
            "num_train_per_class": 1,
            "num_val_per_class": 1,
            "texture": 0.2,
            "size_profile": "real",
        },
    },
}


def _peak_mb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(cell: str, mode: str, data_root: Path, device: str, steps: int, arch: str) -> dict:
    from mmengine.dataset import pseudo_collate

    from frozenbench.engine.loop import total_loss
    from frozenbench.openmmlab.training import wrap_for_training

    task_name, head_name, dataset, batch = CELL_TYPES[cell]
    entry = read_yaml(REPO / "configs" / "paper.yaml")["tasks"][task_name]
    task = importlib.import_module(f"frozenbench.tasks.{TYPES[task_name]}")
    root = data_root / dataset
    num_classes = len(task.class_names(root))
    torch.manual_seed(0)
    model = task.build_model(
        get_task_type(entry["type"]).make_head(entry["heads"][head_name]),
        BackboneRequest(None, entry["img_size"], frozen=mode == "frozen", arch=arch, bf16=device == "cuda"),
        num_classes,
    ).to(device)
    options = dict(entry.get("data_options", {}))
    train_set = task.build_dataset(
        root, "train", entry["img_size"], train=True, augment=entry.get("augment"), **options
    )
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    trainable = wrap_for_training(model).train()  # stepped as the engine steps it
    seconds = []
    for step in range(steps):
        data = pseudo_collate([train_set[(step * batch + i) % len(train_set)] for i in range(batch)])
        start = time.perf_counter()
        total, _ = total_loss(trainable(data))
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    train_peak = _peak_mb(device)
    val = task.build_dataset(
        root,
        "val",
        entry["img_size"],
        train=False,
        test=entry.get("test", {}) if TYPES[task_name] == "video" else {},
        **options,
    )
    subset = torch.utils.data.Subset(val, range(min(2, len(val))))
    subset.ann_file = getattr(val, "ann_file", None)
    start = time.perf_counter()
    if TYPES[task_name] == "detection":
        task.predict_test_dev(model, subset, batch_size=1)
    else:  # single-scale: the multi-scale + flip test costs (scales x 2) of it
        task.evaluate(model, subset, num_classes, test={} if TYPES[task_name] == "segmentation" else entry.get("test"))
    eval_seconds = (time.perf_counter() - start) / len(subset)
    timed = seconds[1:] if len(seconds) > 1 else seconds  # the first step pays one-off costs
    return {
        "cell": cell,
        "mode": mode,
        "img_size": entry["img_size"],
        "batch": batch,
        "seconds_per_step": statistics.median(timed),
        "first_step_seconds": seconds[0],
        "train_peak_mb": round(train_peak, 1),
        "eval_seconds_per_sample": round(eval_seconds, 2),
        "eval_views": (
            {k: entry.get("test", {}).get(k) for k in ("num_clips", "num_crops")}
            if TYPES[task_name] == "video"
            else "single scale"
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--arch", default="swin_tiny")
    parser.add_argument("--cells", nargs="*", default=list(CELL_TYPES))
    parser.add_argument("--modes", nargs="*", default=["frozen", "finetune"])
    parser.add_argument("--repeats", type=int, default=None, help="ignored (run_all passes it)")
    parser.add_argument("--child", nargs=3, metavar=("CELL", "MODE", "DATA"))
    args = parser.parse_args()
    if args.child:
        cell, mode, data = args.child
        print(json.dumps(child(cell, mode, Path(data), args.device, args.steps, args.arch)))
        return
    from frozenbench.data.synth import synthesize

    with tempfile.TemporaryDirectory() as tmp:
        for name, spec in DATASETS.items():
            synthesize(spec, Path(tmp) / name)
        rows = []
        for cell in args.cells:
            for mode in args.modes:
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--device",
                        args.device,
                        "--steps",
                        str(args.steps),
                        "--arch",
                        args.arch,
                        "--child",
                        cell,
                        mode,
                        tmp,
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(json.dumps(rows[-1]), flush=True)
    path = write_record(
        f"paper_cells_{args.device}", {"device": args.device, "arch": args.arch, "steps": args.steps, "cells": rows}
    )
    print(path)


if __name__ == "__main__":
    main()
