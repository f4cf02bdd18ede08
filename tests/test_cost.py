"""``frozenbench cost``: every cell of a config priced from a benchmark record (measured, extrapolated by
the FLOPs rules, or not priced with its reason), CPU records never turned into GPU-hours, the FLOPs
counted on the meta device, and the older record format still read."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import yaml

from frozenbench.errors import UserError
from frozenbench.reporting.cost import cost_markdown, study_cost
from frozenbench.reporting.flops import backbone_gflop, count_forward_flops
from frozenbench.study import study_cells

from .conftest import REPO, run_cmd

PAPER = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())
OLD_RECORD = REPO / "bench" / "records" / "cpu_2core" / "paper_cells_cpu.json"

# The current record format (gpu_smoke.py, schema 2) with two measured cell kinds, Mask R-CNN in both
# modes on Swin-L and the temporal head fine-tuned on Swin-B, and a Mask2Former row that failed.
HEAD_MRCNN, HEAD_TEMPORAL = 400.0, 50.0
GPU_RECORD = {
    "schema": 2,
    "device": "cuda",
    "device_name": "NVIDIA H100 80GB HBM3",
    "gpu_memory_mb": 81559,
    "torch": "2.11.0+cu130",
    "tiny": False,
    "nproc": 1,
    "cells": [
        {
            "cell": "coco_mask_rcnn",
            "mode": "frozen",
            "status": "ok",
            "error": None,
            "arch": "swin_large",
            "img_size": 1024,
            "batch": 2,
            "world_size": 1,
            "seconds_per_step": 0.5,
            "eval_seconds_per_sample": 0.1,
            "eval_views": "single scale",
            "head_gflop_per_sample": HEAD_MRCNN,
        },
        {
            "cell": "coco_mask_rcnn",
            "mode": "finetune",
            "status": "ok",
            "error": None,
            "arch": "swin_large",
            "img_size": 1024,
            "batch": 2,
            "world_size": 1,
            "seconds_per_step": 1.2,
            "eval_seconds_per_sample": 0.12,
            "eval_views": "single scale",
            "head_gflop_per_sample": HEAD_MRCNN,
        },
        {
            "cell": "k400_temporal",
            "mode": "finetune",
            "status": "ok",
            "error": None,
            "arch": "swin_base",
            "img_size": 224,
            "num_frames": 16,
            "batch": 8,
            "world_size": 1,
            "seconds_per_step": 2.0,
            "eval_seconds_per_sample": 0.5,
            "eval_views": {"num_clips": 4, "num_crops": 3},
            "head_gflop_per_sample": HEAD_TEMPORAL,
        },
        {
            "cell": "ade_mask2former",
            "mode": "frozen",
            "status": "failed",
            "error": "Traceback (most recent call last):\ntorch.OutOfMemoryError: CUDA out of memory",
            "arch": "swin_large",
            "img_size": 640,
            "batch": 2,
        },
    ],
}


def _row(cost: dict, task: str, head: str, backbone: str, mode: str) -> dict:
    (row,) = [
        r for r in cost["rows"] if (r["task"], r["head"], r["backbone"], r["mode"]) == (task, head, backbone, mode)
    ]
    return row


def _cpu(record: dict, name: str = "AMD EPYC 7763") -> dict:
    return {**copy.deepcopy(record), "device": "cpu", "device_name": name}


# -- FLOPs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch, img_size", [("swin_tiny", 64), ("vit_small_patch14_dinov2", 56)])
def test_meta_flop_count_equals_a_real_forward(arch, img_size):
    from frozenbench.models.backbone import Backbone

    torch.manual_seed(0)
    real = count_forward_flops(Backbone(arch, img_size=img_size), img_size, device="cpu")
    assert real > 0
    assert backbone_gflop(arch, img_size) * 1e9 == real
    # a clip is that many frame forwards
    assert backbone_gflop(arch, img_size, frames=3) == 3 * backbone_gflop(arch, img_size)


def test_flop_count_of_an_unknown_backbone_names_it():
    with pytest.raises(UserError, match="'swin_huge'"):
        backbone_gflop("swin_huge", 64)


# -- the current record format -----------------------------------------------------------------------


def test_every_paper_cell_is_priced_or_says_why_not():
    cost = study_cost(PAPER, GPU_RECORD)
    cells = list(study_cells(PAPER))
    assert len(cells) == 64 and len(cost["rows"]) == 64
    assert {(r["task"], r["backbone"], r["mode"], r["head"]) for r in cost["rows"]} == set(cells)
    assert sum(cost["counts"].values()) == 64
    for basis, count in cost["counts"].items():
        assert count == sum(r["basis"] == basis for r in cost["rows"]) > 0, basis
    for row in cost["rows"]:
        kind = row["cell_type"]
        if kind in ("coco_mask_rcnn", "k400_temporal"):
            assert row["basis"] in ("measured", "extrapolated") and row["total_hours"] > 0, row
        elif kind == "coco_htc":
            assert row["basis"] == "not priced" and row["reason"] == "the record has no coco_htc row", row
        else:
            assert kind == "ade_mask2former" and row["basis"] == "not priced", row
            assert "failed" in row["reason"] and "CUDA out of memory" in row["reason"], row
    measured = {(r["backbone"], r["mode"]) for r in cost["rows"] if r["basis"] == "measured"}
    assert measured == {
        ("swin_large_in22k", "frozen"),
        ("swin_large_in22k", "finetune"),
        ("swin_base_in1k", "finetune"),
        ("swin_base_in22k", "finetune"),
        ("swin_base_simmim", "finetune"),
    }
    # a measured GPU cell: steps x s/step x the job's 8 GPUs; evaluation on one GPU
    row = _row(cost, "coco", "mrcnn_fpn", "swin_large_in22k", "frozen")
    assert row["rules"] == ["M"] and row["gpus"] == 8 == cost["gpus_per_job"]
    assert row["train_hours"] == pytest.approx(90000 * 0.5 * 8 / 3600)
    assert row["eval_hours"] == pytest.approx(5000 * 0.1 / 3600)
    # a mode the record lacks for a kind comes from the other mode, a head variant from its base head
    frozen = _row(cost, "k400", "temporal_b2", "swinv2_large_in22k", "frozen")
    variant = _row(cost, "k400", "temporal_b4", "swinv2_large_in22k", "frozen")
    assert {"F", "O"} <= set(frozen["rules"]) and "H" not in frozen["rules"]
    assert variant["rules"] == sorted(frozen["rules"] + ["H"], key=list(cost["rules"]).index)
    assert variant["seconds_per_step"] == frozen["seconds_per_step"]
    assert cost["total_hours"] == pytest.approx(sum(r["total_hours"] for r in cost["rows"] if "total_hours" in r))
    assert cost["pretraining"] == []  # the paper study pretrains nothing in the DAG

    text = cost_markdown(cost)
    assert text.startswith("# Study cost in GPU-hours\n")
    assert "64 cells: 5 measured, 36 extrapolated, 23 not priced." in text
    assert "| coco | htc_extra2 | swinv2_large_in22k | frozen | not priced |" in text
    assert "| k400 | temporal_b4 | swinv2_large_in22k | frozen | extrapolated (F, O, H, E) |" in text
    assert "- the record has no coco_htc row: 2 cells" in text
    assert "- H: head variant priced as its base head" in text
    assert "In-DAG pretraining" not in text


def test_an_extrapolated_cell_follows_the_flops_rule():
    cost = study_cost(PAPER, GPU_RECORD)
    # fine-tuned Swin-B Mask R-CNN from the fine-tuned Swin-L row (same mode, same family)
    row = _row(cost, "coco", "mrcnn_fpn", "swin_base_in1k", "finetune")
    base, large = backbone_gflop("swin_base", 1024), backbone_gflop("swin_large", 1024)
    assert base < large
    seconds_per_step = 1.2 * (3 * base + 3 * HEAD_MRCNN) / (3 * large + 3 * HEAD_MRCNN) * (2 / 2)
    eval_seconds = 0.12 * (base + HEAD_MRCNN) / (large + HEAD_MRCNN)
    assert row["basis"] == "extrapolated" and row["rules"] == ["F", "E"]
    assert row["seconds_per_step"] == pytest.approx(seconds_per_step, rel=1e-12)
    assert row["train_hours"] == pytest.approx(90000 * seconds_per_step * 8 / 3600, rel=1e-12)
    assert row["eval_hours"] == pytest.approx(5000 * eval_seconds / 3600, rel=1e-12)
    # a frozen Swin-T temporal cell from the fine-tuned Swin-B one: the backbone's backward drops out
    row = _row(cost, "k400", "temporal_b2", "swin_tiny_in1k", "frozen")
    tiny, base = backbone_gflop("swin_tiny", 224, frames=16), backbone_gflop("swin_base", 224, frames=16)
    assert tiny == 16 * backbone_gflop("swin_tiny", 224)
    seconds_per_step = 2.0 * (tiny + 3 * HEAD_TEMPORAL) / (3 * base + 3 * HEAD_TEMPORAL) * (8 / 8)
    assert row["seconds_per_step"] == pytest.approx(seconds_per_step, rel=1e-12)
    assert row["eval_hours"] == pytest.approx(19881 * 0.5 * (tiny + HEAD_TEMPORAL) / (base + HEAD_TEMPORAL) / 3600)


def test_each_seed_of_a_cell_is_priced_as_another_run():
    import copy

    seeded = copy.deepcopy(PAPER)
    seeded.setdefault("study", {})["seeds"] = [0, 1, 2]
    first = seeded["study"]["cells"][0]
    seeded["study"]["cells"].append({**first, "seeds": [5]})  # listed again: the union, priced once
    once, thrice = study_cost(PAPER, GPU_RECORD), study_cost(seeded, GPU_RECORD)
    assert len(thrice["rows"]) == len(once["rows"])
    for a, b in zip(once["rows"], thrice["rows"]):
        in_first = a["task"] == first["task"] and a["backbone"] in first["backbones"] and a["mode"] in first["modes"]
        seeds = 4 if in_first and a["head"] in first["heads"] else 3
        assert b["seeds"] == seeds
        if a["basis"] != "not priced":
            assert b["total_hours"] == pytest.approx(seeds * a["total_hours"])


def test_a_cpu_record_is_cpu_time_never_gpu_hours():
    gpu = study_cost(PAPER, GPU_RECORD)
    cpu = study_cost(PAPER, _cpu(GPU_RECORD))
    assert gpu["unit"] == "GPU-hours"
    assert cpu["unit"] == "CPU-hours of AMD EPYC 7763, one process" and not cpu["on_gpu"]
    priced = [r for r in cpu["rows"] if r["basis"] != "not priced"]
    assert priced and all(r["gpus"] == 1 for r in cpu["rows"])
    seconds = sum(r["steps"] * r["seconds_per_step"] + r["eval_samples"] * r["eval_seconds_per_sample"] for r in priced)
    assert cpu["total_hours"] == pytest.approx(seconds / 3600, rel=1e-12)
    # the same timings on a GPU record: training x the job's 8 GPUs, evaluation as it is
    for c, g in zip(cpu["rows"], gpu["rows"]):
        if c["basis"] != "not priced":
            assert g["train_hours"] == pytest.approx(8 * c["train_hours"], rel=1e-12)
            assert g["eval_hours"] == pytest.approx(c["eval_hours"], rel=1e-12)
    text = cost_markdown(cpu)
    assert text.startswith("# Study cost in CPU-hours of AMD EPYC 7763, one process\n")
    total = next(line for line in text.splitlines() if line.startswith("**Total:"))
    assert total.startswith(f"**Total: {cpu['total_hours']:,.1f} CPU-hours of AMD EPYC 7763, one process**")
    assert "GPU-hours" not in text.replace("not GPU-hours", "")


# -- the older record format ---------------------------------------------------------------------------


def test_the_old_cpu_record_still_prices_every_paper_cell():
    record = json.loads(OLD_RECORD.read_text())
    assert "schema" not in record and "arch" not in record["cells"][0]  # the format this test is about
    cost = study_cost(PAPER, record, source=str(OLD_RECORD))
    assert cost["unit"] == "CPU-hours of x86_64, 2 threads, one process"
    assert cost["counts"]["not priced"] == 0 and sum(cost["counts"].values()) == 64
    timings = {(r["cell"], r["mode"]): r for r in record["cells"]}
    row = _row(cost, "coco", "mrcnn_fpn", "swin_tiny_in1k", "frozen")  # the record's own backbone, arch
    assert (
        row["basis"] == "measured"
        and row["seconds_per_step"] == timings["coco_mask_rcnn", "frozen"]["seconds_per_step"]
    )
    assert row["train_hours"] == pytest.approx(90000 * row["seconds_per_step"] / 3600)  # no GPU factor
    # 2 clips measured, 8 a GPU configured: linear in the batch; the frames the old rows lack are the cell's
    row = _row(cost, "k400", "temporal_b2", "swin_tiny_in22k", "finetune")
    assert row["basis"] == "measured" and row["rules"] == ["M", "I"]
    assert row["seconds_per_step"] == pytest.approx(timings["k400_temporal", "finetune"]["seconds_per_step"] * 8 / 2)
    # no head FLOPs in the old rows: the ratio is the backbone's
    row = _row(cost, "coco", "mrcnn_fpn", "swin_large_in22k", "frozen")
    assert row["rules"] == ["F", "B", "E"]
    ratio = backbone_gflop("swin_large", 1024) / backbone_gflop("swin_tiny", 1024)
    assert row["seconds_per_step"] == pytest.approx(timings["coco_mask_rcnn", "frozen"]["seconds_per_step"] * ratio)
    # single-scale ADE timing, the configured test is 6 scales with flips
    row = _row(cost, "ade", "m2f_b4", "swin_tiny_in1k", "frozen")
    views = sum(s * s for s in PAPER["tasks"]["ade"]["test"]["scales"]) * 2
    assert row["basis"] == "extrapolated" and "E" in row["rules"]
    assert row["eval_hours"] == pytest.approx(
        2000 * timings["ade_mask2former", "frozen"]["eval_seconds_per_sample"] * views / 3600
    )


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r.pop("arch"), "cells[0]: no 'arch' in the row and no top-level 'arch'"),
        (lambda r: r["cells"][1].update(seconds_per_step=-1), "cells[1]: 'seconds_per_step' must be a positive number"),
        (lambda r: r["cells"][2].pop("batch"), "cells[2]: 'batch' must be a positive number, got None"),
        (lambda r: r.pop("cells"), "not a benchmark record with per-cell timings"),
    ],
)
def test_a_bad_record_names_the_file_and_row(change, message):
    record = json.loads(OLD_RECORD.read_text())
    change(record)
    with pytest.raises(UserError, match="^rec.json: .*" + message.replace("[", r"\[").replace("]", r"\]")):
        study_cost(PAPER, record, source="rec.json")


# -- the command, and in-DAG pretraining ----------------------------------------------------------------


def _mini_record() -> dict:
    """A CPU record of the mini-study's cell kinds and pretraining (config.yaml), tiny sizes."""

    def cell(kind, mode, img_size, seconds, **extra):
        return {
            "cell": kind,
            "mode": mode,
            "status": "ok",
            "arch": "convstem_swin_tiny",
            "img_size": img_size,
            "batch": 2,
            "seconds_per_step": seconds,
            "eval_seconds_per_sample": 0.05,
            "head_gflop_per_sample": 0.5,
            **extra,
        }

    return {
        "schema": 2,
        "device": "cpu",
        "device_name": "cpu",
        "tiny": True,
        "cells": [
            cell("ade_mask2former", "frozen", 128, 0.3, eval_views="single scale"),
            cell("k400_temporal", "finetune", 64, 0.4, num_frames=8, eval_views={"num_clips": 1, "num_crops": 1}),
            cell("coco_mask_rcnn", "frozen", 128, 0.6, eval_views="single scale"),
            cell("pretrain_supervised", "pretrain", 64, 0.2, batch=128),
            cell("pretrain_contrastive", "pretrain", 64, 0.3, batch=128),
            {
                "cell": "pretrain_mim",
                "mode": "pretrain",
                "status": "failed",
                "error": "boom",
                "arch": "convstem_swin_tiny",
            },
            cell("probe", "probe", 64, 0.1, eval_seconds_per_sample=0.002),
        ],
    }


