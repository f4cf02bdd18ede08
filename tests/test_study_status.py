"""A study survives a failed cell: the profiles keep going past it, the run ends listing it with its
log, partial tables mark it `failed` (a cell never run: `not run`), and a rerun runs only what failed.

Failures are read from Snakemake's own log: the parser is checked against logs real Snakemake runs
write here (a retried job, a job failing twice, a dumped log that holds text like an error block).
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
import yaml

from frozenbench import study
from frozenbench.study_status import (
    FailedJob,
    after_successful_run,
    cell_of,
    cell_statuses,
    parse_snakemake_log,
    write_partial_tables,
)

from .conftest import REPO, VENV_BIN, run_cmd

# The mini-study's three k400 cells on the ViT-S/14 (seeded random weights: no pretraining job),
# differing only in the head; one fails, one is never asked for. Each is one run (the config's seed 0).
BACKBONE = "dinov2_vits14_random"
FINISHES, FAILS, NEVER_RUN = (
    f"k400/{BACKBONE}/frozen/{head}/seed0" for head in ("temporal_b1", "temporal_b2", "temporal_w16")
)


def three_cell_config() -> dict:
    """configs/ci.yaml cut to one dataset, one backbone and three cells of one task (one thread per
    job, so two cells train side by side on two cores). The comparison tables use the failing cell's
    head, so every table shows it."""
    config = yaml.safe_load((REPO / "configs" / "ci.yaml").read_text())
    k400 = config["tasks"]["k400"]
    base = k400["heads"]["temporal_b2"]
    k400["heads"] = {
        "temporal_b1": {**base, "num_blocks": 1},
        "temporal_b2": base,
        "temporal_w16": {**base, "num_blocks": 1, "width": 16},
    }
    k400["test"] = {"num_clips": 1}
    config["tasks"] = {"k400": k400}
    config["datasets"] = {"shapes-k400": config["datasets"]["shapes-k400"]}
    config["datasets"]["shapes-k400"]["synth"].update(num_train_per_class=4, num_val_per_class=2)
    config.pop("pretrain")
    config["backbones"] = {BACKBONE: config["backbones"][BACKBONE]}
    config["study"] = {
        "cells": [
            {"task": "k400", "backbones": [BACKBONE], "modes": ["frozen"], "heads": list(k400["heads"])},
        ],
        "tables": {"heads": {"k400": "temporal_b2"}},
    }
    config["compute"] = {"train": {"threads": 1}, "evaluate": {"threads": 1}}
    return config


def three_cell_study(workflow_copy: Path) -> str:
    """:func:`three_cell_config` in the workflow copy; the path to pass to --configfile."""
    path = workflow_copy / "configs" / "three_cells.yaml"
    path.write_text(yaml.safe_dump(three_cell_config(), sort_keys=False))
    return str(path.relative_to(workflow_copy))


def break_training(workflow_copy: Path, cell: str) -> Path:
    """A cell whose training fails: a state.pt that is not a checkpoint, which `frozenbench train`
    resumes from (not an output of the rule, so Snakemake leaves it in place on every attempt)."""
    state = workflow_copy / "runs" / cell / "state.pt"
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_bytes(b"not a checkpoint")
    return state


def job_counts(said: str) -> dict[str, int]:
    """Snakemake's "Job stats" table at the start of a run: jobs per rule it is about to run."""
    block = said.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", block, re.M)}


def metrics_of(workflow_copy: Path, cell: str) -> Path:
    return workflow_copy / "results" / cell / "metrics.json"


def cell_of_run(run: str) -> str:
    """The cell (``task/backbone/mode/head``) of a run path: what summary.json is keyed by."""
    return run.rsplit("/", 1)[0]


