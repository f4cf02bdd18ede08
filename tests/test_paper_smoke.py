"""The paper study's path end to end at paper scale: configs/paper-smoke.yaml through the DAG.

Official-layout Swin-T and SwinV2-T checkpoints (random weights) are served from 127.0.0.1 and go
through `fetch_checkpoint` + `convert_checkpoint`; the datasets are drawn in the real datasets'
shapes; every cell type of configs/paper.yaml (HTC and Mask R-CNN at 1024, Mask2Former 1 + 4 at
640 with the sliding-window test, the temporal head at 224 with 16 x 4 frames and 3-crop test
views, extra-block heads, frozen and fine-tuned) trains 2 steps and is evaluated, and
the tables show every cell. A plain ViT-S/14 (DINOv2 layout, written by `synth-checkpoint` in the
DAG) runs frozen on ADE20K and Kinetics at the same resolutions, through its simple feature pyramid.
"""

from __future__ import annotations

import io
import json

import pytest
import torch
import yaml

from .conftest import run_cmd
from .fault_server import FaultServer
from .test_checkpoints import official_from_timm

pytestmark = [pytest.mark.slow, pytest.mark.openmmlab]


def _official_checkpoint(arch: str, v2: bool) -> bytes:
    from frozenbench.models.registry import build_arch

    torch.manual_seed(0)
    buf = io.BytesIO()
    torch.save({"model": official_from_timm(build_arch(arch).eval(), v2=v2)}, buf)
    return buf.getvalue()


def test_paper_smoke_dag_runs_every_cell_type_to_the_tables(workflow_copy):
    config_path = workflow_copy / "configs" / "paper-smoke.yaml"
    config = yaml.safe_load(config_path.read_text())
    bodies = {
        "swin_tiny_in1k": _official_checkpoint("swin_tiny", v2=False),
        "swinv2_tiny_in1k": _official_checkpoint("swinv2_tiny", v2=True),
    }
    with FaultServer() as server:
        for name, body in bodies.items():
            ckpt = config["backbones"][name]["checkpoint"]
            path = "/" + ckpt["url"].split("/", 3)[3]
            ckpt["url"] = server.add(path, body, ["drop:200000"])  # a dropped connection on the way
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        proc = run_cmd(
            ["snakemake", "--cores", "2", "all_tables", "--configfile", "configs/paper-smoke.yaml"],
            cwd=workflow_copy,
            timeout=3600,
        )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    for rule in ("fetch_checkpoint", "convert_checkpoint", "train_head", "evaluate_head", "submit_test_dev", "tables"):
        assert rule in out

    cells = [
        (c["task"], b, m, h)
        for c in config["study"]["cells"]
        for b in c["backbones"]
        for m in c["modes"]
        for h in c["heads"]
    ]
    for task, backbone, mode, head in cells:
        run = workflow_copy / "results" / task / backbone / mode / head / "seed0"  # paper-smoke.yaml's seed
        record = json.loads((run / "metrics.json").read_text())
        assert record["steps"] == 2
        metrics = record["metrics"]
        if task == "coco":
            assert set(metrics) >= {"bbox", "segm"}
        elif task == "ade":
            assert len(metrics["per_class_IoU"]) == 7
        else:
            assert "top1" in metrics and record["num_val"] == 8
    for backbone in ("swin_tiny_in1k",):
        assert (
            workflow_copy
            / "results"
            / "coco"
            / backbone
            / "frozen"
            / "mrcnn_fpn"
            / "seed0"
            / "detections_test-dev2017_frozenbench_results.zip"
        ).exists()

    tables = workflow_copy / "tables"
    pretraining = (tables / "pretraining.csv").read_text().splitlines()
    header = pretraining[0].split(",")
    swin_t = next(line.split(",") for line in pretraining if line.startswith("swin_tiny_in1k,"))
    for column in (
        "coco box AP frozen",
        "coco box AP fine-tuned",
        "ade mIoU frozen",
        "ade mIoU fine-tuned",
        "k400 top-1 frozen",
        "k400 top-1 fine-tuned",
    ):
        assert swin_t[header.index(column)] != "", column  # every cell reached the table
    capacity = (tables / "head_capacity.md").read_text()
    for head in ("htc", "htc_extra2", "m2f_b4_extra2", "temporal_b2", "temporal_b4"):
        assert f"| {head} |" in capacity
    assert "Ours (swinv2_tiny_in1k," in (tables / "paper.md").read_text()
    vit = next(line.split(",") for line in pretraining if line.startswith("dinov2_vits14_random,"))
    for column in ("ade mIoU frozen", "k400 top-1 frozen"):
        assert vit[header.index(column)] != "", column
