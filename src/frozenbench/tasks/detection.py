"""COCO-format detection + instance segmentation: Mask R-CNN, Cascade Mask R-CNN or HTC + FPN on a
frozen (or fine-tuned) backbone (the head's ``detector``).

Data come through mmdet's CocoDataset and transforms (COCO 2017 layout; labels by increasing category
id and images in their stored frame: :mod:`frozenbench.openmmlab.loading`); scoring is
pycocotools' box and mask AP through :class:`frozenbench.evaluation.COCOEvaluator` on
the val split only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from frozenbench.data.formats import coco as coco_format
from frozenbench.data.formats import ORIENTATION_BY_FORMAT
from frozenbench.data.validate import coco_meaning_problems
from frozenbench.evaluation.driver import FedEvaluator
from frozenbench.errors import UserError
from frozenbench.evaluation import COCOEvaluator, instances_to_results
from frozenbench.evaluation.coco import category_ids
from frozenbench.openmmlab.runtime import build_dataset as build_mm_dataset
from frozenbench.openmmlab.runtime import collate  # noqa: F401 (TaskModule)
from frozenbench.openmmlab.configs import detector_config
from frozenbench.openmmlab.precision import detector_heads_in_fp32
from frozenbench.openmmlab.task_models import build_task_model
from frozenbench.openmmlab.training import wrap_for_training as trainable  # noqa: F401 (TaskModule)
from frozenbench.tasks.recipe import known_options, resize_crop_options
from frozenbench.tasks.scoring import run_evaluator
from frozenbench.tasks.registry import DETECTION, BackboneRequest, DetectionHead

# Bump when a code change alters what the data pipeline feeds a head (decoding, sampling,
# augmentation): finished runs then retrain instead of being reloaded.
# 2: images read in the stored frame (EXIF orientation ignored, as COCO annotations are), labels
# follow the category ids in increasing order whatever order the json lists them in.
PIPELINE_VERSION = 2


def class_names(root: str | Path) -> list[str]:
    """Names of the training labels: label ``k`` is the ``k``-th category id in increasing order."""
    return coco_format.class_names(root)


def checked_annotations(path: Path, annotated: bool) -> dict[str, Any]:
    """The COCO json at ``path``, refused with one line naming it when mmdet or pycocotools would
    read it as something else than it says (:func:`frozenbench.data.validate.coco_meaning_problems`):
    training may run without ``frozenbench validate`` first."""
    try:
        coco = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: invalid JSON: {err}") from None
    problems = coco_meaning_problems(coco, path, annotated=annotated)
    if problems:
        more = f" (and {len(problems) - 1} more problem(s): run frozenbench validate)" if len(problems) > 1 else ""
        raise UserError(f"{problems[0]}{more}")
    return coco


TEST_OPTIONS = DETECTION.test_options


def build_dataset(
    root: str | Path,
    split: str,
    img_size: int,
    train: bool,
    test: dict[str, Any] | None = None,
    augment: dict[str, Any] | None = None,
):
    """COCO ``split`` through mmdet's CocoDataset.

    Training: with ``augment`` the image is resized to ``scale_range`` times the ``img_size`` square
    (keeping its aspect ratio), a random ``crop_size`` square is cut out of it (boxes recomputed from
    the cropped masks, instances left empty by the crop dropped) and flipped; without it the image is
    resized to fit ``img_size`` and flipped. Testing: resized to fit ``test.scale`` (default the
    ``img_size`` square), keeping its aspect ratio, and never padded here: the preprocessor pads the
    batch, so ``img_shape`` stays the image's and predictions are clipped to it.
    """

    root = Path(root)
    test = known_options(test, TEST_OPTIONS, "detection test")
    annotated = split != "test-dev"
    ann_path = coco_format.annotation_file(root, split)
    checked_annotations(ann_path, annotated)
    pipeline = _pipeline(img_size, train, annotated, test, augment)
    return build_mm_dataset(
        "mmdet",
        dict(
            type="FrozenbenchCocoDataset",
            data_root=str(root),
            ann_file=str(ann_path.relative_to(root)),
            data_prefix=dict(img=f"{coco_format.SPLIT_FOLDERS[split]}/"),
            metainfo=dict(classes=tuple(class_names(root))),
            filter_cfg=dict(filter_empty_gt=train, min_size=0),
            test_mode=not train,
            pipeline=pipeline,
        ),
    )


def _pipeline(
    img_size: int, train: bool, annotated: bool, test: dict[str, Any], augment: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """mmdet's transforms of one image (see :func:`build_dataset`), from loading to packing."""
    pipeline: list[dict[str, Any]] = [
        dict(type="LoadImageFrozenbench", apply_orientation=ORIENTATION_BY_FORMAT["coco"]),
        *([dict(type="LoadAnnotations", with_bbox=True, with_mask=True)] if annotated else []),
    ]
    recipe = resize_crop_options(augment, img_size, "detection", (0.1, 2.0)) if train else None
    if recipe is not None:
        crop = recipe["crop_size"]
        pipeline += [
            dict(type="RandomResize", scale=(img_size, img_size), ratio_range=recipe["scale_range"], keep_ratio=True),
            dict(
                type="RandomCrop",
                crop_type="absolute",
                crop_size=(crop, crop),
                recompute_bbox=True,
                allow_negative_crop=True,
            ),
            dict(type="FilterAnnotations", min_gt_bbox_wh=(1e-2, 1e-2)),
        ]
    else:
        scale = tuple(test.get("scale", (img_size, img_size))) if not train else (img_size, img_size)
        pipeline.append(dict(type="Resize", scale=scale, keep_ratio=True))
    if train:
        pipeline.append(dict(type="RandomFlip", prob=0.5))
    pipeline.append(
        dict(
            type="PackDetInputs",
            meta_keys=("img_id", "img_path", "ori_shape", "img_shape", "scale_factor", "flip", "flip_direction"),
        )
    )
    return pipeline


