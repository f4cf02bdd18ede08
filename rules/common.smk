import json
import os
import re
import shlex
import sys

from snakemake.exceptions import WorkflowError

from frozenbench import study
from frozenbench.config import ConfigError, check_references, read_yaml, validate_config
from frozenbench.errors import UserError

# One validator for the DAG and every `frozenbench` command: each config file read again with the
# strict reader (Snakemake's own YAML loader lets a duplicate key win silently, reads `off:` as
# False and expands an alias bomb), the schema (its defaults filled in), then the cross-references
# (cells -> tasks / backbones / heads, arch, task type vs dataset format, sizes the backbone takes,
# frame counts, schedules), failing here, naming the file, line or key, not later inside a job.
try:
    for _configfile in workflow.configfiles:
        read_yaml(_configfile)
    _validated = validate_config(config, source="config")
    check_references(_validated, source="config")
except ConfigError as err:
    raise WorkflowError(str(err)) from None
config.clear()
config.update(_validated)

# Rules call the `frozenbench` console script installed beside the Python that runs
# Snakemake (the project venv), also when the venv is not activated. The prefix keeps
# Snakemake's default strict mode.
shell.prefix(f'set -euo pipefail; export PATH={shlex.quote(os.path.dirname(sys.executable))}:"$PATH"; ')

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
    return study.pretrain_spec(config, backbone)


def checkpoint_meta(backbone):
    return study.checkpoint_meta(config, backbone)


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
    return (
        f"--download-spec {json_arg(BACKBONES[backbone]['checkpoint'])}"
        f" --checksums {shlex.quote(checkpoint_checksums(backbone))} --verified {shlex.quote(marker)}"
    )


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
    seed="[0-9]+",


def task_spec(task, head, mode, data_dir, evaluation=False, backbone=None):
    return study.task_spec(config, task, head, mode, data_dir, evaluation, backbone)


def cell_dir(root, wildcards):
    """One seed's run of a cell: ``{root}/{task}/{backbone}/{mode}/{head}/seed{seed}``."""
    return f"{root}/{wildcards.task}/{wildcards.backbone}/{wildcards.mode}/{wildcards.head}/seed{wildcards.seed}"


def study_cells():
    return study.study_cells(config)


def all_cell_outputs():
    """Every run's metrics: each cell at each of its seeds (frozenbench.study.run_paths)."""
    return [f"{RESULTS}/{run}/metrics.json" for run in study.run_paths(config)]


# Per-job compute of the heavy rules (CPU defaults, a GPU cluster config sets gpus): frozenbench.study
try:
    COMPUTE = study.compute_settings(config)
except ConfigError as err:
    raise WorkflowError(str(err)) from None


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
    """Test-dev upload zips of the detection cells whose task sets `test_dev: true`: from each
    cell's first seed (the server scores one upload per entry)."""
    seeds = study.cell_seeds(config)
    return [
        f"{RESULTS}/{task}/{backbone}/{mode}/{head}/seed{seeds[(task, backbone, mode, head)][0]}/{SUBMISSION}"
        for task, backbone, mode, head in study_cells()
        if TASKS[task].get("test_dev", False)
    ]


def cell_labels(wildcards):
    labels = study.cell_labels(config, wildcards.task, wildcards.backbone, wildcards.head)
    return " ".join(f"--label {k}={shlex.quote(v)}" for k, v in labels.items())


def tables_plan():
    return study.tables_plan(config)


def cell_spec(wildcards, evaluation=False):
    """A cell's task spec from its wildcards and the config (its dataset folder as `train_head`'s
    input names it)."""
    data = dataset_dir(config["tasks"][wildcards.task]["dataset"])
    return task_spec(
        wildcards.task, wildcards.head, wildcards.mode, data, evaluation=evaluation, backbone=wildcards.backbone
    )


def study_report_output():
    return f"{TABLES}/report.html"


def all_table_outputs():
    return (
        [f"{TABLES}/{name}.{ext}" for name in TABLE_NAMES for ext in ("md", "tex", "csv")]
        + [f"{TABLES}/{name}.png" for name in FIGURE_NAMES]
        + [f"{TABLES}/summary.json"]
    )
