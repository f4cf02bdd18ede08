"""Task types as records: what every part of frozenbench needs to know of a kind of task.

Mirrors :mod:`frozenbench.models.registry` (backbone families): a :class:`TaskType` is a
torch-free record (the config checks, the Snakefile, the tables, the cost and memory reports
read it without importing torch or OpenMMLab) naming the module that implements it, loaded on
use. That module satisfies :class:`TaskModule`. Adding a task type is one record
(:func:`register_task_type`) plus one module; nothing else lists task types.

Head settings are a frozen dataclass per task type: its field defaults are the only defaults of
a head's knobs (``schemas/config.schema.yaml`` describes the same knobs, and
``tests/test_task_types.py`` holds its defaults to these).
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from frozenbench.errors import UserError


@dataclass(frozen=True)
class DetectionHead:
    detector: str = "mask_rcnn"  # mask_rcnn | cascade_mask_rcnn | htc
    width: int = 256  # FPN and head channels
    extra_blocks: int = 0  # trainable blocks on the frozen features
    rpn_samples: int = 256  # RPN sampler size
    rcnn_samples: int = 512  # RoI sampler size
    # a trainable LayerNorm on each backbone level before FPN (the official Swin detection code's
    # norm{i}); head-side, so it trains also on a frozen backbone (docs/recipe.md)
    level_norm: bool = False


@dataclass(frozen=True)
class SegmentationHead:
    pixel_decoder_layers: int = 1
    transformer_decoder_layers: int = 4
    width: int = 256
    num_queries: int = 100
    num_points: int = 12544
    extra_blocks: int = 0
    level_norm: bool = False  # a trainable LayerNorm on each level before the pixel decoder (as DetectionHead)


@dataclass(frozen=True)
class VideoHead:
    num_frames: int = 8  # frames per clip
    num_blocks: int = 2  # temporal transformer blocks
    spatial_tokens: bool = True  # space-time tokens (else one per frame)
    width: int = 128
    extra_blocks: int = 0


@dataclass(frozen=True)
class BackboneRequest:
    """What a cell asks of its backbone: a task module's ``build_model`` builds it under its head."""

    checkpoint: str | None  # the converted checkpoint (None: random weights, tests and benchmarks)
    img_size: int
    frozen: bool
    arch: str | None = None  # None: the architecture the checkpoint file names
    bf16: bool = False  # the frozen forward under bf16 autocast
    feature_cache: bool = False
    compile_backbone: bool = False


# a detector's name in benchmark records (bench/gpu_smoke.py) and cost / memory reports
DETECTORS = {"mask_rcnn": "mask_rcnn", "cascade_mask_rcnn": "cascade", "htc": "htc"}


class TaskModule(Protocol):
    """What a task type's implementation module provides (``TaskType.module``).

    ``build_model`` returns the model the training loop steps: ``loss_dict = model(batch)`` for a
    batch made by ``collate``; ``evaluate`` scores that same model on the validation split."""

    PIPELINE_VERSION: int  # bumped when the data pipeline feeds a head something else: runs retrain

    def class_names(self, root: Path) -> list[str]: ...

    def build_dataset(self, root: Path, split: str, img_size: int, train: bool, **options: Any): ...

    def build_model(self, head: Any, backbone: BackboneRequest, num_classes: int): ...

    def collate(self, samples: list) -> Any: ...

    def evaluate(self, model: Any, dataset: Any, num_classes: int, test: dict | None = None, workers: int = 0): ...

    # optional: def predict_test_dev(model, dataset, workers=0) -> list[dict]  (an evaluation server's upload)


@dataclass(frozen=True)
class Published:
    """One published number a study cell can be set beside: what was measured, on which split of
    which benchmark, with which head and backbone, and where it was published."""

    label: str  # the headline metric (a TaskType headline label)
    mode: str  # frozen | finetune
    value: float
    split: str  # val | test-dev
    head: str  # the head as published, e.g. "HTC++"
    head_kind: str  # the study's head kind it corresponds to (TaskType.head_kind), e.g. "htc"
    backbone: str
    source: str


LIN_2022 = "Lin et al. 2022"
LIU_2022 = "Liu et al. 2022 (SwinV2)"  # the fine-tuned numbers Lin et al. compare with
SWINV2_G = "SwinV2-G"


