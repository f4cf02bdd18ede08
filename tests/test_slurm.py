"""The pipeline on a real single-node Slurm (scripts/slurm/cluster.sh start): every job goes
through sbatch; a failing job fails the run instead of hanging; a training job requeued
mid-run (what preemption does) resumes from its checkpoint.

Skipped unless a Slurm cluster answers; `.ci/run` starts one.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import VENV_BIN, run_cmd, video_cell


def slurm_idle() -> bool:
    if shutil.which("sinfo") is None:
        return False
    proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    return proc.returncode == 0 and "idle" in proc.stdout.split()


pytestmark = [
    pytest.mark.slurm,
    pytest.mark.slow,
    pytest.mark.skipif(not slurm_idle(), reason="no Slurm cluster (scripts/slurm/cluster.sh start)"),
]

# The profile's polling suits a shared cluster (the plugin waits 40 s before its first squeue and
# 10 s longer after every round in which no job finished, up to 180 s): right for hour-long
# training jobs, but on this one-node test cluster, whose jobs last seconds, each finished job
# waited for the next round. Polling every few seconds took this test from 927 s to 680 s (2 cores).
TEST_CLUSTER_POLLING = ["--slurm-init-seconds-before-status-checks", "5", "--seconds-between-status-checks", "5"]
SLURM = ["--profile", "profiles/slurm", "--configfile", "configs/ci.yaml", *TEST_CLUSTER_POLLING]


@pytest.mark.timeout(3600)  # the whole mini-study through sbatch on 2 CPUs
def test_all_tables_through_sbatch_and_a_failing_job_fails_the_run(workflow_copy):
    env = {"OMP_NUM_THREADS": "1"}
    snakemake = str(VENV_BIN / "snakemake")
    # the plugin must not hang: the subprocess timeout turns a hang into a failure
    done = run_cmd([snakemake, "all_tables", *SLURM], cwd=workflow_copy, env=env, check=True, timeout=2400)
    assert (workflow_copy / "tables" / "report.html").exists()
    # every job (datasets, pretraining, checkpoints, cells, tables, report) went through sbatch: all
    # the DAG's steps but the local target rule all_tables
    said = done.stdout + done.stderr
    submitted = set(re.findall(r"submitted with SLURM jobid (\d+)", said))
    (steps,) = {int(n) for n in re.findall(r"(\d+) of \1 steps \(100%\) done", said)}
    assert len(submitted) == steps - 1 and steps == 32  # configs/ci.yaml: 31 jobs and all_tables
    # break a finished cell's checkpoint: its evaluation job fails on the cluster, snakemake exits non-zero
    metrics = workflow_copy / "results/k400/convstem_swin_tiny_supervised/frozen/temporal_b2/metrics.json"
    (workflow_copy / "runs/k400/convstem_swin_tiny_supervised/frozen/temporal_b2/state.pt").write_bytes(
        b"not a checkpoint"
    )
    failed = run_cmd(
        [snakemake, str(metrics.relative_to(workflow_copy)), "--forcerun", "evaluate_head", *SLURM],
        cwd=workflow_copy,
        env=env,
        timeout=1200,
    )
    assert failed.returncode != 0
    assert "evaluate_head" in failed.stdout + failed.stderr


def requeue_mid_training(
    tmp_path: Path,
    command: str,
    sbatch_options: list[str],
    run_dir: Path,
    steps_before: int,
    start_timeout: float,
    finish_timeout: float,
) -> str:
    """Submit ``command`` as a requeueable batch job, requeue it (what preemption does) once
    ``steps_before`` steps are logged, wait for ``done.json``; returns the job's whole output."""
    script = tmp_path / "train.sh"
    script.write_text(f"#!/bin/bash\nset -euo pipefail\n{command}\n")
    out = tmp_path / "slurm-%j.out"
    job = subprocess.run(
        ["sbatch", "--parsable", "--requeue", *sbatch_options, "-o", str(out), "--open-mode=append", str(script)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    output = Path(str(out).replace("%j", job))
    log = run_dir / "log.jsonl"

    def logged_steps() -> int:
        return sum(1 for _ in log.open()) if log.exists() else 0

    deadline = time.time() + start_timeout
    while logged_steps() < steps_before and time.time() < deadline:
        time.sleep(1)
    assert logged_steps() >= steps_before, output.read_text()[-3000:] if output.exists() else "no job output"
    subprocess.run(["scontrol", "requeue", job], check=True)  # kill every step and put the job back in the queue
    deadline = time.time() + finish_timeout
    while not (run_dir / "done.json").exists() and time.time() < deadline:
        time.sleep(2)
    text = output.read_text()
    assert (run_dir / "done.json").exists(), text[-3000:]
    return text


def test_requeued_training_job_resumes_from_its_checkpoint(tmp_path):
    spec, checkpoint = video_cell(tmp_path, steps=400, checkpoint_every=10)
    run_dir = tmp_path / "run"
    output = requeue_mid_training(
        tmp_path,
        f"export OMP_NUM_THREADS=1\n{VENV_BIN / 'frozenbench'} train --spec '{spec}' --checkpoint "
        f"{checkpoint} --mode frozen --run-dir {run_dir} --threads 1",
        ["-c", "1"],
        run_dir,
        steps_before=25,
        start_timeout=600,
        finish_timeout=1200,
    )  # past two checkpoints
    assert "resuming from step" in output
    steps = [json.loads(line)["step"] for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 401))  # the log continues where the checkpoint left it, no gaps or repeats


def test_srun_launched_two_rank_job_is_requeued_and_resumes(tmp_path):
    """`frozenbench train --nodes 2` as a multi-node job runs it: srun starts one torchrun agent per
    task (two on this one-node cluster), they meet through c10d rendezvous, DeepSpeed ZeRO-2 trains
    across both ranks (gloo on CPU); a requeue kills every rank, and the job's second run resumes from
    the sharded checkpoint."""
    spec, checkpoint = video_cell(tmp_path, steps=60, checkpoint_every=5)
    run_dir = tmp_path / "run"
    output = requeue_mid_training(
        tmp_path,
        f"export OMP_NUM_THREADS=1 DS_ACCELERATOR=cpu\n{VENV_BIN / 'frozenbench'} train --spec '{spec}'"
        f" --checkpoint {checkpoint} --mode frozen --run-dir {run_dir} --threads 1 --device cpu --nodes 2 --nproc 1",
        ["--ntasks=2", "--nodes=1", "-c", "1"],
        run_dir,
        steps_before=12,
        start_timeout=900,
        finish_timeout=1500,
    )
    assert "resuming from step" in output
    done = json.loads((run_dir / "done.json").read_text())
    assert done["world_size"] == 2 and done["steps"] == 60
    steps = [json.loads(line)["step"] for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 61))
