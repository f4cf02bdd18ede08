"""A task head's OpenMMLab model on a frozenbench backbone, built the same way for every task type."""

from __future__ import annotations

from typing import Any, Callable

import torch

from frozenbench.openmmlab.backbone import build_registered_model
from frozenbench.openmmlab.configs import BackbonePart, backbone_part
from frozenbench.tasks.registry import BackboneRequest


def build_task_model(
    scope: str,
    backbone: BackboneRequest,
    extra_blocks: int,
    head_config: Callable[[BackbonePart], Any],
    pyramid: bool = True,
) -> torch.nn.Module:
    """The ``scope`` package's model of ``head_config(part)``, where ``part`` is the requested backbone
    (with ``extra_blocks`` trainable blocks on top) and the channels / strides it feeds the head;
    ``pyramid=False`` for heads that take the last level only (video)."""
    part = backbone_part(backbone, extra_blocks, pyramid=pyramid)
    return build_registered_model(scope, head_config(part))