def assert_partial_tables_mark(tables: Path, statuses: dict[str, str], failed_log: str) -> None:
    """Markdown, CSV, LaTeX and summary.json of partial tables show each cell's status."""
    summary = json.loads((tables / "summary.json").read_text())
    statuses = {cell_of_run(run): status for run, status in statuses.items()}
    assert {cell: entry["status"] for cell, entry in summary.items()} == statuses
    for cell, status in statuses.items():
        head = cell.rsplit("/", 1)[1]
        row = next(line for line in (tables / "head_capacity.md").read_text().splitlines() if f"| {head} |" in line)
        csv_row = next(line for line in (tables / "head_capacity.csv").read_text().splitlines() if f",{head}," in line)
        if status == "finished":
            assert isinstance(summary[cell]["top-1"], float)
            interval = r"\| \d+\.\d \[\d+\.\d, \d+\.\d\] \|"  # mean [95 % interval]
            assert "failed" not in row and "not run" not in row and re.search(interval, row), row
        else:
            assert summary[cell]["top-1"] is None
            assert row.endswith(f"| {status} |"), row
            assert csv_row.split(",")[4] == status and csv_row.endswith(",,"), csv_row  # no interval bounds
    failed = [cell for cell, status in statuses.items() if status == "failed"]
    for cell in failed:
        assert summary[cell]["logs"][0] == failed_log
    pretraining = (tables / "pretraining.md").read_text()
    for cell in failed:  # the comparison tables use the failing head; its log is listed under them
        assert f"- failed: {cell}/seed0 (log: {failed_log}" in pretraining  # the run that failed
        assert f"| {BACKBONE} | random | failed | – | – |" in pretraining
        assert r"failed & -- & --" in (tables / "pretraining.tex").read_text()


# `ok` finishes; `flaky` fails once, then finishes on its retry; `broken` fails on every attempt
# after writing a log shaped like a Snakemake error block; `silent` exits 0 without its output
TOY_SNAKEFILE = """
rule all:
    input: expand("out/{x}.txt", x=["ok", "flaky", "broken", "silent"])

rule make:
    output: "out/{x}.txt"
    log: "logs/{x}.log"
    shell: "bash make.sh {wildcards.x} {output} {log}"
"""
TOY_JOB = """
if [ "$1" = broken ]; then
    printf 'Error in rule fake:\\n    jobid: 99\\n    output: elsewhere.txt\\n' > "$3"
    exit 3
fi
if [ "$1" = silent ]; then exit 0; fi
if [ "$1" = flaky ] && [ ! -e tried ]; then touch tried; exit 4; fi
echo ok > "$2"
"""


