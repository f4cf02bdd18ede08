"""ADE20K-format semantic segmentation: Mask2Former on a frozen (or fine-tuned) backbone.

Data come through mmseg's own dataset and transforms (the layout of ADEChallengeData2016,
label 0 = unlabeled, ignored); scoring uses :class:`frozenbench.evaluation.SemSegEvaluator`
on the validation split only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from frozenbench.data.validate import read_ade_num_classes
from frozenbench.errors import UserError
from frozenbench.evaluation import SemSegEvaluator
from frozenbench.openmmlab import build_model as build_mm_model
from frozenbench.openmmlab.configs import backbone_cfg, mask2former_config


def class_names(root: Path) -> list[str]:
    info = root / "objectInfo150.txt"
    if not info.exists():
        raise UserError(f"{info}: missing (needed for the class names)")
    return [line.split("\t")[-1] for line in info.read_text().splitlines()[1:] if line.strip()]


def build_dataset(root: str | Path, split: str, img_size: int, train: bool):
    from mmengine.registry import DefaultScope
    from mmseg.registry import DATASETS
    from mmseg.utils import register_all_modules

    root = Path(root)
    folder = {"train": "training", "val": "validation"}[split]
    pipeline: list[dict[str, Any]] = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations")]
    if train:
        pipeline.append(dict(type="RandomFlip", prob=0.5))
    pipeline.append(dict(type="PackSegInputs"))
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope("mmseg"):
        return DATASETS.build(dict(
            type="BaseSegDataset", data_root=str(root),
            data_prefix=dict(img_path=f"images/{folder}", seg_map_path=f"annotations/{folder}"),
            img_suffix=".jpg", seg_map_suffix=".png", reduce_zero_label=True,
            metainfo=dict(classes=class_names(root)), pipeline=pipeline))


def build_model(head: dict[str, Any], num_classes: int, img_size: int, checkpoint: str | None, frozen: bool,
                    arch: str | None = None, bf16: bool = False) -> torch.nn.Module:
    from frozenbench.openmmlab.backbone import feature_shape

    backbone = backbone_cfg(arch, img_size, checkpoint, frozen, bf16)
    backbone["extra_blocks"] = head.get("extra_blocks", 0)
    channels, strides = feature_shape(arch, img_size, checkpoint)
    cfg = mask2former_config(backbone, channels, strides, num_classes, img_size,
                             pixel_decoder_layers=head.get("pixel_decoder_layers", 1),
                             transformer_decoder_layers=head.get("transformer_decoder_layers", 4),
                             width=head.get("width", 256), num_queries=head.get("num_queries", 100),
                             num_points=head.get("num_points", 12544))
    return build_mm_model("mmseg", cfg)


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset, num_classes: int, batch_size: int = 4) -> dict[str, Any]:
    from mmengine.dataset import pseudo_collate

    model.eval()
    evaluator = SemSegEvaluator(num_classes=num_classes, ignore_index=255)
    for start in range(0, len(dataset), batch_size):
        data = pseudo_collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        for sample in model.test_step(data):
            pred = sample.pred_sem_seg.data[0].cpu().numpy()
            label = sample.gt_sem_seg.data[0].cpu().numpy()
            evaluator.process(pred.astype(np.int64), label)
    return evaluator.evaluate()
