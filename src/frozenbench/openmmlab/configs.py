"""Model configs for the task heads, derived from the official OpenMMLab configs.

Each builder loads the config file that mmdet / mmsegmentation ship (so the head
settings are the official ones), swaps the backbone for ``FrozenbenchBackbone`` and
sizes everything that depends on the backbone from its feature channels and strides,
never from hard-coded numbers. ``width`` scales the head for the mini-study.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from mmengine.config import Config, ConfigDict

from frozenbench.tasks.registry import BackboneRequest


def _official(package: str, relative: str) -> Config:
    module = __import__(package)
    return Config.fromfile(os.path.join(os.path.dirname(module.__file__), ".mim", "configs", relative))


def backbone_cfg(
    arch: str | None,
    img_size: int,
    checkpoint: str | None,
    frozen: bool,
    bf16: bool = False,
    feature_cache: bool = False,
    compile: bool = False,
) -> dict:
    return dict(
        type="FrozenbenchBackbone",
        arch=arch,
        img_size=img_size,
        checkpoint=checkpoint,
        frozen=frozen,
        bf16=bf16,
        feature_cache=feature_cache,
        compile=compile,
    )


@dataclass(frozen=True)
class BackbonePart:
    """What every head config takes of the backbone: its config, the channels and strides of the
    levels it feeds the head, and the mean / std its weights expect."""

    cfg: dict[str, Any]
    channels: list[int]
    strides: list[int]
    normalization: dict[str, list[float]]


def backbone_part(
    backbone: BackboneRequest, extra_blocks: int = 0, pyramid: bool = True, level_norm: bool = False
) -> BackbonePart:
    """The backbone side of a head's model, the head's ``extra_blocks`` on top; ``pyramid=False``
    for heads that take the last level only (video); ``level_norm`` a trainable LayerNorm on each
    level handed to the head (:class:`frozenbench.openmmlab.backbone.LevelNorms`).

    ``backbone.arch`` is the config's: the checkpoint must hold it (None: the checkpoint's, read from the
    file with its weights). The backbone is built here, once: its channels, strides and the
    normalisation its weights record size the head, and the model built from the returned config
    takes this very backbone (:func:`frozenbench.openmmlab.backbone.prebuild_body`)."""
    from frozenbench.openmmlab.backbone import BodyArgs, feature_shape, prebuild_body

    b = backbone
    cfg = backbone_cfg(b.arch, b.img_size, b.checkpoint, b.frozen, b.bf16, b.feature_cache, b.compile_backbone)
    cfg["extra_blocks"] = extra_blocks
    cfg["level_norm"] = bool(level_norm)
    if not pyramid:
        cfg["out_indices"] = [-1]  # the last level only: what the video backbone takes anyway
    body = prebuild_body(
        BodyArgs(
            b.arch,
            b.img_size,
            b.checkpoint,
            b.frozen,
            b.bf16,
            cfg.get("out_indices"),
            b.feature_cache,
            b.compile_backbone,
        )
    )
    channels, strides = feature_shape(body, pyramid=pyramid)
    return BackbonePart(cfg, channels, strides, body.pixel_normalization())


def mask2former_config(part: BackbonePart, num_classes: int, img_size: int, head: Any) -> ConfigDict:
    """Mask2Former (mmseg) on backbone ``part`` with ``head``'s decoders (a
    :class:`~frozenbench.tasks.registry.SegmentationHead`; the paper's light ones: 1 pixel-decoder
    block, 4 transformer-decoder blocks); inputs normalised as the backbone's weights expect."""
    width, num_queries = head.width, head.num_queries
    model = _official("mmseg", "mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py").model
    model.backbone = ConfigDict(part.cfg)
    # The preprocessor pads training crops to this size: left at 512 it pads small inputs and costs
    # ~20x per step.
    model.data_preprocessor.size = (img_size, img_size)
    model.data_preprocessor.update(part.normalization)
    decode = model.decode_head
    decode.in_channels, decode.strides = list(part.channels), list(part.strides)
    decode.feat_channels = decode.out_channels = width
    decode.num_classes, decode.num_queries = num_classes, num_queries
    decode.positional_encoding.num_feats = width // 2
    decode.pixel_decoder.encoder.num_layers = head.pixel_decoder_layers
    decode.pixel_decoder.positional_encoding.num_feats = width // 2
    for layer_cfg in (decode.pixel_decoder.encoder.layer_cfg,):
        layer_cfg.self_attn_cfg.embed_dims = width
        layer_cfg.ffn_cfg.embed_dims = width
        layer_cfg.ffn_cfg.feedforward_channels = width * 4
    decode.transformer_decoder.num_layers = head.transformer_decoder_layers
    dec = decode.transformer_decoder.layer_cfg
    dec.self_attn_cfg.embed_dims = dec.cross_attn_cfg.embed_dims = dec.ffn_cfg.embed_dims = width
    dec.ffn_cfg.feedforward_channels = width * 8
    # One weight per class plus the "no object" class (mmseg requires num_classes + 1 entries).
    decode.loss_cls.class_weight = [1.0] * num_classes + [0.1]
    decode.train_cfg.num_points = head.num_points
    return model


