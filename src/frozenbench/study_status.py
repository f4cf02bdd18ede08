"""What a run that failed leaves behind: each study cell's status (finished, failed with its logs, not
run), a list of the failures to print at the end of the run, and partial tables that mark them.

Failures are read from Snakemake's own log, the file its ``onerror`` handler receives, not from a
record the failing job writes: a job that Slurm kills (out of memory, a node failure, the time limit)
or that never starts writes nothing, but Snakemake reports every failed job the same way, an
``Error in rule X:`` block naming the job's outputs and logs (the Slurm plugin adds the job's Slurm
log to them). A job that failed and then succeeded on a retry (``Finished jobid: N``) is not failed.

The Snakefile's ``onerror`` calls :func:`after_failed_run`, ``onsuccess`` :func:`after_successful_run`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from frozenbench.reporting.tables import FAILED, FINISHED, NOT_RUN, build_tables, run_path

# What Snakemake 9 writes to its log about jobs (snakemake/logging.py and jobs.py): a job's start
# ("rule X:" or "localrule X:", then fields indented by four spaces: output, log, jobid, ...), its end
# ("Finished jobid: N"), and its failure, which comes in two forms: an error block ("Error in rule X:",
# fields as above, the shell command continuing on lines indented by eight), or, for a job that
# exited without error but left outputs missing (on Slurm also a job that left the queue unseen),
# "MissingOutputException in rule X ..." followed by "Job N  completed successfully, but ...".
JOB_START = re.compile(r"^(?:local)?(?:rule|checkpoint) (?P<rule>\S+):$")
ERROR_HEADER = re.compile(r"^Error in rule (?P<rule>\S+):$")
FIELD = re.compile(r"^    (?P<key>[a-z][a-z_-]*):(?: (?P<value>.*))?$")
FINISHED_JOB = re.compile(r"^Finished jobid: (?P<jobid>\d+)\b")
MISSING_OUTPUT = re.compile(r"^MissingOutputException in rule (?P<rule>\S+) ")
MISSING_OUTPUT_JOB = re.compile(r"^Job (?P<jobid>\d+) +completed successfully, but some output files are missing")
# the Slurm plugin, at each submission: where that attempt's Slurm log goes
SUBMITTED = re.compile(r"^Job (?P<jobid>\d+) has been submitted with SLURM jobid \S+ \(log: (?P<log>.+)\)\.$")
LOG_SUFFIX = " (check log file(s) for error details)"
MISSING_MESSAGE = "exited without an error, but its outputs are missing"
# show-failed-logs prints each log of a failed job between two rules of "=" (show_logs): the dumped
# text (a Slurm log holds the job's inner Snakemake output, its own error blocks included) is skipped
DUMP_HEADER = re.compile(r"^Logfile (?P<path>.+):$")

# how many never-run cells the end-of-run message names before it only counts them
LISTED_NOT_RUN = 10


@dataclass(frozen=True)
class FailedJob:
    """One job that failed in the run (its last attempt): rule, Snakemake job id, outputs and logs
    (the rule's log and, on Slurm, the job's Slurm log), and Snakemake's message (the Slurm state)."""

    rule: str
    jobid: str
    outputs: tuple[str, ...]
    logs: tuple[str, ...]
    message: str = ""


