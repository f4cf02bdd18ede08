"""`make gpu-smoke DEVICE=cpu`: bench/gpu_smoke.py, the script a GPU session runs first, on tiny
sizes so it cannot rot: every cell kind of configs/paper.yaml frozen and fine-tuned, the ViT, the
in-DAG pretraining objectives and the probe; a failed row is recorded and the run goes on; the time
budget skips what it cannot start and kills what it cannot finish; `frozenbench cost` reads the record."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
import time
from pathlib import Path

import pytest
import torch

from .conftest import REPO, VENV_BIN, run_cmd

SMOKE = REPO / "bench" / "gpu_smoke.py"
TASK_KINDS = ("coco_mask_rcnn", "coco_htc", "ade_mask2former", "k400_temporal", "ade_mask2former_vit")
PRETRAINING = ("pretrain_supervised", "pretrain_contrastive", "pretrain_mim")
# paper.yaml's per-GPU batch sizes (train.batch_size), which the smoke keeps on the CPU too
PAPER_BATCH = {"coco": 2, "ade": 2, "k400": 8}


def smoke_module():
    spec = importlib.util.spec_from_file_location("gpu_smoke", SMOKE)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gpu_smoke", module)  # its dataclasses look their module up there
    spec.loader.exec_module(sys.modules["gpu_smoke"])
    return sys.modules["gpu_smoke"]


def run_smoke(*args: str, timeout: float = 1800):
    return run_cmd(
        [sys.executable, str(SMOKE), "--device", "cpu", "--repeats", "2", *args],
        env={"OMP_NUM_THREADS": "1"},
        timeout=timeout,
    )


def backbone_gflop(arch: str, size: int, frames: int = 1) -> float:
    """The backbone alone on one sample, counted independently of the smoke's counter: attention
    through torch's math kernel (plain matmuls, which the FLOP counter has formulas for)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from frozenbench.models.backbone import Backbone

    body = Backbone(arch, img_size=size)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        body(torch.randn(frames, 3, size, size))
    return counter.get_total_flops() / 1e9


# -- the whole smoke on the CPU --------------------------------------------------------------------


