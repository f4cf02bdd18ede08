"""A table cell's number with its interval: the mean over the cell's seeds and a 95 % interval
from the bootstrap replicates its evaluations recorded (:mod:`frozenbench.evaluation.bootstrap`).

An :class:`Estimate` is a float (the mean), so a table's arithmetic and sorting keep working,
and carries its :class:`~frozenbench.evaluation.bootstrap.Interval` for the formats to print. A
difference of two estimates (a gap, a delta) is paired replicate by replicate where both carry
replicates of the same split; it is a *finding* only when its interval excludes zero.
"""

from __future__ import annotations

from typing import Any

from frozenbench.evaluation import bootstrap
from frozenbench.evaluation.headline import headline_metrics, metric_bootstrap, metric_value, task_type_of

FINDING = "*"  # marks a difference whose interval excludes zero


class Estimate(float):
    """A mean (the float's value) with its ``interval`` (None: a record without replicates), its
    per-seed values and the seeds' bootstrap ``entries`` (in the same order, for pairing)."""

    interval: bootstrap.Interval | None
    per_seed: dict[int, float]
    entries: list[dict[str, Any]]
    is_difference: bool

    def __new__(
        cls,
        mean: float,
        interval: bootstrap.Interval | None = None,
        per_seed: dict[int, float] | None = None,
        entries: list[dict[str, Any]] | None = None,
        is_difference: bool = False,
    ) -> Estimate:
        estimate = super().__new__(cls, mean)
        estimate.interval, estimate.per_seed = interval, dict(per_seed or {})
        estimate.entries, estimate.is_difference = list(entries or []), is_difference
        return estimate

    @property
    def finding(self) -> bool:
        """A difference whose interval excludes zero."""
        return self.is_difference and self.interval is not None and self.interval.excludes_zero()

    def describe(self, digits: int = 1) -> str:
        """``41.2 [39.9, 42.5]`` (``*`` after a difference that is a finding); without an interval
        the mean alone."""
        if self.interval is None:
            return f"{float(self):.{digits}f}"
        return self.interval.describe(digits) + (FINDING if self.finding else "")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mean": round(float(self), 4)}
        if self.interval is not None:
            out.update(low=round(self.interval.low, 4), high=round(self.interval.high, 4))
            out.update(seeds=self.interval.seeds, n=self.interval.n, level=self.interval.level)
        if self.per_seed:
            out["per_seed"] = {str(seed): round(value, 4) for seed, value in sorted(self.per_seed.items())}
        return out


def _path_of(record: dict[str, Any], label: str) -> tuple[str, ...] | None:
    return next((path for column, path in headline_metrics(task_type_of(record)) if column == label), None)


def estimate(records: list[dict[str, Any]], label: str) -> Estimate | None:
    """The headline ``label`` of one cell over its seeds' ``records`` (one record per seed):
    None when no seed has the value; an interval when every seed with the value recorded its
    replicates."""
    values, entries, per_seed = [], [], {}
    for record in records:
        path = _path_of(record, label)
        value = metric_value(record.get("metrics", {}), path) if path else None
        if value is None:
            continue
        values.append(value)
        entries.append(metric_bootstrap(record["metrics"], path))
        per_seed[int(record.get("seed", 0))] = value
    if not values:
        return None
    where = "/".join(str(records[0].get(k)) for k in ("task", "backbone", "mode", "head"))
    interval = bootstrap.interval(values, entries, where=where) if all(entries) else None
    return Estimate(sum(values) / len(values), interval, per_seed, entries if interval else None)


def difference(a: float | None, b: float | None) -> float | None:
    """``a - b``: an :class:`Estimate` with the paired interval when both are estimates with
    replicates of the same split, else the plain difference (None when either is missing)."""
    if a is None or b is None:
        return None
    a_int = a.interval if isinstance(a, Estimate) else None
    b_int = b.interval if isinstance(b, Estimate) else None
    if a_int is None or b_int is None or a_int.n != b_int.n:
        return float(a) - float(b)
    return Estimate(float(a) - float(b), _paired(a, b), is_difference=True)


def _paired(a: Estimate, b: Estimate) -> bootstrap.Interval:
    return bootstrap.difference(
        list(a.per_seed.values()), a.entries, list(b.per_seed.values()), b.entries, where="difference"
    )