# The paper's detectors; HTC without its semantic branch, which needs COCO-stuff maps.
DETECTORS = {
    "mask_rcnn": "mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py",
    "cascade_mask_rcnn": "cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py",
    "htc": "htc/htc-without-semantic_r50_fpn_1x_coco.py",
}


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def detector_config(
    backbone: dict[str, Any],
    channels: list[int],
    strides: list[int],
    num_classes: int,
    normalization: dict[str, list[float]],
    detector: str = "mask_rcnn",
    width: int = 256,
    rpn_samples: int = 256,
    rcnn_samples: int = 512,
) -> ConfigDict:
    """Mask R-CNN, Cascade Mask R-CNN or HTC + FPN (mmdet's configs); ``width`` scales the neck and heads,
    ``*_samples`` shrink the RoI samplers (RoIAlign is single-threaded on CPU). Inputs are normalised
    as the backbone's weights expect; each batch is padded to a multiple of 32 by the preprocessor,
    which keeps every image's own ``img_shape`` (predictions are clipped to the image, not the canvas)."""
    if detector not in DETECTORS:
        raise ValueError(f"unknown detector {detector!r}; choose from {', '.join(DETECTORS)}")
    model = _official("mmdet", DETECTORS[detector]).model
    model.backbone = ConfigDict(backbone)
    model.data_preprocessor.update(normalization)
    model.neck.in_channels, model.neck.out_channels = list(channels), width
    model.rpn_head.in_channels = model.rpn_head.feat_channels = width
    model.rpn_head.anchor_generator.strides = list(strides) + [strides[-1] * 2]
    roi = model.roi_head
    roi.bbox_roi_extractor.out_channels = roi.mask_roi_extractor.out_channels = width
    roi.bbox_roi_extractor.featmap_strides = roi.mask_roi_extractor.featmap_strides = list(strides)
    # Cascade heads hold one bbox head (and for HTC one mask head) per stage.
    for bbox_head in _as_list(roi.bbox_head):
        bbox_head.in_channels, bbox_head.num_classes = width, num_classes
        bbox_head.fc_out_channels = width * 4
    for mask_head in _as_list(roi.mask_head):
        mask_head.in_channels = mask_head.conv_out_channels = width
        mask_head.num_classes = num_classes
    model.train_cfg.rpn.sampler.num = rpn_samples
    # anchors crossing the image border stay candidates (mmdet's HTC config drops them): the paper's
    # random resize goes down to 0.1x, and an image that small, or a thin panorama, has no anchor fully
    # inside it, which mmdet answers by stopping the training job (detectron2's default does the same)
    model.train_cfg.rpn.allowed_border = -1
    for stage in _as_list(model.train_cfg.rcnn):
        stage.sampler.num = rcnn_samples
    return model


def recognizer_config(part: BackbonePart, num_classes: int, img_size: int, head: Any) -> dict:
    """Recognizer3D: per-frame frozen backbone ``part`` (its last level) + ``head``'s trainable
    temporal transformer (a :class:`~frozenbench.tasks.registry.VideoHead`); frames normalised as
    the backbone's weights expect (PyAV decodes RGB)."""
    side = -(-img_size // part.strides[-1])  # the backbone pads its input up: the grid rounds up
    return dict(
        type="Recognizer3D",
        data_preprocessor=dict(type="ActionDataPreprocessor", **part.normalization, format_shape="NCTHW"),
        backbone={**part.cfg, "type": "FramewiseBackbone", "spatial_tokens": head.spatial_tokens},
        cls_head=dict(
            type="TemporalTransformerHead",
            num_classes=num_classes,
            in_channels=part.channels[-1],
            num_frames=head.num_frames,
            num_spatial=side * side if head.spatial_tokens else 1,
            num_blocks=head.num_blocks,
            width=head.width,
            average_clips="prob",
        ),
    )
