"""Kinetics-format action recognition: the frozen image backbone on every frame + a temporal head.

Data come through mmaction2's VideoDataset and PyAV transforms (the prepared layout:
``{split}_list_videos.txt`` + ``videos/``); scoring is top-1 / top-5 on the val split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from frozenbench.data.formats import kinetics as kinetics_format
from frozenbench.evaluation.driver import FedEvaluator
from frozenbench.errors import UserError
from frozenbench.evaluation import TopKEvaluator
from frozenbench.openmmlab.runtime import build_dataset as build_mm_dataset
from frozenbench.openmmlab.runtime import collate  # noqa: F401 (TaskModule)
from frozenbench.openmmlab.configs import recognizer_config
from frozenbench.openmmlab.task_models import build_task_model
from frozenbench.openmmlab.training import wrap_for_training as trainable  # noqa: F401 (TaskModule)
from frozenbench.tasks.recipe import known_options
from frozenbench.tasks.scoring import run_evaluator
from frozenbench.tasks.registry import VIDEO, BackboneRequest, VideoHead

# Bump when a code change alters what the data pipeline feeds a head (decoding, sampling,
# augmentation): finished runs then retrain instead of being reloaded.
PIPELINE_VERSION = 1


def class_names(root: str | Path) -> list[str]:
    return kinetics_format.class_names(root)


TEST_OPTIONS = VIDEO.test_options
AUGMENT_OPTIONS = VIDEO.augment_options or ()


def build_dataset(
    root: str | Path,
    split: str,
    img_size: int,
    train: bool,
    num_frames: int = 8,
    frame_interval: int = 1,
    test: dict[str, Any] | None = None,
    augment: dict[str, Any] | None = None,
):
    """Kinetics ``split`` through mmaction2's VideoDataset and PyAV transforms.

    Each clip is ``num_frames`` frames ``frame_interval`` apart (mmaction2's ``clip_len`` x
    ``frame_interval``: 16 x 4 covers 2.1 s of a 30 fps video). Training: one clip at a random
    offset; with ``augment`` a random resized crop (``area_range``, ``aspect_ratio_range``) of the
    frames resized to ``img_size``, without it the short side resized to ``img_size`` and the centre
    ``img_size`` square. A horizontal flip only with ``augment: {flip: true}``: the synthetic motion
    classes (and some Kinetics classes) change meaning under it. Testing:
    ``test={"num_clips": K, "num_crops": 3}`` takes K clips evenly spaced over each video, each as
    1 centre crop or 3 crops along its longer side (short side resized to ``img_size``), and the
    head averages their class probabilities.
    """

    test = known_options(test, TEST_OPTIONS, "video test")
    augment = known_options(augment if train else None, AUGMENT_OPTIONS, "video augment")
    num_clips = 1 if train else int(test.get("num_clips", 1))
    num_crops = 1 if train else int(test.get("num_crops", 1))
    if num_crops not in (1, 3):
        raise UserError(f"video test option num_crops must be 1 or 3, got {num_crops}")
    root = Path(root)
    pipeline: list[dict[str, Any]] = [
        *_decoded_clips(num_frames, frame_interval, num_clips, train),
        *_crops(img_size, augment, num_crops),
        dict(type="FormatShape", input_format="NCTHW"),
        dict(type="PackActionInputs"),
    ]
    return build_mm_dataset(
        "mmaction",
        dict(
            type="VideoDataset",
            ann_file=str(kinetics_format.list_path(root, split)),
            data_prefix=dict(video=str(root)),
            pipeline=pipeline,
            test_mode=not train,
        ),
    )


def _decoded_clips(num_frames: int, frame_interval: int, num_clips: int, train: bool) -> list[dict[str, Any]]:
    """The transforms that pick ``num_clips`` clips of a video and decode their frames."""
    # mmaction's PyAVInit reads the frame count from the container: use mp4 (webm reports 0).
    return [
        dict(type="PyAVInit"),
        dict(
            type="SampleFrames",
            clip_len=num_frames,
            frame_interval=frame_interval,
            num_clips=num_clips,
            test_mode=not train,
        ),
        dict(type="PyAVDecode"),
    ]


def _crops(img_size: int, augment: dict[str, Any], num_crops: int) -> list[dict[str, Any]]:
    """The frames' crop and resize to ``img_size``: the training augmentation, or the test views."""
    if not augment:
        return [
            dict(type="Resize", scale=(-1, img_size)),
            dict(type="ThreeCrop" if num_crops == 3 else "CenterCrop", crop_size=img_size),
        ]
    crops = [
        dict(
            type="RandomResizedCrop",
            area_range=tuple(augment.get("area_range", (0.08, 1.0))),
            aspect_ratio_range=tuple(augment.get("aspect_ratio_range", (3 / 4, 4 / 3))),
        ),
        dict(type="Resize", scale=(img_size, img_size), keep_ratio=False),
    ]
    if augment.get("flip", False):
        crops.append(dict(type="Flip", flip_ratio=0.5))
    return crops


def build_model(head: VideoHead, backbone: BackboneRequest, num_classes: int) -> torch.nn.Module:
    """The temporal head (``head.num_blocks`` transformer blocks over the frames' last-level
    features) on the requested backbone, applied to every frame."""
    return build_task_model(
        "mmaction",
        backbone,
        head.extra_blocks,
        lambda part: recognizer_config(part, num_classes, backbone.img_size, head),
        pyramid=False,
    )


# Frames through the backbone per call at test time: memory stays bounded however many views
# (clips x crops) a video is tested with.
MAX_TEST_VIEWS_PER_BATCH = 8


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    dataset,
    num_classes: int,
    test: dict[str, Any] | None = None,
    workers: int = 0,
) -> dict[str, Any]:
    """Top-1 / top-5 over the val split. Multi-view sampling lives in the dataset; the batch shrinks
    so that at most ``MAX_TEST_VIEWS_PER_BATCH`` views (or one video) go through the model at once,
    and the backbone itself takes their frames in bounded chunks."""
    test = dict(test or {})
    views = int(test.get("num_clips", 1)) * int(test.get("num_crops", 1))
    batch_size = max(1, min(VIDEO.eval_batch, MAX_TEST_VIEWS_PER_BATCH // views))
    topk = FedEvaluator(TopKEvaluator(topk=(1, 5) if num_classes >= 5 else (1,)), _feed_topk)
    return run_evaluator(model, dataset, "video", topk, batch_size, workers)


def _feed_topk(topk: TopKEvaluator, inputs: dict, outputs: list) -> None:
    for sample in outputs:  # each video's class probabilities, averaged over its views by the head
        topk.process(sample.pred_score.float().cpu().numpy(), int(sample.gt_label.item()))
