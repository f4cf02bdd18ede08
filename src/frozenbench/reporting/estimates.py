"""A table cell's number with its interval: the mean over the cell's seeds and a 95 % interval
from the bootstrap replicates its evaluations recorded (:mod:`frozenbench.evaluation.bootstrap`).

An :class:`Estimate` is a float (the mean), so a table's arithmetic and sorting keep working,
and carries the cell's bootstrap replicates (the two-level bootstrap over its seeds and its
evaluation samples). Differences of estimates (a gap, a delta, a gap of gaps) are taken replicate
by replicate: the samples are paired across cells of one split (each evaluation drew the same
resamples), the seeds are drawn independently per cell. A difference is a *finding* only when its
interval excludes zero.
"""

from __future__ import annotations

import zlib
from functools import cached_property
from typing import Any

import numpy as np

from frozenbench.evaluation import bootstrap
from frozenbench.evaluation.headline import headline_metrics, metric_bootstrap, metric_value, task_type_of

FINDING = "*"  # marks a difference whose interval excludes zero


class Estimate(float):
    """A mean (the float's value) with its bootstrap ``replicates`` (None: a record without them),
    the ``seeds`` and evaluation samples ``n`` behind it, and its per-seed values."""

    replicates: np.ndarray | None
    seeds: int
    n: int
    per_seed: dict[int, float]
    is_difference: bool

    def __new__(
        cls,
        mean: float,
        replicates: np.ndarray | None = None,
        seeds: int = 1,
        n: int = 0,
        per_seed: dict[int, float] | None = None,
        is_difference: bool = False,
    ) -> Estimate:
        estimate = super().__new__(cls, mean)
        estimate.replicates, estimate.seeds, estimate.n = replicates, seeds, n
        estimate.per_seed, estimate.is_difference = dict(per_seed or {}), is_difference
        return estimate

    @cached_property
    def interval(self) -> bootstrap.Interval | None:
        if self.replicates is None:
            return None
        low, high = bootstrap.percentile_interval(self.replicates)
        return bootstrap.Interval(float(self), low, high, self.seeds, self.n)

    @property
    def finding(self) -> bool:
        """A difference whose interval excludes zero."""
        return self.is_difference and self.interval is not None and self.interval.excludes_zero()

    def __sub__(self, other: Any) -> Any:
        return difference(self, other) if isinstance(other, Estimate) else float(self) - other

    def describe(self, digits: int = 1) -> str:
        """``41.2 [39.9, 42.5]`` (``*`` after a difference that is a finding); without an interval
        the mean alone."""
        interval = self.interval
        if interval is None:
            return f"{float(self):.{digits}f}"
        return interval.describe(digits) + (FINDING if self.finding else "")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mean": round(float(self), 4)}
        interval = self.interval
        if interval is not None:
            out.update(low=round(interval.low, 4), high=round(interval.high, 4))
            out.update(seeds=interval.seeds, n=interval.n, level=interval.level)
        if self.per_seed:
            out["per_seed"] = {str(seed): round(value, 4) for seed, value in sorted(self.per_seed.items())}
        return out


def _path_of(record: dict[str, Any], label: str) -> tuple[str, ...] | None:
    return next((path for column, path in headline_metrics(task_type_of(record)) if column == label), None)


def _stream(where: str) -> int:
    """The cell's own stream for drawing its seeds (independent of every other cell's)."""
    return zlib.crc32(where.encode())


def estimate(records: list[dict[str, Any]], label: str) -> Estimate | None:
    """The headline ``label`` of one cell over its seeds' ``records`` (one record per seed):
    None when no seed has the value; replicates when every seed with the value recorded them."""
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
    replicates, n = bootstrap.combined(entries, _stream(f"{where}:{label}"), where) if all(entries) else (None, 0)
    return Estimate(sum(values) / len(values), replicates, len(values), n, per_seed)


def difference(a: float | None, b: float | None) -> float | None:
    """``a - b``: an :class:`Estimate` with replicate-wise differences when both are estimates with
    replicates of the same split (same samples, same resamples), else the plain difference (None
    when either is missing)."""
    if a is None or b is None:
        return None
    a_rep = a.replicates if isinstance(a, Estimate) else None
    b_rep = b.replicates if isinstance(b, Estimate) else None
    if a_rep is None or b_rep is None or a.n != b.n or len(a_rep) != len(b_rep):
        return float(a) - float(b)
    return Estimate(float(a) - float(b), a_rep - b_rep, min(a.seeds, b.seeds), a.n, is_difference=True)
