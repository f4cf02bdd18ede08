"""Optimizer parameter groups: weight decay split and layer-wise learning-rate decay.

Fine-tuning a pretrained backbone (the study's ``finetune`` mode, the paper's baseline)
uses layer-wise lr decay as in BEiT's fine-tuning and the recipes that followed it: the head and any
trainable extra blocks get the base lr; backbone block ``i`` of ``L`` gets
``base_lr * decay ** (L + 1 - i)``; the stem gets ``decay ** (L + 1)``. In ``frozen``
mode no backbone parameter is trainable, so every group has scale 1.

Which parameter belongs to which block is the backbone's knowledge, not the engine's: any
module with a ``layer_groups()`` method (``{name: layer id}, L``, see
:meth:`frozenbench.models.backbone.Backbone.layer_groups`) is a backbone here, and any module with a
``no_weight_decay()`` method (timm's convention) names its parameters that take no weight decay.
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn


def layer_ids(model: nn.Module) -> tuple[dict[str, int], int]:
    """({full parameter name: layer id}, L) over the backbones inside ``model``: 0 for a stem,
    1..L for blocks; parameters outside any backbone are not listed (they count as L + 1)."""
    ids: dict[str, int] = {}
    depths = set()
    for prefix, module in model.named_modules():
        groups = getattr(module, "layer_groups", None)
        if not callable(groups):
            continue
        names, depth = groups()
        depths.add(depth)
        dot = f"{prefix}." if prefix else ""
        ids.update({dot + name: lid for name, lid in names.items()})
    if len(depths) > 1:
        raise ValueError(f"layer decay over backbones of different depths {sorted(depths)} is not defined")
    return ids, depths.pop() if depths else 0


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """Full names of the parameters some module inside ``model`` exempts from weight decay."""
    names: set[str] = set()
    for prefix, module in model.named_modules():
        exempt = getattr(module, "no_weight_decay", None)
        if callable(exempt):
            dot = f"{prefix}." if prefix else ""
            names.update(dot + name for name in exempt())
    return names


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float = 1.0) -> list[dict[str, Any]]:
    """Groups of trainable parameters keyed by (lr scale, weight decay); each carries ``lr_scale``."""
    ids, depth = layer_ids(model) if layer_decay != 1.0 else ({}, 0)
    top = depth + 1
    exempt = no_weight_decay_names(model)
    groups: dict[tuple[float, float], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        # what follows the last block (a final norm) learns at the head's rate
        scale = layer_decay ** max(0, top - ids.get(name, top)) if depth else 1.0
        # norms, biases and embeddings / tokens / tables the modules name take no decay
        decay = 0.0 if param.ndim <= 1 or name in exempt else weight_decay
        group = groups.setdefault((scale, decay), {"params": [], "weight_decay": decay, "lr_scale": scale})
        group["params"].append(param)
    return sorted(groups.values(), key=lambda g: (-g["lr_scale"], -g["weight_decay"]))
