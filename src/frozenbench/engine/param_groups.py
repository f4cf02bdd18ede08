"""Optimizer parameter groups: weight decay split and layer-wise learning-rate decay.

Fine-tuning a pretrained backbone (the study's ``finetune`` mode, the paper's baseline)
uses layer-wise lr decay as in BEiT / Swin-V2 / ConvNeXt fine-tuning: the head and any
trainable extra blocks get the base lr; backbone block ``i`` of ``L`` gets
``base_lr * decay ** (L + 1 - i)``; the stem gets ``decay ** (L + 1)``. In ``frozen``
mode no backbone parameter is trainable, so every group has scale 1.
"""

from __future__ import annotations

import re
from typing import Any

import torch.nn as nn

# timm Swin / SwinV2 / ConvNeXt names inside the frozenbench ``Backbone`` (``...body.model.``).
_BODY = re.compile(r"(?:^|\.)body\.model\.(.+)$")
_BLOCK = re.compile(r"^(?:layers|stages)\.(\d+)\.blocks\.(\d+)\.")
_STAGE = re.compile(r"^(?:layers|stages)\.(\d+)\.")


def backbone_depths(model: nn.Module) -> list[int]:
    """Blocks per stage of the timm model inside ``model``'s frozenbench backbone (empty if none)."""
    for module in model.modules():
        body = getattr(module, "model", None)
        stages = getattr(body, "layers", None) or getattr(body, "stages", None)
        if stages is not None and module.__class__.__name__ == "Backbone":
            return [len(stage.blocks) for stage in stages]
    return []


def layer_id(name: str, depths: list[int]) -> int:
    """0 for the stem, 1..L for backbone blocks in order, L + 1 for everything outside the backbone.

    A stage's downsampling layer counts with the stage's first block (it feeds it).
    """
    total = sum(depths)
    match = _BODY.search(name)
    if match is None:
        return total + 1
    inner = match.group(1)
    block = _BLOCK.match(inner)
    if block:
        stage, index = int(block.group(1)), int(block.group(2))
        return sum(depths[:stage]) + index + 1
    stage = _STAGE.match(inner)
    if stage:
        return sum(depths[:int(stage.group(1))]) + 1
    if inner.startswith(("norm", "head")):
        return total
    return 0  # patch embedding / conv stem / absolute position embedding


def _no_decay(name: str, param: nn.Parameter) -> bool:
    return param.ndim <= 1 or name.endswith(("mask_token", "pos", "absolute_pos_embed")) or "bias_table" in name


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float = 1.0) -> list[dict[str, Any]]:
    """Groups of trainable parameters keyed by (lr scale, weight decay); each carries ``lr_scale``."""
    depths = backbone_depths(model) if layer_decay != 1.0 else []
    top = sum(depths) + 1
    groups: dict[tuple[float, float], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        scale = layer_decay ** (top - layer_id(name, depths)) if depths else 1.0
        decay = 0.0 if _no_decay(name, param) else weight_decay
        group = groups.setdefault((scale, decay), {"params": [], "weight_decay": decay, "lr_scale": scale})
        group["params"].append(param)
    return sorted(groups.values(), key=lambda g: (-g["lr_scale"], -g["weight_decay"]))
