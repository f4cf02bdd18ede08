"""COCO box and mask AP through pycocotools, the official protocol (as detectron2's COCOEvaluator).

Predictions are first turned into the COCO results format (the same json that a
test-dev submission uploads), dumped, then scored with ``loadRes`` + ``COCOeval``.
Metrics are percentages; NaN when there is nothing to score. Each IoU type's metrics carry the
bootstrap replicates of AP over images (:mod:`frozenbench.evaluation.bootstrap`), accumulated from
the one ``evaluate()``'s per-image matches, so the matching runs once.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import frozenbench.evaluation.bootstrap as bootstrap
from frozenbench.utils.atomic import atomic_file, write_text

METRIC_NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl"]


def category_ids(categories: list[dict[str, Any]]) -> list[int]:
    """Training label ``k`` -> COCO category id: the ids in increasing order, whatever order the json
    lists them in. The one mapping that training (``FrozenbenchCocoDataset``), evaluation and the
    test-dev writer share; class names follow it too (:func:`frozenbench.tasks.detection.class_names`)."""
    return sorted(c["id"] for c in categories)


def load_ground_truth(annotation_file: str | Path) -> COCO:
    """pycocotools' COCO of ``annotation_file``, its annotations renumbered 1..N in this copy.

    COCOeval marks a matched detection by the id of its ground truth and counts an id of 0 as
    unmatched (labelme's COCO export numbers from 0: the ground truth scored against itself gave
    95.7 AP instead of 100), and its index keeps one of two annotations sharing an id. Predictions
    name images and categories, never annotation ids, so the renumbering changes no score.
    """
    data = json.loads(Path(annotation_file).read_text())
    for number, ann in enumerate(data.get("annotations", []), start=1):
        ann["id"] = number
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = data
        coco.createIndex()
    return coco


def instances_to_results(
    image_id: int,
    boxes_xyxy: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    category_ids: list[int],
    masks: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """One image's detections in the COCO results format (xywh boxes, compressed RLE masks).

    ``labels`` index into ``category_ids`` (contiguous training labels -> COCO category ids).
    """
    results = []
    for i in range(len(scores)):
        x1, y1, x2, y2 = (float(v) for v in boxes_xyxy[i])
        entry = {
            "image_id": int(image_id),
            "category_id": int(category_ids[int(labels[i])]),
            "bbox": [x1, y1, x2 - x1, y2 - y1],
            "score": float(scores[i]),
        }
        if masks is not None:
            rle = mask_utils.encode(np.asfortranarray(masks[i].astype(np.uint8)))
            entry["segmentation"] = {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
        results.append(entry)
    return results


class COCOEvaluator:
    """reset / process / evaluate, returning ``{"bbox": {...}, "segm": {...}}``."""

    def __init__(
        self,
        annotation_file: str | Path,
        iou_types: tuple[str, ...] = ("bbox", "segm"),
        output_dir: str | Path | None = None,
    ) -> None:
        self.annotation_file = Path(annotation_file)
        self.coco_gt = load_ground_truth(self.annotation_file)
        self.iou_types = iou_types
        self.output_dir = Path(output_dir) if output_dir else None
        self.category_ids = category_ids(self.coco_gt.dataset["categories"])
        self.reset()

    def reset(self) -> None:
        self._results: list[dict[str, Any]] = []

    def process(
        self,
        image_id: int,
        boxes_xyxy: np.ndarray,
        scores: np.ndarray,
        labels: np.ndarray,
        masks: np.ndarray | None = None,
    ) -> None:
        self._results.extend(instances_to_results(image_id, boxes_xyxy, scores, labels, self.category_ids, masks))

    def results_json(self) -> list[dict[str, Any]]:
        return list(self._results)

    def evaluate(self) -> dict[str, dict[str, float]]:
        if self.output_dir is not None:
            write_text(self.output_dir / "coco_instances_results.json", json.dumps(self._results))
        return {iou_type: self._evaluate(iou_type) for iou_type in self.iou_types}

    def _evaluate(self, iou_type: str) -> dict[str, float]:
        results = self._results
        if iou_type == "segm":
            results = [r for r in results if "segmentation" in r]
        if not results:
            return {name: math.nan for name in METRIC_NAMES}
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt = self.coco_gt.loadRes(results)
            evaluator = COCOeval(self.coco_gt, coco_dt, iou_type)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
            replicates = bootstrap_ap(evaluator)
        metrics: dict[str, Any] = {
            name: float(evaluator.stats[i] * 100) if evaluator.stats[i] >= 0 else math.nan
            for i, name in enumerate(METRIC_NAMES)
        }
        metrics["bootstrap"] = {"AP": bootstrap.record(replicates, len(evaluator.params.imgIds))}
        return metrics


def bootstrap_ap(evaluator: COCOeval) -> np.ndarray:
    """AP (area all, 100 detections, as ``stats[0]``) of each bootstrap resample of the images,
    from an evaluated ``evaluator``: its per-image results are re-laid out for the resampled image
    list (an image drawn twice counts twice) and accumulated again; ``evaluator`` is left as it was."""
    import copy

    params, evaluated, per_image = evaluator.params, evaluator._paramsEval, evaluator.evalImgs
    accumulated = evaluator.eval
    image_ids, areas, cats = list(evaluated.imgIds), len(evaluated.areaRng), len(evaluated.catIds)
    n = len(image_ids)
    all_area = [list(evaluated.areaRng[0])]  # "all" comes first in pycocotools' area ranges
    values = []
    try:
        for draw in bootstrap.resample_indices(n):
            drawn = [image_ids[j] for j in draw]
            resampled = copy.copy(evaluated)
            resampled.imgIds, resampled.areaRng, resampled.maxDets = drawn, all_area, [params.maxDets[-1]]
            evaluator.params, evaluator._paramsEval = copy.copy(resampled), resampled
            evaluator.evalImgs = [per_image[k * areas * n + j] for k in range(cats) for j in draw]
            evaluator.accumulate()
            precision = evaluator.eval["precision"][:, :, :, 0, 0]
            values.append(float(precision[precision > -1].mean() * 100) if (precision > -1).any() else math.nan)
    finally:
        evaluator.params, evaluator._paramsEval, evaluator.evalImgs = params, evaluated, per_image
        evaluator.eval = accumulated
    return np.array(values)


def submission_name(alg: str, test_set: str = "test-dev2017") -> str:
    """COCO's required results file name, ``detections_<testset>_<alg>_results.json``."""
    if not alg or not alg.replace("-", "").isalnum():
        raise ValueError(f"algorithm name must be letters, digits and dashes, got {alg!r}")
    return f"detections_{test_set}_{alg}_results.json"


def write_submission(path: str | Path, results: list[dict[str, Any]], alg: str = "frozenbench") -> None:
    """A test-dev upload: a zip holding the results json under its required name (box and mask
    results in one list: the server scores bbox and segm from the same file)."""
    import zipfile

    with atomic_file(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            # a fixed timestamp: the same results give the same bytes
            info = zipfile.ZipInfo(submission_name(alg), date_time=(1980, 1, 1, 0, 0, 0))
            archive.writestr(info, json.dumps(results), compress_type=zipfile.ZIP_DEFLATED)
