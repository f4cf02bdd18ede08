"""One self-contained HTML page: the study tables (from their CSV), the figures (embedded
PNG) and the pretraining probe table. No external assets, so it can be mailed or archived."""

from __future__ import annotations

import base64
import csv
import html
from pathlib import Path

from frozenbench.errors import UserError
from frozenbench.utils.atomic import write_text

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.85em}
th,td{border:1px solid #ccc;padding:0.25em 0.5em;text-align:right}
th:first-child,td:first-child,th:nth-child(2),td:nth-child(2){text-align:left}
caption{caption-side:top;text-align:left;font-weight:600;padding:0.3em 0}
img{max-width:48%;margin-right:1%}"""


def _table(rows: list[list[str]], caption: str) -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c) if c else '–'}</td>" for c in row) + "</tr>" for row in rows[1:]
    )
    return (
        f"<table><caption>{html.escape(caption)}</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


def markdown_table_rows(text: str) -> tuple[str, list[list[str]]]:
    """(caption, rows) of a Markdown file holding one caption line and one pipe table."""
    caption, rows = "", []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):  # skip the separator row
                rows.append(cells)
        elif line and not rows:
            caption = line
    return caption, rows


def build_report(
    tables_dir: str | Path, out: str | Path, probe_md: str | Path | None = None, title: str = "frozenbench study"
) -> None:
    tables_dir = Path(tables_dir)
    csvs = sorted(tables_dir.glob("*.csv"))
    if not csvs:
        raise UserError(f"{tables_dir}: no tables (*.csv) to report; run the tables rule first")
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if probe_md and Path(probe_md).is_file():
        caption, rows = markdown_table_rows(Path(probe_md).read_text())
        parts += ["<h2>Pretraining probes</h2>", _table(rows, caption)]
    parts.append("<h2>Tables</h2>")
    for path in csvs:
        md = path.with_suffix(".md")
        caption = markdown_table_rows(md.read_text())[0] if md.exists() else path.stem
        with open(path, newline="") as f:
            parts.append(_table(list(csv.reader(f)), caption))
    pngs = sorted(tables_dir.glob("*.png"))
    if pngs:
        parts.append("<h2>Figures</h2>")
        for path in pngs:
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            parts.append(f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">')
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>\n"
    )
    write_text(out, page)
