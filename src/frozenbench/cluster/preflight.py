"""Preflight: what a new Slurm site checks on its login node before the paper study is submitted.

Each check gives one line, ``ok``, ``note`` or ``PROBLEM``, and every problem names the setting or the
command to change, so a site learns each of its problems at once instead of from a failed job hours
into the study: torch's CUDA build against the NVIDIA driver, the C++ compiler mmcv's ops build
needs, the GPU type and count against the partition's GRES, account / partitions / QoS, free disk for
the datasets, checkpoints that need a manual step, and a dry run summarising what every rule asks
Slurm for. ``--on-node`` submits a short job to each partition the study uses and runs the node
checks there (CUDA, GPU count, mmcv's routed ops on CUDA, an NCCL all-reduce, the data paths).

Every external tool runs with a timeout; a missing tool is a note, never a traceback. docs/preflight.md
says what each check does and where the driver table comes from.
"""

from __future__ import annotations

import getpass
import importlib.util
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

OK, NOTE, PROBLEM = "ok", "note", "PROBLEM"

# -- results and tools ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One line of the report: its level, the check it belongs to and what was found."""

    level: str
    check: str
    message: str

    def line(self) -> str:
        return f"{self.level:<7} {self.check:<11} {self.message}"


LINE = re.compile(r"^(ok|note|PROBLEM)\s+(\S+)\s+(.*)$")


def parse_line(text: str) -> Finding | None:
    """The finding a report line (:meth:`Finding.line`) holds, None for any other line."""
    match = LINE.match(text.rstrip("\n"))
    return Finding(*match.groups()) if match else None


@dataclass
class ToolResult:
    """What running an external tool gave: missing, timed out, or its exit status and output."""

    command: list[str]
    missing: bool = False
    timed_out: bool = False
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.missing and not self.timed_out and self.returncode == 0

    def why(self) -> str:
        """One line on why the tool gave no usable answer."""
        name = self.command[0]
        if self.missing:
            return f"no {name} on PATH"
        if self.timed_out:
            return f"{name} gave no answer within its timeout"
        if self.error:
            return f"{name} could not run: {self.error}"
        said = first_line(self.stderr) or first_line(self.stdout) or "no output"
        return f"{name} failed (exit {self.returncode}): {said}"


def plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def run_tool(
    command: list[str], timeout: float, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> ToolResult:
    """Run ``command`` (looked up on the PATH of ``env``) with a timeout; never raises."""
    env = dict(os.environ if env is None else env)
    exe = shutil.which(command[0], path=env.get("PATH", os.defpath))
    if exe is None:
        return ToolResult(command, missing=True)
    try:
        proc = subprocess.run(
            [exe, *command[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            errors="replace",
        )
    except subprocess.TimeoutExpired:
        return ToolResult(command, timed_out=True)
    except OSError as err:  # not executable, a broken interpreter line
        return ToolResult(command, error=err.strerror or str(err))
    return ToolResult(command, returncode=proc.returncode, stdout=proc.stdout, stderr=proc.stderr)


# timeouts of the external tools, in seconds: long enough for a loaded login node
TOOL_TIMEOUT = 30
DRY_RUN_TIMEOUT = 600


# -- the site: config, profile, Slurm settings ---------------------------------------------------

SLURM_KEYS = ("account", "qos", "gpu_partition", "cpu_partition")
JOB_KINDS = ("train", "evaluate", "prepare")
# rules that run where Snakemake runs when slurm.downloads_on_login_node (rules/common.smk, DOWNLOAD_RULES)
LOGIN_NODE_RULES = ("download_dataset", "fetch_checkpoint")


@dataclass
class Site:
    """The study config and the environment the checks read."""

    config: dict[str, Any]
    config_path: Path
    profile: Path | None = None
    workdir: Path = field(default_factory=Path.cwd)
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    timeout: float = TOOL_TIMEOUT

    def tool(self, *command: str, timeout: float | None = None) -> ToolResult:
        return run_tool(list(command), timeout or self.timeout, env=self.environ, cwd=self.workdir)

    @cached_property
    def compute(self) -> dict[str, dict[str, Any]]:
        from frozenbench import study

        return study.compute_settings(self.config)

    def setting(self, key: str) -> tuple[str | None, str]:
        """A Slurm site setting as rules/common.smk resolves it (the environment's
        FROZENBENCH_SLURM_<KEY> wins over config's ``slurm.<key>``), with where it came from."""
        env_name = f"FROZENBENCH_SLURM_{key.upper()}"
        if self.environ.get(env_name):
            return self.environ[env_name], env_name
        value = self.config.get("slurm", {}).get(key)
        return (value or None), f"slurm.{key} ({self.config_path})"

    def unset_names(self, key: str) -> str:
        return f"slurm.{key} in {self.config_path} or FROZENBENCH_SLURM_{key.upper()}"

    def gpu_kinds(self) -> list[str]:
        return [kind for kind in ("train", "evaluate") if self.compute[kind]["gpus"] > 0]

    def path(self, key: str) -> Path:
        return self.workdir / self.config["paths"][key]

    @cached_property
    def profile_settings(self) -> dict[str, Any]:
        if self.profile is None:
            return {}
        import yaml

        for name in ("config.yaml", "config.v9+.yaml", "config.v8+.yaml"):
            candidate = self.workdir / self.profile / name
            if candidate.is_file():
                loaded = yaml.safe_load(candidate.read_text())
                return loaded if isinstance(loaded, dict) else {}
        return {}

    def submits_to_slurm(self) -> bool:
        return self.profile_settings.get("executor") == "slurm"


# -- 1. torch's CUDA build against the driver ----------------------------------------------------

# Minimum Linux driver per CUDA major for CUDA minor-version compatibility: NVIDIA's CUDA Toolkit
# release notes, "CUDA Toolkit and Minimum Required Driver Version for CUDA Minor Version
# Compatibility" (13.x: the CUDA 13.0 GA driver) -- docs/preflight.md has the links.
MINIMUM_DRIVER = {13: (580, 65, 6), 12: (525, 60, 13), 11: (450, 80, 2)}


def version_tuple(text: str) -> tuple[int, ...] | None:
    match = re.search(r"\d+(?:\.\d+)*", text)
    return tuple(int(part) for part in match.group(0).split(".")) if match else None


def dotted(version: tuple[int, ...]) -> str:
    """A driver version as NVIDIA writes it (580.65.06: the third part has two digits)."""
    return ".".join(f"{part:02d}" if i == 2 else str(part) for i, part in enumerate(version))


def driver_supports(driver: tuple[int, ...]) -> int | None:
    """The newest CUDA major the driver runs (minor-version compatibility), None if older than all."""
    return max((major for major, least in MINIMUM_DRIVER.items() if driver >= least), default=None)


def torch_build() -> tuple[str, str | None]:
    """(torch's version, the CUDA version it was built for; None for a CPU-only build)."""
    import torch

    return torch.__version__, torch.version.cuda


def cuda_devices_required(site: Site, kinds: Iterable[str] = ("train", "evaluate")) -> list[str]:
    """The settings that make a GPU necessary: ``compute.<kind>.device: cuda`` or ``gpus > 0``."""
    needs = []
    for kind in kinds:
        entry = site.compute[kind]
        if entry.get("device") == "cuda":
            needs.append(f"compute.{kind}.device is cuda")
        elif entry.get("gpus", 0) > 0:
            needs.append(f"compute.{kind}.gpus is {entry['gpus']}")
    return needs


def _driver_verdict(check: str, torch_version: str, cuda: str, driver: tuple[int, ...]) -> list[Finding]:
    """Whether NVIDIA driver ``driver`` runs torch's CUDA ``cuda`` build (and what to install if not)."""
    major = int(cuda.split(".")[0])
    least = MINIMUM_DRIVER.get(major)
    if least is None:
        return [Finding(NOTE, check, f"no known minimum driver for CUDA {cuda} (driver {dotted(driver)}): not checked")]
    if driver < least:
        runs = driver_supports(driver)
        instead = (
            f"install a torch built for CUDA {runs}.x (a cu{runs}x wheel from https://download.pytorch.org/whl/) or "
            if runs
            else ""
        )
        return [
            Finding(
                PROBLEM,
                check,
                f"NVIDIA driver {dotted(driver)} (nvidia-smi) is older than {dotted(least)}, which torch "
                f"{torch_version}'s CUDA {cuda} build needs: {instead}ask the site for driver >= {dotted(least)}",
            )
        ]
    return [
        Finding(
            OK, check, f"torch {torch_version} (CUDA {cuda}) on NVIDIA driver {dotted(driver)} (>= {dotted(least)})"
        )
    ]


def check_cuda_driver(site: Site, on_node: bool = False, kinds: Iterable[str] = ("train", "evaluate")) -> list[Finding]:
    """torch's CUDA build against the driver ``nvidia-smi`` reports. Without nvidia-smi (a login
    node) the comparison moves to ``--on-node``; on a node it is a problem where a GPU is needed."""
    check = "cuda"
    needed = cuda_devices_required(site, kinds)
    try:
        torch_version, cuda = torch_build()
    except Exception as err:  # a broken install must read as one line too
        return [Finding(PROBLEM, check, f"torch cannot be imported ({type(err).__name__}: {err}); run `make setup`")]
    if cuda is None:
        level = PROBLEM if needed else NOTE
        fix = "; install a CUDA build of torch (make setup on a machine with the CUDA wheels)" if needed else ""
        why = f" but {', '.join(needed)}" if needed else ""
        return [Finding(level, check, f"torch {torch_version} is a CPU-only build{why}{fix}")]
    smi = site.tool("nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader")
    if not smi.ok:
        if on_node:
            level = PROBLEM if needed else NOTE
            why = f" ({', '.join(needed)})" if needed else ""
            return [Finding(level, check, f"cannot read the NVIDIA driver on {socket.gethostname()}: {smi.why()}{why}")]
        return [
            Finding(
                NOTE,
                check,
                f"torch {torch_version} is built for CUDA {cuda}; {smi.why()} (normal on a login node): "
                "the driver check runs on the GPU nodes with --on-node",
            )
        ]
    drivers = [v for v in (version_tuple(line) for line in smi.stdout.splitlines() if line.strip()) if v]
    if not drivers:
        return [Finding(NOTE, check, f"nvidia-smi gave no driver version ({first_line(smi.stdout) or 'no output'})")]
    return _driver_verdict(check, torch_version, cuda, min(drivers))


# -- 2. the C++ compiler of mmcv's ops build -----------------------------------------------------

CXX20_MINIMUM = {"g++": 10, "clang": 10}


def mmcv_ops_installed() -> str | None:
    """Where mmcv's compiled ops (``mmcv._ext``) are installed, None if not. Looked up beside the
    package (what ``importlib.util.find_spec("mmcv._ext")`` finds) without importing mmcv, whose
    import pulls in torch and mmengine."""
    spec = importlib.util.find_spec("mmcv")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        found = sorted(Path(folder).glob("_ext.*.so")) + sorted(Path(folder).glob("_ext.*.pyd"))
        if found:
            return str(found[0])
    return None


def parse_compiler_version(text: str) -> tuple[str, tuple[int, ...]] | None:
    """("g++" or "clang", version) from a compiler's ``--version`` output; None if unknown."""
    head = first_line(text)
    clang = re.search(r"clang version (\d+(?:\.\d+)*)", head)
    if clang:
        return "clang", version_tuple(clang.group(1))
    if "Free Software Foundation" in text or re.match(r"(c\+\+|g\+\+)\S*\s*\(", head):
        after = head.split(")", 1)[1] if ")" in head else head
        found = version_tuple(after)
        return ("g++", found) if found else None
    return None


def check_compiler(site: Site) -> list[Finding]:
    """mmcv's ops build needs C++20 (g++ >= 10 or clang >= 10): checked only when the ops are not
    installed yet (``make setup`` then builds them on this machine)."""
    check = "compiler"
    installed = mmcv_ops_installed()
    if installed:
        return [Finding(OK, check, f"mmcv's compiled ops are installed ({installed}): no C++ build needed")]
    # what torch's extension build runs: $CXX (possibly with arguments, e.g. "ccache g++"), else c++
    cxx = shlex.split(site.environ.get("CXX", ""))
    candidates = [cxx[-1]] if cxx else ["c++", "g++"]
    for name in candidates:
        result = site.tool(name, "--version", timeout=10)
        if result.missing:
            continue
        if not result.ok:
            return [Finding(PROBLEM, check, f"mmcv's ops must be built (make setup) but {result.why()}")]
        parsed = parse_compiler_version(result.stdout)
        if parsed is None:
            return [
                Finding(
                    NOTE,
                    check,
                    f"{name} is {first_line(result.stdout)!r}: not g++ or clang, its C++20 support is not checked",
                )
            ]
        family, version = parsed
        least = CXX20_MINIMUM[family]
        if version[0] < least:
            return [
                Finding(
                    PROBLEM,
                    check,
                    f"{name} is {family} {'.'.join(map(str, version))}: mmcv's ops build (make setup) needs C++20, "
                    f"{family} >= {least}; load a newer compiler (e.g. `module load gcc/12`) or set CXX to one, "
                    "then run make setup",
                )
            ]
        return [
            Finding(OK, check, f"{name} is {family} {'.'.join(map(str, version))} (C++20): mmcv's ops can be built")
        ]
    return [
        Finding(
            PROBLEM,
            check,
            f"mmcv's ops are not installed and no C++ compiler ({', '.join(candidates)}) is on PATH: "
            "load one with C++20 (g++ >= 10 or clang >= 10, e.g. `module load gcc/12`), then run make setup",
        )
    ]


# -- 3 and 4. Slurm: partitions, GPU types, accounts ---------------------------------------------


@dataclass
class Partition:
    name: str
    default: bool = False
    gres: list[str] = field(default_factory=list)  # as sinfo lists them, one per node group
    gpus: dict[str | None, int] = field(default_factory=dict)  # GPU type (None: untyped) -> most on one node


def parse_gres(text: str) -> dict[str | None, int]:
    """GPUs of one sinfo GRES field, e.g. ``gpu:a100:8(S:0-1),shard:4`` -> {"a100": 8}; ``(null)`` -> {}."""
    gpus: dict[str | None, int] = {}
    for entry in re.split(r",(?![^()]*\))", text.strip()):
        entry = re.sub(r"\(.*\)$", "", entry.strip())
        parts = entry.split(":")
        if parts[0] != "gpu" or len(parts) < 2:
            continue
        count = re.match(r"\d+", parts[-1])
        if not count:
            continue
        kind = parts[1] if len(parts) >= 3 else None
        gpus[kind] = max(gpus.get(kind, 0), int(count.group(0)))
    return gpus


def parse_sinfo(text: str) -> dict[str, Partition]:
    """Partitions from ``sinfo -h -o "%P|%G"`` (or ``-o %P``): the default one has a trailing ``*``."""
    partitions: dict[str, Partition] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        name, _, gres = line.strip().partition("|")
        default = name.endswith("*")
        name = name.rstrip("*")
        part = partitions.setdefault(name, Partition(name))
        part.default = part.default or default
        if gres:
            part.gres.append(gres)
            for kind, count in parse_gres(gres).items():
                part.gpus[kind] = max(part.gpus.get(kind, 0), count)
    return partitions


def listing(partitions: Mapping[str, Partition]) -> str:
    return ", ".join(p.name + ("*" if p.default else "") for p in partitions.values()) or "none"


def parse_sacctmgr(text: str) -> dict[str, set[str]]:
    """{account: its QoS} from ``sacctmgr -n -P show assoc user=U format=account,qos``."""
    accounts: dict[str, set[str]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        account, _, qos = line.strip().partition("|")
        accounts.setdefault(account, set()).update(q for q in qos.split(",") if q)
    return accounts


class SlurmView:
    """sinfo's and sacctmgr's answers, asked once per preflight."""

    def __init__(self, site: Site):
        self.site = site

    @cached_property
    def sinfo(self) -> ToolResult:
        return self.site.tool("sinfo", "-h", "-o", "%P|%G")

    @cached_property
    def partitions(self) -> dict[str, Partition] | None:
        return parse_sinfo(self.sinfo.stdout) if self.sinfo.ok else None

    def default_partition(self) -> str | None:
        return next((p.name for p in (self.partitions or {}).values() if p.default), None)

    def partition_of(self, key: str) -> tuple[str | None, str]:
        """The partition a setting (gpu_partition / cpu_partition) sends jobs to, and its source."""
        value, source = self.site.setting(key)
        if value:
            return value, source
        return self.default_partition(), "the site's default partition"


def check_partitions(site: Site, slurm: SlurmView) -> list[Finding]:
    check = "partition"
    if slurm.partitions is None:
        return [
            Finding(PROBLEM, check, f"cannot list partitions: {slurm.sinfo.why()}; run preflight on the login node")
        ]
    used = {"cpu_partition": "CPU jobs (prepare, synth, pretrain, convert, tables)"}
    if site.gpu_kinds():
        used["gpu_partition"] = "GPU jobs (" + ", ".join(site.gpu_kinds()) + ")"
    findings = []
    for key, jobs in used.items():
        value, source = site.setting(key)
        if value is None:
            default = slurm.default_partition()
            if default is None:
                findings.append(
                    Finding(
                        PROBLEM,
                        check,
                        f"{site.unset_names(key)}: unset, and the site has no default partition "
                        f"(sinfo lists {listing(slurm.partitions)}): set it",
                    )
                )
            else:
                findings.append(Finding(OK, check, f"{jobs} go to the default partition {default} ({key} unset)"))
        elif value not in slurm.partitions:
            findings.append(
                Finding(
                    PROBLEM, check, f"{source}: {value!r} is not a partition (sinfo lists {listing(slurm.partitions)})"
                )
            )
        else:
            findings.append(Finding(OK, check, f"{jobs} go to partition {value} ({source})"))
    return findings


def check_gpu_types(site: Site, slurm: SlurmView) -> list[Finding]:
    """compute.<kind>.gpu_model and gpus (per node) against the GRES of the GPU partition."""
    check = "gpus"
    kinds = site.gpu_kinds()
    if not kinds:
        return [Finding(OK, check, "no job asks for GPUs (compute.train.gpus and compute.evaluate.gpus are 0)")]
    if slurm.partitions is None:
        return []  # the partition check says why
    name, source = slurm.partition_of("gpu_partition")
    if name is None or name not in slurm.partitions:
        return [Finding(NOTE, check, "GPU types not checked: the GPU partition is unknown (see partition above)")]
    part = slurm.partitions[name]
    return [_gpu_kind_finding(site, kind, part, name, source) for kind in kinds]


def _gpu_kind_finding(site: Site, kind: str, part: Partition, name: str, source: str) -> Finding:
    """Whether compute.<kind>'s GPU model and GPUs per node fit the nodes of GPU partition ``name``."""
    check = "gpus"
    gres_listed = ", ".join(dict.fromkeys(part.gres)) or "(null)"
    entry = site.compute[kind]
    model, wanted = entry.get("gpu_model"), entry["gpus"]
    if not part.gpus:
        return Finding(
            PROBLEM,
            check,
            f"compute.{kind}.gpus: {plural(wanted, 'GPU')} per node, but partition {name} ({source}) has "
            f"no GPUs (sinfo lists GRES {gres_listed}); set {site.unset_names('gpu_partition')} to a GPU "
            "partition",
        )
    if model is not None and model not in part.gpus:
        types = ", ".join(sorted(str(t) for t in part.gpus if t)) or "untyped GPUs only"
        return Finding(
            PROBLEM,
            check,
            f"compute.{kind}.gpu_model: {model!r} is not a GPU type of partition {name} (sinfo lists {types})",
        )
    most = part.gpus[model] if model is not None else max(part.gpus.values())
    if wanted > most:
        of = f" {model}" if model else ""
        return Finding(
            PROBLEM,
            check,
            f"compute.{kind}.gpus: {wanted} per node, but partition {name}'s nodes have at most "
            f"{most}{of} GPUs (sinfo lists {gres_listed}); lower it (and raise compute.{kind}.nodes for "
            "training)",
        )
    gres = f"gpu:{model}:{wanted}" if model else f"gpu:{wanted}"
    return Finding(OK, check, f"compute.{kind}: {gres} fits partition {name} (nodes with {most})")


def check_accounts(site: Site, slurm: SlurmView) -> list[Finding]:
    check = "account"
    user = site.environ.get("USER") or getpass.getuser()
    result = site.tool("sacctmgr", "-n", "-P", "show", "assoc", f"user={user}", "format=account,qos")
    account, account_source = site.setting("account")
    qos, qos_source = site.setting("qos")
    if result.missing:
        return [Finding(NOTE, check, "cannot check accounts and QoS: no sacctmgr on PATH")]
    if not result.ok:
        return [Finding(NOTE, check, f"cannot check accounts (no Slurm accounting): {result.why()}")]
    accounts = parse_sacctmgr(result.stdout)
    names = ", ".join(sorted(accounts)) or "none"
    findings = []
    if account is None:
        findings.append(
            Finding(OK, check, f"account unset: jobs use {user}'s default account (sacctmgr lists {names})")
        )
    elif account not in accounts:
        findings.append(Finding(PROBLEM, check, f"{account_source}: {account!r} is not an account of {user} ({names})"))
    else:
        findings.append(Finding(OK, check, f"account {account} ({account_source})"))
    if qos is not None:
        pool = accounts.get(account, set()) if account in accounts else set().union(*accounts.values())
        whose = f"account {account}" if account in accounts else user
        if qos not in pool:
            allowed = ", ".join(sorted(pool)) or "none"
            findings.append(
                Finding(PROBLEM, "qos", f"{qos_source}: QoS {qos!r} is not allowed for {whose} ({allowed})")
            )
        else:
            findings.append(Finding(OK, "qos", f"QoS {qos} ({qos_source})"))
    return findings


# -- 5. disk for the datasets --------------------------------------------------------------------


@dataclass(frozen=True)
class KnownSize:
    files: tuple[str, ...]  # download file names that identify the published dataset
    download_gb: float
    prepared_gb: float
    source: str


# Sizes of the published datasets paper.yaml downloads (GB = 1e9 bytes), used where the config
# declares none. The schema has no per-dataset size field: a `download.files[].size` (bytes) entry
# raises an estimate, never lowers it (a list file is small, the tarballs it lists are not).
KNOWN_DATASET_SIZES = {
    "coco": KnownSize(
        ("train2017.zip", "val2017.zip", "test2017.zip", "annotations_trainval2017.zip"),
        27.0,
        27.0,
        "cocodataset.org: train 19.3 GB, val 0.8 GB, test 6.6 GB, annotations 0.25 GB; extracted JPEGs about as large",
    ),
    "ade": KnownSize(
        ("ADEChallengeData2016.zip",), 1.0, 1.0, "ADEChallengeData2016.zip 0.92 GB; extracted about as large"
    ),
    "kinetics": KnownSize(
        ("k400_train_path.txt", "k400_val_path.txt"),
        450.0,
        97.0,
        "the CVDF tarballs about 450 GB; clips re-encoded at short side 320 about 95 GB plus one extracted "
        "tarball (docs/datasets.md)",
    ),
}


def dataset_needs(name: str, entry: dict[str, Any]) -> tuple[float, float, str] | None:
    """(download GB, prepared GB, where the numbers come from) of a downloaded dataset, None if unknown."""
    files = entry["download"]["files"]
    declared = sum(f.get("size", 0) for f in files) / 1e9
    filenames = {f["filename"] for f in files}
    known = KNOWN_DATASET_SIZES.get(entry["format"])
    if known and filenames & set(known.files):
        return max(known.download_gb, declared), known.prepared_gb, known.source
    if declared and all("size" in f for f in files) and not any(f.get("url_list") for f in files):
        return declared, declared, "the config's download sizes"
    return None


def existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(site: Site) -> list[Finding]:
    """Free disk where the downloads and prepared datasets go against what the datasets still need."""
    check = "disk"
    datasets = {k: v for k, v in site.config["datasets"].items() if v["source"] == "download"}
    if not datasets:
        return [Finding(OK, check, "the config downloads no dataset")]
    findings: list[Finding] = []
    needs = _disk_needs(site, datasets, findings)
    findings += [_free_space_finding(slot) for slot in needs.values()]
    if not needs and not findings:
        findings.append(Finding(OK, check, "every downloaded dataset is already prepared"))
    return findings


def _disk_needs(site: Site, datasets: dict[str, Any], findings: list[Finding]) -> dict[int, dict[str, Any]]:
    """By filesystem, the GB the datasets not yet downloaded or prepared need there; a note per size unknown."""
    downloads, data = site.path("downloads"), site.path("data")
    # filesystem -> [(paths key, folder)], [(what, GB)]
    needs: dict[int, dict[str, Any]] = {}

    def need(key: str, folder: Path, what: str, gb: float) -> None:
        where = existing_ancestor(folder)
        slot = needs.setdefault(os.stat(where).st_dev, {"keys": {}, "where": where, "items": []})
        slot["keys"][f"paths.{key}"] = folder
        slot["items"].append((what, gb))

    for name, entry in sorted(datasets.items()):
        sizes = dataset_needs(name, entry)
        if sizes is None:
            findings.append(
                Finding(
                    NOTE,
                    "disk",
                    f"datasets.{name}: size unknown (give each download file a size in bytes): not counted",
                )
            )
            continue
        download_gb, prepared_gb, _ = sizes
        if not (downloads / f"{name}.verified.json").exists():
            need("downloads", downloads, f"{name} download {download_gb:.0f} GB", download_gb)
        if not (data / name / "frozenbench_dataset.json").exists():
            need("data", data, f"{name} prepared {prepared_gb:.0f} GB", prepared_gb)
    return needs


def _free_space_finding(slot: dict[str, Any]) -> Finding:
    """Whether one filesystem's free space holds what the datasets need on it."""
    total = sum(gb for _, gb in slot["items"])
    usage = shutil.disk_usage(slot["where"])
    free = usage.free / 1e9
    keys = " and ".join(f"{key} ({folder})" for key, folder in slot["keys"].items())
    items = ", ".join(what for what, _ in slot["items"])
    if free < total:
        return Finding(
            PROBLEM,
            "disk",
            f"{keys}: {free:.0f} GB free on {slot['where']}, the datasets need about {total:.0f} GB "
            f"({items}); free space or point {' / '.join(slot['keys'])} at a larger filesystem (listed in "
            "paths.allowed_roots)",
        )
    return Finding(OK, "disk", f"{keys}: {free:.0f} GB free, about {total:.0f} GB needed ({items})")


# -- 6. checkpoints that need a manual step ------------------------------------------------------


def check_checkpoints(site: Site) -> list[Finding]:
    check = "checkpoint"
    findings = []
    downloaded = 0
    for name, entry in sorted(site.config.get("backbones", {}).items()):
        ckpt = entry.get("checkpoint")
        if not ckpt:
            continue
        converted = site.path("checkpoints") / f"{name}.pth"
        if "manual_download" in ckpt:
            target = site.path("downloads") / "checkpoints" / name / ckpt["filename"]
            shown = os.path.relpath(target, site.workdir)
            if target.exists() or converted.exists():
                findings.append(Finding(OK, check, f"backbones.{name}: fetched by hand, present ({shown})"))
            else:
                findings.append(
                    Finding(
                        PROBLEM,
                        check,
                        f"backbones.{name}.checkpoint needs a manual download ({ckpt['manual_download']}): open "
                        f"{ckpt['url']} in a browser, then `mkdir -p {shlex.quote(os.path.dirname(shown))} && mv "
                        f"{shlex.quote(ckpt['filename'])} {shlex.quote(shown)}` (its sha256 is recorded on first use)",
                    )
                )
        elif "file" in ckpt:
            if (site.workdir / ckpt["file"]).exists():
                findings.append(Finding(OK, check, f"backbones.{name}: local file {ckpt['file']} present"))
            else:
                findings.append(
                    Finding(PROBLEM, check, f"backbones.{name}.checkpoint.file: {ckpt['file']!r} does not exist")
                )
        elif "hub" in ckpt:
            from frozenbench.checkpoint.hub import cached_file
            from frozenbench.errors import UserError

            try:
                found = cached_file(ckpt["hub"], ckpt["filename"], ckpt.get("revision"))
                findings.append(Finding(OK, check, f"backbones.{name}: hub cache has it ({found})"))
            except UserError as err:
                findings.append(Finding(PROBLEM, check, f"backbones.{name}.checkpoint: {err}"))
        elif "url" in ckpt:
            downloaded += 1
    if downloaded:
        where = "on the login node" if site.config.get("slurm", {}).get("downloads_on_login_node", True) else "as jobs"
        findings.append(
            Finding(OK, check, f"{downloaded} checkpoints download by themselves (fetch_checkpoint, {where})")
        )
    if not findings:
        findings.append(Finding(OK, check, "no published checkpoint to fetch"))
    return findings


# -- 7. the dry run ------------------------------------------------------------------------------

# A dry run without --cores runs as on one core: Snakemake caps every rule's threads at 1 and prints
# no `threads:` line, so an 8-GPU training job would read as 1 CPU (measured with Snakemake 9.27:
# `--cores all` caps them at this machine's CPUs). A real Slurm run has no such cap; this many cores
# lets the dry run print each job's real threads.
DRY_RUN_CORES = 1_000_000


@dataclass
class DryRunJob:
    rule: str
    threads: int = 1
    resources: dict[str, str] = field(default_factory=dict)
    runs_command: bool = True

    @property
    def nodes(self) -> int:
        return int(self.resources.get("nodes", 1))

    @property
    def gpus_per_node(self) -> int:
        gres = self.resources.get("gres", "")
        return sum(parse_gres(gres).values()) if gres else 0


RULE_HEADER = re.compile(r"^(?:local)?(?:rule|checkpoint) (\S+):\s*$")
RESOURCE = re.compile(r"(\w+)=(.*?)(?=, \w+=|$)")


def dry_run_command(site: Site, target: str) -> list[str]:
    snakemake = Path(sys.executable).with_name("snakemake")
    exe = str(snakemake) if snakemake.exists() else "snakemake"
    # the target before --configfile, which takes every following word as a config file
    command = [exe, target, "--configfile", str(site.config_path)]
    if site.profile is not None:
        command += ["--profile", str(site.profile)]
    return command + ["-n", "--cores", str(DRY_RUN_CORES)]


def parse_dry_run(text: str) -> list[DryRunJob]:
    """Every job of ``snakemake -n`` output: its rule, threads and resources."""
    jobs: list[DryRunJob] = []
    job: DryRunJob | None = None
    for line in text.splitlines():
        header = RULE_HEADER.match(line)
        if header:
            job = DryRunJob(header.group(1))
            jobs.append(job)
            continue
        if job is None:
            continue
        stripped = line.strip()
        if not stripped:
            job = None
        elif stripped.startswith("threads:"):
            job.threads = int(stripped.split(":", 1)[1])
        elif stripped.startswith("resources:"):
            job.resources = {k: v.strip() for k, v in RESOURCE.findall(stripped.split(":", 1)[1].strip())}
        elif stripped == "Shell command: None":
            job.runs_command = False
    return jobs


def summarize_dry_run(jobs: list[DryRunJob], login_rules: Iterable[str] = (), slurm: bool = True) -> list[str]:
    """One line per rule (and per distinct request within a rule): jobs, CPUs and GPUs each gets
    (and, for a Slurm run, the partition)."""
    login_rules = set(login_rules)
    shapes: Counter[tuple] = Counter()
    for job in jobs:
        if not job.runs_command:
            continue
        r = job.resources
        shapes[
            (
                job.rule,
                job.threads,
                job.nodes,
                job.gpus_per_node,
                r.get("gres"),
                r.get("slurm_partition"),
                r.get("mem_mb"),
                r.get("runtime"),
            )
        ] += 1
    lines = []
    for (rule, threads, nodes, gpus, gres, partition, mem_mb, runtime), count in shapes.items():
        if rule in login_rules:
            lines.append(
                f"{rule}: {plural(count, 'job')} on the login node (local rule), {plural(threads, 'CPU')} each"
            )
            continue
        each = plural(threads * nodes, "CPU")
        if gpus:
            each += f" and {plural(gpus * nodes, 'GPU')} (gres {gres})"
        if nodes > 1:
            each += f" on {nodes} nodes ({plural(threads, 'CPU')} and {plural(gpus, 'GPU')} on each)"
        where = (f", partition {partition}" if partition else ", the default partition") if slurm else ""
        extra = ""
        if mem_mb:
            extra += f", {int(mem_mb) / 1000:g} GB"
        if runtime:
            extra += f", {runtime} min"
        lines.append(f"{rule}: {plural(count, 'job')}, each {each}{where}{extra}")
    return lines


def check_dry_run(site: Site, target: str = "all_tables") -> list[Finding]:
    check = "dry-run"
    command = dry_run_command(site, target)
    shown = " ".join(shlex.quote(part) for part in command)
    if not (site.workdir / "Snakefile").exists():
        return [Finding(PROBLEM, check, f"no Snakefile in {site.workdir}: run preflight in the project folder")]
    result = run_tool(command, DRY_RUN_TIMEOUT, env=site.environ, cwd=site.workdir)
    if not result.ok:
        said = [line.strip() for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        error = next((i for i, line in enumerate(said) if "Error" in line or "error:" in line), None)
        why = " ".join(said[error : error + 3]) if error is not None else (result.why() if not said else said[-1])
        return [Finding(PROBLEM, check, f"`{shown}` failed: {why}")]
    jobs = parse_dry_run(result.stdout + result.stderr)
    downloads_local = site.config.get("slurm", {}).get("downloads_on_login_node", True)
    login_rules = LOGIN_NODE_RULES if downloads_local and site.submits_to_slurm() else ()
    lines = summarize_dry_run(jobs, login_rules, slurm=site.submits_to_slurm())
    if not lines:
        return [Finding(OK, check, f"{target}: nothing to do (every output is up to date)")]
    runs = [job for job in jobs if job.runs_command]
    local = sum(job.rule in login_rules for job in runs)
    where = f" ({len(runs) - local} through sbatch, {local} on the login node)" if local else ""
    head = Finding(OK, check, f"{target}: {plural(len(runs), 'job')}{where}: `{shown}`")
    return [head] + [Finding(OK, check, line) for line in lines]


# -- the node checks (inside the job --on-node submits) ------------------------------------------


def _allreduce_worker(rank: int, world: int, init_file: str, backend: str) -> None:
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    from frozenbench.engine.device import gpu_device

    device = gpu_device(rank) if backend == "nccl" else torch.device("cpu")
    dist.init_process_group(
        backend, init_method=f"file://{init_file}", rank=rank, world_size=world, timeout=timedelta(seconds=60)
    )
    try:
        value = torch.full((1,), float(rank + 1), device=device)
        dist.all_reduce(value)
        expected = world * (world + 1) / 2
        if value.item() != expected:
            raise RuntimeError(f"rank {rank}: all-reduce gave {value.item()}, expected {expected}")
    finally:
        dist.destroy_process_group()


def nccl_allreduce(world: int, backend: str = "nccl") -> None:
    """An all-reduce over ``world`` GPUs (NCCL), one process per GPU; raises if it fails or sums
    wrong. ``backend="gloo"`` runs the same on CPU processes (tests)."""
    import tempfile

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="frozenbench-allreduce-") as folder:
        rendezvous = os.path.join(folder, "rendezvous")
        mp.spawn(_allreduce_worker, args=(world, rendezvous, backend), nprocs=world, join=True)


def visible_gpus() -> list[str]:
    """The names of the GPUs torch sees here (none without CUDA)."""
    from frozenbench.engine.device import gpu_names

    return gpu_names()


def run_routed_ops() -> dict[str, list[int]]:
    """mmcv's routed ops forward and backward on CUDA (setup's import check, on the GPU)."""
    from frozenbench.openmmlab.ops import check_ops

    return check_ops("cuda")


def last_line(text: str) -> str:
    return next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "")


def check_data_paths(site: Site) -> list[Finding]:
    check = "paths"
    findings = []
    for key in ("data", "downloads", "checkpoints"):
        folder = site.path(key)
        shown = os.path.relpath(folder, site.workdir)
        if folder.is_symlink() and not folder.exists():
            findings.append(
                Finding(PROBLEM, check, f"paths.{key}: {shown} -> {os.readlink(folder)} is not reachable on this node")
            )
        elif not folder.exists():
            findings.append(Finding(NOTE, check, f"paths.{key}: {shown} does not exist yet (the first job creates it)"))
        else:
            try:
                os.listdir(folder)
                findings.append(Finding(OK, check, f"paths.{key}: {shown} readable"))
            except OSError as err:
                findings.append(Finding(PROBLEM, check, f"paths.{key}: {shown} is not readable here: {err.strerror}"))
    return findings


def node_checks(site: Site, kinds: Iterable[str]) -> Iterator[Finding]:
    """What a job on a compute node checks: CUDA and the GPU count, the driver, mmcv's routed ops on
    CUDA, an NCCL all-reduce over the job's GPUs, the data paths. Without a GPU the GPU checks are
    problems only where the config needs one (device cuda or gpus > 0), notes otherwise."""
    kinds = [k for k in kinds if k in site.compute]
    host = socket.gethostname()
    job = site.environ.get("SLURM_JOB_ID", "-")
    partition = site.environ.get("SLURM_JOB_PARTITION", "-")
    yield Finding(NOTE, "node", f"{host} (job {job}, partition {partition}) for {', '.join(kinds)} jobs")
    needed = cuda_devices_required(site, [k for k in kinds if k != "prepare"])
    expected = max((site.compute[k]["gpus"] for k in kinds), default=0)
    try:
        gpus = visible_gpus()
    except Exception as err:
        yield Finding(PROBLEM, "cuda", f"torch cannot be imported on {host} ({type(err).__name__}: {err})")
        yield from check_data_paths(site)
        return
    count = len(gpus)
    if count == 0:
        if needed:
            yield Finding(
                PROBLEM,
                "gpu",
                f"no GPU: torch sees no CUDA device on {host}, but {', '.join(needed)}; send these jobs to a GPU "
                f"partition ({site.unset_names('gpu_partition')}) and set compute.<kind>.gpus",
            )
        else:
            devices = ", ".join(f"compute.{k}.device is {site.compute[k]['device']}" for k in kinds if k != "prepare")
            yield Finding(NOTE, "gpu", f"no GPU on {host}: jobs here run on the CPU ({devices or 'they need none'})")
        yield from check_data_paths(site)
        return
    names = ", ".join(sorted(set(gpus)))
    if expected and count != expected:
        yield Finding(
            PROBLEM,
            "gpu",
            f"{count} GPUs ({names}) visible on {host}, but the job asked for {expected} per node "
            f"(compute.*.gpus); CUDA_VISIBLE_DEVICES={site.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}",
        )
    else:
        yield Finding(OK, "gpu", f"{plural(count, 'GPU')} visible on {host} ({names})")
    yield from check_cuda_driver(site, on_node=True, kinds=[k for k in kinds if k != "prepare"])
    yield from _gpu_work_checks(count)
    yield from check_data_paths(site)


def _gpu_work_checks(count: int) -> Iterator[Finding]:
    """mmcv's routed ops on CUDA and an NCCL all-reduce over the ``count`` visible GPUs."""
    try:
        shapes = run_routed_ops()
        yield Finding(OK, "ops", f"mmcv's routed ops ran forward and backward on CUDA ({', '.join(shapes)})")
    except Exception as err:
        said = last_line(str(err)) or type(err).__name__
        yield Finding(PROBLEM, "ops", f"mmcv's routed ops failed on CUDA ({said}); run make setup on this node type")
    try:
        nccl_allreduce(count)
        yield Finding(OK, "nccl", f"all-reduce over {plural(count, 'GPU')} (one process each) gave the right sum")
    except Exception as err:
        said = last_line(str(err)) or type(err).__name__
        yield Finding(
            PROBLEM, "nccl", f"all-reduce over {plural(count, 'GPU')} failed: {said} (rerun with NCCL_DEBUG=INFO)"
        )


# -- --on-node: one short job per partition the study uses ----------------------------------------

NODE_JOB_MINUTES = 2


@dataclass
class NodeJob:
    partition: str | None  # None: the site's default
    gres: str | None
    gpus: int
    kinds: list[str]


def node_jobs(site: Site) -> list[NodeJob]:
    """One job per partition the study's jobs go to, asking for the most GPUs any of them asks for."""
    jobs: dict[str | None, NodeJob] = {}
    for kind in JOB_KINDS:
        entry = site.compute[kind]
        key = "gpu_partition" if entry["gpus"] else "cpu_partition"
        partition, _ = site.setting(key)
        job = jobs.setdefault(partition, NodeJob(partition, None, 0, []))
        job.kinds.append(kind)
        if entry["gpus"] > job.gpus:
            job.gpus = entry["gpus"]
            model = entry.get("gpu_model")
            job.gres = f"gpu:{model}:{entry['gpus']}" if model else f"gpu:{entry['gpus']}"
    return list(jobs.values())


def frozenbench_executable() -> str:
    beside = Path(sys.executable).with_name("frozenbench")
    return str(beside) if beside.exists() else "frozenbench"


def _node_script(site: Site, job: NodeJob, folder: Path) -> Path:
    """The batch script that runs ``frozenbench preflight --node-checks`` for ``job``'s kinds."""
    config = site.config_path if site.config_path.is_absolute() else site.workdir / site.config_path
    script = folder / f"node-checks-{job.partition or 'default'}.sh"
    script.write_text(
        "#!/bin/bash\n"
        f"exec {shlex.quote(frozenbench_executable())} preflight --node-checks --config {shlex.quote(str(config))}"
        f" --kinds {','.join(job.kinds)}\n"
    )
    return script


def _sbatch_command(site: Site, job: NodeJob, name: str, output: Path) -> list[str]:
    """``sbatch --wait`` for one node of ``job.partition`` (the site's account and QOS, if set)."""
    command = [
        "sbatch",
        "--wait",
        "--parsable",
        f"--job-name={name}",
        f"--time={NODE_JOB_MINUTES}",
        "--nodes=1",
        "--ntasks=1",
        f"--cpus-per-task={max(1, job.gpus)}",
        f"--mem={4000 * max(1, job.gpus)}M",
        f"--output={output}",
        f"--chdir={site.workdir}",
    ]
    if job.partition:
        command.append(f"--partition={job.partition}")
    if job.gres:
        command.append(f"--gres={job.gres}")
    for key, option in (("account", "--account"), ("qos", "--qos")):
        value, _ = site.setting(key)
        if value:
            command.append(f"{option}={value}")
    return command


def _job_findings(check: str, shown_partition: str, job_id: str, out: Path, returncode: int) -> list[Finding]:
    """The lines the finished job ``job_id`` wrote to ``out``, or why there are none."""
    for _ in range(30):  # a shared filesystem may show the job's output a little later
        if out.exists():
            break
        time.sleep(1)
    text = out.read_text(errors="replace") if out.exists() else ""
    found = [f for f in (parse_line(line) for line in text.splitlines()) if f]
    if not found:
        tail = " | ".join(text.strip().splitlines()[-3:]) or "no output"
        return [
            Finding(
                PROBLEM,
                check,
                f"job {job_id} on partition {shown_partition} reported no checks (exit {returncode}; {out}: {tail})",
            )
        ]
    findings = [Finding(f.level, check, f"{f.check}: {f.message}") for f in found]
    # exit 1 with a PROBLEM line is the checks' own verdict; any other failure (a crash, the time
    # limit) is one more problem
    if returncode != 0 and not any(f.level == PROBLEM for f in found):
        findings.append(
            Finding(
                PROBLEM,
                check,
                f"job {job_id} ended with exit {returncode} before finishing its checks (time limit "
                f"{NODE_JOB_MINUTES} min?); see {out}",
            )
        )
    return findings


def run_on_node(site: Site, job: NodeJob, wait_seconds: float) -> list[Finding]:
    """Submit the node checks to ``job.partition`` with ``sbatch --wait`` and return their lines."""
    shown_partition = job.partition or "(default)"
    check = f"node:{job.partition or 'default'}"
    folder = site.path("logs") / "preflight"
    folder.mkdir(parents=True, exist_ok=True)
    script = _node_script(site, job, folder)
    name = f"frozenbench-preflight-{uuid.uuid4().hex[:8]}"
    output = folder / f"{job.partition or 'default'}-%j.out"
    command = _sbatch_command(site, job, name, output)
    result = site.tool(*command, str(script), timeout=wait_seconds)
    if result.missing:
        return [Finding(NOTE, check, "no sbatch on PATH: the node checks cannot be submitted from here")]
    if result.timed_out:
        site.tool("scancel", f"--name={name}")
        return [
            Finding(
                PROBLEM,
                check,
                f"the node-check job on partition {shown_partition} did not finish within {wait_seconds:.0f} s "
                "(queued or hung; cancelled): rerun with a longer --node-timeout",
            )
        ]
    job_id = first_line(result.stdout).split(";")[0]
    if not job_id.isdigit():
        return [
            Finding(
                PROBLEM,
                check,
                f"sbatch refused the node-check job for partition {shown_partition} ({' '.join(command[5:])}): "
                f"{result.why() if not result.ok else first_line(result.stdout)}",
            )
        ]
    out = Path(str(output).replace("%j", job_id))
    return _job_findings(check, shown_partition, job_id, out, result.returncode)


# -- the whole preflight -------------------------------------------------------------------------


def login_checks(
    site: Site, target: str = "all_tables", on_node: bool = False, wait_seconds: float = 900
) -> Iterator[Finding]:
    """Every login-node check in order, then (``on_node``) the node checks of each partition."""
    yield from check_cuda_driver(site)
    yield from check_compiler(site)
    if site.profile is not None and not site.profile_settings:
        yield Finding(PROBLEM, "profile", f"--profile {site.profile}: no config.yaml there")
    elif site.submits_to_slurm():
        slurm = SlurmView(site)
        yield from check_partitions(site, slurm)
        yield from check_gpu_types(site, slurm)
        yield from check_accounts(site, slurm)
    else:
        executor = site.profile_settings.get("executor", "local")
        yield Finding(NOTE, "slurm", f"profile {site.profile} runs jobs with executor {executor!r}: Slurm not checked")
    yield from check_disk(site)
    yield from check_checkpoints(site)
    yield from check_dry_run(site, target)
    if on_node:
        for job in node_jobs(site):
            yield from run_on_node(site, job, wait_seconds)
