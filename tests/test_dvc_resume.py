"""`dvc repro` after a killed training resumes it: the repository's dvc.yaml keeps the stage
outputs that hold resumable state (`persist`), which DVC would otherwise delete before rerunning."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time

import pytest
import yaml

from .conftest import REPO, VENV_BIN, run_cmd, video_cell

pytestmark = [pytest.mark.openmmlab, pytest.mark.slow]


def stage_outs(stage: str) -> dict[str, dict]:
    outs = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]["outs"]
    return {name: opts for out in outs for name, opts in (out.items() if isinstance(out, dict) else [(out, {})])}


def test_every_stage_out_that_holds_training_state_persists():
    for stage, name in [
        ("cells", "runs/ade"),
        ("cells", "runs/coco"),
        ("cells", "runs/k400"),
        ("checkpoints", "runs/pretrain"),
    ]:
        assert stage_outs(stage)[name].get("persist") is True, (stage, name)


def test_dvc_repro_after_a_kill_resumes_the_training(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    spec, checkpoint = video_cell(tmp_path, steps=30, checkpoint_every=5)
    run_dir = project / "runs" / "k400" / "cell"
    (project / "train.sh").write_text(
        f"exec {shlex.quote(str(VENV_BIN / 'frozenbench'))} train --spec {shlex.quote(spec)} --checkpoint "
        f"{shlex.quote(str(checkpoint))} --mode frozen --run-dir runs/k400/cell --threads 1\n"
    )
    # the stage declares runs/k400 exactly as the repository's cells stage does
    stage = {"cmd": "bash train.sh", "deps": ["train.sh"], "outs": [{"runs/k400": stage_outs("cells")["runs/k400"]}]}
    (project / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"cells": stage}}))
    env = {"OMP_NUM_THREADS": "1"}
    run_cmd([str(VENV_BIN / "dvc"), "init", "--no-scm", "-q"], cwd=project, check=True)
    proc = subprocess.Popen(
        [str(VENV_BIN / "dvc"), "repro"],
        cwd=project,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    log, deadline = run_dir / "log.jsonl", time.time() + 300
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 12):
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # dvc, the training and everything under them
    proc.wait()
    assert (run_dir / "state.pt").exists() and not (run_dir / "done.json").exists()
    rerun = run_cmd([str(VENV_BIN / "dvc"), "repro"], cwd=project, env=env, check=True, timeout=600)
    assert "resuming from step 10" in rerun.stdout + rerun.stderr, rerun.stdout + rerun.stderr
    assert (run_dir / "done.json").exists()