def _paths(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    value = value.removesuffix(LOG_SUFFIX)
    # the Slurm plugin passes its log as an extra log, "None" when it has none
    return tuple(path for path in value.split(", ") if path and path != "None")


def _skip_dump(lines: list[str], start: int) -> int:
    """The index after a dumped log starting at ``start`` ("Logfile X:", a rule of "=", the text, the
    same rule); ``start`` itself when no dump starts there."""
    if start + 1 >= len(lines) or not DUMP_HEADER.match(lines[start]):
        return start
    rule = lines[start + 1]
    if not rule or set(rule) != {"="}:
        return start + 1  # "Logfile X: empty file" and the like hold nothing more
    for end in range(start + 2, len(lines)):
        if lines[end] == rule:
            return end + 1
    return len(lines)


def _fields(lines: list[str], start: int) -> tuple[dict[str, str], int]:
    """The fields of a job's start or error block whose first field line is ``start``, and the index
    after the block."""
    fields: dict[str, str] = {}
    i = start
    while i < len(lines) and lines[i].startswith("    "):
        field = FIELD.match(lines[i])
        if field:
            fields[field["key"]] = field["value"] or ""
        i += 1  # the shell command's lines, indented by eight, are not needed
    return fields, i


def parse_snakemake_log(text: str) -> list[FailedJob]:
    """The jobs that failed in a Snakemake run, from its log (``.snakemake/log/*.snakemake.log``), in
    the order they failed; a job retried until it finished is left out, a job that failed on every
    attempt is listed once (its last attempt)."""
    lines = text.splitlines()
    started: dict[str, dict[str, Any]] = {}  # by job id: rule, outputs, logs, the last Slurm log
    failed: dict[str, FailedJob] = {}

    def fail(job: FailedJob) -> None:
        failed.pop(job.jobid, None)  # a retry's failure replaces the earlier attempt's
        failed[job.jobid] = job

    i = 0
    while i < len(lines):
        line = lines[i]
        if match := FINISHED_JOB.match(line):
            failed.pop(match["jobid"], None)
        elif match := SUBMITTED.match(line):
            started.setdefault(match["jobid"], {})["slurm_log"] = match["log"]
        elif match := MISSING_OUTPUT.match(line):
            missing = _missing_output_job(match["rule"], lines[i + 1] if i + 1 < len(lines) else "", started)
            if missing is not None:
                fail(missing)
        elif match := JOB_START.match(line):
            fields, i = _fields(lines, i + 1)
            if "jobid" in fields:
                job = started.setdefault(fields["jobid"], {})
                job.update(rule=match["rule"], outputs=_paths(fields.get("output")), logs=_paths(fields.get("log")))
            continue
        elif match := ERROR_HEADER.match(line):
            error, i = _error_block(lines, i + 1, match["rule"])
            if error is not None:
                fail(error)
            continue
        i += 1
    return list(failed.values())


def _missing_output_job(rule: str, next_line: str, started: dict[str, dict[str, Any]]) -> FailedJob | None:
    """The job a missing-output error names on its next line, with what its start recorded (None: no job line)."""
    job_line = MISSING_OUTPUT_JOB.match(next_line)
    if not job_line:
        return None
    job = started.get(job_line["jobid"], {})
    slurm = (job["slurm_log"],) if job.get("slurm_log") else ()
    return FailedJob(
        rule=rule,
        jobid=job_line["jobid"],
        outputs=job.get("outputs", ()),
        logs=job.get("logs", ()) + slurm,
        message=MISSING_MESSAGE,
    )


def _error_block(lines: list[str], start: int, rule: str) -> tuple[FailedJob | None, int]:
    """The failed job of an ``Error in rule`` block whose fields begin at line ``start`` (None for a
    group's block) and the index of the first line after the block and its dumps."""
    fields, i = _fields(lines, start)
    while DUMP_HEADER.match(lines[i] if i < len(lines) else ""):
        i = _skip_dump(lines, i)
    if "jobid" not in fields:  # not a job's error block (a group's)
        return None, i
    message = fields.get("message", "")
    job = FailedJob(
        rule=rule,
        jobid=fields["jobid"],
        outputs=_paths(fields.get("output")),
        logs=_paths(fields.get("log")),
        message="" if message == "None" else message,
    )
    return job, i


def read_snakemake_logs(paths: str | Iterable[str]) -> list[FailedJob]:
    """:func:`parse_snakemake_log` of the log file(s) the ``onerror`` handler receives (Snakemake 9
    passes a list, older versions one path)."""
    jobs: list[FailedJob] = []
    for path in [paths] if isinstance(paths, str) else list(paths):
        jobs += parse_snakemake_log(Path(path).read_text(errors="replace"))
    return jobs


def _cell_parts(path: str) -> list[tuple[str, ...]]:
    """A path's components, as they are and with the last one's extension removed
    (``logs/train/t/b/m/h.log`` ends in ``t, b, m, h`` as ``runs/t/b/m/h/done.json`` holds them)."""
    parts = Path(path).parts
    return [parts, (*parts[:-1], Path(parts[-1]).stem)] if parts else []


def cell_of(job: FailedJob, cells: Iterable[str]) -> str | None:
    """The study run (``task/backbone/mode/head/seed<N>``, or a cell ``task/backbone/mode/head``) a
    failed job belongs to: the one whose names follow each other in one of its output or log paths
    (every cell rule's outputs and logs are ``.../{task}/{backbone}/{mode}/{head}/seed{seed}...``);
    None for a job of no cell (data, checkpoint, tables)."""
    wanted = {tuple(cell.split("/")): cell for cell in cells}
    lengths = sorted({len(key) for key in wanted}, reverse=True)
    for path in job.outputs + job.logs:
        for parts in _cell_parts(path):
            for length in lengths:
                for start in range(len(parts) - length + 1):
                    cell = wanted.get(parts[start : start + length])
                    if cell:
                        return cell
    return None


def metrics_path(results: str | Path, cell: str) -> Path:
    return Path(results) / cell / "metrics.json"


def previous_statuses(summary_json: str | Path) -> tuple[dict[str, dict[str, Any]], float | None]:
    """The statuses an earlier partial build recorded in ``summary.json`` and when it wrote them; none
    when the file is missing or was written by the tables rule (complete tables carry no status)."""
    path = Path(summary_json)
    try:
        cells = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}, None
    statuses = {}
    for cell, entry in cells.items():
        if not (isinstance(entry, dict) and entry.get("status") in (FINISHED, FAILED, NOT_RUN)):
            continue
        # each seed's run, as the partial build recorded it (a record without seeds: the cell itself)
        runs = entry.get("seeds") or {"": entry["status"]}
        for folder, status in runs.items():
            # a failed cell's logs are its runs' together: each run takes those under its seed's name
            own = [log for log in entry.get("logs", []) if folder and f"/{folder}" in log]
            logs = own or (list(entry.get("logs", [])) if status == FAILED else [])
            statuses[f"{cell}/{folder}" if folder else cell] = {"status": status, "logs": logs}
    return statuses, (path.stat().st_mtime if statuses else None)


