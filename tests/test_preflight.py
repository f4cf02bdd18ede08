"""`frozenbench preflight`: each site problem as one line naming the setting to change.

The Slurm, driver and compiler tools are fake scripts on a PATH of their own (so every answer is
known); the dry-run parser reads real `snakemake -n` output of configs/ci.yaml; the last test
submits the node checks to the test cluster (skipped unless a Slurm answers with an idle node).
"""

from __future__ import annotations

import copy
import os
import re
import shlex
import shutil
import subprocess
from collections import namedtuple
from pathlib import Path

import pytest

from frozenbench.cluster import preflight
from frozenbench.cluster.preflight import NOTE, OK, PROBLEM, Site
from frozenbench.config import load_config
from frozenbench.study import COMPUTE_DEFAULTS

from .conftest import REPO, VENV_BIN, run_cmd

PAPER = load_config(REPO / "configs" / "paper.yaml")
CI = load_config(REPO / "configs" / "ci.yaml")


def fake_tool(folder: Path, name: str, stdout: str = "", exit_code: int = 0, stderr: str = "") -> None:
    """A script ``name`` in ``folder`` that prints ``stdout`` / ``stderr`` and exits ``exit_code``."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / name
    script.write_text(
        f"#!/bin/sh\nprintf '%s' {shlex.quote(stdout)}\nprintf '%s' {shlex.quote(stderr)} >&2\nexit {exit_code}\n"
    )
    script.chmod(0o755)


def site_of(tmp_path: Path, config: dict = PAPER, name: str = "configs/paper.yaml", **environ: str) -> Site:
    """A site whose tools are only the fakes in ``tmp_path/bin``."""
    return Site(
        copy.deepcopy(config),
        Path(name),
        profile=REPO / "profiles" / "slurm",
        workdir=tmp_path,
        environ={"PATH": str(tmp_path / "bin"), "USER": "alice", **environ},
    )


JOB_KINDS = ["train", "evaluate", "prepare"]


def levels(findings) -> list[str]:
    return [f.level for f in findings]


# -- 1. torch's CUDA build against the driver ----------------------------------------------------


def test_an_old_driver_is_a_problem_naming_the_driver_and_torchs_cuda(tmp_path, monkeypatch):
    monkeypatch.setattr(preflight, "torch_build", lambda: ("2.14.1+cu130", "13.0"))
    fake_tool(tmp_path / "bin", "nvidia-smi", "535.104.05\n535.104.05\n")
    (finding,) = preflight.check_cuda_driver(site_of(tmp_path))
    assert finding.level == PROBLEM
    assert "NVIDIA driver 535.104.05" in finding.message and "torch 2.14.1+cu130's CUDA 13.0" in finding.message
    assert ">= 580.65.06" in finding.message
    assert "CUDA 12.x" in finding.message  # what this driver runs instead

    fake_tool(tmp_path / "bin", "nvidia-smi", "580.95.05\n")
    (finding,) = preflight.check_cuda_driver(site_of(tmp_path))
    assert finding.level == OK and "580.95.05" in finding.message

    monkeypatch.setattr(preflight, "torch_build", lambda: ("2.9.1+cu128", "12.8"))
    fake_tool(tmp_path / "bin", "nvidia-smi", "525.60.13\n")  # exactly the 12.x minimum
    assert levels(preflight.check_cuda_driver(site_of(tmp_path))) == [OK]
    fake_tool(tmp_path / "bin", "nvidia-smi", "470.82.01\n")
    (finding,) = preflight.check_cuda_driver(site_of(tmp_path))
    assert finding.level == PROBLEM and "CUDA 11.x" in finding.message and ">= 525.60.13" in finding.message


def test_no_nvidia_smi_is_a_note_on_the_login_node_and_a_problem_on_a_node_that_needs_a_gpu(tmp_path, monkeypatch):
    monkeypatch.setattr(preflight, "torch_build", lambda: ("2.14.1+cu130", "13.0"))
    (tmp_path / "bin").mkdir()
    (finding,) = preflight.check_cuda_driver(site_of(tmp_path))
    assert finding.level == NOTE and "--on-node" in finding.message and "no nvidia-smi" in finding.message
    (finding,) = preflight.check_cuda_driver(site_of(tmp_path), on_node=True)
    assert finding.level == PROBLEM and "compute.train.device is cuda" in finding.message
    (finding,) = preflight.check_cuda_driver(site_of(tmp_path, CI, "configs/ci.yaml"), on_node=True)
    assert finding.level == NOTE  # ci.yaml: device auto


def test_a_cpu_only_torch_is_a_problem_where_the_config_needs_cuda(tmp_path, monkeypatch):
    monkeypatch.setattr(preflight, "torch_build", lambda: ("2.13.0+cpu", None))
    (finding,) = preflight.check_cuda_driver(site_of(tmp_path))
    assert (
        finding.level == PROBLEM and "CPU-only" in finding.message and "compute.train.device is cuda" in finding.message
    )
    assert levels(preflight.check_cuda_driver(site_of(tmp_path, CI, "configs/ci.yaml"))) == [NOTE]


# -- 2. the compiler ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "c++ (Debian 12.2.0-14+deb12u1) 12.2.0\nCopyright (C) 2022 Free Software Foundation, Inc.",
            ("g++", (12, 2, 0)),
        ),
        ("g++ (GCC) 8.5.0 20210514 (Red Hat 8.5.0-4)\nCopyright (C) 2018 Free Software Foundation", ("g++", (8, 5, 0))),
        ("Ubuntu clang version 14.0.0-1ubuntu1.1\nTarget: x86_64-pc-linux-gnu", ("clang", (14, 0, 0))),
        ("clang version 9.0.1 \nTarget: x86_64-unknown-linux-gnu", ("clang", (9, 0, 1))),
        ("Intel(R) oneAPI DPC++/C++ Compiler 2024.0.0 (2024.0.0.20231017)", None),
    ],
)
def test_compiler_versions_are_read_from_version_output(text, expected):
    assert preflight.parse_compiler_version(text) == expected


def test_an_old_compiler_is_a_problem_only_when_mmcvs_ops_must_be_built(tmp_path, monkeypatch):
    fake_tool(tmp_path / "bin", "c++", "g++ (GCC) 8.5.0 20210514 (Red Hat 8.5.0-4)\nFree Software Foundation\n")
    monkeypatch.setattr(preflight, "mmcv_ops_installed", lambda: None)
    (finding,) = preflight.check_compiler(site_of(tmp_path))
    assert finding.level == PROBLEM and "g++ 8.5.0" in finding.message and "C++20" in finding.message
    monkeypatch.setattr(preflight, "mmcv_ops_installed", lambda: "/venv/mmcv/_ext.so")
    (finding,) = preflight.check_compiler(site_of(tmp_path))
    assert finding.level == OK and "/venv/mmcv/_ext.so" in finding.message


def test_cxx_is_the_compiler_checked_and_a_missing_one_is_a_problem(tmp_path, monkeypatch):
    monkeypatch.setattr(preflight, "mmcv_ops_installed", lambda: None)
    fake_tool(tmp_path / "bin", "c++", "g++ (GCC) 8.5.0\nFree Software Foundation\n")
    fake_tool(tmp_path / "bin", "clang++-15", "Debian clang version 15.0.6\n")
    (finding,) = preflight.check_compiler(site_of(tmp_path, CXX="clang++-15"))
    assert finding.level == OK and "clang 15.0.6" in finding.message
    (tmp_path / "bin" / "c++").unlink()
    (finding,) = preflight.check_compiler(site_of(tmp_path))
    assert finding.level == PROBLEM and "no C++ compiler" in finding.message


# -- 3 and 4. GPU types, partitions, accounts -----------------------------------------------------


@pytest.mark.parametrize(
    "gres, expected",
    [
        ("gpu:a100:8(S:0-1)", {"a100": 8}),
        ("gpu:h100:4", {"h100": 4}),
        ("gpu:4", {None: 4}),
        ("(null)", {}),
        ("gpu:a100:4(S:0,1),shard:a100:8", {"a100": 4}),
        ("gpu:a100_80g:2(S:0),gpu:v100:4(S:1)", {"a100_80g": 2, "v100": 4}),
    ],
)
def test_sinfo_gres_fields_give_gpus_per_type(gres, expected):
    assert preflight.parse_gres(gres) == expected


def test_sinfo_partitions_keep_the_default_and_the_most_gpus_of_their_node_groups():
    parts = preflight.parse_sinfo("gpu|gpu:h100:4(S:0-1)\ngpu|gpu:h100:8(S:0-1)\ncpu*|(null)\n")
    assert sorted(parts) == ["cpu", "gpu"]
    assert parts["cpu"].default and not parts["gpu"].default
    assert parts["gpu"].gpus == {"h100": 8} and parts["cpu"].gpus == {}


def test_a_gpu_type_the_partition_lacks_is_a_problem_naming_compute_train_gpu_model(tmp_path):
    fake_tool(tmp_path / "bin", "sinfo", "gpu|gpu:h100:4(S:0-1)\ncpu*|(null)\n")
    site = site_of(tmp_path, FROZENBENCH_SLURM_GPU_PARTITION="gpu")
    findings = preflight.check_gpu_types(site, preflight.SlurmView(site))
    assert findings[0] == preflight.Finding(
        PROBLEM, "gpus", "compute.train.gpu_model: 'a100' is not a GPU type of partition gpu (sinfo lists h100)"
    )
    assert findings[1].message.startswith("compute.evaluate.gpu_model: 'a100'")

    config = copy.deepcopy(PAPER)
    for kind in ("train", "evaluate"):
        config["compute"][kind]["gpu_model"] = "h100"
    site = site_of(tmp_path, config, FROZENBENCH_SLURM_GPU_PARTITION="gpu")
    train, evaluate = preflight.check_gpu_types(site, preflight.SlurmView(site))
    assert train.level == PROBLEM and train.message.startswith("compute.train.gpus: 8 per node")
    assert "at most 4 h100 GPUs" in train.message
    assert evaluate.level == OK and "gpu:h100:1 fits partition gpu" in evaluate.message


def test_a_default_partition_without_gpus_is_a_problem_naming_the_gpu_partition_setting(tmp_path):
    fake_tool(tmp_path / "bin", "sinfo", "debug*|(null)\n")
    site = site_of(tmp_path)
    train, _ = preflight.check_gpu_types(site, preflight.SlurmView(site))
    assert train.level == PROBLEM and "has no GPUs" in train.message
    assert "FROZENBENCH_SLURM_GPU_PARTITION" in train.message and "slurm.gpu_partition" in train.message


def test_a_missing_partition_is_a_problem_naming_the_env_var_or_the_slurm_key(tmp_path):
    fake_tool(tmp_path / "bin", "sinfo", "gpu|gpu:a100:8\ncpu*|(null)\n")
    site = site_of(tmp_path, FROZENBENCH_SLURM_GPU_PARTITION="gpux")
    cpu, gpu = preflight.check_partitions(site, preflight.SlurmView(site))
    assert cpu.level == OK and "default partition cpu" in cpu.message
    assert gpu == preflight.Finding(
        PROBLEM, "partition", "FROZENBENCH_SLURM_GPU_PARTITION: 'gpux' is not a partition (sinfo lists gpu, cpu*)"
    )

    config = copy.deepcopy(PAPER)
    config["slurm"]["cpu_partition"] = "cpux"
    site = site_of(tmp_path, config, FROZENBENCH_SLURM_GPU_PARTITION="gpu")
    cpu, gpu = preflight.check_partitions(site, preflight.SlurmView(site))
    assert cpu.level == PROBLEM and cpu.message.startswith("slurm.cpu_partition (configs/paper.yaml): 'cpux'")
    assert gpu.level == OK

    fake_tool(tmp_path / "bin", "sinfo", "gpu|gpu:a100:8\n")  # no default partition, nothing set
    site = site_of(tmp_path)
    cpu, gpu = preflight.check_partitions(site, preflight.SlurmView(site))
    assert cpu.level == PROBLEM and "FROZENBENCH_SLURM_CPU_PARTITION" in cpu.message and "no default" in cpu.message


def test_sinfo_missing_or_failing(tmp_path):
    (tmp_path / "bin").mkdir()
    site = site_of(tmp_path)
    (finding,) = preflight.check_partitions(site, preflight.SlurmView(site))
    assert finding.level == PROBLEM and "no sinfo on PATH" in finding.message
    fake_tool(
        tmp_path / "bin", "sinfo", stderr="slurm_load_partitions: Unable to contact slurm controller", exit_code=1
    )
    site = site_of(tmp_path)
    (finding,) = preflight.check_partitions(site, preflight.SlurmView(site))
    assert "Unable to contact slurm controller" in finding.message


def test_no_sacctmgr_or_no_accounting_is_a_note(tmp_path):
    (tmp_path / "bin").mkdir()
    site = site_of(tmp_path, FROZENBENCH_SLURM_ACCOUNT="proj")
    (finding,) = preflight.check_accounts(site, preflight.SlurmView(site))
    assert finding.level == NOTE and "cannot check accounts" in finding.message
    fake_tool(
        tmp_path / "bin",
        "sacctmgr",
        stderr="You are not running a supported accounting_storage plugin\n"
        "Only 'accounting_storage/slurmdbd' is supported.",
        exit_code=1,
    )
    (finding,) = preflight.check_accounts(site, preflight.SlurmView(site))
    assert finding.level == NOTE and "cannot check accounts (no Slurm accounting)" in finding.message


def test_an_unknown_account_or_qos_is_a_problem_naming_its_setting(tmp_path):
    fake_tool(tmp_path / "bin", "sacctmgr", "proj-a|normal,long\nproj-b|normal\n")
    site = site_of(tmp_path, FROZENBENCH_SLURM_ACCOUNT="proj-c", FROZENBENCH_SLURM_QOS="normal")
    account, qos = preflight.check_accounts(site, preflight.SlurmView(site))
    assert account == preflight.Finding(
        PROBLEM, "account", "FROZENBENCH_SLURM_ACCOUNT: 'proj-c' is not an account of alice (proj-a, proj-b)"
    )
    assert qos.level == OK
    site = site_of(tmp_path, FROZENBENCH_SLURM_ACCOUNT="proj-b", FROZENBENCH_SLURM_QOS="long")
    account, qos = preflight.check_accounts(site, preflight.SlurmView(site))
    assert account.level == OK
    assert qos == preflight.Finding(
        PROBLEM, "qos", "FROZENBENCH_SLURM_QOS: QoS 'long' is not allowed for account proj-b (normal)"
    )


# -- 5. disk --------------------------------------------------------------------------------------

Usage = namedtuple("Usage", "total used free")


def test_a_small_disk_is_a_problem_with_the_sizes(tmp_path, monkeypatch):
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda path: Usage(100e9, 90e9, 10e9))
    (finding,) = preflight.check_disk(site_of(tmp_path))
    assert finding.level == PROBLEM
    assert "paths.downloads" in finding.message and "paths.data" in finding.message
    assert "10 GB free" in finding.message and "about 603 GB" in finding.message  # 27+27 + 1+1 + 450+97
    assert "kinetics400 download 450 GB" in finding.message and "coco2017 prepared 27 GB" in finding.message

    # what is already downloaded or prepared needs no more room
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "kinetics400.verified.json").write_text("{}")
    for name in ("coco2017", "ade20k"):
        (tmp_path / "data" / name).mkdir(parents=True)
        (tmp_path / "data" / name / "frozenbench_dataset.json").write_text("{}")
        (tmp_path / "downloads" / f"{name}.verified.json").write_text("{}")
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda path: Usage(1000e9, 800e9, 200e9))
    (finding,) = preflight.check_disk(site_of(tmp_path))
    assert finding.level == OK and "about 97 GB needed (kinetics400 prepared 97 GB)" in finding.message


def test_declared_download_sizes_count_where_no_size_is_known(tmp_path, monkeypatch):
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda path: Usage(100e9, 90e9, 10e9))
    config = copy.deepcopy(CI)
    file = {"url": "https://example.org/own.zip", "filename": "own.zip", "checksum": {"md5": "0" * 32}, "size": 6e9}
    config["datasets"] = {"own": {"source": "download", "format": "imagefolder", "download": {"files": [file]}}}
    (finding,) = preflight.check_disk(site_of(tmp_path, config, "configs/own.yaml"))
    assert finding.level == PROBLEM and "about 12 GB" in finding.message  # 6 GB download + 6 GB extracted
    del file["size"]
    (finding,) = preflight.check_disk(site_of(tmp_path, config, "configs/own.yaml"))
    assert finding.level == NOTE and "datasets.own: size unknown" in finding.message


# -- 6. checkpoints -------------------------------------------------------------------------------


def test_a_manual_checkpoint_says_where_to_put_it_until_it_is_there(tmp_path):
    findings = preflight.check_checkpoints(site_of(tmp_path))
    (simmim,) = [f for f in findings if f.level == PROBLEM]
    target = "downloads/checkpoints/swin_base_simmim/simmim_pretrain__swin_base__img192_window6__800ep.pth"
    assert simmim.message.startswith("backbones.swin_base_simmim.checkpoint needs a manual download")
    assert "drive.google.com" in simmim.message and target in simmim.message
    assert findings[-1] == preflight.Finding(
        OK, "checkpoint", "10 checkpoints download by themselves (fetch_checkpoint, on the login node)"
    )
    (tmp_path / target).parent.mkdir(parents=True)
    (tmp_path / target).write_bytes(b"weights")
    findings = preflight.check_checkpoints(site_of(tmp_path))
    assert PROBLEM not in levels(findings) and any(target in f.message for f in findings)


# -- 7. the dry run -------------------------------------------------------------------------------


@pytest.mark.slow  # ~14 s: a real snakemake dry run
def test_the_dry_run_parser_on_real_snakemake_output_with_the_real_threads(workflow_copy):
    env = {**os.environ, "FROZENBENCH_SLURM_CPU_PARTITION": "debug"}
    site = Site(CI, Path("configs/ci.yaml"), Path("profiles/slurm"), workdir=workflow_copy, environ=env)
    command = preflight.dry_run_command(site, "all_tables")
    assert command[1:4] == ["all_tables", "--configfile", "configs/ci.yaml"]  # the target before --configfile
    done = preflight.run_tool(command, 300, env=env, cwd=workflow_copy)
    assert done.ok, done.stderr[-3000:]
    jobs = preflight.parse_dry_run(done.stdout)
    rules = {}
    for job in jobs:
        rules.setdefault(job.rule, []).append(job)
    assert {rule: len(js) for rule, js in rules.items()} == {
        "synth_dataset": 4,
        "synth_checkpoint": 1,
        "pretrain_backbone": 2,
        "convert_checkpoint": 1,
        "train_head": 9,
        "probe_report": 1,
        "evaluate_head": 9,
        "submit_test_dev": 2,
        "tables": 1,
        "study_report": 1,
        "all_tables": 1,
    }
    assert {job.threads for job in rules["train_head"]} == {COMPUTE_DEFAULTS["train"]["threads"]}
    assert {job.resources["slurm_partition"] for job in rules["train_head"]} == {"debug"}
    assert {job.resources["mem_mb"] for job in rules["train_head"]} == {"8000"}
    assert not rules["all_tables"][0].runs_command
    lines = preflight.summarize_dry_run(jobs)
    assert "train_head: 9 jobs, each 2 CPUs, partition debug, 8 GB, 1440 min" in lines
    assert not any(line.startswith("all_tables") for line in lines)

    # measured: without --cores a dry run caps every job at 1 thread (and prints no threads line)
    capped = preflight.run_tool(command[:-2], 300, env=env, cwd=workflow_copy)
    assert {job.threads for job in preflight.parse_dry_run(capped.stdout) if job.rule == "train_head"} == {1}


def test_a_multi_node_gpu_job_reads_as_cpus_and_gpus_over_all_its_nodes():
    job = preflight.DryRunJob(
        "train_head",
        64,
        {"gres": "gpu:a100:8", "nodes": "2", "slurm_partition": "gpu", "mem_mb": "256000", "runtime": "4320"},
    )
    assert preflight.summarize_dry_run([job, job]) == [
        "train_head: 2 jobs, each 128 CPUs and 16 GPUs (gres gpu:a100:8) on 2 nodes (64 CPUs and 8 GPUs on each), "
        "partition gpu, 256 GB, 4320 min"
    ]
    assert preflight.summarize_dry_run([job], slurm=False) == [  # a local profile: no partition
        "train_head: 1 job, each 128 CPUs and 16 GPUs (gres gpu:a100:8) on 2 nodes (64 CPUs and 8 GPUs on each), "
        "256 GB, 4320 min"
    ]
    fetch = preflight.DryRunJob("fetch_checkpoint", 1, {"mem_mb": "1000"})
    assert preflight.summarize_dry_run([fetch], login_rules=["fetch_checkpoint"]) == [
        "fetch_checkpoint: 1 job on the login node (local rule), 1 CPU each"
    ]


@pytest.mark.slow  # ~12 s: the paper study's whole preflight
def test_the_whole_preflight_of_the_paper_config_on_a_site_with_problems(workflow_copy):
    """The command end to end: fake tools give an old driver, H100 nodes and no accounting; every problem
    is one line naming its setting, the dry run still prints what each rule asks for; exit 1."""
    fakes = workflow_copy / "bin"
    fake_tool(fakes, "nvidia-smi", "535.104.05\n")
    fake_tool(fakes, "sinfo", "gpu|gpu:h100:8(S:0-1)\ncpu*|(null)\n")
    fake_tool(fakes, "sacctmgr", stderr="You are not running a supported accounting_storage plugin", exit_code=1)
    done = run_cmd(
        [str(VENV_BIN / "frozenbench"), "preflight", "--config", "configs/paper.yaml", "--profile", "profiles/slurm"],
        cwd=workflow_copy,
        # the fakes first; Snakemake's dry run needs `which` from the system's PATH
        env={"PATH": f"{fakes}{os.pathsep}{os.environ['PATH']}", "FROZENBENCH_SLURM_GPU_PARTITION": "gpu"},
        timeout=300,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    parsed = [preflight.parse_line(line) for line in lines]
    assert all(parsed), done.stdout  # every line is one finding
    problems = [f"{f.check} {f.message}" for f in parsed if f.level == PROBLEM]
    assert any(p.startswith("cuda NVIDIA driver 535.104.05") for p in problems), problems
    assert "gpus compute.train.gpu_model: 'a100' is not a GPU type of partition gpu (sinfo lists h100)" in problems
    assert any(p.startswith("checkpoint backbones.swin_base_simmim") for p in problems)
    assert any("cannot check accounts" in f.message for f in parsed if f.level == NOTE)
    dry = [f.message for f in parsed if f.check == "dry-run"]
    assert any(
        m.startswith("train_head: 64 jobs, each 64 CPUs and 8 GPUs (gres gpu:a100:8), partition gpu") for m in dry
    )
    assert "download_dataset: 3 jobs on the login node (local rule), 1 CPU each" in dry
    assert "Traceback" not in done.stderr


# -- the node checks ------------------------------------------------------------------------------


def test_node_checks_without_a_gpu_note_it_under_auto_and_fail_under_cuda(tmp_path):
    findings = list(preflight.node_checks(site_of(tmp_path, CI, "configs/ci.yaml"), JOB_KINDS))
    gpu = [f for f in findings if f.check == "gpu"]
    if gpu and gpu[0].level == OK:
        pytest.skip("this machine has a GPU")
    assert gpu[0].level == NOTE and gpu[0].message.startswith("no GPU")
    assert PROBLEM not in levels(findings)
    assert any(f.check == "paths" and "paths.data" in f.message for f in findings)
    cuda = copy.deepcopy(CI)
    cuda["compute"] = {"train": {"device": "cuda"}}
    findings = list(preflight.node_checks(site_of(tmp_path, cuda, "configs/ci-cuda.yaml"), ["train", "prepare"]))
    (gpu,) = [f for f in findings if f.check == "gpu"]
    assert gpu.level == PROBLEM and "compute.train.device is cuda" in gpu.message


def test_node_checks_on_a_gpu_node_compare_the_gpu_count_and_run_ops_and_the_allreduce(tmp_path, monkeypatch):
    """The GPU branch with torch's view of the node replaced (this machine has no GPU): two GPUs where
    paper.yaml asks for 8 per node, the driver from nvidia-smi, a failing all-reduce named by its error."""
    monkeypatch.setattr(preflight, "visible_gpus", lambda: ["NVIDIA H100 80GB HBM3"] * 2)
    monkeypatch.setattr(preflight, "torch_build", lambda: ("2.14.1+cu130", "13.0"))
    monkeypatch.setattr(preflight, "run_routed_ops", lambda: {"nms": [3], "roi_align": [1, 2, 4, 4]})
    worlds = []

    def failing_allreduce(world):
        worlds.append(world)
        raise RuntimeError("-- Process 1 terminated with the following error:\nTraceback ...\nNCCL error: unhandled")

    monkeypatch.setattr(preflight, "nccl_allreduce", failing_allreduce)
    fake_tool(tmp_path / "bin", "nvidia-smi", "580.95.05\n580.95.05\n")
    site = site_of(tmp_path, SLURM_JOB_ID="7", SLURM_JOB_PARTITION="gpu", CUDA_VISIBLE_DEVICES="0,1")
    found = {f.check: f for f in preflight.node_checks(site, ["train", "evaluate"])}
    assert found["node"].message.endswith("(job 7, partition gpu) for train, evaluate jobs")
    assert found["gpu"].level == PROBLEM
    assert "2 GPUs (NVIDIA H100 80GB HBM3) visible" in found["gpu"].message and "asked for 8" in found["gpu"].message
    assert found["cuda"].level == OK and "580.95.05" in found["cuda"].message
    assert found["ops"] == preflight.Finding(
        OK, "ops", "mmcv's routed ops ran forward and backward on CUDA (nms, roi_align)"
    )
    assert worlds == [2]  # one process per visible GPU
    assert found["nccl"].level == PROBLEM and "failed: NCCL error: unhandled" in found["nccl"].message


def test_the_allreduce_spawns_one_process_per_device_and_checks_the_sum():
    preflight.nccl_allreduce(2, backend="gloo")  # the NCCL check's code on two CPU processes


def test_node_jobs_go_to_each_partition_the_study_uses_with_the_largest_gres(tmp_path):
    site = site_of(tmp_path, FROZENBENCH_SLURM_GPU_PARTITION="gpu", FROZENBENCH_SLURM_CPU_PARTITION="cpu")
    assert preflight.node_jobs(site) == [
        preflight.NodeJob("gpu", "gpu:a100:8", 8, ["train", "evaluate"]),
        preflight.NodeJob("cpu", None, 0, ["prepare"]),
    ]
    assert preflight.node_jobs(site_of(tmp_path, CI)) == [preflight.NodeJob(None, None, 0, JOB_KINDS)]


# a stand-in for `sbatch --wait`: writes the node checks' lines where --output says, prints the job id
FAKE_SBATCH = """#!/bin/sh
for arg in "$@"; do
  case "$arg" in --output=*) out="${arg#--output=}"; out="${out%%%j*}4242${out#*%j}" ;; esac
