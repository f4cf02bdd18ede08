"""Semantic segmentation metrics: mIoU, mAcc, aAcc from an accumulated confusion matrix.

The same definitions as mmsegmentation's IoUMetric: per-class IoU = TP / (TP + FP + FN)
over all validation pixels, classes absent from both prediction and ground truth are
NaN and left out of the mean; ADE20K's label 0 (unlabeled) is ignored by
``reduce_zero_label`` (0 -> ignore, k -> k - 1).

Each image's per-class counts are kept too, so that ``evaluate`` can add the bootstrap
replicates of mIoU over images (:mod:`frozenbench.evaluation.bootstrap`).
"""

from __future__ import annotations

import numpy as np

import frozenbench.evaluation.bootstrap as bootstrap


class SemSegEvaluator:
    def __init__(self, num_classes: int, ignore_index: int = 255, reduce_zero_label: bool = False) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.reduce_zero_label = reduce_zero_label
        self.reset()

    def reset(self) -> None:
        self.confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)  # [gt, pred]
        self._per_image: list[np.ndarray] = []  # (3, classes): true positives, label and prediction pixels

    def process(self, pred: np.ndarray, label: np.ndarray) -> None:
        """Add one image: ``pred`` in 0..num_classes-1, ``label`` as stored on disk."""
        if pred.shape != label.shape:
            raise ValueError(f"prediction {pred.shape} and label {label.shape} differ in size")
        label = label.astype(np.int64)
        if self.reduce_zero_label:
            label = np.where(label == 0, self.ignore_index, label - 1)
        keep = label != self.ignore_index
        gt, pr = label[keep], pred.astype(np.int64)[keep]
        if gt.size and (gt.max() >= self.num_classes or gt.min() < 0):
            raise ValueError(f"label value {int(gt.max())} outside 0..{self.num_classes - 1}")
        confusion = np.bincount(gt * self.num_classes + pr, minlength=self.num_classes**2).reshape(
            self.num_classes, self.num_classes
        )
        self.confusion += confusion
        self._per_image.append(np.stack([np.diag(confusion), confusion.sum(axis=1), confusion.sum(axis=0)]))

    def evaluate(self) -> dict[str, float]:
        metrics = self._metrics()
        metrics["bootstrap"] = {"mIoU": bootstrap.record(self._bootstrap_miou(), len(self._per_image))}
        return metrics

    def _bootstrap_miou(self) -> np.ndarray:
        """mIoU of each bootstrap resample of the images."""
        if not self._per_image:
            return np.full(bootstrap.REPLICATES, np.nan)
        counts = bootstrap.resample_counts(len(self._per_image)).astype(np.float64)  # (replicates, images)
        per_image = np.stack(self._per_image).astype(np.float64)  # (images, 3, classes)
        tp, gt_total, pred_total = (counts @ per_image[:, i, :] for i in range(3))  # each (replicates, classes)
        union = gt_total + pred_total - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
        valid = np.isfinite(iou).any(axis=1)
        out = np.full(len(iou), np.nan)
        out[valid] = np.nanmean(iou[valid], axis=1) * 100
        return out

    def _metrics(self) -> dict[str, float]:
        tp = np.diag(self.confusion).astype(np.float64)
        gt_total = self.confusion.sum(axis=1).astype(np.float64)
        pred_total = self.confusion.sum(axis=0).astype(np.float64)
        union = gt_total + pred_total - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
            acc = np.where(gt_total > 0, tp / gt_total, np.nan)
        total = self.confusion.sum()
        return {
            "mIoU": float(np.nanmean(iou) * 100) if np.isfinite(iou).any() else float("nan"),
            "mAcc": float(np.nanmean(acc) * 100) if np.isfinite(acc).any() else float("nan"),
            "aAcc": float(tp.sum() / total * 100) if total else float("nan"),
            "per_class_IoU": [None if np.isnan(v) else float(v * 100) for v in iou],
        }
