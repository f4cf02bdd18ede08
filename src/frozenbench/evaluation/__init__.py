"""Evaluators that mirror the official metrics: reset / process / evaluate (as detectron2's)."""

from frozenbench.evaluation import bootstrap
from frozenbench.evaluation.classification import TopKEvaluator
from frozenbench.evaluation.coco import COCOEvaluator, instances_to_results, write_submission
from frozenbench.evaluation.semseg import SemSegEvaluator

__all__ = [
    "COCOEvaluator",
    "bootstrap",
    "SemSegEvaluator",
    "TopKEvaluator",
    "instances_to_results",
    "write_submission",
]
