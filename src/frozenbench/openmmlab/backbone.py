"""The frozenbench backbone as an OpenMMLab module (mmdet, mmseg and mmaction2 registries).

This package is the only place that touches the OpenMMLab registries: the rest of
frozenbench builds plain torch modules (:class:`frozenbench.models.backbone.Backbone`) and
never imports mmdet, mmseg or mmaction2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule

from frozenbench.models.backbone import Backbone


class FrozenbenchBackbone(BaseModule):
    """Multi-level NCHW features (strides 4-32) for detectors and segmentors.

    A plain ViT's levels all have its patch stride; with ``pyramid`` (the default) a trainable
    :class:`SimpleFeaturePyramid` turns them into strides 4-32, so every head sees a hierarchical
    backbone whatever the family.

    Args:
        arch: registered architecture; may be omitted when ``checkpoint`` names it.
        img_size: input size the backbone is built for.
        checkpoint: canonical backbone checkpoint (``checkpoints/{name}.pth``), or None for random init.
        frozen: the study's setting (see :class:`frozenbench.models.backbone.Backbone`); False fine-tunes.
        bf16: frozen forward under bf16 autocast.
        out_indices: levels to take (default: the family's feature levels).
        pyramid: build strides 4-32 from a plain ViT's levels (ignored for hierarchical families);
            False hands them on as they are (the video head takes the last block's tokens).
        extra_blocks: the paper's "more flexible frozen setting": this many *trainable* transformer
            blocks on the last level's tokens, between the frozen body and the task head (0: plain head).
        feature_cache: frozen only: compute each distinct input's features once (see
            :mod:`frozenbench.models.feature_cache`); the extra blocks still run every step.
        compile: frozen only: compiled frozen forward (:class:`frozenbench.models.backbone.Backbone`).
        level_norm: a trainable LayerNorm over the channels of each level handed to the head
            (:class:`LevelNorms`, after the pyramid and the extra blocks), as the official Swin
            detection / segmentation code and mmdet's Swin put ``norm{i}`` on each output level; it
            is no part of the frozen body, so it trains also when the body is frozen.
    """

    def __init__(
        self,
        arch: str | None = None,
        img_size: int | None = None,
        checkpoint: str | None = None,
        frozen: bool = True,
        bf16: bool = False,
        out_indices: Sequence[int] | None = None,
        pyramid: bool = True,
        extra_blocks: int = 0,
        extra_heads: int = 4,
        feature_cache: bool = False,
        compile: bool = False,
        level_norm: bool = False,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        build = BodyArgs(arch, img_size, checkpoint, frozen, bf16, out_indices, feature_cache, compile)
        body = _PREBUILT.pop(build.key(), None)
        self.body = body if body is not None else build.build()
        self.frozen = frozen
        self.pyramid = (
            SimpleFeaturePyramid(self.body.channels, self.body.strides) if pyramid and self.body.needs_pyramid else None
        )
        self.extra = (
            ExtraBlocks(
                self.channels[-1], extra_blocks, extra_heads, grid=max(1, (img_size or 224) // self.strides[-1])
            )
            if extra_blocks
            else None
        )
        self.level_norm = LevelNorms(self.channels) if level_norm else None

    @property
    def channels(self) -> list[int]:
        return self.pyramid.channels if self.pyramid is not None else self.body.channels

    @property
    def strides(self) -> list[int]:
        return list(SimpleFeaturePyramid.STRIDES) if self.pyramid is not None else self.body.strides

    def frozen_parts(self) -> list[str]:
        """The submodules a run never changes (what its resumable state leaves out)."""
        return ["body"] if self.frozen else []

    def init_weights(self) -> None:
        # Weights come from the checkpoint (or the seeded random init); mmengine's
        # init_cfg machinery must not overwrite them.
        pass

    def train(self, mode: bool = True) -> "FrozenbenchBackbone":
        super().train(mode)
        self.body.train(mode)  # keeps a frozen body in eval mode
        return self

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats = self.body(x)
        if self.pyramid is not None:
            feats = self.pyramid(feats, x.shape[-2:])
        if self.extra is not None:
            feats[-1] = self.extra(feats[-1])
        if self.level_norm is not None:
            feats = self.level_norm(feats)
        return tuple(feats)


class LevelNorms(torch.nn.Module):
    """One trainable LayerNorm over the channels of each NCHW level, at LayerNorm's init (weight 1,
    bias 0): the official Swin detection code's ``norm{i}`` (a LayerNorm on each ``out_indices``
    stage's tokens before they are reshaped for FPN), which mmdet's and mmseg's Swin copy.

    On a frozen backbone these are the only weights that can rescale its features per channel
    before the neck. A detector / segmentor checkpoint's own ``norm0..3`` are never loaded into them
    (:func:`frozenbench.checkpoint.layouts._detector_backbone` drops them): they were trained with
    another head on a fine-tuned backbone, and the official code starts them from LayerNorm's init
    on an ImageNet checkpoint as well."""

    def __init__(self, channels: Sequence[int]) -> None:
        super().__init__()
        self.norms = torch.nn.ModuleList(torch.nn.LayerNorm(int(c)) for c in channels)

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(feats) != len(self.norms):
            raise ValueError(f"{len(self.norms)} level norms for {len(feats)} levels")
        # channels last for the norm and back; the official code normalises the (B, H*W, C) tokens
        return [norm(f.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous() for norm, f in zip(self.norms, feats)]


class SimpleFeaturePyramid(torch.nn.Module):
    """Strides 4, 8, 16 and 32 from a plain ViT's single-stride levels (ViTDet's simple feature
    pyramid, built by mmseg's ``Feature2Pyramid``: two transposed convolutions, one, identity,
    max-pooling).

    Four levels feed the four scales in order; one level (ViTDet's choice: the last block) feeds
    all four. A patch-14 ViT's maps are first resampled bilinearly to the stride-16 grid of the
    input, ``ceil(size / 16)`` (FPN, RoIAlign and the pixel decoder expect the strides to double
    level by level); a patch-16 ViT's are used as they are. BatchNorm, not mmseg's SyncBN default:
    SyncBN has no CPU kernel, and each rank's batch of feature maps is what the head trains on.
    """

    STRIDES = (4, 8, 16, 32)

    def __init__(self, channels: Sequence[int], strides: Sequence[int]) -> None:
        super().__init__()
        from mmseg.models.necks import Feature2Pyramid

        if len(set(channels)) != 1 or len(channels) not in (1, 4):
            raise ValueError(
                f"a simple feature pyramid takes 1 or 4 levels of one width, got channels {list(channels)}"
            )
        self.channels = [int(channels[0])] * 4
        self.num_inputs = len(channels)
        self.neck = Feature2Pyramid(
            int(channels[0]), rescales=[4, 2, 1, 0.5], norm_cfg=dict(type="BN", requires_grad=True)
        )

    def forward(self, feats: Sequence[torch.Tensor], input_size: Sequence[int]) -> list[torch.Tensor]:
        grid = tuple(math.ceil(int(side) / 16) for side in input_size)
        feats = [
            f if tuple(f.shape[-2:]) == grid else F.interpolate(f, size=grid, mode="bilinear", align_corners=False)
            for f in feats
        ]
        if self.num_inputs == 1:
            feats = feats * 4
        return list(self.neck(feats))


class ExtraBlocks(torch.nn.Module):
    """Trainable pre-norm transformer blocks over an NCHW map's tokens, with a learned position
    embedding (resized to the map's grid when padding changes it)."""

    def __init__(self, channels: int, num_blocks: int, num_heads: int, grid: int) -> None:
        super().__init__()
        heads = max(h for h in range(1, num_heads + 1) if channels % h == 0)
        self.pos = torch.nn.Parameter(torch.zeros(1, channels, grid, grid))
        torch.nn.init.trunc_normal_(self.pos, std=0.02)
        self.blocks = torch.nn.ModuleList(
            torch.nn.TransformerEncoderLayer(
                channels,
                heads,
                dim_feedforward=channels * 4,
                dropout=0.0,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            for _ in range(num_blocks)
        )

    def no_weight_decay(self) -> set[str]:
        return {"pos"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        pos = (
            self.pos
            if self.pos.shape[-2:] == (h, w)
            else torch.nn.functional.interpolate(self.pos, size=(h, w), mode="bilinear", align_corners=False)
        )
        tokens = (x + pos).flatten(2).transpose(1, 2)
        for block in self.blocks:
            tokens = block(tokens)
        return tokens.transpose(1, 2).reshape(n, c, h, w)


@dataclass(frozen=True)
class BodyArgs:
    """The arguments a :class:`FrozenbenchBackbone`'s body is built from (see its Args)."""

    arch: str | None
    img_size: int | None
    checkpoint: str | None
    frozen: bool = True
    bf16: bool = False
    out_indices: Sequence[int] | None = None
    feature_cache: bool = False
    compile: bool = False

    def build(self) -> Backbone:
        """The body: from the checkpoint (its architecture checked against ``arch`` when given, read
        from the file when not), or ``arch`` with random weights."""
        options = dict(
            img_size=self.img_size,
            out_indices=self.out_indices,
            frozen=self.frozen,
            bf16=self.bf16,
            feature_cache=self.feature_cache,
            compile=self.compile,
        )
        if self.checkpoint is not None:
            return Backbone.from_checkpoint(self.checkpoint, self.arch, **options)
        if self.arch is None:
            raise ValueError("FrozenbenchBackbone needs an arch or a checkpoint")
        return Backbone(self.arch, **options)

    def key(self) -> tuple:
        """These arguments as a dict key; the checkpoint by its file identity, so a file rewritten
        since a body was built from it is not taken for it."""
        from frozenbench.checkpoint.io import file_identity

        checkpoint = self.checkpoint
        if checkpoint is not None and Path(checkpoint).is_file():
            checkpoint = file_identity(checkpoint)
        levels = None if self.out_indices is None else tuple(int(i) for i in self.out_indices)
        return (
            self.arch,
            self.img_size,
            checkpoint,
            bool(self.frozen),
            bool(self.bf16),
            levels,
            bool(self.feature_cache),
            bool(self.compile),
        )


# A job's backbone is built once. The head config needs the backbone's channels, strides and input
# normalisation before the OpenMMLab model exists, and only the built backbone knows them for
# certain (its feature_info; the normalisation its checkpoint records), so `prebuild_body`
# (called by configs.backbone_part) builds it and leaves it here under its build arguments, and
# the FrozenbenchBackbone the config then builds takes it instead of constructing, reading and
# loading a second one. Computing the shapes without building would mean a second description of
# every family's widths beside timm's own. One entry, handed out once: a module belongs to one
# model (two models sharing a fine-tuned body would train each other's weights), and a body
# nobody takes is dropped by the next `prebuild_body`, so at most one spare body stays alive. A
# model built from other arguments simply builds its own.
_PREBUILT: dict[tuple, Backbone] = {}


def prebuild_body(args: BodyArgs) -> Backbone:
    """Build the body ``args`` describe and keep it for the :class:`FrozenbenchBackbone` built with
    the same arguments (the next one only)."""
    body = args.build()
    _PREBUILT.clear()
    _PREBUILT[args.key()] = body
    return body


def input_normalization(arch: str) -> dict[str, list[float]]:
    """``mean`` / ``std`` (0-255, RGB) of architecture ``arch``'s default weights, for an OpenMMLab
    data preprocessor; a backbone built from a checkpoint says its weights' own
    (:meth:`Backbone.pixel_normalization`)."""
    from frozenbench.models.registry import normalization

    mean, std = normalization(arch)
    return {"mean": list(mean), "std": list(std)}


def feature_shape(body: Backbone, pyramid: bool = True) -> tuple[list[int], list[int]]:
    """(channels, strides) of the levels a :class:`FrozenbenchBackbone` around ``body`` hands its
    head; ``pyramid`` as for :class:`FrozenbenchBackbone`."""
    if pyramid and body.needs_pyramid:
        return [body.channels[0]] * 4, list(SimpleFeaturePyramid.STRIDES)
    return body.channels, body.strides
