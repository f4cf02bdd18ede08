"""A lower bound on the paper study's GPU-hours from the one GPU measurement in the repository:
the bare backbones on an H100 (``bench/records/gpu_backbone_memory_h100.json``, session 1).

    python bench/backbone_lower_bound.py [--config configs/paper.yaml] \
        [--out bench/records/backbone_lower_bound_h100.json]

The heads are not in that record, so this counts only the backbone's share of every training
step: a frozen cell's bf16 forward (the ``frozen_bf16_weights`` rows, as the study runs a frozen
backbone), a fine-tuned cell's forward + backward + AdamW (``finetune_fp32``: the only fine-tune
rows measured; the study fine-tunes under bf16 autocast, which is faster, so those rows are not
a bound for that part and the total is labelled as mixed). Each cell's time per image is the
measured one scaled by the forward FLOPs ratio (``frozenbench.reporting.flops``: target arch at
the cell's input vs measured arch at the measured input), times images per step (per-GPU batch x
frames), steps and GPUs per job. Evaluation is left out. It is a *floor* for the frozen cells and
an *estimate of one part* for the fine-tuned ones; ``make gpu-smoke`` on a GPU replaces it with
the measured price of every cell (``frozenbench cost``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from frozenbench.config import load_config
from frozenbench.reporting.flops import backbone_gflop

HERE = Path(__file__).resolve().parent
RECORD = HERE / "records" / "gpu_backbone_memory_h100.json"
VARIANT = {"frozen": "frozen_bf16_weights", "finetune": "finetune_fp32"}


def measured_rows(record: dict) -> dict[tuple[str, str], dict]:
    return {(row["arch"], row["variant"]): row for row in record["rows"] if row.get("step_ms")}


def nearest_measured(arch: str, variant: str, rows: dict[tuple[str, str], dict]) -> dict:
    """The row of ``arch`` itself, else the measured arch of the same family (swin / swinv2) whose
    name sorts nearest; FLOPs scaling carries it to ``arch``."""
    if (arch, variant) in rows:
        return rows[(arch, variant)]
    family = arch.split("_")[0]
    candidates = [row for (a, v), row in rows.items() if v == variant and a.split("_")[0] == family]
    if not candidates:
        raise SystemExit(f"no {variant} row of the {family} family in {RECORD}")
    order = ["tiny", "small", "base", "large", "giant"]
    size = arch.split("_")[-1]
    return min(candidates, key=lambda row: abs(order.index(row["arch"].split("_")[-1]) - order.index(size)))


def project(config: dict, record: dict) -> dict:
    rows = measured_rows(record)
    compute = config["compute"]["train"]
    gpus = max(1, compute.get("gpus", 0)) * compute.get("nodes", 1)
    cells = []
    for group in config["study"]["cells"]:
        task = config["tasks"][group["task"]]
        frames = task.get("data_options", {}).get("num_frames", 1) if task["type"] == "video" else 1
        for mode in group["modes"]:
            schedule = {**task["train"], **(task.get("finetune", {}) if mode == "finetune" else {})}
            for name in group["backbones"]:
                arch = config["backbones"][name]["arch"]
                row = nearest_measured(arch, VARIANT[mode], rows)
                scale = backbone_gflop(arch, task["img_size"]) / backbone_gflop(row["arch"], row["img_size"])
                seconds_per_image = row["step_ms"] / 1000 / row["batch"] * scale
                images = schedule["steps"] * schedule["batch_size"] * frames
                for head in group["heads"]:
                    cells.append(
                        {
                            "task": group["task"],
                            "head": head,
                            "backbone": name,
                            "mode": mode,
                            "from": f"{row['arch']} {row['variant']} at {row['img_size']} px",
                            "gpu_hours": round(images * seconds_per_image * gpus / 3600, 1),
                        }
                    )
    by_mode = {m: round(sum(c["gpu_hours"] for c in cells if c["mode"] == m), 1) for m in VARIANT}
    return {
        "measured_on": record["device"],
        "gpus_per_job": gpus,
        "cells": cells,
        "backbone_gpu_hours": by_mode,
        "total_backbone_gpu_hours": round(sum(by_mode.values()), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=HERE.parent / "configs" / "paper.yaml")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    result = project(load_config(args.config), json.loads(RECORD.read_text()))
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    hours = result["backbone_gpu_hours"]
    print(f"{len(result['cells'])} cells; backbone GPU-hours on {result['measured_on']}: {hours}")
    print(f"total {result['total_backbone_gpu_hours']} GPU-hours (backbone only, {result['gpus_per_job']} GPUs a job)")


if __name__ == "__main__":
    main()
