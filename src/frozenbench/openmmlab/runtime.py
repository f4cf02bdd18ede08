"""What the rest of frozenbench needs of OpenMMLab at run time, behind plain functions.

Datasets built in a package's registry scope, the collate function its models take and a model's
predictions: ``tasks/`` and ``engine/`` call these and import no OpenMMLab package themselves
(``tests/test_import_boundary.py`` holds them to it). A training step's losses are the training
wrapper's (:mod:`frozenbench.openmmlab.training`).
"""

from __future__ import annotations

import importlib
from typing import Any

import torch

# scope -> (its registry module, the module whose register_all_modules fills it)
SCOPES = {
    "mmdet": ("mmdet.registry", "mmdet.utils"),
    "mmseg": ("mmseg.registry", "mmseg.utils"),
    "mmaction": ("mmaction.registry", "mmaction.utils"),
}


def build_dataset(scope: str, cfg: dict[str, Any]):
    """``cfg`` built by the ``scope`` package's dataset registry, its transforms registered (as its
    own tools do before building)."""
    from mmengine.registry import DefaultScope

    from frozenbench.openmmlab.loading import register_loading

    registry_module, utils_module = SCOPES[scope]
    importlib.import_module(utils_module).register_all_modules(init_default_scope=False)
    register_loading()  # frozenbench's image loader and COCO dataset (openmmlab/loading.py)
    with DefaultScope.overwrite_default_scope(scope):
        return importlib.import_module(registry_module).DATASETS.build(cfg)


def collate(samples: list[dict[str, Any]]) -> dict[str, list]:
    """A batch as OpenMMLab models take it: inputs and data samples as lists (mmengine's pseudo_collate)."""
    from mmengine.dataset import pseudo_collate

    return pseudo_collate(samples)


def predict(model: torch.nn.Module, data: dict[str, Any]) -> list:
    """The model's data samples with predictions for a collated batch (its ``test_step``)."""
    return model.test_step(data)


def slide_inference(model: torch.nn.Module, crop: tuple[int, int], stride: tuple[int, int]):
    """A context that switches a segmentor to sliding-window inference and back."""
    import contextlib

    from mmengine.config import ConfigDict

    @contextlib.contextmanager
    def switched():
        saved = model.test_cfg
        model.test_cfg = ConfigDict(mode="slide", crop_size=crop, stride=stride)
        try:
            yield model
        finally:
            model.test_cfg = saved

    return switched()
