"""A task head's OpenMMLab model on a frozenbench backbone, built the same way for every task type,
with frozenbench's modules registered in the packages' registries (here, above both the backbone
and the video modules that subclass it, so neither imports the other back)."""

from __future__ import annotations

from typing import Any, Callable

import torch

from frozenbench.openmmlab.backbone import FrozenbenchBackbone
from frozenbench.openmmlab.configs import BackbonePart, backbone_part
from frozenbench.tasks.registry import BackboneRequest


def build_task_model(
    scope: str,
    backbone: BackboneRequest,
    extra_blocks: int,
    head_config: Callable[[BackbonePart], Any],
    pyramid: bool = True,
    level_norm: bool = False,
) -> torch.nn.Module:
    """The ``scope`` package's model of ``head_config(part)``, where ``part`` is the requested backbone
    (with ``extra_blocks`` trainable blocks on top, and with ``level_norm`` a trainable LayerNorm on
    each level) and the channels / strides it feeds the head; ``pyramid=False`` for heads that take
    the last level only (video)."""
    part = backbone_part(backbone, extra_blocks, pyramid=pyramid, level_norm=level_norm)
    return build_registered_model(scope, head_config(part))


def register() -> None:
    """Register :class:`FrozenbenchBackbone` in every OpenMMLab model registry (idempotent)."""
    from mmaction.registry import MODELS as MMACTION_MODELS
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmseg.registry import MODELS as MMSEG_MODELS

    from frozenbench.openmmlab.video import register_video_modules

    for registry in (MMDET_MODELS, MMSEG_MODELS, MMACTION_MODELS):
        registry.register_module(name="FrozenbenchBackbone", module=FrozenbenchBackbone, force=True)
    register_video_modules()


def build_registered_model(scope: str, cfg: dict) -> torch.nn.Module:
    """Build ``cfg`` with the ``scope`` package's registry (its own modules registered, as its tools do),
    mmcv's compiled ops routed to torch / torchvision kernels (:mod:`frozenbench.openmmlab.ops`)."""
    import importlib

    from mmengine.config import ConfigDict
    from mmengine.registry import DefaultScope

    from frozenbench.openmmlab.ops import route_mmcv_ops
    from frozenbench.openmmlab.runtime import SCOPES

    route_mmcv_ops()
    registry_module, utils_module = SCOPES[scope]
    importlib.import_module(utils_module).register_all_modules(init_default_scope=False)
    register()
    with DefaultScope.overwrite_default_scope(scope):
        return importlib.import_module(registry_module).MODELS.build(ConfigDict(cfg))
