"""What a study costs: measured seconds per step of each cell type turned into GPU-hours.

The measurements come from a benchmark record with one row per (cell type, mode):
``bench/gpu_smoke.py`` on a GPU (``bench/records/gpu_<device>.json``) or ``bench/paper_cells.py``
on a CPU. A CPU record gives a *CPU projection* (hours of one CPU worker, not of a GPU) and the
report says so on every line; a GPU record gives GPU-hours. Rows the record lacks (e.g. fine-tune
cells when only frozen ones were measured) are listed as unmeasured instead of guessed.

Train cost of a cell = steps x seconds per step x (its per-GPU batch / the measured batch) x its
GPUs; evaluation = validation samples x seconds per sample (one GPU; the test-time views as
configured in the measured run).
"""

from __future__ import annotations

from typing import Any

# Nominal validation sizes of the real datasets (COCO val2017, ADE20K validation, the K400 val
# clips still online in 2022); a planning figure, not a count of what was prepared.
VAL_SAMPLES = {"coco": 5000, "ade": 2000, "kinetics": 19881}
DETECTORS = {"mask_rcnn": "mask_rcnn", "cascade_mask_rcnn": "cascade", "htc": "htc"}


def cell_type(task: dict[str, Any], head: dict[str, Any], task_name: str) -> str:
    """The benchmark's name of a cell's type: ``<task>_<head kind>`` (e.g. ``coco_htc``)."""
    kind = task["type"]
    if kind == "detection":
        return f"{task_name}_{DETECTORS.get(head.get('detector', 'mask_rcnn'), head.get('detector'))}"
    return f"{task_name}_{'mask2former' if kind == 'segmentation' else 'temporal'}"


def _dataset_format(config: dict[str, Any], task: dict[str, Any]) -> str:
    return config["datasets"][task["dataset"]]["format"]


def study_cost(config: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """Per-cell and total cost of ``config``'s study from the benchmark ``record``."""
    measured = {(row["cell"], row["mode"]): row for row in record["cells"]}
    on_gpu = str(record.get("device", "cpu")).startswith("cuda")
    unit = "GPU-hours" if on_gpu else "CPU-hours (projection from a CPU record)"
    compute = config.get("compute", {})
    gpus_per_job = max(1, compute.get("train", {}).get("gpus", 0)) * compute.get("train", {}).get("nodes", 1)
    rows, unmeasured = [], []
    for cell in config.get("study", {}).get("cells", []):
        task = config["tasks"][cell["task"]]
        for head_name in cell["heads"]:
            kind = cell_type(task, task["heads"][head_name], cell["task"])
            for mode in cell["modes"]:
                row = measured.get((kind, mode))
                for backbone in cell["backbones"]:
                    if row is None:
                        unmeasured.append(
                            {
                                "task": cell["task"],
                                "head": head_name,
                                "backbone": backbone,
                                "mode": mode,
                                "cell_type": kind,
                            }
                        )
                        continue
                    schedule = {**task.get("train", {}), **(task.get("finetune", {}) if mode == "finetune" else {})}
                    batch_scale = schedule.get("batch_size", row["batch"]) / row["batch"]
                    train_h = schedule.get("steps", 0) * row["seconds_per_step"] * batch_scale * gpus_per_job / 3600
                    eval_h = VAL_SAMPLES.get(_dataset_format(config, task), 0) * row["eval_seconds_per_sample"] / 3600
                    rows.append(
                        {
                            "task": cell["task"],
                            "head": head_name,
                            "backbone": backbone,
                            "mode": mode,
                            "cell_type": kind,
                            "steps": schedule.get("steps", 0),
                            "gpus": gpus_per_job,
                            "seconds_per_step": row["seconds_per_step"],
                            "train_hours": round(train_h, 1),
                            "eval_hours": round(eval_h, 1),
                            "total_hours": round(train_h + eval_h, 1),
                        }
                    )
    return {
        "unit": unit,
        "measured_on": record.get("device_name")
        or record.get("machine", {}).get("gpu")
        or record.get("machine", {}).get("cpu")
        or record.get("device"),
        "measured_arch": record.get("arch"),
        "rows": rows,
        "unmeasured": unmeasured,
        "total_hours": round(sum(r["total_hours"] for r in rows), 1),
    }


def cost_markdown(cost: dict[str, Any]) -> str:
    """The cost as a Markdown table, its unit and provenance in the heading lines."""
    lines = [
        f"# Study cost in {cost['unit']}",
        "",
        f"Measured on {cost['measured_on']} with backbone {cost['measured_arch']} (larger backbones cost more; "
        "the frozen backbone runs its forward only).",
        "",
        "| task | head | backbone | mode | steps | GPUs | s/step | train h | eval h | total h |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in cost["rows"]:
        lines.append(
            f"| {r['task']} | {r['head']} | {r['backbone']} | {r['mode']} | {r['steps']} | {r['gpus']} | "
            f"{r['seconds_per_step']:.2f} | {r['train_hours']:.1f} | {r['eval_hours']:.1f} | "
            f"{r['total_hours']:.1f} |"
        )
    lines += ["", f"**Total: {cost['total_hours']:.1f} {cost['unit']}**"]
    if cost["unmeasured"]:
        kinds = sorted({(u["cell_type"], u["mode"]) for u in cost["unmeasured"]})
        lines += [
            "",
            f"Not in the record, so not counted ({len(cost['unmeasured'])} cells): "
            + ", ".join(f"{kind} {mode}" for kind, mode in kinds),
        ]
    return "\n".join(lines) + "\n"
