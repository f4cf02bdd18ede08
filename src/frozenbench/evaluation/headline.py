"""The headline metrics of each task type: what metrics.json, the tables and the summaries report.

Keyed by task *type* (detection, segmentation, video), never by a task's name in a config: a
second COCO schedule under a new name is still a detection task with a box AP and a mask AP.
"""

from __future__ import annotations

import math
from typing import Any

from frozenbench.errors import UserError

# task type -> [(column label, path into the metrics dict)]; the first is the primary metric
HEADLINE_METRICS: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "detection": [("box AP", ("bbox", "AP")), ("mask AP", ("segm", "AP"))],
    "segmentation": [("mIoU", ("mIoU",))],
    "video": [("top-1", ("top1",))],
}
TASK_TYPES = tuple(HEADLINE_METRICS)
# The study's own task names: what metrics.json files written before the task type was recorded
# are read as, and the name a table shows for a type no task of the study has run yet.
CONVENTIONAL_TASK_NAMES = {"detection": "coco", "segmentation": "ade", "video": "k400"}
_TYPE_OF_NAME = {name: task_type for task_type, name in CONVENTIONAL_TASK_NAMES.items()}


def task_type_of(record: dict[str, Any]) -> str:
    """The task type a results record belongs to (recorded, or that of the study's own task names)."""
    task_type = record.get("task_type") or _TYPE_OF_NAME.get(record.get("task", ""))
    if task_type not in HEADLINE_METRICS:
        raise UserError(
            f"results record of task {record.get('task')!r} names no task type "
            f"(one of {', '.join(TASK_TYPES)}): evaluate the cell again to record it"
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


def primary_metric(task_type: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """``{"name": ..., "value": ...}`` of the task type's first headline metric."""
    label, path = HEADLINE_METRICS[task_type][0]
    return {"name": label, "value": metric_value(metrics, path)}
