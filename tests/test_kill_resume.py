"""A training run killed with SIGKILL mid-way and started again resumes from its newest checkpoint
and ends with the same weights and the same validation metrics as an uninterrupted run (CPU), also
when its batches come from DataLoader workers and the uninterrupted run built them itself.
Without the feature cache: with it, a resumed run's misses reach the backbone in other groups and
its weights match only up to float rounding (tests/test_feature_cache.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
import torch

from .conftest import VENV_BIN, run_cmd, video_cell

pytestmark = [pytest.mark.openmmlab, pytest.mark.slow]


def test_sigkilled_training_resumes_to_the_same_metrics(tmp_path):
    from frozenbench.checkpoint import safe_load

    spec, checkpoint = video_cell(tmp_path, steps=40, checkpoint_every=5)
    env = {"OMP_NUM_THREADS": "1"}

    def cell(name, workers=0):
        return ["--spec", spec, "--checkpoint", str(checkpoint), "--mode", "frozen", "--run-dir",
                str(tmp_path / name), "--threads", "1", "--workers", str(workers)]

    def evaluate(name):
        out = tmp_path / f"{name}.json"
        run_cmd([str(VENV_BIN / "frozenbench"), "evaluate", *cell(name), "--out", str(out)], env=env, check=True)
        return json.loads(out.read_text())["metrics"]

    run_cmd([str(VENV_BIN / "frozenbench"), "train", *cell("full")], env=env, check=True, timeout=600)
    log = tmp_path / "killed" / "log.jsonl"
    proc = subprocess.Popen([str(VENV_BIN / "frozenbench"), "train", *cell("killed", workers=2)],
                            env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 13):
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # between checkpoints 10 and 15: the trainer and its workers
    proc.wait()
    assert not (tmp_path / "killed" / "done.json").exists()
    resumed = run_cmd([str(VENV_BIN / "frozenbench"), "train", *cell("killed", workers=2)], env=env, check=True,
                      timeout=600)
    assert "resuming from step" in resumed.stdout + resumed.stderr
    a = safe_load(tmp_path / "full" / "state.pt")["model"]
    b = safe_load(tmp_path / "killed" / "state.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert evaluate("full") == evaluate("killed")
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps == list(range(1, 41))