def test_parser_reads_real_snakemake_logs(tmp_path):
    """A real Snakemake run with --keep-going, one retry and --show-failed-logs: `broken` and `silent`
    failed, each once, with its output and log; `flaky`, retried until it finished, did not; the
    text in broken's dumped log that looks like an error block is not read as one."""
    (tmp_path / "Snakefile").write_text(TOY_SNAKEFILE)
    (tmp_path / "make.sh").write_text(TOY_JOB)
    proc = run_cmd(
        [
            str(VENV_BIN / "snakemake"),
            "--cores",
            "1",
            "--keep-going",
            "--retries",
            "1",
            "--show-failed-logs",
            "--latency-wait",
            "1",
        ],
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode != 0
    assert (tmp_path / "out" / "flaky.txt").exists() and (tmp_path / "out" / "ok.txt").exists()
    (log,) = (tmp_path / ".snakemake" / "log").glob("*.snakemake.log")
    text = log.read_text()
    # the sample is what the test says: flaky failed once, broken twice (its log dumped), silent twice
    assert text.count("Error in rule make:") == 3 and "Error in rule fake:" in text, text
    assert text.count("MissingOutputException in rule make") == 2, text
    failed = parse_snakemake_log(text)
    assert sorted((job.rule, job.outputs, job.logs, job.message) for job in failed) == [
        ("make", ("out/broken.txt",), ("logs/broken.log",), ""),
        ("make", ("out/silent.txt",), ("logs/silent.log",), "exited without an error, but its outputs are missing"),
    ]
    broken = next(job for job in failed if job.outputs == ("out/broken.txt",))
    assert f"jobid: {broken.jobid}\n    output: out/broken.txt" in text
    assert len({job.jobid for job in failed}) == 2


def test_a_cell_failed_in_an_earlier_run_stays_failed_until_it_finishes(tmp_path):
    """Statuses carried over from an earlier partial build: a failed cell not attempted since stays
    failed with its log, also beside a metrics.json older than that build (stale); a metrics.json
    written after it makes the cell finished; a cell with a failed job is failed whatever is on disk."""
    cells = ["t/b/frozen/h1", "t/b/frozen/h2", "t/b/frozen/h3", "t/b/frozen/h4"]
    stale = tmp_path / "t/b/frozen/h2/metrics.json"
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")
    built = time.time()
    fresh = tmp_path / "t/b/frozen/h3/metrics.json"
    fresh.parent.mkdir(parents=True)
    fresh.write_text("{}")
    past = built - 100
    os.utime(stale, (past, past))
    previous = {cell: {"status": "failed", "logs": [f"logs/{cell}.log"]} for cell in cells[:3]}
    job = FailedJob("evaluate_head", "7", ("results/t/b/frozen/h4/metrics.json",), ("logs/evaluate/t/b/frozen/h4.log",))
    statuses = cell_statuses(cells, [job], tmp_path, previous, built)
    assert {cell: entry["status"] for cell, entry in statuses.items()} == {
        "t/b/frozen/h1": "failed",
        "t/b/frozen/h2": "failed",
        "t/b/frozen/h3": "finished",
        "t/b/frozen/h4": "failed",
    }
    assert statuses["t/b/frozen/h1"]["logs"] == ["logs/t/b/frozen/h1.log"]
    assert statuses["t/b/frozen/h4"]["logs"] == ["logs/evaluate/t/b/frozen/h4.log"]
    # a job of no cell (a checkpoint conversion) belongs to none, even when a name repeats
    convert = FailedJob("convert_checkpoint", "2", ("checkpoints/b.pth",), ("logs/checkpoints/convert_b.log",))
    assert cell_of(convert, cells) is None


def test_a_run_of_the_failed_cell_alone_refreshes_the_partial_tables(tmp_path):
    """The Snakefile's onsuccess: after partial tables, a run that finishes only the failed cell (not
    the tables rule) rewrites them with that cell finished; a cell that failed earlier and has not
    run since stays failed with its log; complete tables (no status) are left alone."""
    from frozenbench.config import validate_config

    config = validate_config(three_cell_config())
    config["paths"].update(results=str(tmp_path / "results"), tables=str(tmp_path / "tables"))
    results, tables = tmp_path / "results", tmp_path / "tables"

    def finish(cell: str, top1: float) -> None:
        task, backbone, mode, head, _ = cell.split("/")
        record = {"task": task, "backbone": backbone, "mode": mode, "head": head, "task_type": "video", "seed": 0}
        metrics_of(tmp_path, cell).parent.mkdir(parents=True, exist_ok=True)
        metrics_of(tmp_path, cell).write_text(json.dumps({**record, "metrics": {"top1": top1}}))

    finish(FINISHES, 40.0)
    failed_log = f"logs/train/{FAILS}.log"
    statuses = {
        FINISHES: {"status": "finished"},
        FAILS: {"status": "failed", "logs": [failed_log]},
        NEVER_RUN: {"status": "failed", "logs": ["logs/train/w16.log"]},  # here: failed, not run since
    }
    write_partial_tables(statuses, study.tables_plan(config), results, tables)
    earlier = time.time() - 60  # the partial build happened before the rerun finished the cell
    os.utime(tables / "summary.json", (earlier, earlier))
    finish(FAILS, 30.0)
    said = after_successful_run(config)
    assert said == (
        f"frozenbench: partial tables in {tables}/ refreshed: 2 finished, 1 failed, 0 not run "
        "(`snakemake all_tables` builds them whole)"
    )
    summary = json.loads((tables / "summary.json").read_text())
    assert summary[cell_of_run(FAILS)] == {"top-1": 30.0, "status": "finished", "seeds": {"seed0": "finished"}}
    assert summary[cell_of_run(NEVER_RUN)] == {
        "top-1": None,
        "status": "failed",
        "seeds": {"seed0": "failed"},
        "logs": ["logs/train/w16.log"],
    }
    assert "| 30.0 | – | – |" in (tables / "pretraining.md").read_text()

    complete = '{"k400/x/frozen/h": {"top-1": 1.0}}\n'  # what the tables rule writes: no status
    (tables / "summary.json").write_text(complete)
    assert after_successful_run(config) is None
    assert (tables / "summary.json").read_text() == complete


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_failed_cell_is_listed_marked_in_the_tables_and_alone_rerun(workflow_copy):
    """Through the local profile: one cell's training fails, the other cell asked for finishes, the
    run lists the failed cell with its log and writes partial tables (failed / not run / finished).
    With the cause fixed, `tables` (which needs every cell) runs the failed and the never-run cell
    and none of the finished one's jobs, and writes complete tables."""
    config = three_cell_study(workflow_copy)
    snakemake = [str(VENV_BIN / "snakemake")]
    local = ["--profile", "profiles/local", "--cores", "2", "--configfile", config]
    env = {"OMP_NUM_THREADS": "1"}
    state = break_training(workflow_copy, FAILS)
    targets = [f"results/{cell}/metrics.json" for cell in (FINISHES, FAILS)]
    failed = run_cmd([*snakemake, *targets, *local], cwd=workflow_copy, env=env, timeout=600)
    said = failed.stdout + failed.stderr
    assert failed.returncode != 0, said[-3000:]
    assert metrics_of(workflow_copy, FINISHES).exists(), said[-3000:]  # kept going past the failure
    train_log = f"logs/train/{FAILS}.log"
    assert "state.pt: refused" in (workflow_copy / train_log).read_text()  # the failure caused here
    assert "frozenbench: 1 of 3 study cells failed, 1 not run, 1 finished" in said, said[-3000:]
    assert f"  failed   {FAILS}  (train_head)  log: {train_log}" in said
    assert f"  not run  {NEVER_RUN}" in said
    tables = workflow_copy / "tables"
    assert_partial_tables_mark(tables, {FINISHES: "finished", FAILS: "failed", NEVER_RUN: "not run"}, train_log)
    finished_at = metrics_of(workflow_copy, FINISHES).stat().st_mtime_ns

    # the cause fixed: the failed and the never-run cell run, the finished one does not
    state.unlink()
    complete = run_cmd([*snakemake, "tables", *local], cwd=workflow_copy, env=env, timeout=600, check=True)
    said = complete.stdout + complete.stderr
    assert job_counts(said) == {"train_head": 2, "evaluate_head": 2, "tables": 1}, said[:3000]
    for cell in (FAILS, NEVER_RUN):
        assert f"output: runs/{cell}/done.json" in said and f"output: results/{cell}/metrics.json" in said
    assert f"runs/{FINISHES}/done.json" not in said and f"output: results/{FINISHES}" not in said
    assert metrics_of(workflow_copy, FINISHES).stat().st_mtime_ns == finished_at
    summary = json.loads((tables / "summary.json").read_text())
    assert sorted(summary) == sorted(cell_of_run(run) for run in (FINISHES, FAILS, NEVER_RUN))
    assert all("status" not in entry and isinstance(entry["top-1"], float) for entry in summary.values())
    for name in ("pretraining", "head_capacity", "model_size", "paper"):
        text = (tables / f"{name}.md").read_text()
        assert "failed" not in text and "not run" not in text, text
