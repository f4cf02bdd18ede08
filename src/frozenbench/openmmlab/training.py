"""An OpenMMLab model as the training engine trains any model: ``model(batch) -> {name: scalar}``.

mmengine's models take a batch in three steps the engine should not know of: their data
preprocessor (device copy, normalisation, padding), ``model(**data, mode="loss")``, and
``parse_losses``, which reduces each entry to a scalar. :class:`OpenMMLabLosses` does the first two
and the per-entry reduction of the third; the engine adds up the entries named "loss" itself, in
the same order and the same way (:func:`frozenbench.engine.loop.total_loss`), so the totals and
the logged parts are bit for bit the ones ``parse_losses`` gave.

The wrapper is a module around the task model, so its state dict names every weight with a
``model.`` prefix: a run saves the wrapper's trainable state, and evaluation loads it into the same
wrapper and scores :attr:`OpenMMLabLosses.model`, the task model itself.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn


def reduce_loss(name: str, value: Any) -> torch.Tensor:
    """One scalar per entry, as ``BaseModel.parse_losses`` reduces it: the mean of a tensor, the
    sum of the means of a list of tensors (e.g. an RPN's loss per pyramid level)."""
    if isinstance(value, torch.Tensor):
        return value.mean()
    if isinstance(value, list) and all(isinstance(item, torch.Tensor) for item in value):
        return sum(item.mean() for item in value)
    raise TypeError(f"{name} is not a tensor or list of tensors")


class OpenMMLabLosses(nn.Module):
    """``forward(batch)``: the named scalars of an OpenMMLab detector, segmentor or recognizer on
    one collated batch (mmengine's ``pseudo_collate`` of its dataset's samples)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        data = self.model.data_preprocessor(batch, training=True)
        losses = self.model(**data, mode="loss")
        return {name: reduce_loss(name, value) for name, value in losses.items()}

    def set_non_blocking_copies(self, non_blocking: bool) -> None:
        """Have the data preprocessor copy batches to the model's device without blocking (the GPU
        path, whose loaders pin them) or as ordinary copies (:func:`frozenbench.engine.device.place_model`)."""
        self.model.data_preprocessor._non_blocking = non_blocking


def wrap_for_training(model: nn.Module) -> OpenMMLabLosses:
    """``model`` (an mmengine ``BaseModel``) as the training engine's model."""
    return OpenMMLabLosses(model)