def cell_statuses(
    cells: Iterable[str],
    failed_jobs: Iterable[FailedJob],
    results: str | Path,
    previous: dict[str, dict[str, Any]] | None = None,
    previous_time: float | None = None,
) -> dict[str, dict[str, Any]]:
    """Each run's status, by ``task/backbone/mode/head/seed<N>``: ``failed`` (with ``logs``, ``rules`` and the
    jobs' ``messages``) when one of its jobs failed in this run, even if an older metrics.json is
    still there (it may be stale); else ``finished`` when its metrics.json exists; else ``failed``
    still when an earlier failed run marked it (``previous``, written at ``previous_time``) and
    nothing newer finished it; else ``not run``."""
    cells = list(cells)
    statuses: dict[str, dict[str, Any]] = {}
    for job in failed_jobs:
        cell = cell_of(job, cells)
        if cell is None:
            continue
        entry = statuses.setdefault(cell, {"status": FAILED, "logs": [], "rules": [], "messages": []})
        entry["logs"] += [log for log in job.logs if log not in entry["logs"]]
        entry["rules"].append(job.rule)
        if job.message:  # the Slurm plugin's, e.g. "SLURM status is: 'OUT_OF_MEMORY'"
            entry["messages"].append(f"{job.rule}: {job.message}")
    previous = previous or {}
    for cell in cells:
        if cell in statuses:
            continue
        metrics = metrics_path(results, cell)
        earlier = previous.get(cell, {})
        if earlier.get("status") == FAILED and (
            not metrics.exists() or previous_time is None or metrics.stat().st_mtime <= previous_time
        ):
            statuses[cell] = {"status": FAILED, "logs": list(earlier.get("logs", [])), "rules": [], "messages": []}
        elif metrics.exists():
            statuses[cell] = {"status": FINISHED}
        else:
            statuses[cell] = {"status": NOT_RUN}
    return statuses


