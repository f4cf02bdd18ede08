"""Study tables built from the results json alone (``results/{task}/{backbone}/{mode}/{head}/metrics.json``).

Every number is a cell's mean over its seeds with a 95 % interval (:mod:`frozenbench.reporting.estimates`:
a bootstrap over the evaluation samples combined with the spread over seeds), and a gap between two
cells is paired replicate by replicate and marked a finding (``*``) only when its interval excludes
zero; each table's notes state what the intervals rest on (samples, seeds).

Every table is written as Markdown, LaTeX (booktabs) and CSV. A cell that has not been
run shows as "–" (empty in CSV), never as zero. Partial tables, built after a failed run with each
cell's status (:mod:`frozenbench.study_status`), show a cell without results as ``failed`` (its logs
listed under the Markdown table) or ``not run`` instead. Cells are found by their task *type*
(:mod:`frozenbench.evaluation.headline`): a task of any name shows, with its type's metrics.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frozenbench.errors import UserError
from frozenbench.evaluation.headline import headline_metrics, task_type_of, task_types
from frozenbench.reporting.estimates import FINDING, Estimate, difference, estimate
from frozenbench.tasks.registry import LIN_2022, LIU_2022, get_task_type
from frozenbench.utils.atomic import write_text

# The study's tables and figures, named once (the DAG's outputs and the report read these).
TABLE_NAMES = ("pretraining", "head_capacity", "model_size", "paper", "findings")

MISSING = "–"
# a cell's status in partial tables (frozenbench.study_status): what a cell without results shows
FINISHED, FAILED, NOT_RUN = "finished", "failed", "not run"


class CellMark(str):
    """What a table shows instead of a number for a cell that has none: ``failed`` or ``not run``
    (a str, so every format writes it as text), carrying the cell and, for a failed one, its logs."""

    cell: str
    logs: tuple[str, ...]

    def __new__(cls, status: str, cell: str = "", logs: tuple[str, ...] | list[str] = ()) -> CellMark:
        mark = super().__new__(cls, status)
        mark.cell, mark.logs = cell, tuple(logs)
        return mark


SIZE_ORDER = ["tiny", "small", "base", "large", "huge", "giant"]


@dataclass
class Table:
    name: str
    caption: str
    header: list[str]
    rows: list[list[Any]]
    # lines under the Markdown table (the failed cells it shows, with their logs)
    notes: list[str] = field(default_factory=list)


PAPER_BACKBONE = "SwinV2-G (3.0 B, weights not released)"


def load_results(source: str | Path | list) -> list[dict[str, Any]]:
    """Records from a list of metrics.json files, or from every cell under a results folder
    (a list of records is returned as it is)."""
    if isinstance(source, list) and all(isinstance(item, dict) for item in source) and source:
        return list(source)
    paths = (
        [Path(p) for p in source] if isinstance(source, list) else sorted(Path(source).glob("*/*/*/*/*/metrics.json"))
    )
    records = []
    for path in paths:
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise UserError(f"{path}: not valid JSON ({err})") from None
        scored = path.parent / TEST_DEV_SCORES
        if scored.is_file():
            record["test_dev"] = read_test_dev_scores(scored, record)
        records.append(record)
    return records


# what an evaluation server said of a run's test-dev upload, written beside its metrics.json by hand:
# {"<headline label>": number, ...}, e.g. {"box AP": 60.1, "mask AP": 52.0}
TEST_DEV_SCORES = "test_dev_scores.json"


def read_test_dev_scores(path: Path, record: dict[str, Any]) -> dict[str, float]:
    """The server's scores in ``path`` for ``record``'s run, each a headline label of its task type
    (a number in percent); anything else is an error naming the file."""
    try:
        scores = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None
    labels = [label for label, _ in headline_metrics(task_type_of(record))]
    if not isinstance(scores, dict) or not scores or set(scores) - set(labels):
        raise UserError(f"{path}: expected {{label: number}} with labels among {labels}, got {scores!r}")
    bad = {
        k: v for k, v in scores.items() if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v <= 100
    }
    if bad:
        raise UserError(f"{path}: scores must be numbers in percent (0-100), got {bad}")
    return {k: float(v) for k, v in scores.items()}


def cell_path(record: dict[str, Any]) -> str:
    """A cell's name in summary.json: ``task/backbone/mode/head``."""
    return "/".join(_key(record))


