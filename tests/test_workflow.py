"""The Snakemake DAG: validated at start, dry-runs to the declared targets."""

from __future__ import annotations

import pytest
import yaml

from .conftest import run_cmd


def test_dry_run_prints_dag(workflow_copy):
    proc = run_cmd(["snakemake", "-n", "all_tables"], cwd=workflow_copy, check=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert "synth_dataset" in out
    assert "all_tables" in out


def test_bad_config_fails_at_dag_start_naming_the_key(workflow_copy):
    config = yaml.safe_load((workflow_copy / "config.yaml").read_text())
    config["datasets"]["shapes-ade"]["synth"]["num_train"] = -1
    (workflow_copy / "config.yaml").write_text(yaml.safe_dump(config))
    proc = run_cmd(["snakemake", "-n", "all_tables"], cwd=workflow_copy, timeout=300)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "num_train" in out and "-1" in out


def test_paper_config_replaces_the_default_and_plans_downloads(workflow_copy):
    proc = run_cmd(
        ["snakemake", "-n", "checkpoints_all", "data_all", "--configfile", "configs/paper.yaml"],
        cwd=workflow_copy,
        check=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    for rule in ("download_dataset", "prepare_dataset", "fetch_checkpoint", "convert_checkpoint"):
        assert rule in out
    assert "synth_dataset" not in out and "pretrain_backbone" not in out  # not merged with config.yaml
    assert "swinv2_giant" not in out  # weights not released: nothing to fetch


def test_one_target_by_path_derives_its_jobs(workflow_copy):
    proc = run_cmd(
        ["snakemake", "-n", "checkpoints/convstem_swin_tiny_mim.pth"], cwd=workflow_copy, check=True, timeout=300
    )
    out = proc.stdout + proc.stderr
    assert "synth_dataset" in out and "pretrain_backbone" in out
    assert "convstem_swin_tiny_supervised" not in out


def test_lint_is_clean(workflow_copy):
    proc = run_cmd(["snakemake", "--lint"], cwd=workflow_copy, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow  # ~20 s: two dry runs of a copied workflow
def test_changing_a_config_value_reruns_the_rule_that_uses_it(workflow_copy):
    target = ["data/shapes-coco", "--configfile", "configs/ci.yaml"]
    run_cmd(["snakemake", "--cores", "1", *target], cwd=workflow_copy, check=True, timeout=300)
    unchanged = run_cmd(["snakemake", "-n", *target], cwd=workflow_copy, check=True, timeout=300)
    assert "Nothing to be done" in unchanged.stdout + unchanged.stderr
    config = yaml.safe_load((workflow_copy / "configs" / "ci.yaml").read_text())
    config["datasets"]["shapes-coco"]["synth"]["num_val"] += 1
    (workflow_copy / "configs" / "ci.yaml").write_text(yaml.safe_dump(config))
    changed = run_cmd(["snakemake", "-n", *target], cwd=workflow_copy, check=True, timeout=300)
    assert "Params have changed since last execution" in changed.stdout + changed.stderr


def test_tables_of_the_paper_study_show_every_cell_before_any_run(workflow_copy, tmp_path):
    """The tables rule hands its plan to `frozenbench tables`: with no result yet, every cell of
    configs/paper.yaml has its row (all "–"), the head-capacity variants included."""
    import shlex

    proc = run_cmd(
        ["snakemake", "-n", "-p", "tables", "--configfile", "configs/paper.yaml"],
        cwd=workflow_copy,
        check=True,
        timeout=300,
    )
    command = next(line for line in (proc.stdout + proc.stderr).splitlines() if "frozenbench tables" in line)
    args = shlex.split(command.split("frozenbench tables", 1)[1].split(">", 1)[0])
    plan = args[args.index("--plan") + 1]
    run_cmd(["frozenbench", "tables", "--out", str(tmp_path), "--plan", plan], check=True, timeout=120)
    config = yaml.safe_load((workflow_copy / "configs" / "paper.yaml").read_text())
    backbones = {b for cell in config["study"]["cells"] for b in cell["backbones"]}
    pretraining = (tmp_path / "pretraining.md").read_text()
    for backbone in backbones:
        assert f"| {backbone} |" in pretraining
    assert "heads coco: mrcnn_fpn, ade: m2f_b4, k400: temporal_b2" in pretraining
    capacity = (tmp_path / "head_capacity.md").read_text()
    for head in ("htc", "htc_extra2", "mrcnn_fpn", "m2f_b4", "m2f_b4_extra2", "temporal_b2", "temporal_b4"):
        assert "| swinv2_large_in22k | " in capacity and f"| {head} |" in capacity
    assert "Ours (swinv2_large_in22k," in (tmp_path / "paper.md").read_text()
    assert "| – | – |" in pretraining


@pytest.mark.slow  # ~14 s: snakemake against a local server
def test_a_rerun_download_job_keeps_what_it_already_fetched(workflow_copy):
    """The download rule's output is a marker: Snakemake deletes it (not the files) before a rerun,
    so a spec change (here a second file) fetches only what is new, and a failed job's partial
    copy is resumed by the next run."""
    import hashlib
    import json

    from .fault_server import FaultServer

    first, second = bytes(range(256)) * 400, bytes(reversed(range(256))) * 400
    with FaultServer() as server:

        def entry(path, body):
            return {
                "url": server.add(path, body),
                "filename": path.rsplit("/", 1)[-1],
                "checksum": {"sha256": hashlib.sha256(body).hexdigest()},
                "extract": False,
            }

        base = yaml.safe_load((workflow_copy / "config.yaml").read_text())
        config = {
            "seed": 0,
            "paths": base["paths"],
            "datasets": {
                "k400": {"source": "download", "format": "kinetics", "download": {"files": [entry("/a.csv", first)]}}
            },
        }
        path = workflow_copy / "dl.yaml"
        path.write_text(yaml.safe_dump(config))
        target = ["snakemake", "--cores", "1", "downloads/k400.verified.json", "--configfile", str(path)]
        run_cmd(target, cwd=workflow_copy, check=True, timeout=300)
        config["datasets"]["k400"]["download"]["files"].append(entry("/b.csv", second))
        server.faults["/b.csv"].extend(["drop:30000", "status:404"])  # the job fails, keeping 30000 bytes
        path.write_text(yaml.safe_dump(config))
        failed = run_cmd(target, cwd=workflow_copy, timeout=300)
        assert failed.returncode != 0
        run_cmd(target, cwd=workflow_copy, check=True, timeout=300)
    assert [p for p, _ in server.requests].count("/a.csv") == 1  # fetched once, verified after
    assert ("/b.csv", "bytes=30000-") in server.requests
    marker = json.loads((workflow_copy / "downloads" / "k400.verified.json").read_text())
    assert sorted(marker["files"]) == ["a.csv", "b.csv"]
    assert (workflow_copy / "downloads" / "k400" / "b.csv").read_bytes() == second
