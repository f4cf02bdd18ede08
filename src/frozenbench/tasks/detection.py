"""COCO-format detection + instance segmentation: Mask R-CNN, Cascade Mask R-CNN or HTC + FPN on a
frozen (or fine-tuned) backbone (the head's ``detector``).

Data come through mmdet's CocoDataset and transforms (COCO 2017 layout); scoring is
pycocotools' box and mask AP through :class:`frozenbench.evaluation.COCOEvaluator` on
the val split only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from frozenbench.errors import UserError
from frozenbench.evaluation import COCOEvaluator, instances_to_results
from frozenbench.openmmlab import build_model as build_mm_model
from frozenbench.openmmlab.configs import backbone_cfg, detector_config

SPLIT_FOLDERS = {"train": "train2017", "val": "val2017", "test-dev": "test2017"}
# test-dev annotations are withheld: the image list is all there is
ANNOTATION_FILES = {"train": "instances_train2017.json", "val": "instances_val2017.json",
                    "test-dev": "image_info_test-dev2017.json"}


def annotation_file(root: Path, split: str) -> Path:
    path = Path(root) / "annotations" / ANNOTATION_FILES[split]
    if not path.exists():
        raise UserError(f"{path}: missing COCO annotation file")
    return path


def class_names(root: str | Path) -> list[str]:
    categories = json.loads(annotation_file(Path(root), "val").read_text())["categories"]
    return [c["name"] for c in sorted(categories, key=lambda c: c["id"])]


def build_dataset(root: str | Path, split: str, img_size: int, train: bool, test: dict[str, Any] | None = None):
    del test  # test-time options act in evaluate()
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules
    from mmengine.registry import DefaultScope

    root = Path(root)
    # Resize (keeping the aspect ratio) and pad every image to img_size: the backbone is built
    # for one input size (window attention masks depend on it).
    annotated = split != "test-dev"
    pipeline: list[dict[str, Any]] = [dict(type="LoadImageFromFile"),
                                      *([dict(type="LoadAnnotations", with_bbox=True, with_mask=True)] if annotated else []),
                                      dict(type="Resize", scale=(img_size, img_size), keep_ratio=True),
                                      dict(type="Pad", size=(img_size, img_size))]
    if train:
        pipeline.append(dict(type="RandomFlip", prob=0.5))
    pipeline.append(dict(type="PackDetInputs", meta_keys=("img_id", "img_path", "ori_shape", "img_shape",
                                                          "pad_shape", "scale_factor", "flip", "flip_direction")))
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope("mmdet"):
        return DATASETS.build(dict(
            type="CocoDataset", data_root=str(root), ann_file=str(annotation_file(root, split).relative_to(root)),
            data_prefix=dict(img=f"{SPLIT_FOLDERS[split]}/"), metainfo=dict(classes=tuple(class_names(root))),
            filter_cfg=dict(filter_empty_gt=train, min_size=0), test_mode=not train, pipeline=pipeline))


def build_model(head: dict[str, Any], num_classes: int, img_size: int, checkpoint: str | None, frozen: bool,
                arch: str | None = None, bf16: bool = False, feature_cache: bool = False,
                compile_backbone: bool = False) -> torch.nn.Module:
    from frozenbench.openmmlab.backbone import feature_shape

    backbone = backbone_cfg(arch, img_size, checkpoint, frozen, bf16, feature_cache, compile_backbone)
    backbone["extra_blocks"] = head.get("extra_blocks", 0)
    channels, strides = feature_shape(arch, img_size, checkpoint)
    cfg = detector_config(backbone, channels, strides, num_classes, detector=head.get("detector", "mask_rcnn"),
                          width=head.get("width", 256), rpn_samples=head.get("rpn_samples", 256),
                          rcnn_samples=head.get("rcnn_samples", 512))
    return build_mm_model("mmdet", cfg)


def _detections(model: torch.nn.Module, dataset, batch_size: int):
    """(image id, xyxy boxes, scores, labels, masks or None) per image, in the original image's pixels."""
    from mmengine.dataset import pseudo_collate

    model.eval()
    for start in range(0, len(dataset), batch_size):
        data = pseudo_collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        for sample in model.test_step(data):
            pred = sample.pred_instances
            masks = pred.masks.cpu().numpy() if "masks" in pred else None
            yield sample.img_id, pred.bboxes.cpu().numpy(), pred.scores.cpu().numpy(), pred.labels.cpu().numpy(), masks


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset, num_classes: int, batch_size: int = 4,
             test: dict[str, Any] | None = None) -> dict[str, Any]:
    if test:
        raise UserError(f"detection has no test-time options (got {sorted(test)})")
    evaluator = COCOEvaluator(dataset.ann_file)
    for detections in _detections(model, dataset, batch_size):
        evaluator.process(*detections)
    return evaluator.evaluate()


@torch.no_grad()
def predict_test_dev(model: torch.nn.Module, dataset, batch_size: int = 4) -> list[dict[str, Any]]:
    """Detections on test-dev in the COCO results format (boxes and masks in one list, as uploaded)."""
    categories = json.loads(Path(dataset.ann_file).read_text())["categories"]
    category_ids = sorted(c["id"] for c in categories)
    results: list[dict[str, Any]] = []
    for image_id, boxes, scores, labels, masks in _detections(model, dataset, batch_size):
        results.extend(instances_to_results(image_id, boxes, scores, labels, category_ids, masks))
    return results
