"""Peak memory of one video backbone step on the CPU: activation checkpointing and frame chunks.

    PYTHONPATH=src python bench/activation_memory.py [--arch swin_tiny] [--img-size 224] [--frames 16]

The video backbone (``FramewiseBackbone``, what the K400 cells train) on one clip of ``--frames``
frames: a fine-tuned step (forward + backward) without and with activation checkpointing, and with
checkpointing and frame chunks; a frozen step (forward under no_grad) at several ``frame_chunk``
values. Each case runs in its own process (peak RSS is per process): the figure is the process's
peak RSS during the step minus its RSS just before it (model, input and libraries already loaded),
reported beside the estimate of frozenbench.cluster.memory for the same case (fine-tuned: the
activations kept for backward, the recomputed block and the gradients; frozen: the no_grad
forward's peak) and as ratios to the fine-tuned and frozen cases without the option.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch

from common import write_record

CASES = {
    # name: (fine-tuned, activation checkpointing, frame_chunk)
    "finetune": (True, False, 0),
    "finetune_checkpointing": (True, True, 0),
    "finetune_chunk4": (True, False, 4),
    "finetune_checkpointing_chunk4": (True, True, 4),
    "frozen": (False, False, 0),
    "frozen_chunk8": (False, False, 8),
    "frozen_chunk4": (False, False, 4),
    "frozen_chunk2": (False, False, 2),
}


def status_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak_rss() -> None:
    """Start the process's high-water mark (VmHWM) again from its current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")


def child(case: str, arch: str, img_size: int, frames: int) -> dict:
    from frozenbench.cluster.memory import count_backbone_now
    from frozenbench.models.backbone import apply_memory_options
    from frozenbench.openmmlab.video import FramewiseBackbone

    finetune, checkpointing, chunk = CASES[case]
    torch.manual_seed(0)
    model = FramewiseBackbone(arch=arch, img_size=img_size, frozen=not finetune)
    apply_memory_options(model, {"activation_checkpointing": checkpointing, "frame_chunk": chunk})
    model.train()
    clips = torch.randn(1, 3, frames, img_size, img_size)
    # one small step first: the allocator's and the libraries' one-off buffers are not the step's
    model(torch.randn(1, 3, 1, img_size, img_size)).float().mean().backward() if finetune else model(clips[:, :, :1])
    model.zero_grad(set_to_none=True)
    reset_peak_rss()
    before, started = status_mb("VmRSS"), time.perf_counter()
    tokens = model(clips)
    if finetune:
        tokens.float().mean().backward()
    seconds = time.perf_counter() - started
    measured = status_mb("VmHWM") - before
    count = count_backbone_now(arch, img_size, frames, finetune, checkpointing, False, chunk, True)
    if finetune:
        estimate = (count.saved + count.recompute + 4 * count.params) / 2**20
    else:
        estimate = count.forward_peak / 2**20
    return {"step_peak_rss_mb": round(measured, 1), "estimate_mb": round(estimate, 1), "seconds": round(seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="swin_tiny")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--child", choices=sorted(CASES))
    args = parser.parse_args()
    if args.child:
        torch.set_num_threads(2)
        print(json.dumps(child(args.child, args.arch, args.img_size, args.frames)))
        return
    cases = {}
    for case in CASES:
        out = subprocess.run(
            [sys.executable, __file__, "--child", case, "--arch", args.arch, "--img-size", str(args.img_size),
             "--frames", str(args.frames)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        cases[case] = json.loads(out.stdout.strip().splitlines()[-1])
        print(case, cases[case], flush=True)

    def ratio(case: str, reference: str) -> float:
        return round(cases[case]["step_peak_rss_mb"] / cases[reference]["step_peak_rss_mb"], 3)

    record = {
        "arch": args.arch,
        "img_size": args.img_size,
        "frames": args.frames,
        "measure": "peak RSS of the step minus RSS before it, one process per case (MB)",
        "cases": cases,
        "ratios": {
            **{case: ratio(case, "finetune") for case in CASES if CASES[case][0]},
            **{case: ratio(case, "frozen") for case in CASES if not CASES[case][0]},
        },
    }
    print(write_record("activation_memory_cpu", record))


if __name__ == "__main__":
    main()
