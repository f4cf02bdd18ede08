import json
import os
import re
import shlex
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from frozenbench.config import ConfigError, check_references
from frozenbench.errors import UserError


validate(config, schema="../schemas/config.schema.yaml", set_default=True)
# cross-references (cells -> tasks / backbones / heads, arch, task type vs dataset format, sizes
# the backbone takes, frame counts) fail here, naming the key, not later inside a job
try:
    check_references(config, source="config")
except ConfigError as err:
    raise WorkflowError(str(err)) from None

# Rules call the `frozenbench` console script installed beside the Python that runs
# Snakemake (the project venv), also when the venv is not activated. The prefix keeps
# Snakemake's default strict mode.
shell.prefix(f"set -euo pipefail; export PATH={shlex.quote(os.path.dirname(sys.executable))}:\"$PATH\"; ")

PATHS = config["paths"]
DATA = PATHS["data"]
DOWNLOADS = PATHS["downloads"]
LOGS = PATHS["logs"]
CKPTS = PATHS["checkpoints"]
RUNS = PATHS["runs"]
RESULTS = PATHS["results"]
TABLES = PATHS["tables"]
# named once, where the tables and figures are built
from frozenbench.reporting.figures import FIGURE_NAMES
from frozenbench.reporting.tables import TABLE_NAMES
BENCHMARKS = PATHS["benchmarks"]
# sha256 of downloads whose source publishes none, recorded on first download: committed, so
# every other machine verifies its copies against the first one
CHECKSUMS = PATHS.get("checksums", "checksums")
BACKBONES = config.get("backbones", {})
PRETRAINED_BACKBONES = sorted(k for k, v in BACKBONES.items() if "pretrain" in v)
PUBLISHED_BACKBONES = sorted(k for k, v in BACKBONES.items() if "checkpoint" in v)
# where a published checkpoint comes from: a download, a local file, or random weights written in its layout
DOWNLOADED_CHECKPOINTS = [k for k in PUBLISHED_BACKBONES if "url" in BACKBONES[k]["checkpoint"]]
SYNTH_CHECKPOINTS = [k for k in PUBLISHED_BACKBONES if "synth" in BACKBONES[k]["checkpoint"]]
RELEASED_BACKBONES = PRETRAINED_BACKBONES + PUBLISHED_BACKBONES

SYNTH_DATASETS = sorted(k for k, v in config["datasets"].items() if v["source"] == "synth")
DOWNLOAD_DATASETS = sorted(k for k, v in config["datasets"].items() if v["source"] == "download")


def names_alternation(names):
    """A wildcard regex matching exactly these names (never an empty alternation)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


def json_arg(value):
    """A config fragment as one shell-quoted JSON argument (params changes trigger reruns)."""
    return shlex.quote(json.dumps(value, sort_keys=True))


def download_spec(name):
    entry = config["datasets"][name]
    return {"source": entry["source"], "format": entry["format"], "download": entry["download"]}


def dataset_checksums(name):
    return f"{CHECKSUMS}/datasets/{name}.sha256"


def checkpoint_checksums(backbone):
    return f"{CHECKSUMS}/checkpoints/{backbone}.sha256"


def dataset_dir(name):
    return f"{DATA}/{name}"


def all_dataset_outputs():
    return [dataset_dir(name) for name in sorted(config["datasets"])]


def pretrain_spec(backbone):
    """The backbone's pretraining task, dataset and options (study defaults overridden per backbone)."""
    entry = BACKBONES[backbone]["pretrain"]
    defaults = config.get("pretrain", {})
    return {
        "task": entry["task"],
        "dataset": entry.get("dataset", defaults.get("dataset")),
        "options": {**defaults.get("options", {}), **entry.get("options", {})},
    }


def checkpoint_meta(backbone):
    ckpt = BACKBONES[backbone]["checkpoint"]
    origin = (ckpt.get("url") or ckpt.get("file") or (f"hf://{ckpt['hub']}/{ckpt['filename']}" if "hub" in ckpt else
              f"synth:{ckpt['layout']}:seed={ckpt['synth']['seed']}"))
    return {"name": backbone, "url": origin, "pretrain_task": ckpt["task"], "pretrain_data": ckpt["data"]}


def checkpoint_source(backbone):
    """The published checkpoint file that conversion reads."""
    ckpt = BACKBONES[backbone]["checkpoint"]
    if "file" in ckpt:
        return ckpt["file"]
    if "synth" in ckpt:
        return f"{DOWNLOADS}/checkpoints/{backbone}/synth-{ckpt['layout']}.pth"
    if "hub" in ckpt:
        from frozenbench.checkpoint.hub import cached_file

        try:  # resolved when a job needs it: a missing cache entry stops only what depends on it
            return str(cached_file(ckpt["hub"], ckpt["filename"], ckpt.get("revision")))
        except UserError as err:
            raise WorkflowError(f"backbones.{backbone}.checkpoint: {err}") from None
    return f"{DOWNLOADS}/checkpoints/{backbone}/{ckpt['filename']}"


