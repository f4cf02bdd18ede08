"""What the engine must know of a kind of model to train it: its losses, and how its batches
reach its device.

The training loop and the device code are the same for every model the study trains: OpenMMLab
detectors, segmentors and recognizers (``frozenbench.openmmlab.runtime.OPENMMLAB_MODEL``), the
pretraining objectives (``frozenbench.pretrain.objectives.OBJECTIVE_MODEL``) and a test's fake
model. What differs is said once per kind, here, instead of being guessed from the model (an
objective has no OpenMMLab data preprocessor, and asking it for one crashed on a GPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn as nn

# (model, a collated batch, the stepper's forward) -> (total loss, the parts to log)
LossesFn = Callable[[nn.Module, dict[str, Any], Callable[[dict[str, Any]], dict[str, torch.Tensor]]], tuple]


def batches_copied_by_forward(model: nn.Module, non_blocking: bool) -> None:
    """For a model whose forward moves its inputs itself (or that only runs on the CPU)."""


@dataclass(frozen=True)
class ModelKind:
    name: str
    # the step's (total, parts): e.g. the OpenMMLab preprocessor, ``model(**batch, mode="loss")``
    # through ``forward``, and the model's own loss reduction
    losses: LossesFn
    # set the model's batches to reach its device without blocking (True on the GPU path) or not
    copy_batches: Callable[[nn.Module, bool], None] = batches_copied_by_forward