done
printf 'note    node        fbnode1 (job 4242, partition gpu) for train jobs\\n' > "$out"
printf 'PROBLEM nccl        all-reduce over 8 GPUs failed: timeout\\n' >> "$out"
echo 4242
exit 1
"""


def test_run_on_node_reads_the_jobs_lines_and_a_refused_submission_is_a_problem(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH)
    (bin_dir / "sbatch").chmod(0o755)
    site = site_of(tmp_path, FROZENBENCH_SLURM_GPU_PARTITION="gpu")
    job = preflight.NodeJob("gpu", "gpu:a100:8", 8, ["train"])
    findings = preflight.run_on_node(site, job, wait_seconds=60)
    assert findings == [
        preflight.Finding(NOTE, "node:gpu", "node: fbnode1 (job 4242, partition gpu) for train jobs"),
        preflight.Finding(PROBLEM, "node:gpu", "nccl: all-reduce over 8 GPUs failed: timeout"),
    ]
    script = (tmp_path / "logs" / "preflight" / "node-checks-gpu.sh").read_text()
    assert "preflight --node-checks --config" in script and "--kinds train" in script

    # a job that crashed after its first line: exit 1 without a PROBLEM line of its own
    (bin_dir / "sbatch").write_text(FAKE_SBATCH.replace("PROBLEM nccl", "Traceback (most recent call last):"))
    findings = preflight.run_on_node(site, job, wait_seconds=60)
    assert [f.level for f in findings] == [NOTE, PROBLEM]
    assert "job 4242 ended with exit 1 before finishing its checks" in findings[1].message

    fake_tool(
        bin_dir,
        "sbatch",
        stderr="sbatch: error: Batch job submission failed: Requested node configuration is not available",
        exit_code=1,
    )
    (finding,) = preflight.run_on_node(site, job, wait_seconds=60)
    assert finding.level == PROBLEM and "--gres=gpu:a100:8" in finding.message
    assert "Requested node configuration is not available" in finding.message


# -- on the test cluster --------------------------------------------------------------------------


def slurm_idle() -> bool:
    if shutil.which("sinfo") is None:
        return False
    proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    return proc.returncode == 0 and "idle" in proc.stdout.split()


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.skipif(not slurm_idle(), reason="no Slurm cluster (scripts/slurm/cluster.sh start)")
def test_on_node_job_runs_and_reports_no_gpu_as_a_note_under_auto_and_a_problem_under_cuda(workflow_copy, tmp_path):
    """ci.yaml (device auto) and a copy with `compute.train.device: cuda`, each in a workflow copy of its
    own and run side by side (sbatch --wait's polling, not the job, takes most of a run's minute)."""
    cuda_copy = tmp_path / "wf-cuda"
    shutil.copytree(workflow_copy, cuda_copy)
    ci = (workflow_copy / "configs" / "ci.yaml").read_text()
    (cuda_copy / "configs" / "ci-cuda.yaml").write_text(ci + "compute:\n  train: {device: cuda}\n")
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    command = [str(VENV_BIN / "frozenbench"), "preflight", "--profile", "profiles/slurm", "--on-node"]
    runs = {
        name: subprocess.Popen(
            [*command, "--node-timeout", "900", "--config", config],
            cwd=folder,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, folder, config in (
            ("auto", workflow_copy, "configs/ci.yaml"),
            ("cuda", cuda_copy, "configs/ci-cuda.yaml"),
        )
    }
    said = {name: proc.communicate(timeout=1200) for name, proc in runs.items()}

    def node_lines(name: str) -> list[preflight.Finding]:
        found = [preflight.parse_line(line) for line in said[name][0].splitlines()]
        return [f for f in found if f and f.check.startswith("node:")]

    auto = node_lines("auto")
    assert any(f.message.startswith("node: ") and "(job " in f.message for f in auto), said["auto"]  # the job ran
    (gpu,) = [f for f in auto if f.message.startswith("gpu: ")]
    assert gpu.level == NOTE and gpu.message.startswith("gpu: no GPU on "), said["auto"]
    assert runs["auto"].returncode == 0, said["auto"]

    (gpu,) = [f for f in node_lines("cuda") if f.message.startswith("gpu: ")]
    assert gpu.level == PROBLEM and re.search(r"no GPU: .* compute\.train\.device is cuda", gpu.message), said["cuda"]
    assert runs["cuda"].returncode == 1, said["cuda"]
