"""Study tables built from the results json alone (``results/{task}/{backbone}/{mode}/{head}/metrics.json``).

Every table is written as Markdown, LaTeX (booktabs) and CSV. A cell that has not been
run shows as "–" (empty in CSV), never as zero.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from frozenbench.errors import UserError
from frozenbench.utils.atomic import write_text

# (task type or name) -> [(column label, path into metrics)]
HEADLINE = {
    "coco": [("box AP", ("bbox", "AP")), ("mask AP", ("segm", "AP"))],
    "ade": [("mIoU", ("mIoU",))],
    "k400": [("top-1", ("top1",))],
}

# Lin et al., NeurIPS 2022 (SwinV2-G): frozen and fine-tuned headline numbers.
PAPER = {
    ("coco", "box AP", "frozen"): 60.0, ("coco", "mask AP", "frozen"): 52.2,
    ("coco", "box AP", "finetune"): 63.1, ("coco", "mask AP", "finetune"): 54.4,
    ("ade", "mIoU", "frozen"): 57.6, ("ade", "mIoU", "finetune"): 59.9,
    ("k400", "top-1", "frozen"): 81.7, ("k400", "top-1", "finetune"): 86.8,
}
MISSING = "–"
SIZE_ORDER = ["tiny", "small", "base", "large", "huge", "giant"]


@dataclass
class Table:
    name: str
    caption: str
    header: list[str]
    rows: list[list[Any]]


def load_results(source: str | Path | list) -> list[dict[str, Any]]:
    """Records from a list of metrics.json files, or from every cell under a results folder
    (a list of records is returned as it is)."""
    if isinstance(source, list) and all(isinstance(item, dict) for item in source) and source:
        return list(source)
    paths = [Path(p) for p in source] if isinstance(source, list) else sorted(Path(source).glob("*/*/*/*/metrics.json"))
    records = []
    for path in paths:
        try:
            records.append(json.loads(path.read_text()))
        except json.JSONDecodeError as err:
            raise UserError(f"{path}: not valid JSON ({err})") from None
    return records


def headline(record: dict[str, Any], label: str) -> float | None:
    for column, path in HEADLINE.get(record["task"], []):
        if column == label:
            value: Any = record["metrics"]
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
    return None


def _index(records: list[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    return {(r["task"], r["backbone"], r["mode"], r["head"]): r for r in records}


def _tasks(records: list[dict[str, Any]]) -> list[str]:
    return [t for t in HEADLINE if any(r["task"] == t for r in records)]


def _gap(frozen: float | None, finetune: float | None) -> float | None:
    return None if frozen is None or finetune is None else frozen - finetune


def pretraining_table(records: list[dict[str, Any]]) -> Table:
    """Pretraining task x task: frozen, fine-tuned and the gap (first head of each task)."""
    index, tasks = _index(records), _tasks(records)
    heads = {t: sorted({r["head"] for r in records if r["task"] == t and r.get("extra_blocks", "0") == "0"}) for t in tasks}
    header = ["backbone", "pretraining"]
    for task in tasks:
        for label, _ in HEADLINE[task]:
            header += [f"{task} {label} frozen", f"{task} {label} fine-tuned", f"{task} {label} gap"]
    rows = []
    for backbone in sorted({r["backbone"] for r in records}):
        meta = next(r for r in records if r["backbone"] == backbone)
        row: list[Any] = [backbone, meta.get("pretrain_task", MISSING)]
        for task in tasks:
            head = heads[task][0] if heads[task] else None
            for label, _ in HEADLINE[task]:
                frozen = index.get((task, backbone, "frozen", head))
                tuned = index.get((task, backbone, "finetune", head))
                f = headline(frozen, label) if frozen else None
                t = headline(tuned, label) if tuned else None
                row += [f, t, _gap(f, t)]
        rows.append(row)
    return Table("pretraining", "Frozen vs fine-tuned by pretraining task (validation split)", header, rows)


def head_capacity_table(records: list[dict[str, Any]]) -> Table:
    """Extra trainable blocks on the frozen features x task (frozen runs)."""
    frozen = [r for r in records if r["mode"] == "frozen"]
    tasks = _tasks(frozen)
    header = ["backbone", "extra blocks"] + [f"{t} {label}" for t in tasks for label, _ in HEADLINE[t]]
    rows = []
    keys = sorted({(r["backbone"], int(r.get("extra_blocks", "0"))) for r in frozen})
    for backbone, blocks in keys:
        row: list[Any] = [backbone, blocks]
        for task in tasks:
            # One head per (task, extra blocks): the first by name, so the table does not depend on file order.
            match = sorted((r for r in frozen if r["task"] == task and r["backbone"] == backbone
                            and int(r.get("extra_blocks", "0")) == blocks), key=lambda r: r["head"])
            for label, _ in HEADLINE[task]:
                row.append(headline(match[0], label) if match else None)
        rows.append(row)
    return Table("head_capacity", "Frozen backbone with extra trainable blocks (validation split)", header, rows)


def model_size_table(records: list[dict[str, Any]]) -> Table:
    """Model size x task: frozen vs fine-tuned gap, one row per backbone with its size label."""
    table = pretraining_table(records)
    sizes = {r["backbone"]: r.get("family_size", MISSING) for r in records}
    header = ["backbone", "size"] + table.header[2:]
    rows = [[row[0], sizes.get(row[0], MISSING)] + row[2:] for row in table.rows]
    rows.sort(key=lambda r: (SIZE_ORDER.index(r[1]) if r[1] in SIZE_ORDER else len(SIZE_ORDER), r[0]))
    return Table("model_size", "Frozen vs fine-tuned gap by model size (validation split)", header, rows)


def paper_table(records: list[dict[str, Any]], backbone: str = "swinv2_giant") -> Table:
    """Our numbers beside the paper's published SwinV2-G numbers, with the delta."""
    header = ["task", "metric", "mode", "ours", "paper", "delta"]
    index = _index(records)
    rows = []
    for (task, label, mode), published in PAPER.items():
        match = sorted((r for (t, b, m, _), r in index.items() if t == task and b == backbone and m == mode
                        and r.get("extra_blocks", "0") == "0"), key=lambda r: r["head"])
        ours = headline(match[0], label) if match else None
        rows.append([task, label, mode, ours, published, None if ours is None else ours - published])
    return Table("paper", f"{backbone}: ours vs Lin et al. 2022 (paper: COCO test-dev, ADE20K val, K400 val)",
                 header, rows)