def conversion_input(wildcards):
    """A download's verified marker (the file itself survives reruns beside it), else the file."""
    if wildcards.backbone in DOWNLOADED_CHECKPOINTS:
        return f"{DOWNLOADS}/checkpoints/{wildcards.backbone}.verified.json"
    return checkpoint_source(wildcards.backbone)


def verification_args(backbone):
    """convert-checkpoint's arguments that re-verify a download before use (none for other sources)."""
    if backbone not in DOWNLOADED_CHECKPOINTS:
        return ""
    marker = f"{DOWNLOADS}/checkpoints/{backbone}.verified.json"
    return (f"--download-spec {json_arg(BACKBONES[backbone]['checkpoint'])}"
            f" --checksums {shlex.quote(checkpoint_checksums(backbone))} --verified {shlex.quote(marker)}")


def all_checkpoint_outputs():
    outputs = [f"{CKPTS}/{name}.pth" for name in RELEASED_BACKBONES]
    if PRETRAINED_BACKBONES:
        outputs.append(f"{RESULTS}/pretrain/probe.md")
    return outputs


TASKS = config.get("tasks", {})
HEADS = sorted({head for task in TASKS.values() for head in task["heads"]})


wildcard_constraints:
    task=names_alternation(sorted(TASKS)),
    backbone=names_alternation(sorted(BACKBONES)),
    mode="frozen|finetune",
    head=names_alternation(HEADS),


def task_spec(task, head, mode, data_dir, evaluation=False):
    """What `frozenbench train/evaluate` need of a task: its type, data, input size, head and schedule
    (a fine-tune cell's schedule is `train` updated by `finetune`, so frozen cells ignore `finetune`).
    Test-time options go to evaluation only, so changing them re-evaluates without retraining."""
    entry = TASKS[task]
    schedule = dict(entry.get("train", {}))
    if mode == "finetune":
        schedule.update(entry.get("finetune", {}))
    return {"type": entry["type"], "data": str(data_dir), "img_size": entry["img_size"],
            "bf16": entry.get("bf16", False), "feature_cache": entry.get("feature_cache", False),
            "head": entry["heads"][head], "train": schedule,
            "data_options": entry.get("data_options", {}), "zero_stage": entry.get("zero_stage", 2),
            # only when set, so that existing cells keep their fingerprint
            **({"compile_backbone": True} if entry.get("compile_backbone") else {}),
            **({"autocast_bf16": True} if entry.get("autocast_bf16") else {}),
            **({"tf32": True} if entry.get("tf32") else {}),
            **({"augment": entry["augment"]} if entry.get("augment") else {}),
            **({"test": entry.get("test", {})} if evaluation else {})}


def cell_dir(root, wildcards):
    return f"{root}/{wildcards.task}/{wildcards.backbone}/{wildcards.mode}/{wildcards.head}"


def study_cells():
    """(task, backbone, mode, head) of every configured cell."""
    for cell in config.get("study", {}).get("cells", []):
        for backbone in cell["backbones"]:
            for mode in cell["modes"]:
                for head in cell["heads"]:
                    yield cell["task"], backbone, mode, head


def all_cell_outputs():
    return [f"{RESULTS}/{task}/{backbone}/{mode}/{head}/metrics.json" for task, backbone, mode, head in study_cells()]


# Per-job compute for the heavy rules: CPU-only defaults (the mini-study); a GPU cluster
# config sets gpus (per node; and gpu_model) so the Slurm plugin requests them.
_COMPUTE_DEFAULTS = {
    "train": {"gpus": 0, "threads": 2, "mem_mb": 8000, "runtime": 24 * 60, "workers": 0, "nodes": 1, "device": "auto"},
    "evaluate": {"gpus": 0, "threads": 2, "mem_mb": 8000, "runtime": 60, "workers": 0, "nodes": 1, "device": "auto"},
    # dataset preparation: one process per thread (Kinetics re-encodes its clips in a pool)
    "prepare": {"gpus": 0, "threads": 4, "mem_mb": 8000, "runtime": 12 * 60, "workers": 0, "nodes": 1, "device": "cpu"},
}
COMPUTE = {kind: {**defaults, **config.get("compute", {}).get(kind, {})} for kind, defaults in _COMPUTE_DEFAULTS.items()}
if COMPUTE["evaluate"]["nodes"] != 1 or COMPUTE["prepare"]["nodes"] != 1:
    raise ValueError("compute: only train jobs span several nodes (evaluate and prepare run on one)")


def site_setting(key):
    """A Slurm site setting: the environment variable FROZENBENCH_SLURM_<KEY> wins over config's
    `slurm.<key>` (so one config serves several sites); None when neither is set."""
    value = os.environ.get(f"FROZENBENCH_SLURM_{key.upper()}") or config.get("slurm", {}).get(key)
    return value or None


