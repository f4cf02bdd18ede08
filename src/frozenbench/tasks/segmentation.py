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
import torch.nn.functional as F

from frozenbench.data.formats import ade as ade_format
from frozenbench.data.formats import ORIENTATION_BY_FORMAT
from frozenbench.evaluation.driver import FedEvaluator
from frozenbench.evaluation import SemSegEvaluator
from frozenbench.errors import UserError
from frozenbench.openmmlab.runtime import build_dataset as build_mm_dataset
from frozenbench.openmmlab.runtime import collate, slide_inference  # noqa: F401 (collate: TaskModule)
from frozenbench.openmmlab.configs import mask2former_config
from frozenbench.openmmlab.task_models import build_task_model
from frozenbench.openmmlab.training import wrap_for_training as trainable  # noqa: F401 (TaskModule)
from frozenbench.tasks.recipe import known_options, resize_crop_options
from frozenbench.tasks.scoring import run_evaluator
from frozenbench.tasks.registry import SEGMENTATION, BackboneRequest, SegmentationHead

# Bump when a code change alters what the data pipeline feeds a head (decoding, sampling,
# augmentation): finished runs then retrain instead of being reloaded.
# 2: images read in the stored frame (EXIF orientation ignored, as the label maps are)
PIPELINE_VERSION = 2


def class_names(root: Path) -> list[str]:
    return ade_format.class_names(root)


def build_dataset(
    root: str | Path,
    split: str,
    img_size: int,
    train: bool,
    test: dict[str, Any] | None = None,
    augment: dict[str, Any] | None = None,
):
    """ADE20K ``split`` through mmseg's dataset.

    Training: with ``augment`` mmseg's ADE20K recipe: the short side resized to ``img_size`` times a
    factor drawn from ``scale_range`` (long side at most 4x), a random ``crop_size`` square (at most
    75 % of it one class), a flip; without it the image is resized to fit ``img_size`` and flipped.
    The preprocessor pads each crop to ``img_size``. Testing: the short side resized to ``img_size``
    (mmseg's Mask2Former protocol), labels kept at the original size; :func:`evaluate` runs the
    sliding window or the whole image (``test.mode``) and scores at the original size.
    """
    del test  # test-time options act in evaluate()

    root = Path(root)
    pipeline = _pipeline(img_size, train, augment)
    return build_mm_dataset(
        "mmseg",
        dict(
            type="BaseSegDataset",
            data_root=str(root),
            data_prefix=dict(img_path=ade_format.image_dir(split), seg_map_path=ade_format.label_dir(split)),
            img_suffix=ade_format.IMAGE_SUFFIX,
            seg_map_suffix=ade_format.LABEL_SUFFIX,
            reduce_zero_label=True,
            metainfo=dict(classes=class_names(root)),
            pipeline=pipeline,
        ),
    )


def _pipeline(img_size: int, train: bool, augment: dict[str, Any] | None) -> list[dict[str, Any]]:
    """mmseg's transforms of one image and its label map (see :func:`build_dataset`)."""
    # mmseg's own ADE20K pipelines: scale (4 * short, short) bounds the long side by 4x the short one
    short_side_scale = (4 * img_size, img_size)
    pipeline: list[dict[str, Any]] = [dict(type="LoadImageFrozenbench", apply_orientation=ORIENTATION_BY_FORMAT["ade"])]
    recipe = resize_crop_options(augment, img_size, "segmentation", (0.5, 2.0), max_crop=img_size) if train else None
    if recipe is not None:
        crop = recipe["crop_size"]
        pipeline += [
            dict(type="LoadAnnotations"),
            dict(type="RandomResize", scale=short_side_scale, ratio_range=recipe["scale_range"], keep_ratio=True),
            dict(type="RandomCrop", crop_size=(crop, crop), cat_max_ratio=0.75),
            dict(type="RandomFlip", prob=0.5),
        ]
    elif train:
        pipeline += [
            dict(type="LoadAnnotations"),
            dict(type="Resize", scale=(img_size, img_size), keep_ratio=True),
            dict(type="RandomFlip", prob=0.5),
        ]
    else:
        # annotations loaded after the resize: scored at the original resolution
        pipeline += [dict(type="Resize", scale=short_side_scale, keep_ratio=True), dict(type="LoadAnnotations")]
    pipeline.append(dict(type="PackSegInputs"))
    return pipeline


def build_model(head: SegmentationHead, backbone: BackboneRequest, num_classes: int) -> torch.nn.Module:
    """Mask2Former (``head``'s pixel / transformer decoder blocks) on the requested backbone (with
    ``head.level_norm`` a trainable LayerNorm on each level before the pixel decoder)."""
    return build_task_model(
        "mmseg",
        backbone,
        head.extra_blocks,
        lambda part: mask2former_config(part, num_classes, backbone.img_size, head),
        level_norm=head.level_norm,
    )


