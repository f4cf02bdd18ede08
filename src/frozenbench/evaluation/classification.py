"""Top-k accuracy for action recognition (clip- or video-level scores)."""

from __future__ import annotations

import numpy as np

import frozenbench.evaluation.bootstrap as bootstrap


class TopKEvaluator:
    """Accumulates per-video scores (averaged over the video's clips/crops) and reports top-k %."""

    def __init__(self, topk: tuple[int, ...] = (1, 5)) -> None:
        self.topk = topk
        self.reset()

    def reset(self) -> None:
        self._scores: list[np.ndarray] = []
        self._labels: list[int] = []

    def process(self, clip_scores: np.ndarray, label: int) -> None:
        """``clip_scores``: (num_views, num_classes) or (num_classes,) for one video."""
        scores = np.asarray(clip_scores, dtype=np.float64)
        self._scores.append(scores.mean(axis=0) if scores.ndim == 2 else scores)
        self._labels.append(int(label))

    def evaluate(self) -> dict[str, float]:
        """top-k % for each k, and the bootstrap replicates of each over the videos."""
        if not self._scores:
            return {f"top{k}": float("nan") for k in self.topk}
        scores, labels = np.stack(self._scores), np.asarray(self._labels)
        order = np.argsort(-scores, axis=1, kind="stable")
        hits = {f"top{k}": (order[:, :k] == labels[:, None]).any(axis=1).astype(np.float64) for k in self.topk}
        counts = bootstrap.resample_counts(len(labels)).astype(np.float64)
        metrics: dict = {name: float(hit.mean() * 100) for name, hit in hits.items()}
        metrics["bootstrap"] = {
            name: bootstrap.record(counts @ hit / len(labels) * 100, len(labels)) for name, hit in hits.items()
        }
        return metrics
