"""The Snakemake DAG: validated at start, dry-runs to the declared targets."""

from __future__ import annotations

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
    proc = run_cmd(["snakemake", "-n", "checkpoints_all", "data_all", "--configfile", "configs/paper.yaml"],
                   cwd=workflow_copy, check=True, timeout=300)
    out = proc.stdout + proc.stderr
    for rule in ("download_dataset", "prepare_dataset", "fetch_checkpoint", "convert_checkpoint"):
        assert rule in out
    assert "synth_dataset" not in out and "pretrain_backbone" not in out  # not merged with config.yaml
    assert "swinv2_giant" not in out  # weights not released: nothing to fetch


def test_one_target_by_path_derives_its_jobs(workflow_copy):
    proc = run_cmd(["snakemake", "-n", "checkpoints/cswin_tiny_mim.pth"], cwd=workflow_copy, check=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert "synth_dataset" in out and "pretrain_backbone" in out
    assert "cswin_tiny_supervised" not in out


def test_lint_is_clean(workflow_copy):
    proc = run_cmd(["snakemake", "--lint"], cwd=workflow_copy, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


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
