"""GPU smoke test and benchmark: every paper cell type trained and evaluated through the real
command line, on all visible GPUs, in bf16.

    make gpu-smoke                    # on a GPU node: writes bench/records/gpu_<device>.json
    make gpu-smoke DEVICE=cpu         # tiny sizes on the CPU (what CI runs so it cannot rot)

For each cell type (HTC + FPN at 1024, Mask2Former with 1 + 4 blocks at 640, the temporal head at
224 on 16 frames 4 apart, and Mask2Former on a plain DINOv2 ViT through its simple feature pyramid;
heads, augmentation and precision read from ``configs/paper.yaml``):
``frozenbench train --nproc <GPUs>`` (torchrun + DeepSpeed ZeRO-2 when there are several, DataLoader
workers, bf16 autocast) for ``--steps`` steps on real-shaped synthetic data, then
``frozenbench evaluate`` on its val split. Recorded per cell type: seconds per step (after the
first steps), images (or clips) per second over all ranks, peak GPU memory of training and
evaluation, the fraction of the step spent waiting for data, and evaluation seconds per sample.
Beside them, in the same run: the frozen backbone's forward rate (FLOP/s counted by
``torch.utils.flop_counter``) as a fraction of a dense bf16 matmul's.

Targets (reported, never asserted): data wait under 10 % of the step, the frozen backbone at 50 %
or more of the matmul rate. The script fails (exit 1) when a run fails or its loss is not finite.
The record has the ``cells`` rows ``frozenbench cost`` reads.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from frozenbench.config import read_yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import RESULTS, interleaved, matmul_case, spread, write_record  # noqa: E402

REPO = HERE.parent
RECORDS = HERE / "records"
# name -> (paper.yaml task, head, dataset)
CELL_TYPES = {
    "coco_htc": ("coco", "htc", "shapes-coco"),
    "ade_mask2former": ("ade", "m2f_b4", "shapes-ade"),
    "k400_temporal": ("k400", "temporal_b2", "shapes-k400"),
    "ade_mask2former_vit": ("ade", "m2f_b4", "shapes-ade"),
}
# cell types on another backbone than --arch, per device: a researcher's plain ViT (patch 14, so the
# 640 px crops are padded to its patch multiple and its maps resampled to the stride-16 grid)
CELL_ARCHS = {"ade_mask2former_vit": {"cuda": "vit_large_patch14_dinov2", "cpu": "vit_small_patch14_dinov2"}}
# what each cell type keeps of paper.yaml on the CPU: small inputs and a short clip
TINY = {
    "coco": {"img_size": 128, "crop": 128},
    "ade": {"img_size": 128, "crop": 128},
    "k400": {"img_size": 64, "num_frames": 4, "frame_interval": 2},
}


def datasets(tiny: bool) -> dict[str, dict]:
    size = {"image_size": 64 if tiny else 128}
    return {
        "shapes-coco": {
            "source": "synth",
            "format": "coco",
            "synth": {
                "seed": 1,
                **size,
                "num_classes": 4,
                "num_train": 8,
                "num_val": 4,
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
                **size,
                "num_stuff": 3,
                "num_things": 4,
                "num_train": 8,
                "num_val": 4,
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


def cell_spec(cell: str, data: Path, steps: int, batch: int, tiny: bool) -> dict:
    """The train / evaluate spec of a cell type: paper.yaml's task entry, its head, a short schedule."""
    task_name, head_name, dataset = CELL_TYPES[cell]
    entry = read_yaml(REPO / "configs" / "paper.yaml")["tasks"][task_name]
    spec = {
        "type": entry["type"],
        "data": str(data / dataset),
        "img_size": entry["img_size"],
        "bf16": entry.get("bf16", False),
        "autocast_bf16": entry.get("autocast_bf16", False),
        "tf32": entry.get("tf32", False),
        "head": entry["heads"][head_name],
        "data_options": dict(entry.get("data_options", {})),
        "zero_stage": entry.get("zero_stage", 2),
        "train": {
            "steps": steps,
            "batch_size": batch,
            "lr": 1e-4,
            "warmup_steps": 1,
            "checkpoint_every": steps,
            "log_every": 1,
        },
    }
    if entry.get("augment"):
        spec["augment"] = dict(entry["augment"])
    if entry["type"] == "video":  # a fraction of the paper's views keeps the evaluation short
        spec["test"] = {"num_clips": 2, "num_crops": 3}
    if tiny:
        small = TINY[task_name]
        spec["img_size"] = small["img_size"]
        if "crop" in small and "augment" in spec:
            spec["augment"]["crop_size"] = small["crop"]
        if "num_frames" in small:
            spec["data_options"].update(num_frames=small["num_frames"], frame_interval=small["frame_interval"])
            spec["head"] = {**spec["head"], "num_frames": small["num_frames"]}
    return spec


