"""Compare two study runs metric by metric: every results/**/metrics.json of run A against the same
cell of run B (bootstrap replicates left out), and the converted checkpoints' weights.

    python scripts/diagnostics/compare_results.py RUN_A RUN_B

RUN_A / RUN_B are workflow folders (each holding results/ and checkpoints/), e.g. two worktrees
that ran `snakemake --cores 2 all_tables --configfile configs/ci.yaml` at two commits. Prints the
largest difference over all metric values and where it is, and exits 1 when a cell or a metric
is missing on one side or the weights differ; docs/testing.md records its use."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch


def flat(value, prefix: str = "") -> dict[str, object]:
    """``{"a.b.0": leaf}`` of a nested metrics dict, bootstrap entries left out."""
    if isinstance(value, dict):
        items = [(k, v) for k, v in value.items() if k != "bootstrap"]
    elif isinstance(value, list):
        items = list(enumerate(value))
    else:
        return {prefix[:-1]: value}
    out: dict[str, object] = {}
    for key, inner in items:
        out.update(flat(inner, f"{prefix}{key}."))
    return out


def is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def main(a: Path, b: Path) -> int:
    problems, worst, where, compared, cells = [], 0.0, None, 0, 0
    for path_a in sorted(a.glob("results/**/metrics.json")):
        cell = path_a.relative_to(a)
        path_b = b / cell
        if not path_b.is_file():
            problems.append(f"{cell}: only in {a}")
            continue
        ma, mb = (flat(json.loads(p.read_text())["metrics"]) for p in (path_a, path_b))
        if set(ma) != set(mb):
            problems.append(f"{cell}: metrics differ in name: {sorted(set(ma) ^ set(mb))}")
            continue
        cells += 1
        for key, x in ma.items():
            y = mb[key]
            if is_missing(x) or is_missing(y):
                if is_missing(x) != is_missing(y):
                    problems.append(f"{cell} {key}: {x} vs {y}")
                continue
            compared += 1
            if abs(x - y) > worst:
                worst, where = abs(x - y), f"{cell} {key}: {x} vs {y}"
    at = f" ({where})" if where else ""
    print(f"{cells} cells, {compared} metric values compared; largest difference {worst}{at}")
    for path_a in sorted(a.glob("checkpoints/*.pth")):
        wa, wb = (torch.load(p, weights_only=True)["state_dict"] for p in (path_a, b / path_a.relative_to(a)))
        same = set(wa) == set(wb) and all(torch.equal(wa[k], wb[k]) for k in wa)
        print(f"{path_a.relative_to(a)}: weights {'identical' if same else 'DIFFER'}")
        if not same:
            problems.append(f"{path_a.relative_to(a)}: weights differ")
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