# How each view of a test image is run: ``slide`` (frozenbench's default: windows of the training
# input size at 2/3 overlap) or ``whole`` (the image at once, padded to a multiple of 32, as mmseg's
# Mask2Former configs test: ``test_cfg=dict(mode='whole')``, preprocessor ``size_divisor=32``).
TEST_MODES = ("slide", "whole")
WHOLE_DIVISOR = 32


def test_mode(test: dict[str, Any]) -> str:
    """``test["mode"]`` (default ``slide``); another value is an error naming the key."""
    mode = test.get("mode", "slide")
    if mode not in TEST_MODES:
        raise UserError(f"segmentation test.mode must be one of {', '.join(TEST_MODES)}, got {mode!r}")
    return mode


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    dataset,
    num_classes: int,
    test: dict[str, Any] | None = None,
    workers: int = 0,
) -> dict[str, Any]:
    """Each image as the test pipeline resized it, scored at the original resolution: by default
    sliding-window inference (``img_size`` crops, 2/3 overlap), with ``test={"mode": "whole"}`` the
    whole image in one forward (mmseg's Mask2Former protocol); with ``test={"scales": [...], "flip":
    True}`` multi-scale + flip testing. Images go one at a time: val images differ in size, and
    mmseg's preprocessor takes a batch of one size only."""
    test = known_options(test, SEGMENTATION.test_options, "segmentation test")
    scales, flip, mode = test.get("scales", [1.0]), test.get("flip", False), test_mode(test)
    semseg = FedEvaluator(SemSegEvaluator(num_classes=num_classes, ignore_index=255), _feed_semseg)
    return run_evaluator(
        model,
        dataset,
        "segmentation",
        semseg,
        1,
        workers,
        lambda model, data: _tta_scores(model, data, scales, flip, mode),
    )


def _feed_semseg(semseg: SemSegEvaluator, inputs: dict, outputs: list) -> None:
    # outputs: each image's class scores at its original size, against its label map
    for score, sample in zip(outputs, inputs["data_samples"]):
        semseg.process(score.argmax(0).cpu().numpy().astype(np.int64), sample.gt_sem_seg.data[0].cpu().numpy())


def _tta_scores(
    model: torch.nn.Module, data: dict, scales: list[float], flip: bool, mode: str = "slide"
) -> list[torch.Tensor]:
    """Class scores (C, H, W) per image at its original size, averaged over scales and flips as
    mmseg's SegTTAModel does (mean of the softmaxed scores).

    ``slide``: each view is covered by mmseg's sliding-window inference with crops of the training
    input size (2/3 overlap); a view smaller than a crop is padded up to it. ``whole``: each view goes
    through the model at once (mmseg's ``whole_inference``), padded to a multiple of 32. Either way
    the padding is cropped off the scores.
    """
    crop = tuple(model.data_preprocessor.size)
    batch = model.data_preprocessor(data, training=False)
    if mode == "whole":
        return _tta_views(model, batch, (1, 1), scales, flip, whole=True)
    with slide_inference(model, crop, stride=tuple(max(1, c * 2 // 3) for c in crop)):
        return _tta_views(model, batch, crop, scales, flip)


def _tta_views(
    model: torch.nn.Module,
    batch: dict,
    crop: tuple[int, int],
    scales: list[float],
    flip: bool,
    whole: bool = False,
) -> list[torch.Tensor]:
    out = []
    for image, sample in zip(batch["inputs"], batch["data_samples"]):
        h, w = sample.img_shape
        image = image[None, :, :h, :w]
        total = 0
        for scale in scales:
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
            x = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
            if whole:  # mmseg's test preprocessor: right / bottom padding to size_divisor 32
                x = F.pad(x, (0, -size[1] % WHOLE_DIVISOR, 0, -size[0] % WHOLE_DIVISOR))
            else:
                x = F.pad(x, (0, max(crop[1] - size[1], 0), 0, max(crop[0] - size[0], 0)))
            for flipped in (False, True) if flip else (False,):
                view = x.flip(-1) if flipped else x
                # no pad_shape: Mask2Former would size each window's masks by it instead of the window
                meta = {k: v for k, v in sample.metainfo.items() if k != "pad_shape"}
                meta.update(img_shape=view.shape[2:], flip=False)
                scores = model.whole_inference(view, [meta]) if whole else model.slide_inference(view, [meta])
                scores = (scores.flip(-1) if flipped else scores)[:, :, : size[0], : size[1]]
                scores = F.interpolate(scores, size=sample.ori_shape, mode="bilinear", align_corners=False)
                total = total + scores.softmax(dim=1)[0]
        out.append(total / (len(scales) * (2 if flip else 1)))
    return out
