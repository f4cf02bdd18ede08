"""The whole DAG on configs/ci.yaml: all tables, figures and the report from nothing, a snakemake run
killed mid-DAG finishes with --rerun-incomplete, and nothing half-written is left anywhere."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import VENV_BIN, run_cmd

pytestmark = [pytest.mark.slow, pytest.mark.openmmlab]

CI = ["--configfile", "configs/ci.yaml"]


def use_ci_config(workflow: Path, drop_backbone: str | None = None) -> None:
    """DVC and `make` read config.yaml: make the small config the default of this copy, less
    ``drop_backbone`` and its cells where given."""
    import yaml

    config = yaml.safe_load((workflow / "configs" / "ci.yaml").read_text())
    if drop_backbone:
        del config["backbones"][drop_backbone]
        config["study"]["cells"] = [c for c in config["study"]["cells"] if drop_backbone not in c["backbones"]]
    (workflow / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def torch_load(path: Path) -> dict:
    import torch

    return torch.load(path, weights_only=True, map_location="cpu")


def leftovers(root: Path, hidden_ok: bool = False) -> list[str]:
    """Temporary siblings of the atomic writers under the outputs (``hidden_ok``: allow them,
    but nothing else that failed to parse), and outputs that are not whole: every metrics
    json must parse, every checkpoint must load."""
    import torch

    bad = []
    for d in ("data", "checkpoints", "runs", "results", "tables"):
        if not (root / d).exists():
            continue
        for p in (root / d).rglob("*"):
            if ".tmp-" in p.name:
                if not hidden_ok:
                    bad.append(str(p))
                continue
            if any(".tmp-" in part for part in p.parts):
                continue
            if p.suffix == ".json" and p.is_file():
                try:
                    json.loads(p.read_text())
                except json.JSONDecodeError:
                    bad.append(str(p))
            if p.suffix in (".pth", ".pt") and p.is_file():
                try:
                    torch.load(p, weights_only=True, map_location="cpu")
                except Exception:  # noqa: BLE001 - any failure means a broken artifact
                    bad.append(str(p))
    return bad


def test_killed_dag_reruns_incomplete_and_writes_every_table(workflow_copy):
    env = {"OMP_NUM_THREADS": "1"}
    cmd = [str(VENV_BIN / "snakemake"), "--cores", "2", "all_tables", *CI]
    full_env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", **env}
    proc = subprocess.Popen(
        cmd,
        cwd=workflow_copy,
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    # kill the whole job tree (as a lost node would) once head training has started
    deadline = time.time() + 600
    while time.time() < deadline and not list((workflow_copy / "runs").glob("*/*/*/*/seed*/log.jsonl")):
        assert proc.poll() is None, "snakemake ended before training started"
        time.sleep(1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # nothing the killed jobs were writing exists under its real name: no half-written artifact
    assert leftovers(workflow_copy, hidden_ok=True) == []
    # a plain rerun refuses: the dead run's lock, or the outputs it left marked incomplete
    # (whichever snakemake checks first depends on where the kill landed)
    refused = run_cmd(cmd, cwd=workflow_copy, env=env, timeout=600)
    said = refused.stdout + refused.stderr
    assert refused.returncode != 0 and ("--unlock" in said or "--rerun-incomplete" in said)
    # the recovery a user runs: release the lock, then rerun what was incomplete
    run_cmd([*cmd, "--unlock"], cwd=workflow_copy, env=env, check=True, timeout=600)
    run_cmd([*cmd, "--rerun-incomplete"], cwd=workflow_copy, env=env, check=True, timeout=1800)

    tables = workflow_copy / "tables"
    for name in ("pretraining", "head_capacity", "model_size", "paper"):
        for ext in ("md", "tex", "csv"):
            assert (tables / f"{name}.{ext}").stat().st_size > 0
    for name in ("gap_vs_size", "pretraining_scores", "training_curves"):
        assert (tables / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert "data:image/png;base64," in (tables / "report.html").read_text()
    summary = json.loads((tables / "summary.json").read_text())
    assert len(summary) == 9  # every cell of configs/ci.yaml
    # the ViT-S/14 added by one config entry in DINOv2's layout: converted, and a frozen cell on
    # every task, in the summary and in the tables
    vit = [cell for cell in summary if "dinov2_vits14_random" in json.dumps(cell)]
    assert len(vit) == 3, vit
    converted = torch_load(workflow_copy / "checkpoints/dinov2_vits14_random.pth")
    assert converted["arch"] == "vit_small_patch14_dinov2" and converted["meta"]["source_layout"] == "dinov2"
    assert "mask_token" not in converted["state_dict"]
    for task, task_type, primary in (
        ("ade", "segmentation", "mIoU"),
        ("coco", "detection", "box AP"),
        ("k400", "video", "top-1"),
    ):
        metrics = json.loads(
            (workflow_copy / f"results/{task}/dinov2_vits14_random/frozen")
            .glob("*/seed0/metrics.json")
            .__next__()
            .read_text()
        )
        assert metrics["arch"] == "vit_small_patch14_dinov2", metrics
        # every metrics.json says what kind of task it scored and its primary metric
        assert metrics["task_type"] == task_type and metrics["primary_metric"]["name"] == primary
    assert "dinov2_vits14_random" in (tables / "model_size.md").read_text()
    gap = json.loads(
        (workflow_copy / "results/ade/convstem_swin_tiny_supervised/finetune/m2f_b4/seed0/metrics.json").read_text()
    )
    assert gap["mode"] == "finetune" and gap["train_curve"]
    assert (
        workflow_copy
        / "results/coco/convstem_swin_tiny_supervised/frozen/mrcnn_fpn/seed0"
        / "detections_test-dev2017_frozenbench_results.zip"
    ).exists()
    assert leftovers(workflow_copy) == []
    again = run_cmd([str(VENV_BIN / "snakemake"), "-n", "all_tables", *CI], cwd=workflow_copy, check=True)
    assert "Nothing to be done" in again.stdout + again.stderr
    # snakemake's own report carries the tables and figures
    run_cmd([str(VENV_BIN / "snakemake"), "--report", "report.html", *CI], cwd=workflow_copy, check=True)
    page = (workflow_copy / "report.html").read_text(errors="replace")
    assert "gap_vs_size.png" in page and "pretraining.csv" in page and "training_curves.png" in page


def _sha256_tree(root: Path, folders: list[str]) -> dict[str, str]:
    import hashlib

    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for folder in folders
        for p in sorted((root / folder).rglob("*"))
        if p.is_file()
    }


def test_two_fresh_clones_share_the_study_through_dvc_push_and_pull(tmp_path):
    """As users run it: clone A runs `dvc repro` (a second one does nothing), commits dvc.lock and
    pushes to a local remote; clone B of A pulls and `dvc repro` runs nothing; every pulled file has
    A's sha256. `dvc metrics show` prints the headline numbers."""
    repo = Path(__file__).parents[1]
    env = {
        "OMP_NUM_THREADS": "1",
        "GIT_AUTHOR_NAME": "ci",
        "GIT_AUTHOR_EMAIL": "ci@localhost",
        "GIT_COMMITTER_NAME": "ci",
        "GIT_COMMITTER_EMAIL": "ci@localhost",
    }

    def cmd(where, *args, timeout=1800):
        return run_cmd(list(args), cwd=where, env=env, check=True, timeout=timeout)

    dvc = str(VENV_BIN / "dvc")
    a, b = tmp_path / "a", tmp_path / "b"
    cmd(tmp_path, "git", "clone", "-q", str(repo), str(a))
    # DVC's mechanics need no second backbone family: the ViT-S/14's three cells run through the
    # same DAG in the killed-DAG and Slurm tests, and leaving them out here saves CI minutes
    use_ci_config(a, drop_backbone="dinov2_vits14_random")
    cmd(a, dvc, "remote", "add", "-d", "shared", str(tmp_path / "remote"))
    first = cmd(a, dvc, "repro")
    assert "Running stage 'cells'" in first.stdout + first.stderr
    again = cmd(a, dvc, "repro")
    said = again.stdout + again.stderr
    assert "Running stage" not in said, said
    metrics = cmd(a, dvc, "metrics", "show").stdout
    assert "box AP" in metrics and "mIoU" in metrics and "top-1" in metrics, metrics
    cmd(a, dvc, "push")
    # the policy: dvc.lock is committed after a study run, so other clones know its artifact versions
    cmd(a, "git", "add", "-A")
    cmd(a, "git", "commit", "-q", "-m", "study run")
    outputs = ["data", "checkpoints", "runs", "results", "tables"]
    digests = _sha256_tree(a, outputs)

    cmd(tmp_path, "git", "clone", "-q", str(a), str(b))
    cmd(b, dvc, "pull")
    assert _sha256_tree(b, outputs) == digests
    nothing = cmd(b, dvc, "repro")
    said = nothing.stdout + nothing.stderr
    assert "Running stage" not in said, said

    # One params key changed through an experiment: exactly the stages that read it rerun (cells,
    # then tables), and inside `cells` Snakemake retrains exactly the cells of that task.
    before = _sha256_tree(a, outputs)
    experiment = cmd(a, dvc, "exp", "run", "-S", "tasks.ade.train.steps=7")
    said = experiment.stdout + experiment.stderr
    assert "Running stage 'cells'" in said and "Running stage 'tables'" in said, said
    assert "Running stage 'data'" not in said and "Running stage 'checkpoints'" not in said, said
    after = _sha256_tree(a, outputs)
    changed = {path for path in before if after.get(path) != before[path]}
    assert any(p.startswith("results/ade/") and p.endswith("metrics.json") for p in changed), sorted(changed)
    untouched = [p for p in before if p.startswith(("data/", "checkpoints/", "results/coco/", "results/k400/"))]
    assert untouched and not changed.intersection(untouched), sorted(changed.intersection(untouched))
    ade_logs = list((a / "runs" / "ade").rglob("log.jsonl"))
    assert ade_logs and all(json.loads(p.read_text().splitlines()[-1])["step"] == 7 for p in ade_logs)
    shown = json.loads(cmd(a, dvc, "exp", "show", "--json").stdout)
    assert 7 in _param_values(shown, "tasks.ade.train.steps"), json.dumps(shown)[:2000]


def _param_values(node, dotted: str) -> list:
    """Every value of the config key ``dotted`` anywhere in ``dvc exp show --json``'s output (its
    nesting differs between DVC versions: baseline, experiments, their params files)."""
    found = []
    if isinstance(node, dict):
        value = node
        for key in dotted.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None:
            found.append(value)
        for child in node.values():
            found += _param_values(child, dotted)
    elif isinstance(node, list):
        for child in node:
            found += _param_values(child, dotted)
    return found
