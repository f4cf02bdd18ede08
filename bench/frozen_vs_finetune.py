"""Frozen vs fine-tune training step, same head, batch and input, per task: step time and peak memory.

    PYTHONPATH=src python bench/frozen_vs_finetune.py [--device cuda] [--repeats 7] \
        [--archs convstem_swin_tiny swin_tiny]

For each task of the mini-study (shapes-ade Mask2Former, shapes-coco Mask R-CNN, shapes-k400
temporal head; heads and input sizes as config.yaml) and each backbone one model per mode is
built and trained on the same fixed batch, as the engine steps it (the training wrapper's data
preprocessor, forward and loss reduction, the loop's total); the two modes' steps are interleaved. Two backbones:
the mini-study's ``convstem_swin_tiny`` (2.3 M parameters, lighter than the heads on top of it) and the
paper's smallest, ``swin_tiny`` (28 M), where the backbone carries most of the step as it does at
full scale. Peak memory is what training adds on top of the built model (gradients, optimizer
state, activations kept for backward), measured in a child process per (task, mode): on CPU the peak RSS (reset through
``/proc/self/clear_refs`` once the model is built) minus the RSS at that point; on a GPU
``torch.cuda.max_memory_allocated`` minus the allocated memory at that point.

Goal (issue 7): frozen at least 2x faster and at most half the peak memory of fine-tuning.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from frozenbench.tasks.registry import BackboneRequest, get_task_type

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved, ratio, spread, write_record  # noqa: E402

TASKS = {  # task -> (type, dataset spec overrides, head, img_size, batch)
    "ade": ("segmentation", "shapes-ade", {"width": 64, "num_queries": 20, "num_points": 2048}, 128, 4),
    "coco": ("detection", "shapes-coco", {"width": 64, "rpn_samples": 128, "rcnn_samples": 128}, 128, 4),
    "k400": ("video", "shapes-k400", {"num_frames": 8, "num_blocks": 2, "width": 64}, 64, 8),
    # the same detector at a larger input, 2 images per step as the paper's per-GPU batch: the
    # backbone's share of the step grows with the pixels while the RoI heads' stays fixed
    "coco_384": ("detection", "shapes-coco", {"width": 64, "rpn_samples": 128, "rcnn_samples": 128}, 384, 2),
}


def build(task: str, mode: str, data_root: Path, device: str, arch: str):
    import importlib

    from mmengine.dataset import pseudo_collate

    from frozenbench.engine.loop import total_loss
    from frozenbench.openmmlab.training import wrap_for_training

    kind, _, head, img_size, batch = TASKS[task]
    module = importlib.import_module(f"frozenbench.tasks.{kind}")
    task_type = get_task_type(kind)
    torch.manual_seed(0)
    extra = {"num_frames": head["num_frames"]} if kind == "video" else {}
    dataset = module.build_dataset(data_root / task, "train", img_size, train=True, **extra)
    model = module.build_model(
        task_type.make_head(head),
        BackboneRequest(None, img_size, frozen=(mode == "frozen"), arch=arch),
        len(module.class_names(data_root / task)),
    ).to(device)
    trainable = wrap_for_training(model).train()
    samples = pseudo_collate([dataset[i] for i in range(batch)])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step():
        total, _ = total_loss(trainable(samples))
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()

    return step


def synthesize(root: Path) -> None:
    from frozenbench.config import load_config
    from frozenbench.data.synth import synthesize as synth

    config = load_config(Path(__file__).resolve().parents[1] / "config.yaml")
    for task, (_, dataset, _, img_size, _) in TASKS.items():
        spec = copy.deepcopy(config["datasets"][dataset])
        small = {
            "shapes-ade": {"num_train": 16, "num_val": 2},
            "shapes-coco": {"num_train": 16, "num_val": 2},
            "shapes-k400": {"num_train_per_class": 2, "num_val_per_class": 1},
        }[dataset]
        spec["synth"].update(small)
        if "image_size" in spec["synth"]:  # images drawn at the size the model sees
            spec["synth"]["image_size"] = img_size
        synth(spec, root / task)


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def child(task: str, mode: str, data_root: Path, device: str, arch: str, steps: int) -> dict:
    """One (task, mode) in its own process: the peak memory of training on top of the built model
    (gradients, optimizer state, activations kept for backward)."""
    step = build(task, mode, data_root, device, arch)
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
        return {
            "step_mb": (torch.cuda.max_memory_allocated() - base) / 2**20,
            "peak_mb": torch.cuda.max_memory_allocated() / 2**20,
        }
    base = _status_mb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak-RSS high-water mark (Linux)
        f.write("5")
    for _ in range(steps):
        step()
    peak = _status_mb("VmHWM")
    return {"step_mb": max(peak - base, 0.0), "peak_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--tasks", nargs="*", default=list(TASKS))
    parser.add_argument("--archs", nargs="*", default=["convstem_swin_tiny", "swin_tiny"])
    parser.add_argument("--child", nargs=4, metavar=("TASK", "MODE", "DATA", "ARCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        task, mode, data, arch = args.child
        print(json.dumps(child(task, mode, Path(data), args.device, arch, steps=3)))
        return
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    backbones = {}
    with tempfile.TemporaryDirectory() as tmp:
        data_root = Path(tmp)
        synthesize(data_root)
        for arch in args.archs:
            results = backbones.setdefault(arch, {})
            for task in args.tasks:
                results[task] = measure(task, arch, data_root, args.device, args.repeats, sync)
                print(
                    f"{arch} {task}: frozen {results[task]['speedup_frozen']['median']:.2f}x faster, "
                    f"memory {results[task]['step_memory_mb']['frozen']:.0f} vs "
                    f"{results[task]['step_memory_mb']['finetune']:.0f} MB",
                    flush=True,
                )
    record = {"repeats": args.repeats, "backbones": {}}
    for arch, results in backbones.items():
        goals = {
            task: {
                "2x_faster": r["speedup_frozen"]["median"] >= 2.0,
                "half_the_memory": r["memory_ratio_frozen_over_finetune"] <= 0.5,
            }
            for task, r in results.items()
        }
        record["backbones"][arch] = {"tasks": results, "goals": goals}
    write_record(f"frozen_vs_finetune_{args.device}", record)


def measure(task: str, arch: str, data_root: Path, device: str, repeats: int, sync) -> dict:
    steps = {mode: build(task, mode, data_root, device, arch) for mode in ("frozen", "finetune")}
    times = interleaved(steps, repeats, warmup=1, sync=sync)
    del steps
    memory, peak = {}, {}
    for mode in ("frozen", "finetune"):
        out = subprocess.run(
            [sys.executable, __file__, "--device", device, "--child", task, mode, str(data_root), arch],
            capture_output=True,
            text=True,
            check=True,
        )
        measured = json.loads(out.stdout.strip().splitlines()[-1])
        memory[mode], peak[mode] = measured["step_mb"], measured["peak_mb"]
    return {
        "seconds": {mode: spread(ts) for mode, ts in times.items()},
        "speedup_frozen": ratio(times["finetune"], times["frozen"]),
        "step_memory_mb": memory,
        "memory_ratio_frozen_over_finetune": round(memory["frozen"] / max(memory["finetune"], 1e-9), 4),
        "process_peak_mb": peak,
    }


if __name__ == "__main__":
    main()
