"""The evaluation loop the task modules share: a dataset in batches through a model, one evaluator."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from frozenbench.engine.data import eval_batches
from frozenbench.engine.device import pins_batches_for
from frozenbench.evaluation.driver import DatasetEvaluator, inference_on_dataset
from frozenbench.openmmlab.runtime import collate, predict


def run_evaluator(
    model: torch.nn.Module,
    dataset,
    name: str,
    evaluator: DatasetEvaluator,
    batch_size: int,
    workers: int,
    step: Callable[[torch.nn.Module, dict[str, Any]], list[Any]] = predict,
) -> dict[str, Any]:
    """What ``evaluator`` (reported under ``name``) makes of ``step``'s outputs over ``dataset``,
    collated for OpenMMLab in batches of ``batch_size`` (pinned where the model is on a GPU)."""
    batches = eval_batches(dataset, collate, batch_size, workers, pin_memory=pins_batches_for(model))
    return inference_on_dataset(model, batches, {name: evaluator}, step)[name]
