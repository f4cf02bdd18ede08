"""dvc.yaml's stages declare everything their command reads: DVC reruns a stage only when a dep or
a params key changes, so a missing dep is a stale result nobody is told about.

For each stage, Snakemake's own dry run of the stage's target (``--forceall``) lists the jobs the
stage runs (those whose outputs no other stage owns), their rules, inputs and shell commands; the
test then requires, among the stage's deps: the rule files, every input the stage does not make
itself, and every frozenbench module the jobs' subcommands can import (followed through every
``import`` in the source, those inside functions and modules imported by name too).
"""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import pytest
import yaml

from .conftest import REPO, run_cmd

STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
SRC = REPO / "src"


def _outs(stage: dict) -> list[str]:
    return [next(iter(o)) if isinstance(o, dict) else o for o in stage.get("outs", []) + stage.get("metrics", [])]


def _under(path: str, roots: list[str]) -> bool:
    path = path.rstrip("/")
    return any(path == r.rstrip("/") or path.startswith(r.rstrip("/") + "/") for r in roots)


def _targets(cmd: str) -> list[str]:
    """The Snakemake targets of a stage's ``snakemake --cores N target...`` command."""
    words, targets = shlex.split(cmd)[1:], []
    while words:
        word = words.pop(0)
        if word == "--cores":
            words.pop(0)
        elif not word.startswith("-"):
            targets.append(word)
    return targets


def _dry_run_jobs(targets: list[str]) -> list[dict]:
    proc = run_cmd(["snakemake", "-n", "-p", "--forceall", *targets], cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs, job = [], None
    for line in (proc.stdout + proc.stderr).splitlines():
        if match := re.match(r"^(?:local)?rule (\w+):$", line):
            job = {"rule": match.group(1), "input": [], "output": [], "shell": ""}
            jobs.append(job)
        elif job is not None and (match := re.match(r"^    (input|output): (.*)$", line)):
            job[match.group(1)] = [p.strip() for p in match.group(2).split(",")]
        elif job is not None and line.startswith("Shell command: "):
            job["shell"] = line[len("Shell command: ") :]
    return jobs


def _rule_file(rule: str) -> str:
    for path in sorted((REPO / "rules").glob("*.smk")) + [REPO / "Snakefile"]:
        if re.search(rf"^rule {rule}:", path.read_text(), re.M):
            return str(path.relative_to(REPO))
    raise AssertionError(f"rule {rule} is in no rules file")


def _module_file(name: str) -> Path | None:
    base = SRC / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def _imports_of(path: Path, package: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}  # `from pkg import module`
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if re.fullmatch(r"frozenbench(\.\w+)+", node.value):  # imported by name (importlib)
                found.add(node.value)
    return {n for n in found if n.split(".")[0] == "frozenbench"}


def _closure(modules: set[str]) -> set[Path]:
    """The files of ``modules`` and of every frozenbench module they import, transitively (with
    the packages above each, whose ``__init__`` runs first)."""
    seen: set[Path] = set()
    todo = set(modules)
    while todo:
        name = todo.pop()
        parts = name.split(".")
        parents = {".".join(parts[:i]) for i in range(1, len(parts))}
        todo |= {p for p in parents if _module_file(p) not in seen}
        path = _module_file(name)
        if path is None or path in seen:
            continue
        seen.add(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        todo |= _imports_of(path, package)
    return seen


def _subcommand_modules(shell: str) -> set[str]:
    from frozenbench.cli import COMMANDS

    words = shlex.split(shell.split(">")[0]) if "frozenbench" in shell else []
    modules = {"frozenbench.cli"} if words else set()
    for before, word in zip(words, words[1:]):
        if Path(before).name == "frozenbench" and word in COMMANDS:
            modules.add(f"frozenbench.commands.{COMMANDS[word][0]}")
    return modules


def _snakefile_modules() -> set[str]:
    """What the Snakefile and its rules import at DAG start (every stage runs that)."""
    found = set()
    for path in [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]:
        for match in re.finditer(r"^\s*(?:from (frozenbench[\w.]*) import ([\w, ]+)|import (frozenbench[\w.]*))",
                                 path.read_text(), re.M):  # fmt: skip
            if match.group(3):
                found.add(match.group(3))
            else:
                found.add(match.group(1))
                found |= {f"{match.group(1)}.{n.strip()}" for n in match.group(2).split(",")}
    return found


@pytest.mark.parametrize("name", sorted(STAGES))
def test_each_stage_declares_the_rules_inputs_and_code_it_runs(name):
    stage = STAGES[name]
    targets = _targets(stage["cmd"])
    assert shlex.split(stage["cmd"])[0] == "snakemake" and targets, stage["cmd"]
    others = [out for other, entry in STAGES.items() if other != name for out in _outs(entry)]
    jobs = [
        job for job in _dry_run_jobs(targets) if job["output"] and not all(_under(out, others) for out in job["output"])
    ]
    assert jobs, f"stage {name}: its targets {targets} run no job of their own"
    deps = [str(d) for d in stage["deps"]]
    made_here = [out for job in jobs for out in job["output"]]
    problems = []
    for job in jobs:
        if not _under(_rule_file(job["rule"]), deps):
            problems.append(f"rule {job['rule']}'s file {_rule_file(job['rule'])}")
        for path in job["output"]:
            if not _under(path, _outs(stage)):
                problems.append(f"output {path} of rule {job['rule']} (not an out: DVC would not version it)")
        for path in job["input"]:
            if path and not _under(path, made_here) and not _under(path, deps):
                problems.append(f"input {path} of rule {job['rule']}")
    modules = _snakefile_modules().union(*(_subcommand_modules(job["shell"]) for job in jobs))
    for path in sorted(_closure(modules)):
        relative = str(path.relative_to(REPO))
        if not _under(relative, deps):
            problems.append(f"code {relative}")
    assert not problems, f"dvc.yaml stage {name!r} does not declare what it runs or writes:\n  " + "\n  ".join(
        sorted(set(problems))
    )


def test_the_stage_params_are_keys_of_the_config_the_dag_reads():
    """DVC reads params from params.yaml (its default, the file `dvc exp run -S key=value` edits);
    it is a link to config.yaml, so a params change is a change of Snakemake's config."""
    link = REPO / "params.yaml"
    assert link.is_symlink() and link.resolve() == (REPO / "config.yaml").resolve()
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    for name, stage in STAGES.items():
        for key in stage.get("params", []):
            assert isinstance(key, str) and key in config, (name, key)


def test_the_cells_stage_versions_every_studied_task_of_config_yaml():
    """dvc.yaml's cells outs are the task folders ``study.dvc_cell_outs`` derives from config.yaml: a
    task added to the study without its outs here would train unversioned."""
    from frozenbench import study
    from frozenbench.config import load_config

    outs = [next(iter(o)) if isinstance(o, dict) else o for o in STAGES["cells"]["outs"]]
    assert sorted(outs) == sorted(study.dvc_cell_outs(load_config(REPO / "config.yaml")))