def build_model(head: DetectionHead, backbone: BackboneRequest, num_classes: int) -> torch.nn.Module:
    """``head.detector`` + FPN on the requested backbone (with ``head.level_norm`` a trainable LayerNorm
    on each level before FPN); the detector's heads kept in fp32."""
    return detector_heads_in_fp32(
        build_task_model(
            "mmdet",
            backbone,
            head.extra_blocks,
            lambda part: detector_config(
                part.cfg,
                part.channels,
                part.strides,
                num_classes,
                part.normalization,
                detector=head.detector,
                width=head.width,
                rpn_samples=head.rpn_samples,
                rcnn_samples=head.rcnn_samples,
            ),
            level_norm=head.level_norm,
        )
    )


def _instances(sample) -> tuple:
    """(image id, xyxy boxes, scores, labels, masks or None) of one predicted data sample, in the
    original image's pixels."""
    pred = sample.pred_instances
    masks = pred.masks.cpu().numpy() if "masks" in pred else None
    return (
        sample.img_id,
        pred.bboxes.float().cpu().numpy(),
        pred.scores.float().cpu().numpy(),
        pred.labels.cpu().numpy(),
        masks,
    )


class ResultsCollector:
    """The driver's evaluator for an unannotated split: the predictions in the COCO results format."""

    def __init__(self, category_ids: list[int]) -> None:
        self.category_ids = category_ids
        self.reset()

    def reset(self) -> None:
        self.results: list[dict[str, Any]] = []

    def process(self, inputs: dict, outputs: list) -> None:
        for sample in outputs:
            image_id, boxes, scores, labels, masks = _instances(sample)
            self.results.extend(instances_to_results(image_id, boxes, scores, labels, self.category_ids, masks))

    def evaluate(self) -> dict[str, Any]:
        return {"results": self.results}


def _feed_coco(coco: COCOEvaluator, inputs: dict, outputs: list) -> None:
    for sample in outputs:
        coco.process(*_instances(sample))


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    dataset,
    num_classes: int,
    test: dict[str, Any] | None = None,
    workers: int = 0,
    batch_size: int = DETECTION.eval_batch,
) -> dict[str, Any]:
    """Box and mask AP of the val split (``test``'s scale acted in :func:`build_dataset`)."""
    coco = FedEvaluator(COCOEvaluator(dataset.ann_file), _feed_coco)
    return run_evaluator(model, dataset, "detection", coco, batch_size, workers)


@torch.no_grad()
def predict_test_dev(
    model: torch.nn.Module, dataset, workers: int = 0, batch_size: int = DETECTION.eval_batch
) -> list[dict[str, Any]]:
    """Detections on test-dev in the COCO results format (boxes and masks in one list, as uploaded)."""
    categories = json.loads(Path(dataset.ann_file).read_text())["categories"]
    collector = ResultsCollector(category_ids(categories))
    return run_evaluator(model, dataset, "test-dev", collector, batch_size, workers)["results"]
