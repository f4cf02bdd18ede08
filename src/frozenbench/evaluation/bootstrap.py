"""Intervals for evaluation metrics: a bootstrap over the evaluation samples, combined with the
spread over training seeds.

A metric computed on a finite validation split carries sampling noise (one clip of 80 is 1.25
top-1 points), and a cell trained once carries seed noise. Each evaluator therefore records, beside
its point value, the metric recomputed on ``REPLICATES`` resamples of its samples (images, videos)
drawn with replacement. The resamples are drawn from ``SEED`` for the split's size alone, so every
cell evaluated on the same split uses the same resamples, sample for sample: replicate ``b`` of two
cells, or of two seeds of one cell, scores the same multiset of images. That pairing is what lets a
difference between two cells get an interval of its own, narrower than the two intervals' overlap
suggests when the cells err on the same hard images.

:func:`interval` combines the seeds of a cell by a two-level bootstrap: each replicate draws the
seeds with replacement and averages their replicate ``b`` (Davison & Hinkley, 1997, section 3.8,
"multi-stage sampling"); with one seed it is the plain percentile interval over the samples.
Samples are the units the metric averages over (COCO images, ADE images, Kinetics videos) and are
taken in the dataset's order, which is fixed (sorted file lists, annotation order)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

REPLICATES = 200  # percentile tails of a 95 % interval rest on 5 replicates each: enough for a table
SEED = 0  # one seed for every cell, so that replicates pair up across cells (see the module docstring)
LEVEL = 0.95


def resample_indices(n: int, replicates: int = REPLICATES, seed: int = SEED) -> np.ndarray:
    """(replicates, n) sample indices, each row ``n`` draws with replacement, sorted."""
    return np.sort(np.random.default_rng(seed).integers(0, max(n, 1), size=(replicates, n)), axis=1)


def resample_counts(n: int, replicates: int = REPLICATES, seed: int = SEED) -> np.ndarray:
    """(replicates, n) integer counts: how often each of ``n`` samples is drawn in each resample
    (the rows of :func:`resample_indices`)."""
    return np.stack([np.bincount(row, minlength=n) for row in resample_indices(n, replicates, seed)])


def record(values: np.ndarray, n: int) -> dict:
    """The bootstrap entry an evaluator adds to its metrics: the replicates of one metric."""
    return {"n": int(n), "seed": SEED, "replicates": [round(float(v), 4) for v in values]}


@dataclass(frozen=True)
class Interval:
    """A cell's metric over its seeds: the mean of the seeds' values, a ``level`` interval, and
    what it rests on (``seeds`` training runs, ``n`` evaluation samples each)."""

    mean: float
    low: float
    high: float
    seeds: int
    n: int
    level: float = LEVEL

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def to_json(self) -> dict:
        return {
            "mean": round(self.mean, 4),
            "low": round(self.low, 4),
            "high": round(self.high, 4),
            "seeds": self.seeds,
            "n": self.n,
            "level": self.level,
        }

    def describe(self, digits: int = 1) -> str:
        """``41.2 [39.9, 42.5]``: the mean and the interval."""
        if not np.isfinite(self.mean):
            return "nan"
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def _replicate_matrix(entries: Sequence[dict], where: str) -> tuple[np.ndarray, int]:
    """(seeds, replicates) array of the seeds' bootstrap entries, checked to pair up."""
    sizes = {(e["n"], e["seed"], len(e["replicates"])) for e in entries}
    if len(sizes) != 1:
        raise ValueError(f"{where}: bootstrap replicates of different splits or seeds cannot be combined: {sizes}")
    return np.array([e["replicates"] for e in entries], dtype=np.float64), entries[0]["n"]


def _seed_resampled_means(matrix: np.ndarray, seed: int) -> np.ndarray:
    """Replicate ``b`` of the two-level bootstrap: the mean of replicate ``b`` over seeds drawn
    with replacement (all seeds, unresampled, when there is one)."""
    seeds, replicates = matrix.shape
    if seeds == 1:
        return matrix[0]
    picks = np.random.default_rng(seed + 1).integers(0, seeds, size=(replicates, seeds))
    return matrix[picks, np.arange(replicates)[:, None]].mean(axis=1)


def combined(entries: Sequence[dict], stream: int = SEED, where: str = "cell") -> tuple[np.ndarray, int]:
    """(the two-level bootstrap replicates of a cell's mean over its seeds, the split's size) from the
    seeds' bootstrap ``entries``. ``stream`` seeds the draw of the seeds: give each cell its own (the
    seeds of two cells are independent runs), while the samples stay paired across cells."""
    matrix, n = _replicate_matrix(entries, where)
    return _seed_resampled_means(matrix, stream - 1), n


def percentile_interval(replicates: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The ``level`` percentile interval of ``replicates``."""
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(replicates, [tail, 100 - tail])
    return float(low), float(high)


def interval(values: Sequence[float], entries: Sequence[dict], level: float = LEVEL, where: str = "cell") -> Interval:
    """A cell's :class:`Interval` from its seeds' point ``values`` and bootstrap ``entries``
    (:func:`record`), in the same order."""
    if len(values) != len(entries) or not values:
        raise ValueError(f"{where}: {len(values)} values for {len(entries)} bootstrap entries")
    replicates, n = combined(entries, SEED + 1, where)
    low, high = percentile_interval(replicates, level)
    return Interval(float(np.mean(values)), low, high, len(values), n, level)


def difference(
    a_values: Sequence[float],
    a_entries: Sequence[dict],
    b_values: Sequence[float],
    b_entries: Sequence[dict],
    level: float = LEVEL,
    where: str = "comparison",
) -> Interval:
    """The :class:`Interval` of cell ``a``'s metric minus cell ``b``'s on the same split, paired
    replicate by replicate (both cells scored on the same resamples)."""
    a_replicates, n = combined(a_entries, SEED + 1, where)
    b_replicates, n_b = combined(b_entries, SEED + 8, where)
    if n != n_b or len(a_replicates) != len(b_replicates):
        raise ValueError(f"{where}: the two cells were not evaluated on the same split ({n} and {n_b} samples)")
    low, high = percentile_interval(a_replicates - b_replicates, level)
    mean = float(np.mean(a_values) - np.mean(b_values))
    return Interval(mean, low, high, min(len(a_values), len(b_values)), n, level)
