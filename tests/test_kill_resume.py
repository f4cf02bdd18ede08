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
        return [
            "--spec",
            spec,
            "--checkpoint",
            str(checkpoint),
            "--mode",
            "frozen",
            "--run-dir",
            str(tmp_path / name),
            "--threads",
            "1",
            "--workers",
            str(workers),
        ]

    def evaluate(name):
        out = tmp_path / f"{name}.json"
        run_cmd([str(VENV_BIN / "frozenbench"), "evaluate", *cell(name), "--out", str(out)], env=env, check=True)
        return json.loads(out.read_text())["metrics"]

    run_cmd([str(VENV_BIN / "frozenbench"), "train", *cell("full")], env=env, check=True, timeout=600)
    log = tmp_path / "killed" / "log.jsonl"
    proc = subprocess.Popen(
        [str(VENV_BIN / "frozenbench"), "train", *cell("killed", workers=2)],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 13):
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # between checkpoints 10 and 15: the trainer and its workers
    proc.wait()
    assert not (tmp_path / "killed" / "done.json").exists()
    resumed = run_cmd(
        [str(VENV_BIN / "frozenbench"), "train", *cell("killed", workers=2)], env=env, check=True, timeout=600
    )
    assert "resuming from step" in resumed.stdout + resumed.stderr
    a = safe_load(tmp_path / "full" / "state.pt")["model"]
    b = safe_load(tmp_path / "killed" / "state.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert evaluate("full") == evaluate("killed")
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps == list(range(1, 41))


def test_sigterm_saves_the_state_between_steps_and_a_rerun_ends_with_the_same_weights(tmp_path):
    """Slurm's time limit and preemption send SIGTERM to the whole job (trainer and DataLoader
    workers) before SIGKILL. No checkpoint falls due before the end (checkpoint_every > steps):
    only the SIGTERM handler can save the progress. The unfinished run is refused by evaluation."""
    from frozenbench.checkpoint import safe_load

    spec, checkpoint = video_cell(tmp_path, steps=30, checkpoint_every=1000)
    env = {"OMP_NUM_THREADS": "1"}

    def cell(name, workers=2):
        return [
            "--spec",
            spec,
            "--checkpoint",
            str(checkpoint),
            "--mode",
            "frozen",
            "--run-dir",
            str(tmp_path / name),
            "--threads",
            "1",
            "--workers",
            str(workers),
        ]

    run_cmd([str(VENV_BIN / "frozenbench"), "train", *cell("full", workers=0)], env=env, check=True, timeout=600)
    run_dir = tmp_path / "termed"
    log = run_dir / "log.jsonl"
    proc = subprocess.Popen(
        [str(VENV_BIN / "frozenbench"), "train", *cell("termed")],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deadline = time.time() + 300
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 8):
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, output
    assert "Traceback" not in output and "SIGTERM: state saved at step" in output, output
    stopped = safe_load(run_dir / "state.pt")["step"]
    assert 8 <= stopped < 30 and not (run_dir / "done.json").exists()
    assert [p.name for p in run_dir.iterdir() if p.name.startswith(".")] == []  # no temporaries left
    refused = run_cmd(
        [str(VENV_BIN / "frozenbench"), "evaluate", *cell("termed"), "--out", str(tmp_path / "m.json")], env=env
    )
    assert refused.returncode == 1 and f"training stopped at step {stopped} of 30" in refused.stderr
    resumed = run_cmd([str(VENV_BIN / "frozenbench"), "train", *cell("termed")], env=env, check=True, timeout=600)
    assert f"resuming from step {stopped}" in resumed.stdout + resumed.stderr
    a = safe_load(tmp_path / "full" / "state.pt")["model"]
    b = safe_load(run_dir / "state.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == list(range(1, 31))
