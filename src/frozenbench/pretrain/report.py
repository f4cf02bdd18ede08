"""The pretraining probe report: one row per backbone, with its margin over the random backbone
of the same architecture (the floor every pretraining objective must beat)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from frozenbench.utils.atomic import write_json, write_text


def probe_rows(probe_files: dict[str, str | Path]) -> list[dict[str, Any]]:
    probes = {name: json.loads(Path(path).read_text()) for name, path in probe_files.items()}
    floors = {p["arch"]: p for p in probes.values() if p["objective"] == "random"}
    rows = []
    for name, p in sorted(probes.items(), key=lambda kv: (kv[1]["arch"], kv[1]["objective"])):
        floor = floors.get(p["arch"])
        row = {
            "backbone": name,
            "arch": p["arch"],
            "objective": p["objective"],
            "steps": p["steps"],
            "knn_top1": p["knn_top1"],
            "linear_top1": p["linear_top1"],
            "chance": p["chance"],
        }
        if floor is not None and p["objective"] != "random":
            row["knn_margin_over_random"] = p["knn_top1"] - floor["knn_top1"]
            row["linear_margin_over_random"] = p["linear_top1"] - floor["linear_top1"]
            row["beats_random"] = row["knn_margin_over_random"] > 0 and row["linear_margin_over_random"] > 0
        rows.append(row)
    return rows


def render_markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| backbone | objective | steps | k-NN top-1 | linear top-1 | chance | k-NN vs random | linear vs random |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        margin_knn = r.get("knn_margin_over_random")
        margin_lin = r.get("linear_margin_over_random")
        lines.append(
            f"| {r['backbone']} | {r['objective']} | {r['steps']} | {100 * r['knn_top1']:.1f} | "
            f"{100 * r['linear_top1']:.1f} | {100 * r['chance']:.1f} | "
            f"{'–' if margin_knn is None else f'{100 * margin_knn:+.1f}'} | "
            f"{'–' if margin_lin is None else f'{100 * margin_lin:+.1f}'} |"
        )
    return "\n".join(lines) + "\n"


def write_report(probe_files: dict[str, str | Path], out_json: str | Path, out_md: str | Path) -> list[dict[str, Any]]:
    rows = probe_rows(probe_files)
    write_json(out_json, rows)
    write_text(
        out_md,
        "Frozen-feature probes on the held-out split of the pretraining data (top-1, %).\n\n" + render_markdown(rows),
    )
    return rows
