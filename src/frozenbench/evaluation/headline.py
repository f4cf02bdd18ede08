"""The headline metrics of each task type: what metrics.json, the tables and the summaries report.

Keyed by task *type* (each :class:`frozenbench.tasks.registry.TaskType` names its metrics), never
by a task's name in a config: a second COCO schedule under a new name is still a detection task
with a box AP and a mask AP.
"""

from __future__ import annotations

import math
from typing import Any

from frozenbench.errors import UserError
from frozenbench.tasks.registry import get_task_type, list_task_types


def headline_metrics(task_type: str) -> list[tuple[str, tuple[str, ...]]]:
    """[(column label, path into the metrics dict)] of a task type; the first is its primary metric."""
    return list(get_task_type(task_type).headline_metrics)


def task_types() -> tuple[str, ...]:
    """Every registered task type, in the tables' order."""
    return tuple(list_task_types())


def conventional_task_names() -> dict[str, str]:
    """Task type -> the study's own name for its task: what a metrics.json written before the task
    type was recorded is read as, and what a table shows for a type no task has run yet."""
    return {name: get_task_type(name).conventional_name for name in list_task_types()}


def task_type_of(record: dict[str, Any]) -> str:
    """The task type a results record belongs to (recorded, or that of the study's own task names)."""
    of_name = {name: task_type for task_type, name in conventional_task_names().items()}
    task_type = record.get("task_type") or of_name.get(record.get("task", ""))
    if task_type not in list_task_types():
        raise UserError(
            f"results record of task {record.get('task')!r} names no task type "
            f"(one of {', '.join(task_types())}): evaluate the cell again to record it"
        )
    return task_type


def metric_value(metrics: dict[str, Any], path: tuple[str, ...]) -> float | None:
    """The number at ``path`` in ``metrics``, None when absent or NaN (a metric never computed)."""
    value: Any = metrics
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def metric_bootstrap(metrics: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any] | None:
    """The bootstrap replicates recorded beside the metric at ``path`` (its evaluator's
    ``bootstrap`` entry, :mod:`frozenbench.evaluation.bootstrap`), None when the record has none
    (evaluated before intervals were recorded)."""
    value: Any = metrics
    for key in (*path[:-1], "bootstrap", path[-1]):
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, dict) and "replicates" in value else None


def primary_metric(task_type: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """``{"name": ..., "value": ...}`` of the task type's first headline metric."""
    label, path = headline_metrics(task_type)[0]
    return {"name": label, "value": metric_value(metrics, path)}