def check_full_record(record: dict) -> None:
    """What a CPU record of every row must hold (the test's run, and the committed record)."""
    assert record["schema"] == 2 and record["device"] == "cpu" and record["device_name"] == "cpu"
    assert record["tiny"] and record["failures"] == [] and record["skipped"] == []
    assert record["gpu_memory_mb"] is None and record["matmul"]["dtype"] == "float32"
    assert record["matmul"]["tflops"] > 0

    rows = {(row["cell"], row["mode"]): row for row in record["cells"]}
    if record.get("cuda_path_rehearsed"):  # every job took the GPU's branch (engine/device.py) on the CPU
        trained = [row for row in record["cells"] if "train_device_name" in row]
        assert trained and all(r["train_device_name"].endswith("(CUDA path rehearsed on the CPU)") for r in trained)
    expected = {(kind, mode) for kind in TASK_KINDS for mode in ("frozen", "finetune")}
    expected |= {(name, "pretrain") for name in PRETRAINING} | {("probe", "probe")}
    assert set(rows) == expected and len(record["cells"]) == len(expected), sorted(rows)
    # every kind paper.yaml's study trains is among them, in each mode it trains
    from frozenbench.config import load_config
    from frozenbench.study import cell_type
    from frozenbench.study import study_cells

    paper = load_config(REPO / "configs" / "paper.yaml")
    for task, _, mode, head in study_cells(paper):
        entry = paper["tasks"][task]
        assert (cell_type(entry, entry["heads"][head], task), mode) in rows

    for (cell, mode), row in rows.items():
        assert row["status"] == "ok" and row["error"] is None, row
        # no GPU: no GPU number, none made up
        assert row.get("train_gpu_peak_mb") is None and row.get("eval_gpu_peak_mb") is None, row
        assert row["backbone_gflop_per_sample"] > 0 and row["backbone_fraction_of_matmul"] > 0, row
        assert "flop_error" not in row, row
        if mode != "probe":
            assert row["seconds_per_step"] > 0 and row["samples_per_second"] > 0, row
            assert 0 <= row["data_wait"] <= 1 and row["head_gflop_per_sample"] > 0, row
            assert all(math.isfinite(loss) for loss in row["loss_first_last"]), row
            assert row["steps"] == 3 and row["timed_steps"] == 2, row

    for kind in TASK_KINDS:
        frozen, finetuned = rows[(kind, "frozen")], rows[(kind, "finetune")]
        task = kind.split("_")[0]
        for row in (frozen, finetuned):
            assert row["batch"] == PAPER_BATCH[task], row
            assert row["arch"] == ("vit_small_patch14_dinov2" if kind.endswith("_vit") else "swin_tiny"), row
            assert row["train_peak_rss_mb"] > 0 and row["eval_seconds_per_sample"] > 0, row
            assert row["world_size"] == (2 if (kind, row["mode"]) == ("ade_mask2former", "finetune") else 1), row
        # paper.yaml's fine-tuning schedule: layer decay 0.9, K400's own lr
        assert (frozen["layer_decay"], finetuned["layer_decay"]) == (1.0, 0.9)
        if task == "k400":
            assert (frozen["lr"], finetuned["lr"]) == (3e-4, 1e-4) and frozen["num_frames"] == 4
        # activation checkpointing as paper.yaml sets it for fine-tuning (a frozen backbone keeps none)
        assert frozen["activation_checkpointing"] is False
        assert finetuned["activation_checkpointing"] is bool(paper["tasks"][task].get("activation_checkpointing"))
        # the fine-tuned model's evaluation is the frozen one's forward: measured once, said so
        assert finetuned["eval_from"] == "frozen"
        assert finetuned["eval_seconds_per_sample"] == frozen["eval_seconds_per_sample"]
        assert finetuned["backbone_gflop_per_sample"] == frozen["backbone_gflop_per_sample"]
    metrics = {kind: rows[(kind, "frozen")]["metrics"] for kind in TASK_KINDS}
    assert {"bbox", "segm"} <= set(metrics["coco_mask_rcnn"]) and {"bbox", "segm"} <= set(metrics["coco_htc"])
    assert "mIoU" in metrics["ade_mask2former"] and "mIoU" in metrics["ade_mask2former_vit"]
    assert "top1" in metrics["k400_temporal"]
    # HTC's three-stage head costs more than Mask R-CNN's on the same backbone and input
    assert (
        rows[("coco_htc", "frozen")]["head_gflop_per_sample"]
        > rows[("coco_mask_rcnn", "frozen")]["head_gflop_per_sample"]
    )
    # the backbone's share, split from the whole model's count, is the backbone alone at the cell's input
    for kind, size, frames in (("coco_mask_rcnn", 128, 1), ("ade_mask2former", 128, 1), ("k400_temporal", 64, 4)):
        expected_gflop = backbone_gflop("swin_tiny", size, frames)
        assert rows[(kind, "frozen")]["backbone_gflop_per_sample"] == pytest.approx(expected_gflop, rel=0.01), kind

    for name in PRETRAINING:
        row = rows[(name, "pretrain")]
        assert row["objective"] == name.removeprefix("pretrain_") and row["arch"] == "convstem_swin_tiny", row
        assert row["probe_seconds"] > 0 and row["probe"]["num_val"] > 0, row
    # SimCLR's two views: twice the backbone work of the supervised objective's one view
    assert rows[("pretrain_contrastive", "pretrain")]["backbone_gflop_per_sample"] == pytest.approx(
        2 * rows[("pretrain_supervised", "pretrain")]["backbone_gflop_per_sample"], rel=0.01
    )
    probe = rows[("probe", "probe")]
    assert probe["objective"] == "random" and probe["head_gflop_per_sample"] is None
    assert probe["probe_timed_in"] == "pretrain_supervised" and probe["eval_seconds_per_sample"] > 0
    assert probe["batch"] == probe["probe"]["num_train"] + probe["probe"]["num_val"]


