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
