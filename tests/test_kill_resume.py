"""A training run killed with SIGKILL mid-way and started again resumes from its newest checkpoint
and ends with the same weights and the same validation metrics as an uninterrupted run (CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
import torch

from .conftest import VENV_BIN, run_cmd

pytestmark = [pytest.mark.openmmlab, pytest.mark.slow]


def test_sigkilled_training_resumes_to_the_same_metrics(tmp_path):
    from frozenbench.checkpoint import safe_load, save_backbone
    from frozenbench.data.synth import synthesize
    from frozenbench.models import build_model

    from .test_synth import tiny_spec

    root = tmp_path / "shapes-k400"
    synthesize(tiny_spec("shapes-k400", num_frames=8), root)
    torch.manual_seed(0)
    checkpoint = tmp_path / "b.pth"
    save_backbone(checkpoint, "cswin_tiny", build_model("cswin_tiny", 64).state_dict(), {"pretrain_task": "random"})
    spec = json.dumps({"type": "video", "data": str(root), "img_size": 64, "data_options": {"num_frames": 4},
                       "feature_cache": True, "head": {"num_frames": 4, "num_blocks": 1, "width": 32},
                       "train": {"steps": 40, "batch_size": 4, "warmup_steps": 2, "checkpoint_every": 5,
                                 "log_every": 1}})
    env = {"OMP_NUM_THREADS": "1"}

    def cell(name):
        return ["--spec", spec, "--checkpoint", str(checkpoint), "--mode", "frozen", "--run-dir",
                str(tmp_path / name), "--threads", "1"]

    def evaluate(name):
        out = tmp_path / f"{name}.json"
        run_cmd([str(VENV_BIN / "frozenbench"), "evaluate", *cell(name), "--out", str(out)], env=env, check=True)
        return json.loads(out.read_text())["metrics"]

    run_cmd([str(VENV_BIN / "frozenbench"), "train", *cell("full")], env=env, check=True, timeout=600)
    log = tmp_path / "killed" / "log.jsonl"
    proc = subprocess.Popen([str(VENV_BIN / "frozenbench"), "train", *cell("killed")],
                            env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 13):
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)  # between checkpoints 10 and 15
    proc.wait()
    assert not (tmp_path / "killed" / "done.json").exists()
    resumed = run_cmd([str(VENV_BIN / "frozenbench"), "train", *cell("killed")], env=env, check=True, timeout=600)
    assert "resuming from step" in resumed.stdout + resumed.stderr
    a = safe_load(tmp_path / "full" / "state.pt")["model"]
    b = safe_load(tmp_path / "killed" / "state.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert evaluate("full") == evaluate("killed")
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps == list(range(1, 41))
