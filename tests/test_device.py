"""The GPU's branch of every job runs in CI: device-dependent code lives in engine/device.py alone,
and the CUDA path's logic, rehearsed on CPU tensors, trains, evaluates and pretrains with the
CPU path's numbers."""

from __future__ import annotations

import ast
import json
import warnings
from pathlib import Path

import pytest
import torch

from frozenbench.engine import device as devices

from .conftest import video_cell

SRC = Path(__file__).resolve().parents[1] / "src" / "frozenbench"
DEVICE_MODULE = SRC / "engine" / "device.py"
PIN_WARNING = "'pin_memory' argument is set as true but no accelerator is found"


def device_branches(source: str) -> list[tuple[int, str]]:
    """(line, what) of every place in ``source`` that asks which device it runs on: a comparison of
    a ``.type`` with "cuda" / "cpu", ``.is_cuda``, anything under ``torch.cuda`` or
    ``torch.backends.cuda`` / ``cudnn``, and any ``is_available()`` call."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            typed = any(isinstance(o, ast.Attribute) and o.attr == "type" for o in operands)
            named = any(isinstance(o, ast.Constant) and o.value in ("cuda", "cpu") for o in operands)
            if typed and named:
                found.append((node.lineno, "device.type compared"))
        elif isinstance(node, ast.Attribute):
            dotted = ast.unparse(node)
            if node.attr == "is_cuda":
                found.append((node.lineno, dotted))
            elif dotted in ("torch.cuda", "torch.backends.cuda", "torch.backends.cudnn"):
                found.append((node.lineno, dotted))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "is_available":
            found.append((node.lineno, ast.unparse(node.func)))
    return found


def test_device_branches_live_in_engine_device_only():
    offenders = {
        str(path.relative_to(SRC)): device_branches(path.read_text())
        for path in sorted(SRC.rglob("*.py"))
        if path != DEVICE_MODULE
    }
    offenders = {path: found for path, found in offenders.items() if found}
    assert offenders == {}, f"device-dependent code outside engine/device.py: {offenders}"
    # the scan finds what it looks for (it would catch the pretraining crash's branch)
    assert device_branches('if device.type == "cuda":\n    pass') == [(1, "device.type compared")]
    found = device_branches("x.is_cuda\ntorch.cuda.synchronize()\ntorch.cuda.is_available()")
    assert sorted(what for _, what in found) == ["torch.cuda", "torch.cuda", "torch.cuda.is_available", "x.is_cuda"]
    assert device_branches(DEVICE_MODULE.read_text())  # and the one module that may, does


@pytest.fixture
def rehearsal(monkeypatch):
    """The CUDA path on the CPU; TF32 flags (process-wide) put back afterwards."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    monkeypatch.setenv(devices.REHEARSAL_ENV, "1")
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_the_cuda_path_is_taken_only_on_a_gpu_or_when_rehearsed(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv(devices.REHEARSAL_ENV, raising=False)
    assert not devices.on_cuda_path(cpu) and not devices.pin_memory(cpu) and devices.gpu_memory(cpu) is None
    assert devices.on_cuda_path(torch.device("cuda", 0)) and not devices.on_cuda_path(torch.device("meta"))
    monkeypatch.setenv(devices.REHEARSAL_ENV, "1")
    assert devices.on_cuda_path(cpu) and devices.pin_memory(cpu) and devices.non_blocking(cpu)
    assert devices.deepspeed_accelerator(cpu) == "cpu"  # DeepSpeed's CUDA accelerator needs a real GPU
    record = devices.device_record(cpu)
    assert record["gpu_peak_mb"] is None and record["gpu_memory_mb"] is None  # nothing made up
    assert record["device_name"].endswith("(CUDA path rehearsed on the CPU)")


def _train_and_evaluate(tmp_path: Path, name: str, spec: dict, checkpoint: Path) -> tuple[list[float], dict, dict]:
    from frozenbench.cells.run import CellRun, evaluate_cell, train_cell

    run_dir = tmp_path / name
    run = CellRun(spec, str(checkpoint), "frozen", run_dir, seed=3)
    train_cell(run, device="cpu")
    record = evaluate_cell(run, tmp_path / f"{name}.json", {}, device="cpu")
    log = [json.loads(line)["loss"] for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return log, json.loads((run_dir / "done.json").read_text()), record


@pytest.mark.openmmlab
def test_a_cell_on_the_rehearsed_cuda_path_trains_and_evaluates_to_the_cpu_paths_numbers(tmp_path, monkeypatch):
    """An OpenMMLab cell (bf16 autocast, TF32 asked for) through train and evaluate: on the CUDA
    path its loaders are asked to pin, its preprocessor copies without blocking, TF32 is set, the
    forward runs under bf16 autocast and the memory record takes the GPU branch; and none of it
    changes a number."""
    from frozenbench.openmmlab.training import OpenMMLabLosses

    spec_json, checkpoint = video_cell(tmp_path, steps=4, checkpoint_every=4)
    spec = {**json.loads(spec_json), "tf32": True, "autocast_bf16": True}
    monkeypatch.delenv(devices.REHEARSAL_ENV, raising=False)
    cpu_log, cpu_done, cpu_record = _train_and_evaluate(tmp_path, "cpu_path", spec, checkpoint)
    assert "rehearsed" not in cpu_done["device_name"]

    copies: list[bool] = []
    autocast_dtypes: list[torch.dtype | None] = []
    real_set_copies, real_forward = OpenMMLabLosses.set_non_blocking_copies, OpenMMLabLosses.forward

    def spy_set_copies(self, non_blocking):
        copies.append(non_blocking)
        real_set_copies(self, non_blocking)

    def spy_forward(self, batch):  # the stepper's call of the model, inside its autocast
        assert self.model.data_preprocessor._non_blocking is True
        autocast_dtypes.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return real_forward(self, batch)

    monkeypatch.setattr(OpenMMLabLosses, "set_non_blocking_copies", spy_set_copies)
    monkeypatch.setattr(OpenMMLabLosses, "forward", spy_forward)
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    monkeypatch.setenv(devices.REHEARSAL_ENV, "1")
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gpu_log, gpu_done, gpu_record = _train_and_evaluate(tmp_path, "cuda_path", spec, checkpoint)
        assert devices.tf32_enabled()  # configure_precision took the GPU branch
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved

    assert copies and all(copies), copies  # train and evaluate both set non-blocking copies
    assert autocast_dtypes == [torch.bfloat16] * 4
    pin_requests = [w for w in caught if PIN_WARNING in str(w.message)]
    assert len(pin_requests) >= 2, [str(w.message) for w in caught]  # the training and the evaluation loader
    assert gpu_done["device_name"].endswith("(CUDA path rehearsed on the CPU)") and gpu_done["gpu_peak_mb"] is None
    assert gpu_record["device_name"] == gpu_done["device_name"]
    # the GPU path's logic changes where and how data moves, never the numbers
    assert gpu_log == cpu_log
    assert gpu_record["metrics"] == cpu_record["metrics"]


@pytest.mark.parametrize("objective", ["supervised", "contrastive", "mim"])
def test_pretraining_on_the_rehearsed_cuda_path_trains_and_probes_to_the_cpu_paths_numbers(
    tmp_path, monkeypatch, objective
):
    """The objectives have no OpenMMLab preprocessor: the GPU branch once set one on them and
    `frozenbench pretrain` stopped at its first step on a GPU. Rehearsed, it trains and probes."""
    from frozenbench.data.synth import synthesize
    from frozenbench.pretrain.train import PretrainOptions, pretrain

    from .test_synth import tiny_spec

    root = tmp_path / "shapes"
    synthesize(tiny_spec("shapes-pretrain", image_size=32, num_classes=4, train_per_class=8, val_per_class=2), root)
    opts = PretrainOptions.from_config(
        {"image_size": 32, "batch_size": 8, "steps": 4, "warmup_steps": 1, "checkpoint_every": 4, "log_every": 1}
    )

    def run(name: str) -> tuple[list[float], dict]:
        result = pretrain("convstem_swin_tiny", objective, root, tmp_path / f"{name}.pth", tmp_path / name, opts,
                          seed=1, log=lambda m: None)  # fmt: skip
        losses = [json.loads(line)["loss"] for line in (tmp_path / name / "log.jsonl").read_text().splitlines()]
        return losses, result

    monkeypatch.delenv(devices.REHEARSAL_ENV, raising=False)
    cpu_losses, cpu_result = run("cpu_path")
    monkeypatch.setenv(devices.REHEARSAL_ENV, "1")
    gpu_losses, gpu_result = run("cuda_path")
    assert len(gpu_losses) == 4 and gpu_losses == cpu_losses
    assert {k: gpu_result[k] for k in ("knn_top1", "linear_top1") if k in gpu_result} == {
        k: cpu_result[k] for k in ("knn_top1", "linear_top1") if k in cpu_result
    }


def test_place_model_asks_the_model_how_its_batches_reach_the_device(monkeypatch):
    """place_model asks the model itself: one that copies its batches (an OpenMMLab preprocessor in
    its training wrapper) is told whether copies are non-blocking (the GPU path); one without the
    method (an objective, which moves its own views) is only moved."""
    from frozenbench.pretrain.objectives import Supervised

    cpu = torch.device("cpu")

    class CopiesItsBatches(torch.nn.Linear):
        def __init__(self):
            super().__init__(2, 2)
            self.told: list[bool] = []

        def set_non_blocking_copies(self, non_blocking: bool) -> None:
            self.told.append(non_blocking)

    model = CopiesItsBatches()
    monkeypatch.delenv(devices.REHEARSAL_ENV, raising=False)
    devices.place_model(model, cpu)
    monkeypatch.setenv(devices.REHEARSAL_ENV, "1")
    assert devices.place_model(model, cpu) is model
    assert model.told == [False, True]
    backbone = torch.nn.Module()
    backbone.num_features = 4
    objective = Supervised(backbone, num_classes=2)
    assert devices.place_model(objective, cpu) is objective and not hasattr(objective, "data_preprocessor")
    batch = {"x": torch.ones(2), "nested": [torch.zeros(1)], "seed": 3}
    moved = devices.to_device(batch, cpu)
    assert moved["seed"] == 3 and torch.equal(moved["nested"][0], torch.zeros(1))