@pytest.mark.openmmlab
@pytest.mark.slow
def test_gpu_smoke_runs_every_cell_kind_frozen_and_finetuned_the_pretraining_and_the_probe(tmp_path):
    record_path = tmp_path / "smoke.json"
    proc = run_smoke("--out", str(record_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads(record_path.read_text())
    assert record["cuda_path_rehearsed"] is True  # the CLI jobs took the GPU's branch on the CPU
    check_full_record(record)

    # the cost report reads it (priced as CPU time; its own tests hold the prices)
    cost = run_cmd(
        [
            str(VENV_BIN / "frozenbench"),
            "cost",
            "--config",
            str(REPO / "configs" / "paper.yaml"),
            "--record",
            str(record_path),
        ]
    )
    assert cost.returncode == 0, cost.stdout[-3000:] + cost.stderr[-3000:]
    assert "| coco |" in cost.stdout


def test_the_committed_cpu_record_has_every_row():
    """bench/records/cpu_2core/gpu_smoke_cpu.json, what `make cost` reads until a GPU record exists,
    is a full run of the current rows (rerun the smoke when a row is added: docs/gpu-smoke.md)."""
    check_full_record(json.loads((REPO / "bench" / "records" / "cpu_2core" / "gpu_smoke_cpu.json").read_text()))


@pytest.mark.openmmlab
@pytest.mark.slow
def test_gpu_smoke_records_a_failed_row_and_goes_on(tmp_path):
    """A row that fails (here: a backbone no registry knows) is recorded with its error, the next
    row still runs, the record is written and the exit status says a row failed."""
    record_path = tmp_path / "smoke.json"
    proc = run_smoke("--cells", "coco_mask_rcnn:frozen", "probe", "--arch", "no_such_arch", "--out", str(record_path))
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads(record_path.read_text())
    failed, probe = record["cells"]
    assert (failed["cell"], failed["mode"], failed["status"]) == ("coco_mask_rcnn", "frozen", "failed")
    assert "no_such_arch" in failed["error"] and "seconds_per_step" not in failed  # a failed row has no timings
    assert probe["status"] == "ok" and probe["eval_seconds_per_sample"] > 0
    # no pretraining ran to time the probe alone: the random run's wall, said to include its startup
    assert probe["probe_timed_in"] == "probe (wall time, imports included)"
    assert len(record["failures"]) == 1 and record["failures"][0].startswith("coco_mask_rcnn:frozen: ")


@pytest.mark.slow
def test_gpu_smoke_budget_kills_the_running_row_and_skips_the_rest(tmp_path):
    """--budget-s: the row running at the budget's end is killed (a pretraining far too long for it)
    and marked failed; the rows after it are skipped; the record holds both."""
    record_path = tmp_path / "smoke.json"
    started = time.monotonic()
    proc = run_smoke(
        "--cells", "pretrain_supervised", "probe", "--steps", "100000", "--budget-s", "25", "--out", str(record_path)
    )
    assert time.monotonic() - started < 25 + 60  # killed at the budget (SIGTERM, then at most 15 s to SIGKILL)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads(record_path.read_text())
    killed, skipped = record["cells"]
    assert killed["cell"] == "pretrain_supervised" and killed["status"] == "failed", killed
    assert "time budget: killed after" in killed["error"], killed
    assert skipped == {"cell": "probe", "mode": "probe", "status": "skipped", "error": "time budget"}
    assert record["skipped"] == ["probe:probe"] and record["budget_s"] == 25


# -- its parts ----------------------------------------------------------------------------------------


def test_rows_run_in_the_fixed_priority_order_whatever_order_cells_names_them():
    smoke = smoke_module()
    assert smoke.select_rows(["probe", "k400_temporal", "coco_htc:frozen"]) == [
        ("k400_temporal", "frozen"),
        ("coco_htc", "frozen"),
        ("k400_temporal", "finetune"),
        ("probe", "probe"),
    ]
    assert smoke.select_rows(None) == smoke.PRIORITY
    with pytest.raises(SystemExit, match="--cells coco_htc:pretrain: no such row"):
        smoke.select_rows(["coco_htc:pretrain"])


def test_a_timed_out_step_ends_its_whole_process_group(tmp_path):
    """torchrun's ranks and DataLoader workers are grandchildren: the timeout must end them too."""
    smoke = smoke_module()
    pid_file = tmp_path / "grandchild.pid"
    child = (
        "import subprocess, sys, time; "
        f"p = subprocess.Popen(['sleep', '300']); open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(300)"
    )
    with pytest.raises(smoke.RowFailed, match="time budget: killed after"):
        smoke.run_step(
            "sleeper", [sys.executable, "-c", child], dict(os.environ), time.monotonic() + 3, tmp_path / "log"
        )
    grandchild = int(pid_file.read_text())

    def gone() -> bool:  # no such process, or dead and waiting for its reaper
        try:
            return Path(f"/proc/{grandchild}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except FileNotFoundError:
            return True

    deadline = time.monotonic() + 10
    while not gone() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert gone(), "the grandchild outlived the timeout"


def test_a_failed_step_reports_its_last_lines(tmp_path):
    smoke = smoke_module()
    lines = "; ".join(f"print('line {i}')" for i in range(50))
    with pytest.raises(smoke.RowFailed) as err:
        smoke.run_step(
            "noisy",
            [sys.executable, "-c", f"{lines}; raise SystemExit(3)"],
            dict(os.environ),
            time.monotonic() + 60,
            tmp_path / "log",
        )
    message = str(err.value)
    assert message.startswith("noisy: exit status 3") and "line 49" in message and "line 5\n" not in message
