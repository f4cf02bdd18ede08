"""One inference driver for every task (detectron2's ``inference_on_dataset``).

A task hands the driver its model, its batches, a ``predict`` function (the model's plain test
step, or the task's test-time augmentation) and its evaluators; each evaluator is reset, sees every
(batch, outputs) pair, and reports its metrics. The driver returns ``{evaluator name: metrics}``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

import torch


class DatasetEvaluator(Protocol):
    """reset / process / evaluate, as detectron2's evaluators."""

    def reset(self) -> None: ...

    def process(self, inputs: dict[str, Any], outputs: list[Any]) -> None: ...

    def evaluate(self) -> dict[str, Any]: ...


class FedEvaluator:
    """A driver evaluator over one of the metric evaluators (COCO, mIoU, top-k): ``feed(metric,
    inputs, outputs)`` hands it a batch's predictions in the form it takes; reset and evaluate are
    the metric's own."""

    def __init__(self, metric: Any, feed: Callable[[Any, dict[str, Any], list[Any]], None]) -> None:
        self.metric, self.feed = metric, feed

    def reset(self) -> None:
        self.metric.reset()

    def process(self, inputs: dict[str, Any], outputs: list[Any]) -> None:
        self.feed(self.metric, inputs, outputs)

    def evaluate(self) -> dict[str, Any]:
        return self.metric.evaluate()


@torch.no_grad()
def inference_on_dataset(
    model: torch.nn.Module,
    batches: Iterable[dict[str, Any]],
    evaluators: dict[str, DatasetEvaluator],
    predict: Callable[[torch.nn.Module, dict[str, Any]], list[Any]],
) -> dict[str, dict[str, Any]]:
    """Run ``predict`` over every batch in eval mode and score the outputs with each evaluator."""
    model.eval()
    for evaluator in evaluators.values():
        evaluator.reset()
    for batch in batches:
        outputs = predict(model, batch)
        for evaluator in evaluators.values():
            evaluator.process(batch, outputs)
    return {name: evaluator.evaluate() for name, evaluator in evaluators.items()}
