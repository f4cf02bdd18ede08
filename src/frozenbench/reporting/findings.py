"""The study's reading of the paper's three questions, each comparison with its interval and whether
it reproduces the paper's direction.

Lin et al. (2022) ask (1) which pretraining suits a frozen backbone: supervised and contrastive
features hold up frozen, masked image modelling (MIM) features fall far behind, and every
pretraining beats random weights; (2) whether more head capacity helps a frozen backbone: extra
trainable blocks on the frozen features improve every task; (3) whether model size closes the gap
to fine-tuning: the frozen - fine-tuned gap shrinks as the backbone grows. Each comparison here is a
difference of cells on the same split, paired resample by resample
(:mod:`frozenbench.reporting.estimates`); it *reproduces* the paper when its interval excludes zero
on the paper's side, is *opposite* when it excludes zero on the other side, and is *within noise*
otherwise. A comparison the paper states no direction for is reported without a verdict.
"""

from __future__ import annotations

from typing import Any

from frozenbench.evaluation.headline import headline_metrics
from frozenbench.reporting.estimates import Estimate, difference

# the sign of (objective - supervised), frozen, in the paper's findings; absent: not stated
PRETRAINING_DIRECTION = {"mim": -1, "random": -1}
REPRODUCES, OPPOSITE, NOISE, NO_INTERVAL, NOT_STATED = (
    "reproduces",
    "opposite",
    "within noise",
    "no interval",
    "paper states none",
)


def verdict(value: Any, direction: int | None) -> str:
    """How a difference reads against the paper's ``direction`` (+1, -1, None)."""
    if direction is None:
        return NOT_STATED
    interval = value.interval if isinstance(value, Estimate) else None
    if interval is None:
        return NO_INTERVAL
    if not interval.excludes_zero():
        return NOISE
    return REPRODUCES if (interval.low > 0) == (direction > 0) else OPPOSITE


def _primary(task_type: str) -> str:
    return headline_metrics(task_type)[0][0]


def pretraining_rows(cells, heads, estimate_of) -> list[list[Any]]:
    """Question 1: each objective against supervised pretraining of the same architecture, frozen."""
    rows = []
    for (task, task_type), head in heads.items():
        label = _primary(task_type)
        by_arch: dict[str, dict[str, tuple]] = {}
        for key, records in cells.items():
            if key[0] == task and key[2] == "frozen" and key[3] == head:
                meta = records[0]
                by_arch.setdefault(str(meta.get("arch")), {})[str(meta.get("pretrain_objective"))] = key
        for objectives in by_arch.values():
            if "supervised" not in objectives:
                continue
            base = estimate_of(objectives["supervised"], label)
            for objective, key in sorted(objectives.items()):
                if objective == "supervised":
                    continue
                value = difference(estimate_of(key, label), base)
                direction = PRETRAINING_DIRECTION.get(objective)
                comparison = f"{objective} - supervised ({key[1]} - {objectives['supervised'][1]}), frozen"
                rows.append(_row("1 pretraining", task, label, comparison, value, direction))
    return rows


def capacity_rows(cells, heads, estimate_of) -> list[list[Any]]:
    """Question 2: a head with extra trainable blocks against the table's head, frozen, same backbone."""
    rows = []
    for (task, task_type), head in heads.items():
        label = _primary(task_type)
        for key, records in sorted(cells.items()):
            if key[0] != task or key[2] != "frozen" or key[3] == head:
                continue
            plain = (task, key[1], "frozen", head)
            if plain not in cells:
                continue
            more = int(records[0].get("extra_blocks", 0) or 0) > int(cells[plain][0].get("extra_blocks", 0) or 0)
            value = difference(estimate_of(key, label), estimate_of(plain, label))
            direction = 1 if more else None
            comparison = f"{key[3]} - {head} on {key[1]}, frozen"
            rows.append(_row("2 head capacity", task, label, comparison, value, direction))
    return rows


def size_rows(cells, heads, estimate_of, size_order: list[str]) -> list[list[Any]]:
    """Question 3: the frozen - fine-tuned gap of the largest backbone against the smallest's, per
    pretraining objective (a gap of gaps: positive when size closes the gap)."""
    rows = []
    for (task, task_type), head in heads.items():
        label = _primary(task_type)
        gaps: dict[str, dict[int, tuple[str, Any]]] = {}
        for key, records in cells.items():
            if key[0] != task or key[2] != "frozen" or key[3] != head:
                continue
            tuned = (task, key[1], "finetune", head)
            size = str(records[0].get("family_size"))
            if tuned not in cells or size not in size_order:
                continue
            gap = difference(estimate_of(key, label), estimate_of(tuned, label))
            objective = str(records[0].get("pretrain_objective"))
            gaps.setdefault(objective, {})[size_order.index(size)] = (key[1], gap)
        for objective, by_size in sorted(gaps.items()):
            if len(by_size) < 2 or objective == "random":
                continue
            (small, small_gap), (large, large_gap) = by_size[min(by_size)], by_size[max(by_size)]
            value = difference(large_gap, small_gap)
            comparison = f"gap(frozen - fine-tuned) of {large} - gap of {small} ({objective})"
            rows.append(_row("3 model size", task, label, comparison, value, 1))
    return rows


def _row(question: str, task: str, label: str, comparison: str, value: Any, direction: int | None) -> list[Any]:
    sign = "–" if direction is None else ("+" if direction > 0 else "-")
    return [question, task, label, comparison, value, sign, verdict(value, direction)]
