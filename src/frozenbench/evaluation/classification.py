"""Top-k accuracy for action recognition (clip- or video-level scores)."""

from __future__ import annotations

import numpy as np


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
        if not self._scores:
            return {f"top{k}": float("nan") for k in self.topk}
        scores, labels = np.stack(self._scores), np.asarray(self._labels)
        order = np.argsort(-scores, axis=1, kind="stable")
        return {f"top{k}": float((order[:, :k] == labels[:, None]).any(axis=1).mean() * 100) for k in self.topk}
