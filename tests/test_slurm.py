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


pytestmark = [pytest.mark.slurm, pytest.mark.slow,
              pytest.mark.skipif(not slurm_idle(), reason="no Slurm cluster (scripts/slurm/cluster.sh start)")]

SLURM = ["--profile", "profiles/slurm", "--configfile", "configs/ci.yaml"]


def test_all_tables_through_sbatch_and_a_failing_job_fails_the_run(workflow_copy):
    env = {"OMP_NUM_THREADS": "1"}
    snakemake = str(VENV_BIN / "snakemake")
    # the plugin must not hang: the subprocess timeout turns a hang into a failure
    done = run_cmd([snakemake, "all_tables", *SLURM], cwd=workflow_copy, env=env, check=True, timeout=2400)
    assert (workflow_copy / "tables" / "report.html").exists()
    # every job (datasets, pretraining, cells, tables, report) went through sbatch
    submitted = set(re.findall(r"submitted with SLURM jobid (\d+)", done.stdout + done.stderr))
    assert len(submitted) == 22
    # break a finished cell's checkpoint: its evaluation job fails on the cluster, snakemake exits non-zero
    metrics = workflow_copy / "results/k400/cswin_tiny_supervised/frozen/temporal_b2/metrics.json"
    (workflow_copy / "runs/k400/cswin_tiny_supervised/frozen/temporal_b2/state.pt").write_bytes(b"not a checkpoint")
    failed = run_cmd([snakemake, str(metrics.relative_to(workflow_copy)), "--forcerun", "evaluate_head", *SLURM],
                     cwd=workflow_copy, env=env, timeout=1200)
    assert failed.returncode != 0
    assert "evaluate_head" in failed.stdout + failed.stderr


def test_requeued_training_job_resumes_from_its_checkpoint(tmp_path):
    spec, checkpoint = video_cell(tmp_path, steps=400, checkpoint_every=10)
    run_dir = tmp_path / "run"
    script = tmp_path / "train.sh"
    script.write_text("#!/bin/bash\nset -euo pipefail\nexport OMP_NUM_THREADS=1\n"
                      f"{VENV_BIN / 'frozenbench'} train --spec '{spec}' --checkpoint {checkpoint} --mode frozen"
                      f" --run-dir {run_dir} --threads 1\n")
    out = tmp_path / "slurm-%j.out"
    job = subprocess.run(["sbatch", "--parsable", "--requeue", "-c", "1", "-o", str(out), "--open-mode=append",
                          str(script)], capture_output=True, text=True, check=True).stdout.strip()
    log = run_dir / "log.jsonl"

    def logged_steps() -> int:
        return sum(1 for _ in log.open()) if log.exists() else 0

    deadline = time.time() + 600
    while logged_steps() < 25 and time.time() < deadline:  # past two checkpoints
        time.sleep(1)
    assert logged_steps() >= 25, "the job did not start training"
    subprocess.run(["scontrol", "requeue", job], check=True)  # preemption: kill and put back in the queue
    deadline = time.time() + 1200
    while not (run_dir / "done.json").exists() and time.time() < deadline:
        time.sleep(2)
    output = Path(str(out).replace("%j", job)).read_text()
    assert (run_dir / "done.json").exists(), output[-2000:]
    assert "resuming from step" in output
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps == list(range(1, 401))  # the log continues where the checkpoint left it, no gaps or repeats


def test_srun_launched_two_rank_job_is_requeued_and_resumes(tmp_path):
    """`frozenbench train --nodes 2` as a multi-node job runs it: srun starts one torchrun agent per
    task (two on this one-node cluster), they meet through c10d rendezvous, DeepSpeed ZeRO-2 trains
    across both ranks (gloo on CPU); a requeue kills every rank, and the job's second run resumes from
    the sharded checkpoint."""
    spec, checkpoint = video_cell(tmp_path, steps=60, checkpoint_every=5)
    run_dir = tmp_path / "run"
    script = tmp_path / "train.sh"
    script.write_text("#!/bin/bash\nset -euo pipefail\nexport OMP_NUM_THREADS=1 DS_ACCELERATOR=cpu\n"
                      f"{VENV_BIN / 'frozenbench'} train --spec '{spec}' --checkpoint {checkpoint} --mode frozen"
                      f" --run-dir {run_dir} --threads 1 --device cpu --nodes 2 --nproc 1\n")
    out = tmp_path / "slurm-%j.out"
    job = subprocess.run(["sbatch", "--parsable", "--requeue", "--ntasks=2", "--nodes=1", "-c", "1", "-o", str(out),
                          "--open-mode=append", str(script)], capture_output=True, text=True, check=True).stdout.strip()
    log = run_dir / "log.jsonl"

    def logged_steps() -> int:
        return sum(1 for _ in log.open()) if log.exists() else 0

    deadline = time.time() + 900
    while logged_steps() < 12 and time.time() < deadline:  # past two checkpoints
        time.sleep(1)
    output = Path(str(out).replace("%j", job))
    assert logged_steps() >= 12, output.read_text()[-3000:] if output.exists() else "no job output"
    subprocess.run(["scontrol", "requeue", job], check=True)
    deadline = time.time() + 1500
    while not (run_dir / "done.json").exists() and time.time() < deadline:
        time.sleep(2)
    text = output.read_text()
    assert (run_dir / "done.json").exists(), text[-3000:]
    assert "resuming from step" in text
    done = json.loads((run_dir / "done.json").read_text())
    assert done["world_size"] == 2 and done["steps"] == 60
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps == list(range(1, 61))