def failure_message(
    statuses: dict[str, dict[str, Any]], other_failures: list[FailedJob], tables: str | Path | None
) -> str:
    """The end-of-run list: every failed cell with its logs, the failed jobs of no cell, the cells that
    never ran, and what to do next."""
    by_status: dict[str, list[str]] = {FINISHED: [], FAILED: [], NOT_RUN: []}
    for cell, entry in statuses.items():
        by_status[entry["status"]].append(cell)
    lines = [
        f"frozenbench: {len(by_status[FAILED])} of {len(statuses)} study cells failed, "
        f"{len(by_status[NOT_RUN])} not run, {len(by_status[FINISHED])} finished"
        + (f"; partial tables (failed / not run marked) in {tables}/" if tables else "")
    ]
    for cell in by_status[FAILED]:
        entry = statuses[cell]
        rules = ", ".join(entry["rules"]) or "an earlier run"
        lines.append(f"  failed   {cell}  ({rules})  log: {', '.join(entry['logs']) or 'none named'}")
        lines += [f"           {message}" for message in entry.get("messages", [])]
    for job in other_failures:
        logs = ", ".join(job.logs) or "none named"
        outputs = ", ".join(job.outputs)
        lines.append(f"  failed   rule {job.rule} ({outputs})  log: {logs}")
        if job.message:
            lines.append(f"           {job.message}")
    not_run = by_status[NOT_RUN]
    for cell in not_run[:LISTED_NOT_RUN]:
        lines.append(f"  not run  {cell}")
    if len(not_run) > LISTED_NOT_RUN:
        lines.append(f"  not run  ... and {len(not_run) - LISTED_NOT_RUN} more (tables/summary.json lists them)")
    if by_status[FAILED] or other_failures:
        lines.append(
            "Fix the cause (the logs above) and run the same command again: Snakemake runs only the jobs "
            "whose outputs are missing, so finished cells are kept."
        )
    return "\n".join(lines)


def _study(config: dict[str, Any]) -> tuple[dict[str, Any], list[str], Path, Path]:
    from frozenbench import study

    plan = study.tables_plan(config)
    cells = [run_path(c) for c in plan["cells"]]
    paths = config["paths"]
    return plan, cells, Path(paths["results"]), Path(paths["tables"])


def write_partial_tables(
    statuses: dict[str, dict[str, Any]], plan: dict[str, Any], results: Path, tables: Path
) -> None:
    """The tables (Markdown, LaTeX, CSV) and summary.json from the finished cells, every other planned
    cell marked ``failed`` or ``not run``. Figures are left to the tables rule: the next complete run
    builds them and overwrites these files."""
    finished = [metrics_path(results, cell) for cell, entry in statuses.items() if entry["status"] == FINISHED]
    build_tables([str(path) for path in finished], tables, plan, statuses)


def after_failed_run(log: str | Iterable[str], config: dict[str, Any]) -> str:
    """The Snakefile's ``onerror``: read the run's log, write partial tables, return the message that
    lists every failed cell with its logs. It never raises: a handler that failed would hide the run's
    own errors, so a problem here becomes a line of the message instead."""
    try:
        failed = read_snakemake_logs(log)
        plan, cells, results, tables = _study(config)
        previous, written = previous_statuses(tables / "summary.json")
        statuses = cell_statuses(cells, failed, results, previous, written)
        other = [job for job in failed if cell_of(job, cells) is None]
        # with every cell finished (a tables or report job failed) the tables rule builds them whole
        partial = any(entry["status"] != FINISHED for entry in statuses.values())
        if partial:
            write_partial_tables(statuses, plan, results, tables)
        return failure_message(statuses, other, tables if partial else None)
    except Exception as err:  # noqa: BLE001 -- see the docstring: report, never mask the run's failure
        return f"frozenbench: could not list the failed cells from the Snakemake log {log}: {err!r}"


def after_successful_run(config: dict[str, Any]) -> str | None:
    """The Snakefile's ``onsuccess``: when the tables are partial ones from an earlier failed run and
    this run did not rebuild them (e.g. it ran only the failed cell), rebuild them so that a cell
    finished now no longer shows as failed. Returns a line saying so, or None."""
    try:
        plan, cells, results, tables = _study(config)
        previous, written = previous_statuses(tables / "summary.json")
        if not previous or not cells:
            return None  # complete tables from the tables rule, or none yet: nothing to refresh
        statuses = cell_statuses(cells, [], results, previous, written)
        write_partial_tables(statuses, plan, results, tables)
        counts = {s: sum(e["status"] == s for e in statuses.values()) for s in (FINISHED, FAILED, NOT_RUN)}
        return (
            f"frozenbench: partial tables in {tables}/ refreshed: {counts[FINISHED]} finished, "
            f"{counts[FAILED]} failed, {counts[NOT_RUN]} not run (`snakemake all_tables` builds them whole)"
        )
    except Exception as err:  # noqa: BLE001 -- a refresh must not turn a successful run into a failure
        return f"frozenbench: could not refresh the partial tables: {err!r}"