def run_path(record: dict[str, Any]) -> str:
    """One seed's run of a cell, as the statuses name it: ``task/backbone/mode/head/seed<N>``
    (the cell path alone for a record that names no seed)."""
    seed = record.get("seed")
    return cell_path(record) if seed is None else f"{cell_path(record)}/seed{seed}"


def _run_key(record: dict[str, Any]) -> tuple:
    return (*_key(record), record.get("seed"))


def with_planned_cells(
    records: list[dict[str, Any]], plan: dict[str, Any] | None, statuses: dict[str, dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """``records`` plus an empty record (no metrics: every value missing) for each planned run (a
    cell at one seed) that has none yet, so a table shows every cell of the study, run or not. With
    ``statuses`` (by :func:`run_path`: ``status`` and, for a failed run, ``logs``) a run not finished
    carries its status instead of results: a failed run's old metrics.json may be stale, so it is
    not shown."""
    if statuses:
        records = [r for r in records if statuses.get(run_path(r), {}).get("status", FINISHED) == FINISHED]
    if not plan:
        return records
    have = {_run_key(r) for r in records}
    missing = []
    for cell in plan.get("cells", []):
        if _run_key(cell) in have:
            continue
        record = {**cell, "metrics": {}}
        if statuses is not None:
            status = statuses.get(run_path(cell), {})
            record["status"] = FAILED if status.get("status") == FAILED else NOT_RUN
            record["logs"] = list(status.get("logs", [])) if record["status"] == FAILED else []
        missing.append(record)
    return records + missing


def headline(records: dict[str, Any] | list[dict[str, Any]], label: str) -> Estimate | None:
    """The headline ``label`` of a cell's records (one per seed; one record alone is one seed)."""
    return estimate(records if isinstance(records, list) else [records], label)


def cell_value(records: list[dict[str, Any]] | None, label: str) -> Estimate | CellMark | None:
    """What a table shows for a cell's headline ``label`` (``records``: its seeds): ``failed`` when a
    seed's run failed (partial tables), else the estimate over the seeds that finished, else
    ``not run``, else None (shown as missing)."""
    if not records:
        return None
    failed = next((r for r in records if r.get("status") == FAILED), None)
    if failed is not None:
        return CellMark(FAILED, run_path(failed), failed.get("logs", ()))
    finished = [r for r in records if r.get("status") not in (FAILED, NOT_RUN) and r.get("metrics")]
    if finished:
        return headline(finished, label)
    if any(r.get("status") == NOT_RUN for r in records):
        return CellMark(NOT_RUN, cell_path(records[0]))
    return None


def _number(value: Any) -> float | None:
    return value if isinstance(value, (int, float)) else None


def _labels(task: str, records: list[dict[str, Any]]) -> list[str]:
    """The headline column labels of ``task`` (by the type its records carry)."""
    return [label for label, _ in headline_metrics(_type_of_task(task, records))]


def _type_of_task(task: str, records: list[dict[str, Any]]) -> str:
    types = {task_type_of(r) for r in records if r["task"] == task}
    if len(types) != 1:
        raise UserError(f"task {task!r}: its results records name {len(types)} task types {sorted(types)}")
    return types.pop()


def _key(record: dict[str, Any]) -> tuple:
    return record["task"], record["backbone"], record["mode"], record["head"]


def _index(records: list[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    """Each cell's records, one per seed it ran."""
    cells: dict[tuple, list[dict[str, Any]]] = {}
    for record in records:
        cells.setdefault(_key(record), []).append(record)
    return cells


def _tasks(records: list[dict[str, Any]]) -> list[str]:
    """Every task with records, by type (detection, segmentation, video), then by name."""
    names = {r["task"] for r in records}
    return sorted(names, key=lambda t: (task_types().index(_type_of_task(t, records)), t))


def _gap(frozen: Any, finetune: Any) -> float | None:
    return difference(_number(frozen), _number(finetune))


def table_heads(records: list[dict[str, Any]], chosen: dict[str, str] | None = None) -> dict[str, str | None]:
    """The head each comparison table uses per task: ``chosen`` (the study's ``tables.heads``, or the
    head of its first cell of that task), else the one head a task has without extra blocks, else
    the first such head by name."""
    heads: dict[str, str | None] = {}
    for task in _tasks(records):
        if chosen and task in chosen:
            heads[task] = chosen[task]
            continue
        plain = sorted({r["head"] for r in records if r["task"] == task and str(r.get("extra_blocks", "0")) == "0"})
        heads[task] = plain[0] if plain else None
    return heads


def pretraining_table(records: list[dict[str, Any]], heads: dict[str, str] | None = None) -> Table:
    """Pretraining objective x task: frozen, fine-tuned and the gap (one head per task, see :func:`table_heads`)."""
    index, tasks = _index(records), _tasks(records)
    chosen = table_heads(records, heads)
    header = ["backbone", "pretraining"]
    for task in tasks:
        for label in _labels(task, records):
            header += [f"{task} {label} frozen", f"{task} {label} fine-tuned", f"{task} {label} gap"]
    rows = []
    for backbone in sorted({r["backbone"] for r in records}):
        meta = next(r for r in records if r["backbone"] == backbone)
        row: list[Any] = [backbone, meta.get("pretrain_objective", MISSING)]
        for task in tasks:
            for label in _labels(task, records):
                f = cell_value(index.get((task, backbone, "frozen", chosen[task])), label)
                t = cell_value(index.get((task, backbone, "finetune", chosen[task])), label)
                row += [f, t, _gap(_number(f), _number(t))]
        rows.append(row)
    used = ", ".join(f"{t}: {h}" for t, h in chosen.items() if h)
    return Table(
        "pretraining",
        f"Frozen vs fine-tuned by pretraining objective (validation split; heads {used or '-'})",
        header,
        rows,
    )


def head_capacity_table(records: list[dict[str, Any]]) -> Table:
    """Frozen cells of every (backbone, task) trained with more than one head: one row per head with
    its capacity knobs (extra blocks, decoder / temporal blocks, detector), so every variant shows."""
    frozen = [r for r in records if r["mode"] == "frozen"]
    tasks = _tasks(frozen)
    header = ["backbone", "task", "head", "capacity"] + [f"{t} {label}" for t in tasks for label in _labels(t, frozen)]
    heads_of: dict[tuple[str, str], set[str]] = {}
    for r in frozen:
        heads_of.setdefault((r["backbone"], r["task"]), set()).add(r["head"])
    rows = []
    cells = _index(frozen)
    for key in sorted(cells, key=lambda k: (k[1], tasks.index(k[0]), k[3])):
        r = cells[key][0]
        if len(heads_of[(r["backbone"], r["task"])]) < 2:
            continue
        capacity = r.get("capacity") or f"extra_blocks={r.get('extra_blocks', 0)}"
        row: list[Any] = [r["backbone"], r["task"], r["head"], capacity]
        for task in tasks:
            row += [cell_value(cells[key], label) if task == r["task"] else None for label in _labels(task, frozen)]
        rows.append(row)
    return Table("head_capacity", "Frozen backbone with more head capacity (validation split)", header, rows)


def model_size_table(records: list[dict[str, Any]], heads: dict[str, str] | None = None) -> Table:
    """Model size x task: frozen vs fine-tuned gap, one row per backbone with its size label."""
    table = pretraining_table(records, heads)
    sizes = {r["backbone"]: r.get("family_size", MISSING) for r in records}
    header = ["backbone", "size"] + table.header[2:]
    rows = [[row[0], sizes.get(row[0], MISSING)] + row[2:] for row in table.rows]
    rows.sort(key=lambda r: (SIZE_ORDER.index(r[1]) if r[1] in SIZE_ORDER else len(SIZE_ORDER), r[0]))
    caption = table.caption.replace("by pretraining objective", "gap by model size")
    return Table("model_size", caption, header, rows)


def largest_backbone(records: list[dict[str, Any]]) -> str | None:
    """The pretrained backbone of the largest size label (ties: the later architecture name, so
    SwinV2-L over Swin-L); a randomly initialised one (the floor) only when nothing else ran."""
    if not records:
        return None
    rank = {name: i for i, name in enumerate(SIZE_ORDER)}
    best = max(
        records,
        key=lambda r: (
            r.get("pretrain_objective") != "random",
            rank.get(r.get("family_size"), -1),
            str(r.get("arch", "")),
            r["backbone"],
        ),
    )
    return best["backbone"]


def paper_table(
    records: list[dict[str, Any]], backbone: str | None = None, heads: dict[str, str] | None = None
) -> Table:
    """Our cells on ``backbone`` (default: the largest the study runs) beside each published number
    of their task type (:class:`~frozenbench.tasks.registry.Published`: frozen from Lin et al.
    2022, fine-tuned from the SwinV2 paper), like with like: the same split (val beside val; a
    test-dev number only beside a scored test-dev submission, else "not scored") and, where the
    study trains it, the same head kind; "what differs" names the rest (backbone, head). A delta is
    given only where the cell's dataset is the paper's benchmark (``datasets.<name>.benchmark``):
    on generated or other data the numbers stand side by side with no delta column at all."""
    backbone = backbone or largest_backbone(records)
    rows, comparable_any = _paper_rows(records, backbone, table_heads(records, heads))
    header = ["task", "metric", "mode", "split", "published", "published by", "ours", "our head", "delta", "differs"]
    if not comparable_any:  # no cell on the paper's benchmarks: nothing to subtract
        header = header[:8] + header[9:]
        rows = [row[:8] + row[9:] for row in rows]
    ours_name = backbone or "no backbone run yet"
    data = "" if comparable_any else "; these datasets are not the paper's benchmarks, so no delta is given"
    return Table(
        "paper",
        f"Ours ({ours_name}, validation splits) beside the published {PAPER_BACKBONE} numbers, same task, "
        f"split and head kind where the study trains it (frozen: {LIN_2022}; fine-tuned: {LIU_2022}){data}",
        header,
        rows,
        notes=[
            "test-dev: upload the cell's results/<cell>/seed<N>/detections_test-dev2017_frozenbench_results.zip "
            "to the COCO evaluation server (test-dev2017, bbox and segm) and write its AP beside the zip as "
            f'{TEST_DEV_SCORES} ({{"box AP": ..., "mask AP": ...}}); until then a test-dev row is \'not scored\''
        ],
    )


def _paper_rows(
    records: list[dict[str, Any]], backbone: str | None, chosen: dict[str, str | None]
) -> tuple[list[list[Any]], bool]:
    """The paper table's rows (every published number of every task type, beside our cell) and
    whether any of our cells is on the paper's benchmark."""
    index, tasks = _index(records), _tasks(records)
    rows, comparable_any = [], False
    for task_type in task_types():
        record = get_task_type(task_type)
        names = [t for t in tasks if _type_of_task(t, records) == task_type] or [record.conventional_name]
        for task in names:
            for published in record.published:
                cell = _paper_cell(index, task, backbone, published, chosen.get(task))
                comparable = bool(cell) and cell[0].get("benchmark") == record.benchmark
                comparable_any |= comparable
                if published.split == "val":
                    ours = cell_value(cell, published.label)
                else:  # no test-dev annotations here: only an evaluation server's score counts
                    ours = _test_dev_score(cell, published.label)
                delta = float(ours) - published.value if comparable and isinstance(ours, float) else None
                ours_head = cell[0]["head"] if cell else None
                rows.append(
                    [task, published.label, published.mode, published.split, published.value,
                     f"{published.head}, {published.backbone} ({published.source})", ours, ours_head,
                     delta if comparable else "not comparable", _differences(cell, published, backbone)]
                )  # fmt: skip
    return rows, comparable_any


def _test_dev_score(cell: list[dict[str, Any]], label: str) -> float | str | None:
    """The evaluation server's score of the cell's test-dev upload (its first scored seed's
    ``test_dev_scores.json``), "not scored" when there is none yet, None for a cell not run."""
    if not cell:
        return None
    return next((r["test_dev"][label] for r in cell if label in r.get("test_dev", {})), "not scored")


def _paper_cell(
    index: dict[tuple, list[dict[str, Any]]], task: str, backbone: str | None, published: Any, table_head: str | None
) -> list[dict[str, Any]]:
    """Our cell to set beside ``published``: the backbone's cell of the same mode whose head is of
    the published head's kind (the table's head for the task when it is, else the first by name),
    else the table's head; [] when there is none."""
    candidates = {key: cell for key, cell in index.items() if key[:3] == (task, backbone, published.mode)}
    same_kind = sorted(
        (key for key, cell in candidates.items() if cell[0].get("head_kind") == published.head_kind),
        key=lambda key: (key[3] != table_head, key[3]),
    )
    if same_kind:
        return candidates[same_kind[0]]
    return candidates.get((task, backbone, published.mode, table_head), [])


def _differences(cell: list[dict[str, Any]], published: Any, backbone: str | None) -> str:
    """What still differs between our cell and the published number: backbone and head."""
    if not cell:
        return "no such cell in the study"
    ours = cell[0]
    parts = [f"backbone {ours.get('arch') or backbone} vs {published.backbone}"]
    kind = ours.get("head_kind")
    if kind != published.head_kind:
        parts.append(f"head {kind or ours['head']} vs {published.head}")
    elif published.head.endswith("++"):
        parts.append(f"head {kind} vs {published.head} (no '++': single-scale, no semantic branch)")
    return "; ".join(parts)


def findings_table(records: list[dict[str, Any]], heads: dict[str, str] | None = None) -> Table:
    """The paper's three questions on this study (:mod:`frozenbench.reporting.findings`): each
    comparison of the table heads' cells with its paired interval and its verdict."""
    from frozenbench.reporting import findings

    finished = [r for r in records if r.get("metrics") and r.get("status") in (None, FINISHED)]
    cells = _index(finished)
    chosen = table_heads(finished, heads) if finished else {}
    task_heads = {(task, _type_of_task(task, finished)): head for task, head in chosen.items() if head}

    def estimate_of(key: tuple, label: str) -> float | None:
        return _number(cell_value(cells.get(key), label))

    rows = [
        *findings.pretraining_rows(cells, task_heads, estimate_of),
        *findings.capacity_rows(cells, task_heads, estimate_of),
        *findings.size_rows(cells, task_heads, estimate_of, SIZE_ORDER),
    ]
    return Table(
        "findings",
        "The paper's three questions on this study: each difference with its 95 % interval (paired over "
        "evaluation samples, seeds resampled per cell); 'reproduces' when the interval excludes zero on the "
        "paper's side, 'opposite' on the other, 'within noise' when it includes zero",
        ["question", "task", "metric", "comparison", "difference", "paper", "verdict"],
        rows,
    )


def _summary_entry(records: list[dict[str, Any]]) -> dict[str, Any]:
    """A cell's headline numbers for summary.json: each label's mean, and beside it
    ``<label>_interval`` (low, high, seeds, n, per-seed values) where the cell has them."""
    entry: dict[str, Any] = {}
    for label, _ in headline_metrics(task_type_of(records[0])):
        value = headline(records, label)
        entry[label] = None if value is None else round(float(value), 4)
        if isinstance(value, Estimate) and (value.interval is not None or len(value.per_seed) > 1):
            entry[f"{label}_interval"] = value.to_json()
    return entry


def summary(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Headline numbers per cell path (``task/backbone/mode/head``), over the cell's seeds, with
    their intervals: DVC's metrics file."""
    return {cell_path(cell[0]): _summary_entry(cell) for cell in _index(records).values()}


def summary_with_status(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """summary.json of partial tables: every planned cell with its ``status`` (``finished``, ``failed``
    with its ``logs``, ``not run``) beside its headline numbers (null unless finished)."""
    cells = {}
    for cell in _index(records).values():
        statuses = [r.get("status", FINISHED) for r in cell]
        status = FAILED if FAILED in statuses else NOT_RUN if FINISHED not in statuses else FINISHED
        finished = [r for r in cell if r.get("status", FINISHED) == FINISHED]
        entry = _summary_entry(finished) if finished else {label: None for label in _summary_entry(cell)}
        entry["status"] = status
        entry["seeds"] = {f"seed{r.get('seed')}": r.get("status", FINISHED) for r in cell if r.get("seed") is not None}
        if status == FAILED:
            entry["logs"] = [log for r in cell for log in r.get("logs", [])]
        cells[cell_path(cell[0])] = entry
    return cells


def failed_cell_notes(table: Table) -> list[str]:
    """One line per failed cell the table shows, with its logs (in the order the table shows them)."""
    notes: dict[str, str] = {}
    for row in table.rows:
        for value in row:
            if isinstance(value, CellMark) and value == FAILED and value.cell not in notes:
                logs = ", ".join(value.logs) or "no log named"
                notes[value.cell] = f"failed: {value.cell} (log: {logs})"
    return list(notes.values())


def _fmt(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, Estimate):
        return value.describe()
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def to_markdown(table: Table) -> str:
    lines = [
        f"{table.caption}.",
        "",
        "| " + " | ".join(table.header) + " |",
        "| " + " | ".join("---" for _ in table.header) + " |",
    ]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in table.rows]
    if table.notes:
        lines += [""] + [f"- {note}" for note in table.notes]
    return "\n".join(lines) + "\n"


def to_latex(table: Table) -> str:
    def esc(text: str) -> str:
        return text.replace("_", r"\_").replace("%", r"\%").replace("–", "--")

    cols = "l" * 2 + "r" * (len(table.header) - 2)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{esc(table.caption)}}}",
        rf"\label{{tab:{table.name}}}",
        rf"\begin{{tabular}}{{{cols}}}",
        r"\toprule",
        " & ".join(esc(h) for h in table.header) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(esc(_fmt(v)) for v in row) + r" \\" for row in table.rows]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    """The table with plain numbers (an estimate's mean), and after each column that holds
    intervals its ``low`` and ``high`` columns."""
    with_interval = [
        any(isinstance(row[i], Estimate) and row[i].interval is not None for row in table.rows)
        for i in range(len(table.header))
    ]

    def plain(v: Any) -> Any:
        return "" if v is None else (round(float(v), 4) if isinstance(v, float) else v)

    def bounds(v: Any) -> list[Any]:
        interval = v.interval if isinstance(v, Estimate) else None
        return ["", ""] if interval is None else [round(interval.low, 4), round(interval.high, 4)]

    header, rows = [], [[] for _ in table.rows]
    for i, name in enumerate(table.header):
        header += [name] + ([f"{name} low", f"{name} high"] if with_interval[i] else [])
        for out, row in zip(rows, table.rows):
            out += [plain(row[i])] + (bounds(row[i]) if with_interval[i] else [])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def interval_notes(table: Table) -> list[str]:
    """What the table's intervals rest on: per task, the evaluation samples and the seeds (the
    fewest and most any of its cells ran), and what a finding mark means."""
    basis: dict[str, set[tuple[int, int]]] = {}
    for row in table.rows:
        for name, value in zip(table.header, row):
            if isinstance(value, Estimate) and value.interval is not None and not value.is_difference:
                basis.setdefault(name.split(" ")[0], set()).add((value.interval.n, value.interval.seeds))
    if not basis:
        return []
    parts = []
    for task, pairs in sorted(basis.items()):
        samples = sorted({n for n, _ in pairs})
        seeds = sorted({s for _, s in pairs})
        seed_text = f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}"
        parts.append(f"{task}: n = {', '.join(map(str, samples))} evaluation samples, {seed_text} seed(s) per cell")
    return [
        "mean [95 % interval]: a bootstrap over the evaluation samples combined with the spread over seeds; "
        + "; ".join(parts),
        f"{FINDING}: a gap whose paired interval excludes zero (a finding); without it the gap is within noise",
    ]


def build_tables(
    source: str | Path | list,
    out_dir: str | Path,
    plan: dict[str, Any] | None = None,
    statuses: dict[str, dict[str, Any]] | None = None,
) -> list[Table]:
    """Write every table; ``plan`` (what ``frozenbench tables --plan`` passes): the study's cells, the
    head per task the comparison tables use (``heads``) and the backbone of the paper comparison
    (``paper_backbone``); cells not run yet show as missing. ``statuses`` (partial tables after a
    failed run, :func:`frozenbench.study_status.cell_statuses`): each planned cell without results
    shows as ``failed`` or ``not run``, and summary.json gives every cell its status."""
    plan = plan or {}
    records = with_planned_cells(load_results(source), plan, statuses)
    heads = plan.get("heads")
    tables = [
        pretraining_table(records, heads),
        head_capacity_table(records),
        model_size_table(records, heads),
        paper_table(records, plan.get("paper_backbone"), heads),
        findings_table(records, heads),
    ]
    for table in tables:
        table.notes = table.notes + failed_cell_notes(table) + interval_notes(table)
    out_dir = Path(out_dir)
    cells = summary_with_status(records) if statuses is not None else summary([r for r in records if r.get("metrics")])
    write_text(out_dir / "summary.json", json.dumps(cells, indent=2, sort_keys=True) + "\n")
    for table in tables:
        write_text(out_dir / f"{table.name}.md", to_markdown(table))
        write_text(out_dir / f"{table.name}.tex", to_latex(table))
        write_text(out_dir / f"{table.name}.csv", to_csv(table))
    return tables