@dataclass(frozen=True)
class TaskType:
    name: str
    dataset_format: str  # the dataset format its tasks train on (datasets.<name>.format)
    module: str  # the implementation module (a TaskModule), imported on first use
    # [(column label, path into metrics.json's metrics)]; the first is the primary metric
    headline_metrics: tuple[tuple[str, tuple[str, ...]], ...]
    head: type  # the head settings' dataclass
    # the study's conventional task name: how a metrics.json without a task type is read, and what
    # a table calls the type when no task of the study has run it
    conventional_name: str
    # the published numbers the paper table sets the study beside, and the benchmark they are on
    # (a dataset is comparable only when its config names this benchmark: datasets.<name>.benchmark)
    published: tuple[Published, ...] = ()
    benchmark: str | None = None
    test_options: tuple[str, ...] = ()  # keys of tasks.<name>.test
    augment_options: tuple[str, ...] | None = None  # keys of tasks.<name>.augment (None: the shared recipe's)
    capacity_knobs: tuple[str, ...] = ("extra_blocks", "width")  # what the head-capacity table tells apart
    # the head's kind in benchmark records and cost / memory reports (a cell kind is <task>_<kind>)
    head_kind: Callable[[Any], str] = lambda head: "head"
    clips: bool = False  # the backbone sees every frame of a clip (memory and cost count frames)
    eval_batch: int = 1  # samples per evaluation batch (images; video shrinks it by its views)
    # view equivalents at img_size its test options evaluate per sample (the cost report's rule E)
    test_views: Callable[[dict[str, Any]], float] = lambda test: 1.0

    def load(self) -> TaskModule:
        return importlib.import_module(self.module)  # type: ignore[return-value]

    def make_head(self, settings: dict[str, Any], where: str = "head") -> Any:
        """The head dataclass of ``settings`` (a config's head entry); an unknown knob names ``where``."""
        known = {f.name for f in dataclasses.fields(self.head)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise UserError(
                f"{where}: unknown {self.name} head setting(s) {unknown}; known: {', '.join(sorted(known))}"
            )
        for f in dataclasses.fields(self.head):  # a switch takes true or false, never a look-alike
            if isinstance(f.default, bool) and f.name in settings and not isinstance(settings[f.name], bool):
                raise UserError(f"{where}.{f.name}: must be true or false, got {settings[f.name]!r}")
        return self.head(**settings)

    def capacity_label(self, settings: dict[str, Any]) -> str:
        """The head's capacity knobs as one label, e.g. ``detector=htc extra_blocks=2``: the knobs a
        config sets, and ``extra_blocks=0`` when it sets none (a plain head reads as such)."""
        knobs = {"extra_blocks": 0, **{k: v for k, v in settings.items() if k in self.capacity_knobs}}
        return " ".join(f"{k}={knobs[k]}" for k in self.capacity_knobs if k in knobs)


_TASK_TYPES: dict[str, TaskType] = {}


def register_task_type(task_type: TaskType) -> TaskType:
    _TASK_TYPES[task_type.name] = task_type
    return task_type


def get_task_type(name: str) -> TaskType:
    if name not in _TASK_TYPES:
        raise UserError(f"unknown task type {name!r} (known: {', '.join(_TASK_TYPES)})")
    return _TASK_TYPES[name]


def list_task_types() -> list[str]:
    """Registered task types, in registration order (the tables' order)."""
    return list(_TASK_TYPES)


# Lin et al., NeurIPS 2022 (SwinV2-G frozen: COCO val and test-dev, ADE20K val, K400 val) and the
# SwinV2 paper's fine-tuned SwinV2-G numbers they compare with (Liu et al., CVPR 2022).
DETECTION = register_task_type(
    TaskType(
        name="detection",
        dataset_format="coco",
        module="frozenbench.tasks.detection",
        headline_metrics=(("box AP", ("bbox", "AP")), ("mask AP", ("segm", "AP"))),
        head=DetectionHead,
        conventional_name="coco",
        published=(
            Published("box AP", "frozen", 59.3, "val", "HTC++", "htc", SWINV2_G, LIN_2022),
            Published("mask AP", "frozen", 51.6, "val", "HTC++", "htc", SWINV2_G, LIN_2022),
            Published("box AP", "frozen", 60.0, "test-dev", "HTC++", "htc", SWINV2_G, LIN_2022),
            Published("mask AP", "frozen", 52.2, "test-dev", "HTC++", "htc", SWINV2_G, LIN_2022),
            Published("box AP", "finetune", 62.5, "val", "HTC++", "htc", SWINV2_G, LIU_2022),
            Published("mask AP", "finetune", 53.7, "val", "HTC++", "htc", SWINV2_G, LIU_2022),
            Published("box AP", "finetune", 63.1, "test-dev", "HTC++", "htc", SWINV2_G, LIU_2022),
            Published("mask AP", "finetune", 54.4, "test-dev", "HTC++", "htc", SWINV2_G, LIU_2022),
        ),
        benchmark="coco2017",
        test_options=("scale",),
        capacity_knobs=("detector", "extra_blocks", "width"),
        head_kind=lambda head: DETECTORS.get(head.detector, head.detector),
        eval_batch=4,
    )
)
SEGMENTATION = register_task_type(
    TaskType(
        name="segmentation",
        dataset_format="ade",
        module="frozenbench.tasks.segmentation",
        headline_metrics=(("mIoU", ("mIoU",)),),
        head=SegmentationHead,
        conventional_name="ade",
        published=(
            Published("mIoU", "frozen", 57.6, "val", "Mask2Former", "mask2former", SWINV2_G, LIN_2022),
            Published("mIoU", "finetune", 59.9, "val", "UperNet", "upernet", SWINV2_G, LIU_2022),
        ),
        benchmark="ade20k",
        test_options=("scales", "flip", "mode"),
        capacity_knobs=("extra_blocks", "pixel_decoder_layers", "transformer_decoder_layers", "width"),
        head_kind=lambda head: "mask2former",
        test_views=lambda test: sum(s * s for s in test.get("scales", [1.0])) * (2 if test.get("flip") else 1),
    )
)
VIDEO = register_task_type(
    TaskType(
        name="video",
        dataset_format="kinetics",
        module="frozenbench.tasks.video",
        headline_metrics=(("top-1", ("top1",)),),
        head=VideoHead,
        conventional_name="k400",
        published=(
            Published("top-1", "frozen", 81.7, "val", "temporal head", "temporal", SWINV2_G, LIN_2022),
            Published("top-1", "finetune", 86.8, "val", "Video SwinV2", "temporal", SWINV2_G, LIU_2022),
        ),
        benchmark="kinetics400",
        test_options=("num_clips", "num_crops"),
        augment_options=("area_range", "aspect_ratio_range", "flip"),
        capacity_knobs=("extra_blocks", "num_blocks", "width"),
        head_kind=lambda head: "temporal",
        eval_batch=8,  # videos per evaluation batch, fewer when each is tested with several views
        test_views=lambda test: float(test.get("num_clips", 1) * test.get("num_crops", 1)),
        clips=True,
    )
)
