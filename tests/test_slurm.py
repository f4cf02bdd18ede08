"""The pipeline on a real Slurm (scripts/slurm/cluster.sh start [--nodes 2]): every job goes
through sbatch; a failing job fails the run instead of hanging; a training job requeued
mid-run (what preemption does) resumes from its checkpoint; on two nodes, a training cell spans
both through the profile's plugins.

Skipped unless a Slurm cluster answers; `.ci/run` starts the two-node one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import VENV_BIN, run_cmd, video_cell
from .test_study_status import break_training, job_counts


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


@pytest.mark.timeout(3600)  # a mini-study through sbatch on 2 CPUs, twice
def test_all_tables_through_sbatch_survives_a_failed_cell_and_a_rerun_retries_only_it(workflow_copy):
    """A mini-study through `--profile profiles/slurm` with one cell that fails (a state.pt that is
    not a checkpoint; the profile retries its job once, and it fails again): every other cell and
    table still runs (keep-going), the run exits non-zero naming the failed cell with its job and
    Slurm logs, and the partial tables mark it failed. Fixed, the same command runs that cell's
    jobs and the tables, nothing else, and ends with the whole study."""
    import yaml

    # configs/ci.yaml with one cell per task, which still has a job of every rule (datasets,
    # pretraining and its probes, a published-layout checkpoint, train / evaluate / test-dev
    # submission, tables, report); the local DAG tests run all of its cells
    config = yaml.safe_load((workflow_copy / "configs" / "ci.yaml").read_text())
    config["study"]["cells"] = [
        {"task": "ade", "backbones": ["convstem_swin_tiny_supervised"], "modes": ["frozen"], "heads": ["m2f_b4"]},
        {"task": "coco", "backbones": ["convstem_swin_tiny_supervised"], "modes": ["frozen"], "heads": ["mrcnn_fpn"]},
        {"task": "k400", "backbones": ["dinov2_vits14_random"], "modes": ["frozen"], "heads": ["temporal_b2"]},
    ]
    (workflow_copy / "configs" / "slurm_study.yaml").write_text(yaml.safe_dump(config))
    slurm = ["--profile", "profiles/slurm", "--configfile", "configs/slurm_study.yaml", *TEST_CLUSTER_POLLING]
    env = {"OMP_NUM_THREADS": "1"}
    snakemake = str(VENV_BIN / "snakemake")
    fails_cell = "k400/dinov2_vits14_random/frozen/temporal_b2"
    fails = f"{fails_cell}/seed0"  # the cell's one run (the config's seed)
    state = break_training(workflow_copy, fails)
    # the plugin must not hang: the subprocess timeout turns a hang into a failure
    failed = run_cmd([snakemake, "all_tables", *slurm], cwd=workflow_copy, env=env, timeout=2400)
    said = failed.stdout + failed.stderr
    assert failed.returncode != 0, said[-3000:]
    assert "Trying to restart job" in said  # the profile's one retry
    summary = json.loads((workflow_copy / "tables" / "summary.json").read_text())
    statuses = {cell: entry["status"] for cell, entry in summary.items()}
    assert statuses.pop(fails_cell) == "failed" and set(statuses.values()) == {"finished"} and len(statuses) == 2
    train_log = f"logs/train/{fails}.log"
    assert summary[fails_cell]["logs"][0] == train_log
    listed = re.search(rf"^  failed   {re.escape(fails)}  \(train_head\)  log: (.+)$", said, re.M)
    assert listed, said[-3000:]
    slurm_logs = [log for log in listed[1].split(", ") if "slurm_logs" in log]
    assert slurm_logs and all((workflow_copy / log).is_file() for log in slurm_logs), listed[1]
    first_jobs = set(re.findall(r"submitted with SLURM jobid (\d+)", said))

    state.unlink()
    done = run_cmd([snakemake, "all_tables", *slurm], cwd=workflow_copy, env=env, check=True, timeout=1200)
    said = done.stdout + done.stderr
    rerun = job_counts(said)
    assert rerun.pop("train_head") == 1 and rerun.pop("evaluate_head") == 1, said[:3000]
    assert set(rerun) <= {"tables", "study_report", "all_tables"}, rerun  # no other cell, dataset or checkpoint
    assert (workflow_copy / "tables" / "report.html").exists()
    summary = json.loads((workflow_copy / "tables" / "summary.json").read_text())
    assert summary[fails_cell].get("status", "finished") == "finished"
    # every job (datasets, pretraining, checkpoints, cells, tables, report) went through sbatch: all the
    # DAG's steps but the local target rule all_tables, over the two runs
    submitted = first_jobs | set(re.findall(r"submitted with SLURM jobid (\d+)", said))
    (steps,) = {int(n) for n in re.findall(r"(\d+) of \1 steps \(100%\) done", said)}
    assert len(submitted) >= 18 and len(set(re.findall(r"submitted with SLURM jobid (\d+)", said))) == steps - 1


def requeue(job: str) -> None:
    """Kill every step of ``job`` and put it back in the queue, as preemption does. Slurm holds a
    requeued batch job for about two minutes (its begin time); the test lets it start at once."""
    subprocess.run(["scontrol", "requeue", job], check=True)
    # the begin time is set when the job is back in the queue (after its steps ended): wait for that
    deadline = time.time() + 120
    while time.time() < deadline:
        state = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T %r"], capture_output=True, text=True).stdout
        if state.split() == ["PENDING", "BeginTime"]:
            subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
            return
        time.sleep(1)


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
    requeue(job)
    deadline = time.time() + finish_timeout
    while not (run_dir / "done.json").exists() and time.time() < deadline:
        time.sleep(2)
    text = output.read_text()
    assert (run_dir / "done.json").exists(), text[-3000:]
    return text


def test_requeued_training_job_resumes_from_its_checkpoint(tmp_path):
    spec, checkpoint = video_cell(tmp_path, steps=150, checkpoint_every=10)
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
    assert steps == list(range(1, 151))  # the log continues where the checkpoint left it, no gaps or repeats


def slurm_nodes() -> list[str]:
    proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True, timeout=30)
    return sorted(set(proc.stdout.split()))


def running_job_on(nodes: int) -> str | None:
    """The id of a running job that holds ``nodes`` nodes, if one does."""
    listed = subprocess.run(["squeue", "-h", "-t", "R", "-o", "%i %D"], capture_output=True, text=True).stdout
    for line in listed.splitlines():
        job, count = line.split()
        if int(count) == nodes:
            return job
    return None


@pytest.mark.timeout(2400)
@pytest.mark.skipif(len(slurm_nodes()) < 2 if slurm_idle() else True, reason="needs the two-node test cluster")
def test_two_node_cell_through_the_profile_runs_one_agent_per_node_and_survives_a_requeue(workflow_copy):
    """A training cell with `compute.train.nodes: 2` through `snakemake --profile profiles/slurm`, as
    users run it: the executor and job-step plugins (which strip the job's SLURM_* variables), one
    torchrun agent per node (scripts/slurm/cluster.sh start --nodes 2: each node its own network and
    host name), c10d rendezvous and ZeRO-2 on gloo across the two nodes. Each rank records where it
    ran: one agent per node, each with the job's 2 CPUs (task/affinity binds a step to the CPUs it
    asked for). The job is requeued mid-training (after 6 of 24 steps) (preemption) and resumes where it stopped."""
    import yaml

    config = yaml.safe_load((workflow_copy / "configs" / "ci.yaml").read_text())
    config["study"]["cells"] = [
        {"task": "k400", "backbones": ["dinov2_vits14_random"], "modes": ["frozen"], "heads": ["temporal_b2"]}
    ]
    config["tasks"]["k400"]["train"].update(steps=24, checkpoint_every=4)
    config["compute"] = {"train": {"nodes": 2, "threads": 2, "gpus": 0, "device": "cpu", "workers": 0}}
    (workflow_copy / "configs" / "two_node.yaml").write_text(yaml.safe_dump(config))
    cell = "k400/dinov2_vits14_random/frozen/temporal_b2/seed0"  # the cell's run at the config's seed
    run_dir = workflow_copy / "runs" / cell
    snakemake = subprocess.Popen(
        [
            str(VENV_BIN / "snakemake"),
            f"results/{cell}/metrics.json",
            "--profile",
            "profiles/slurm",
            "--configfile",
            "configs/two_node.yaml",
            *TEST_CLUSTER_POLLING,
        ],
        cwd=workflow_copy,
        env={**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    log = run_dir / "log.jsonl"
    requeued = None
    deadline = time.time() + 1500
    while snakemake.poll() is None and time.time() < deadline:
        if requeued is None and log.exists() and sum(1 for _ in log.open()) >= 6:
            requeued = running_job_on(2)
            if requeued:  # kill every step of the job and put it back in the queue, as preemption does
                requeue(requeued)
        time.sleep(1)
    if snakemake.poll() is None:
        snakemake.kill()
    said = snakemake.communicate()[0]
    assert snakemake.returncode == 0, said[-5000:]
    assert requeued is not None, "the two-node job was never seen running"
    train_log = (workflow_copy / "logs" / "train" / f"{cell}.log").read_text()
    assert "resuming from step" in train_log, train_log[-3000:]
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps == list(range(1, 25))  # no step lost or repeated across the requeue
    done = json.loads((run_dir / "done.json").read_text())
    assert done["world_size"] == 2 and done["steps"] == 24
    placement = done["placement"]  # the run after the requeue: every rank, in rank order
    assert [rank["rank"] for rank in placement] == [0, 1]
    assert sorted(rank["host"] for rank in placement) == ["fbnode1", "fbnode2"]  # one agent per node
    assert sorted(rank["node_rank"] for rank in placement) == [0, 1]
    for rank in placement:
        assert rank["local_rank"] == 0 and rank["world_size"] == 2
        assert len(rank["cpus"]) == 2, placement  # the job's CPUs per node, not the one CPU of a bare step
        assert rank["slurm_job_id"] == requeued
    assert (workflow_copy / "results" / cell / "metrics.json").exists()