def site_resources(partition_key):
    """Account, QoS and the partition named by `partition_key` (gpu_partition / cpu_partition), as
    the Slurm plugin's resources; a setting left unset is left to the profile or the site default."""
    resources = {}
    for resource, key in (("slurm_account", "account"), ("qos", "qos"), ("slurm_partition", partition_key)):
        value = site_setting(key)
        if value is not None:
            resources[resource] = value
    return resources


def job_resources(kind):
    """Slurm resources of a job kind: memory, runtime, site settings, and for a GPU job its GPUs per
    node as GRES (`gpu[:model]:N`: per node, right for one node and for several). A multi-node
    training job is an "mpi" job to the plugin: its shell command runs once, in the batch script,
    and `frozenbench train --nodes N` starts one torchrun per node through srun itself. CPUs per
    job (cpus_per_task) come from the rule's threads; the profile sets no global override."""
    entry = COMPUTE[kind]
    resources = {"mem_mb": entry["mem_mb"], "runtime": entry["runtime"]}
    resources.update(site_resources("gpu_partition" if entry["gpus"] else "cpu_partition"))
    if entry["gpus"]:
        model = entry.get("gpu_model")
        resources["gres"] = f"gpu:{model}:{entry['gpus']}" if model else f"gpu:{entry['gpus']}"
        # one task per node (torchrun starts the per-GPU ranks), not the plugin's task per GPU
        resources["tasks_per_gpu"] = 0
    if entry["nodes"] > 1:
        resources.update(nodes=entry["nodes"], tasks=entry["nodes"], mpi="srun")
    return resources


def cpu_job_resources(mem_mb, runtime):
    """A small CPU job (datasets, checkpoints, reports): its memory and runtime on the CPU partition."""
    return {"mem_mb": mem_mb, "runtime": runtime, **site_resources("cpu_partition")}


# Downloads and checkpoint fetches need the internet, which compute nodes often lack: by default
# they run where Snakemake runs (the login node); `slurm.downloads_on_login_node: false` sends
# them to the cluster like every other job.
DOWNLOAD_RULES = ["download_dataset", "fetch_checkpoint"]
DOWNLOADS_ON_LOGIN_NODE = config.get("slurm", {}).get("downloads_on_login_node", True)


SUBMISSION = "detections_test-dev2017_frozenbench_results.zip"


def all_submission_outputs():
    """Test-dev upload zips of the detection cells whose task sets `test_dev: true`."""
    return [f"{RESULTS}/{task}/{backbone}/{mode}/{head}/{SUBMISSION}" for task, backbone, mode, head in study_cells()
            if TASKS[task].get("test_dev", False)]


def labels_of(task, backbone_name, head):
    """What a table needs to know of a cell beyond its path (recorded in metrics.json, all strings)."""
    from frozenbench.reporting.tables import capacity_label

    backbone = BACKBONES[backbone_name]
    objective = pretrain_spec(backbone_name)["task"] if "pretrain" in backbone else (
        backbone.get("checkpoint", {}).get("task", "none"))
    head_cfg = TASKS[task]["heads"][head]
    labels = {"task_type": TASKS[task]["type"], "pretrain_task": objective,
              "family_size": backbone.get("family_size", "-"), "arch": backbone["arch"],
              "extra_blocks": head_cfg.get("extra_blocks", 0), "capacity": capacity_label(head_cfg)}
    return {k: str(v) for k, v in labels.items()}


def cell_labels(wildcards):
    labels = labels_of(wildcards.task, wildcards.backbone, wildcards.head)
    return " ".join(f"--label {k}={shlex.quote(v)}" for k, v in labels.items())


def tables_plan():
    """What `frozenbench tables --plan` takes: every cell (missing until run), the head per task of the
    comparison tables (`study.tables.heads`, else the first head of the task's first cell) and the
    paper comparison's backbone (`study.tables.paper_backbone`, else the largest run)."""
    cells, first_head = [], {}
    for task, backbone, mode, head in study_cells():
        first_head.setdefault(task, head)
        cells.append({"task": task, "backbone": backbone, "mode": mode, "head": head,
                      **labels_of(task, backbone, head)})
    chosen = config.get("study", {}).get("tables", {})
    plan = {"cells": cells, "heads": {**first_head, **chosen.get("heads", {})}}
    if chosen.get("paper_backbone"):
        plan["paper_backbone"] = chosen["paper_backbone"]
    return plan


def study_report_output():
    return f"{TABLES}/report.html"


def all_table_outputs():
    return [f"{TABLES}/{name}.{ext}" for name in TABLE_NAMES for ext in ("md", "tex", "csv")] + [
        f"{TABLES}/{name}.png" for name in FIGURE_NAMES] + [f"{TABLES}/summary.json"]