def summary(records: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Headline numbers per cell path (``task/backbone/mode/head``): DVC's metrics file."""
    return {f"{r['task']}/{r['backbone']}/{r['mode']}/{r['head']}": {
        label: headline(r, label) for label, _ in HEADLINE.get(r["task"], [])} for r in records}


def _fmt(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def to_markdown(table: Table) -> str:
    lines = [f"{table.caption}.", "", "| " + " | ".join(table.header) + " |",
             "| " + " | ".join("---" for _ in table.header) + " |"]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in table.rows]
    return "\n".join(lines) + "\n"


def to_latex(table: Table) -> str:
    def esc(text: str) -> str:
        return text.replace("_", r"\_").replace("%", r"\%").replace("–", "--")

    cols = "l" * 2 + "r" * (len(table.header) - 2)
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{esc(table.caption)}}}", rf"\label{{tab:{table.name}}}",
             rf"\begin{{tabular}}{{{cols}}}", r"\toprule", " & ".join(esc(h) for h in table.header) + r" \\",
             r"\midrule"]
    lines += [" & ".join(esc(_fmt(v)) for v in row) + r" \\" for row in table.rows]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(table.header)
    writer.writerows([["" if v is None else (round(v, 4) if isinstance(v, float) else v) for v in row]
                      for row in table.rows])
    return buf.getvalue()


def build_tables(source: str | Path | list, out_dir: str | Path) -> list[Table]:
    records = load_results(source)
    tables = [pretraining_table(records), head_capacity_table(records), model_size_table(records),
              paper_table(records)]
    out_dir = Path(out_dir)
    write_text(out_dir / "summary.json", json.dumps(summary(records), indent=2, sort_keys=True) + "\n")
    for table in tables:
        write_text(out_dir / f"{table.name}.md", to_markdown(table))
        write_text(out_dir / f"{table.name}.tex", to_latex(table))
        write_text(out_dir / f"{table.name}.csv", to_csv(table))
    return tables