def test_cost_command_prices_the_mini_study_and_its_pretraining(tmp_path):
    from frozenbench.config import load_config

    record = tmp_path / "record.json"
    record.write_text(json.dumps(_mini_record()))
    out, out_json = tmp_path / "cost.md", tmp_path / "cost.json"
    run_cmd(
        [
            "frozenbench",
            "cost",
            "--config",
            "config.yaml",
            "--record",
            str(record),
            "--out",
            str(out),
            "--json",
            str(out_json),
        ],
        check=True,
    )
    cost = json.loads(out_json.read_text())
    config = load_config(REPO / "config.yaml")
    assert len(cost["rows"]) == len(list(study_cells(config))) == sum(cost["counts"].values())
    assert cost["counts"]["not priced"] == 0 and cost["unit"] == "CPU-hours of cpu, one process"
    pretrained = {name for name, entry in config["backbones"].items() if "pretrain" in entry}
    rows = {r["backbone"]: r for r in cost["pretraining"]}
    assert set(rows) == pretrained
    images = 10 * (400 + 60)  # shapes-pretrain: 10 classes x (400 train + 60 val)
    tiny = rows["convstem_swin_tiny_supervised"]
    assert tiny["basis"] == "measured" and tiny["rules"] == ["M", "Q"]
    assert tiny["train_hours"] == pytest.approx(600 * 0.2 / 3600)  # 600 steps at the measured batch of 128
    assert tiny["probe_hours"] == pytest.approx(images * 0.002 / 3600)
    contrastive = rows["convstem_swin_tiny_contrastive"]  # its own options: 300 steps
    assert contrastive["train_hours"] == pytest.approx(300 * 0.3 / 3600)
    assert rows["convstem_swin_tiny_random"]["steps"] == 0 and rows["convstem_swin_tiny_random"]["train_hours"] == 0
    assert rows["convstem_swin_tiny_mim"]["basis"] == "not priced"
    assert "no pretrain_mim row" in rows["convstem_swin_tiny_mim"]["reason"]
    small = rows["convstem_swin_small_supervised"]
    ratio = (backbone_gflop("convstem_swin_small", 64) + 0.5) / (backbone_gflop("convstem_swin_tiny", 64) + 0.5)
    assert small["basis"] == "extrapolated" and small["rules"] == ["R", "Q"]
    assert small["train_hours"] == pytest.approx(600 * 0.2 * ratio / 3600)
    priced = [r for r in cost["rows"] + cost["pretraining"] if r["basis"] != "not priced"]
    assert cost["total_hours"] == pytest.approx(sum(r["total_hours"] for r in priced))
    text = out.read_text()
    assert "## In-DAG pretraining (CPU-hours of cpu, one process, one device per backbone)" in text
    assert (
        "| convstem_swin_tiny_mim | convstem_swin_tiny | mim | not priced: the record has no pretrain_mim row" in text
    )


def test_cost_command_refuses_a_file_that_is_not_a_record(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rows": []}))
    proc = run_cmd(["frozenbench", "cost", "--config", "configs/paper.yaml", "--record", str(bad)])
    assert proc.returncode != 0
    assert f"{bad}: not a benchmark record with per-cell timings" in proc.stderr


@pytest.mark.slow  # ~14 s: prices the paper study through the CLI
def test_cost_command_without_a_record_prices_from_the_best_one_in_the_repository(monkeypatch, tmp_path):
    """No GPU smoke record is committed yet: the CPU smoke record is the best, and it says so; a
    schema-2 GPU record under bench/records would be taken first."""
    from frozenbench.cluster import memory
    from frozenbench.commands.cost import best_record

    proc = run_cmd(["frozenbench", "cost", "--config", "configs/paper.yaml"], check=True)
    assert "priced from" in proc.stderr and "cpu_2core/gpu_smoke_cpu.json" in proc.stderr
    assert "64 cells:" in proc.stdout and "CPU-hours" in proc.stdout and "GPU-hours" not in proc.stdout.split("\n")[0]

    gpu = tmp_path / "gpu_h100.json"
    monkeypatch.setattr(memory, "default_record_path", lambda: gpu)
    assert best_record() == gpu
