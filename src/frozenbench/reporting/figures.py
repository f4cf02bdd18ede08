"""Study figures (PNG) from the same records as the tables.

- ``gap_vs_size.png``: frozen minus fine-tuned score per task against model size (the paper's
  "the gap closes as the model grows");
- ``pretraining_scores.png``: frozen score per task for each pretraining objective;
- ``training_curves.png``: the total training loss of every cell, one panel per task.

Cells not run are left out (never drawn as zero); an empty study gives a figure that says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from frozenbench.reporting.tables import SIZE_ORDER, model_size_table, pretraining_table
from frozenbench.utils.atomic import atomic_file

FIGURE_NAMES = ("gap_vs_size", "pretraining_scores", "training_curves")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display (cluster nodes have none)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    """``fig`` written to ``path`` as PNG, then closed."""
    with atomic_file(path) as tmp:
        # no timestamp in the PNG: the same results give the same bytes
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight", metadata={"Software": None})
    _pyplot().close(fig)


def _empty(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _finish(fig, ax, title: str, path: Path, empty: str | None) -> None:
    """A one-panel figure titled, saying ``empty`` where nothing was drawn, saved to ``path``."""
    if empty:
        _empty(ax, empty)
    ax.set_title(title, fontsize=10)
    _save(fig, path)


def _yerr(values: list[Any]) -> list[list[float]] | None:
    """Matplotlib's asymmetric error bars (below, above) from the values' 95 % intervals; None
    when no value has one (records without bootstrap replicates)."""
    intervals = [getattr(v, "interval", None) for v in values]
    if not any(intervals):
        return None
    return [
        [float(v) - i.low if i else 0.0 for v, i in zip(values, intervals)],
        [i.high - float(v) if i else 0.0 for v, i in zip(values, intervals)],
    ]


def gap_vs_size(records: list[dict[str, Any]], path: Path) -> None:
    plt = _pyplot()
    table = model_size_table(records)
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    sizes = [s for s in SIZE_ORDER if any(row[1] == s for row in table.rows)]
    drawn = 0
    gap_columns = [i for i, h in enumerate(table.header) if h.endswith(" gap")]
    for col in gap_columns:
        points = []
        for size in sizes:
            gaps = [row[col] for row in table.rows if row[1] == size and row[col] is not None]
            if gaps:
                points.append((sizes.index(size), max(gaps)))  # best backbone of that size
        if points:
            xs, ys = zip(*points)
            label = table.header[col].removesuffix(" gap")
            ax.errorbar(xs, [float(y) for y in ys], yerr=_yerr(list(ys)), marker="o", capsize=3, label=label)
            drawn += 1
    if drawn:
        ax.axhline(0.0, color="0.6", linewidth=0.8)
        ax.set_xticks(range(len(sizes)), sizes)
        ax.set_xlabel("model size")
        ax.set_ylabel("frozen − fine-tuned (points; 95 % interval)")
        ax.legend(fontsize=8)
    empty = None if drawn else "no size with both frozen and fine-tuned results yet"
    _finish(fig, ax, "Frozen vs fine-tuned gap by model size", path, empty)


def pretraining_scores(records: list[dict[str, Any]], path: Path) -> None:
    plt = _pyplot()
    table = pretraining_table(records)
    columns = [(i, h.removesuffix(" frozen")) for i, h in enumerate(table.header) if h.endswith(" frozen")]
    # one bar group per task metric, one bar per pretraining objective (its best frozen backbone)
    by_task: dict[str, dict[str, float]] = {}
    for row in table.rows:
        for col, label in columns:
            if row[col] is not None:
                best = by_task.setdefault(str(row[1]), {})
                best[label] = max(best.get(label, float("-inf")), row[col])
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    labels = [label for _, label in columns if any(label in v for v in by_task.values())]
    if labels:
        width = 0.8 / max(len(by_task), 1)
        for k, (task, scores) in enumerate(sorted(by_task.items())):
            xs = [i + k * width for i, label in enumerate(labels) if label in scores]
            heights = [scores[label] for label in labels if label in scores]
            ax.bar(xs, [float(h) for h in heights], width, yerr=_yerr(heights), capsize=3, label=task)
        ax.set_xticks([i + width * (len(by_task) - 1) / 2 for i in range(len(labels))], labels, fontsize=8)
        ax.set_ylabel("frozen score (val)")
        ax.legend(title="pretraining", fontsize=8)
    _finish(fig, ax, "Frozen backbone by pretraining objective", path, None if labels else "no frozen results yet")


def training_curves(records: list[dict[str, Any]], path: Path) -> None:
    plt = _pyplot()
    tasks = sorted({r["task"] for r in records if r.get("train_curve")})
    fig, axes = plt.subplots(1, max(len(tasks), 1), figsize=(4.2 * max(len(tasks), 1), 3.2), squeeze=False)
    if not tasks:
        _empty(axes[0][0], "no training curves yet")
    for ax, task in zip(axes[0], tasks):
        for r in sorted(
            (r for r in records if r["task"] == task and r.get("train_curve")),
            key=lambda r: (r["backbone"], r["mode"], r["head"]),
        ):
            steps, losses = zip(*r["train_curve"])
            ax.plot(steps, losses, linewidth=1, label=f"{r['backbone']} {r['mode']} {r['head']}")
        ax.set_title(task, fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.legend(fontsize=6)
    _save(fig, path)


# the training curves as data (one CSV per cell, columns step and loss): what `dvc plots show` renders
CURVES_FOLDER = "curves"


def training_curve_data(records: list[dict[str, Any]], folder: str | Path) -> list[Path]:
    """``{task}__{backbone}__{mode}__{head}.csv`` per cell with a training curve, the folder replaced
    as a whole (a cell no longer in the results leaves no stale curve)."""
    import csv
    import io

    from frozenbench.utils.atomic import atomic_dir

    written = []
    Path(folder).parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(folder) as tmp:
        for r in records:
            if not r.get("train_curve"):
                continue
            seed = f"__seed{r['seed']}" if r.get("seed") is not None else ""
            name = f"{r['task']}__{r['backbone']}__{r['mode']}__{r['head']}{seed}.csv"
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(["step", "loss"])
            writer.writerows([int(step), float(loss)] for step, loss in r["train_curve"])
            (tmp / name).write_text(buffer.getvalue())
            written.append(Path(folder) / name)
    return written


def build_figures(records: list[dict[str, Any]], out_dir: str | Path) -> list[Path]:
    out_dir = Path(out_dir)
    paths = [out_dir / f"{name}.png" for name in FIGURE_NAMES]
    gap_vs_size(records, paths[0])
    pretraining_scores(records, paths[1])
    training_curves(records, paths[2])
    training_curve_data(records, out_dir / CURVES_FOLDER)
    return paths