def run_cell(
    cell: str, spec: dict, checkpoint: Path, work: Path, device: str, nproc: int, workers: int, threads: int
) -> dict:
    run_dir, metrics = work / cell / "run", work / cell / "metrics.json"
    common = [
        "--spec",
        json.dumps(spec),
        "--checkpoint",
        str(checkpoint),
        "--mode",
        "frozen",
        "--run-dir",
        str(run_dir),
        "--device",
        device,
        "--workers",
        str(workers),
        "--threads",
        str(threads),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, threads // max(1, nproc)))}
    frozenbench = str(Path(sys.executable).parent / "frozenbench")
    started = time.time()
    train = subprocess.run(
        [frozenbench, "train", *common, "--nproc", str(nproc)], env=env, capture_output=True, text=True
    )
    if train.returncode != 0:
        raise RuntimeError(f"{cell}: training failed\n{train.stdout[-3000:]}\n{train.stderr[-3000:]}")
    train_wall = time.time() - started
    evaluate = subprocess.run(
        [frozenbench, "evaluate", *common, "--out", str(metrics)], env=env, capture_output=True, text=True
    )
    if evaluate.returncode != 0:
        raise RuntimeError(f"{cell}: evaluation failed\n{evaluate.stdout[-3000:]}\n{evaluate.stderr[-3000:]}")
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    if not all(torch.isfinite(torch.tensor(r["loss"])) for r in log):
        raise RuntimeError(f"{cell}: a loss was not finite: {[r['loss'] for r in log]}")
    done = json.loads((run_dir / "done.json").read_text())
    record = json.loads(metrics.read_text())
    world = done["world_size"]
    warm = min(len(log) - 1, max(1, len(log) // 4))  # the first steps pay one-off costs
    per_step = (log[-1]["elapsed_s"] - log[warm - 1]["elapsed_s"]) / max(1, len(log) - warm)
    per_sample = spec["train"]["batch_size"] * world
    return {
        "cell": cell,
        "mode": "frozen",
        "img_size": spec["img_size"],
        "batch": spec["train"]["batch_size"],
        "world_size": world,
        "steps": len(log),
        "seconds_per_step": round(per_step, 4),
        "samples_per_second": round(per_sample / per_step, 2) if per_step > 0 else None,
        "data_wait": done.get("data_wait_fraction"),
        "train_gpu_peak_mb": done.get("gpu_peak_mb"),
        "eval_gpu_peak_mb": record.get("gpu_peak_mb"),
        "train_wall_s": round(train_wall, 1),
        "eval_seconds_per_sample": round(record["eval_seconds"] / max(1, record["num_val"]), 3),
        "eval_views": spec.get("test", "single scale"),
        "loss_first_last": [log[0]["loss"], log[-1]["loss"]],
        "metrics": record["metrics"],
    }


def backbone_fraction(arch: str, img_size: int, batch: int, device: str, repeats: int) -> dict:
    """The frozen backbone's FLOP rate as a fraction of a dense matmul's, both timed in this run
    (bf16 on a GPU; fp32 on a CPU, where bf16 matmul units are rare)."""
    from torch.utils.flop_counter import FlopCounterMode

    from frozenbench.models import Backbone

    on_gpu = device == "cuda"
    dtype = torch.bfloat16 if on_gpu else torch.float32
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    torch.manual_seed(0)
    body = Backbone(arch, img_size=img_size, bf16=on_gpu).to(device)
    x = torch.randn(batch, 3, img_size, img_size, device=device)
    counter = FlopCounterMode(display=False)
    with counter:
        body(x)
    flops = counter.get_total_flops()
    matmul, matmul_flops = matmul_case(8192 if on_gpu else 1024, device, dtype)
    times = interleaved({"backbone": lambda: body(x), "matmul": matmul}, repeats, warmup=2, sync=sync)
    rates = [(flops / b) / (matmul_flops / m) for b, m in zip(times["backbone"], times["matmul"])]
    return {
        "arch": arch,
        "img_size": img_size,
        "batch": batch,
        "dtype": str(dtype).removeprefix("torch."),
        "backbone_gflop_per_forward": round(flops / 1e9, 2),
        "backbone_tflops": round(flops / min(times["backbone"]) / 1e12, 3),
        "matmul_tflops": round(matmul_flops / min(times["matmul"]) / 1e12, 3),
        "fraction_of_matmul": spread(rates),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    parser.add_argument(
        "--arch", default=None, help="backbone (random weights); default swin_large on a GPU, swin_tiny on the CPU"
    )
    parser.add_argument("--steps", type=int, default=None, help="training steps per cell (default 20 GPU, 4 CPU)")
    parser.add_argument("--batch", type=int, default=2, help="per-rank batch (the paper's 2 images per GPU)")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers per rank (default 4 GPU, 1 CPU)")
    parser.add_argument("--nproc", type=int, default=None, help="ranks (default: every visible GPU; 2 on the CPU)")
    parser.add_argument("--cells", nargs="*", default=list(CELL_TYPES))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    on_gpu = args.device == "cuda"
    if on_gpu and not torch.cuda.is_available():
        sys.exit("gpu_smoke: --device cuda but torch sees no GPU")
    tiny = not on_gpu
    arch = args.arch or ("swin_large" if on_gpu else "swin_tiny")
    steps = args.steps or (20 if on_gpu else 4)
    nproc = args.nproc or (torch.cuda.device_count() if on_gpu else 2)
    workers = args.workers if args.workers is not None else (4 if on_gpu else 1)
    threads = len(os.sched_getaffinity(0))
    from frozenbench.checkpoint import save_random_backbone
    from frozenbench.data.synth import synthesize

    rows, failures = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, spec in datasets(tiny).items():
            synthesize(spec, work / "data" / name)
        for cell in args.cells:
            spec = cell_spec(cell, work / "data", steps, args.batch, tiny)
            cell_arch = CELL_ARCHS.get(cell, {}).get(args.device, arch)
            checkpoint = save_random_backbone(work / f"{cell_arch}_{spec['img_size']}.pth", cell_arch, spec["img_size"])
            try:
                rows.append(
                    {"arch": cell_arch, **run_cell(cell, spec, checkpoint, work, args.device, nproc, workers, threads)}
                )
                print(json.dumps(rows[-1]), flush=True)
            except RuntimeError as err:
                failures.append(str(err))
                print(err, file=sys.stderr, flush=True)
    backbone = backbone_fraction(arch, 224 if on_gpu else 64, 32 if on_gpu else 4, args.device, args.repeats)
    name = torch.cuda.get_device_name(0) if on_gpu else "cpu"
    record = {
        "device": args.device,
        "device_name": name,
        "arch": arch,
        "nproc": nproc,
        "workers": workers,
        "tiny": tiny,
        "cells": rows,
        "backbone": backbone,
        "failures": failures,
        "targets": {"data_wait_below": 0.10, "backbone_fraction_of_matmul_at_least": 0.50},
    }
    out = args.out or (
        (RECORDS / f"gpu_{re.sub(r'[^a-z0-9]+', '_', name.lower()).strip('_')}.json")
        if on_gpu
        else RESULTS / "gpu_smoke_cpu.json"
    )
    print(write_record(out.stem, record, out.parent))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
