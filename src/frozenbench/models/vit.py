"""Plain Vision Transformers on timm: DINOv2 (with and without registers), supervised and CLIP towers.

Paper: ViT (Dosovitskiy et al., ICLR 2021); DINOv2 (Oquab et al., TMLR 2024) and its registers
(Darcet et al., ICLR 2024). Architectures carry timm's names, so a researcher's timm model name is
the frozenbench ``arch``.

A plain ViT has one stride (its patch size) at every block. Dense heads take four blocks spread
over the depth (``feature_levels``) through the final norm, as DINOv2's and ViTDet's dense
evaluations do, and a trainable *simple feature pyramid* (ViTDet, Li et al., ECCV 2022) turns them
into strides 4-32 (:mod:`frozenbench.openmmlab.backbone`); the video head takes the last block's
tokens as they are.

Any input size: the model keeps the position grid its weights were trained with (518 px / 14 =
37 x 37 for DINOv2) and resamples it to every input's grid in the forward; inputs are padded to
the patch multiple (:class:`frozenbench.models.backbone.Backbone`). DINOv2 weights resample the way the
official DINOv2 code builds each released model (``dinov2/hub/backbones.py``): bicubic without
antialiasing and a 0.1 offset in the scale factor for the models without registers, bicubic with
antialiasing to the exact grid (offset 0) for the register models. Any other choice differs from
them by far more than float rounding away from 518 px (0.1-0.2 max abs in the features), so frozen
features would not be DINOv2's own. MAE weights (the ``mae`` weights tag, recorded in their
converted file) resample as MAE's ``interpolate_pos_embed`` and ViTDet's ``get_abs_pos`` do
(bicubic to the grid, no antialiasing); the others keep timm's default (bicubic with
antialiasing, what open_clip's ``resize_pos_embed`` does for CLIP towers).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm, resample_abs_pos_embed
from timm.models import vision_transformer
from timm.models.vision_transformer import VisionTransformer

from frozenbench.models.registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ArchSpec,
    BackboneFamily,
    StateDict,
    WeightsTag,
    register_arch,
    retire_arch,
)

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF_MEAN_STD = (0.5, 0.5, 0.5)


def dinov2_resample(
    pos_embed: torch.Tensor,
    grid: tuple[int, int],
    num_prefix_tokens: int,
    offset: float = 0.1,
    antialias: bool = False,
) -> torch.Tensor:
    """The official DINOv2 position-embedding interpolation (``interpolate_pos_encoding``):
    ``offset`` and ``antialias`` are its ``interpolate_offset`` and ``interpolate_antialias``
    (0.1 and False for the released models without registers, 0.0 and True for those with).
    A non-zero offset goes into a scale factor (the historical kludge), zero asks for the grid."""
    prefix, patches = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    side = math.isqrt(patches.shape[1])
    if side * side != patches.shape[1]:
        raise ValueError(f"position embedding of {patches.shape[1]} patches is not a square grid")
    rows, cols = grid
    if (rows, cols) == (side, side):
        return pos_embed
    dim = patches.shape[-1]
    if offset:
        size = {"scale_factor": ((rows + offset) / side, (cols + offset) / side)}
    else:
        size = {"size": (rows, cols)}
    resized = F.interpolate(
        patches.float().reshape(1, side, side, dim).permute(0, 3, 1, 2), mode="bicubic", antialias=antialias, **size
    )
    if tuple(resized.shape[-2:]) != (rows, cols):
        raise AssertionError(f"DINOv2 interpolation gave {tuple(resized.shape[-2:])}, wanted {(rows, cols)}")
    resized = resized.permute(0, 2, 3, 1).reshape(1, rows * cols, dim).to(pos_embed.dtype)
    return torch.cat([prefix, resized], dim=1)


class PlainViT(VisionTransformer):
    """timm's ``VisionTransformer`` with the weights' own position grid, resampled to each input's grid.

    Args:
        img_size: the task's input size; the grid does not depend on it (see the module docstring).
        native_img_size: the input size the position embedding was trained for.
        pos_interpolation: ``"timm"`` (bicubic with antialiasing), ``"dinov2"`` (:func:`dinov2_resample`)
            or ``"mae"`` (MAE's ``interpolate_pos_embed`` and ViTDet's ``get_abs_pos``: bicubic to the
            grid without antialiasing, which is :func:`dinov2_resample` with no offset).
        interpolate_offset, interpolate_antialias: the official DINOv2 model's settings of the same
            names (``"dinov2"`` only).
    """

    def __init__(
        self,
        img_size: int,
        native_img_size: int,
        pos_interpolation: str = "timm",
        interpolate_offset: float = 0.1,
        interpolate_antialias: bool = False,
        **kwargs: Any,
    ) -> None:
        del img_size
        if pos_interpolation not in ("timm", "dinov2", "mae"):
            raise ValueError(f"unknown position interpolation {pos_interpolation!r}")
        if pos_interpolation == "mae":
            interpolate_offset, interpolate_antialias = 0.0, False
        kwargs.setdefault("drop_path_rate", 0.0)
        super().__init__(img_size=native_img_size, num_classes=0, dynamic_img_size=True, **kwargs)
        self.pos_interpolation = pos_interpolation
        self.interpolate_offset = interpolate_offset
        self.interpolate_antialias = interpolate_antialias

    def official_resample(self, pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """``pos_embed`` resampled to ``grid`` as the weights' official code does (not ``"timm"``)."""
        num_prefix = 0 if self.no_embed_class else self.num_prefix_tokens
        return dinov2_resample(pos_embed, grid, num_prefix, self.interpolate_offset, self.interpolate_antialias)

    def resampled_pos_embed(self, grid: tuple[int, int]) -> torch.Tensor:
        if self.pos_interpolation != "timm":
            return self.official_resample(self.pos_embed, grid)
        num_prefix = 0 if self.no_embed_class else self.num_prefix_tokens
        return resample_abs_pos_embed(
            self.pos_embed, new_size=grid, old_size=self.patch_embed.grid_size, num_prefix_tokens=num_prefix
        )

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        # timm's own _pos_embed with the resampling swapped for resampled_pos_embed (x: NHWC patches)
        batch, rows, cols, dim = x.shape
        pos_embed = self.resampled_pos_embed((rows, cols))
        x = x.reshape(batch, rows * cols, dim)
        prefix = [t.expand(batch, -1, -1) for t in (self.cls_token, self.reg_token) if t is not None]
        if self.no_embed_class:
            x = x + pos_embed
            if prefix:
                x = torch.cat(prefix + [x], dim=1)
        else:
            if prefix:
                x = torch.cat(prefix + [x], dim=1)
            x = x + pos_embed
        return self.pos_drop(x)


def build_vit(img_size: int, **kwargs: Any) -> PlainViT:
    return PlainViT(img_size=img_size, **kwargs)


def spread_levels(model: torch.nn.Module) -> list[int]:
    """Four blocks spread evenly over the depth, the last one included (blocks 2, 5, 8, 11 of 12)."""
    depth = len(model.blocks)
    return sorted({max(0, depth * k // 4 - 1) for k in (1, 2, 3, 4)})


def refuse_other_patch_size(state_dict: StateDict, model: torch.nn.Module) -> None:
    """timm's ViT filters resample a patch embedding of another size silently: a model of another
    architecture would load and compute something else. Refuse it instead."""
    weight = state_dict.get("patch_embed.proj.weight")
    expected = tuple(model.patch_embed.proj.weight.shape)
    if weight is not None and tuple(weight.shape) != expected:
        raise KeyError(
            f"patch_embed.proj.weight has shape {tuple(weight.shape)}, the architecture {expected}: "
            "another patch size or width"
        )


def checkpoint_filter(state_dict: StateDict, model: PlainViT) -> StateDict:
    """timm's ViT filter, refusing what it would adapt silently (:func:`refuse_other_patch_size`).
    A position grid of another size is resampled as the model resamples in its forward (the
    official DINOv2 or MAE interpolation for their weights)."""
    refuse_other_patch_size(state_dict, model)
    pos = state_dict.get("pos_embed")
    if pos is not None and model.pos_interpolation != "timm" and pos.shape != model.pos_embed.shape:
        state_dict = {**state_dict, "pos_embed": model.official_resample(pos, tuple(model.patch_embed.grid_size))}
    return vision_transformer.checkpoint_filter_fn(state_dict, model)


# MAE (He et al., CVPR 2022) pretrained encoders are plain ViT-B/16 and ViT-L/16 weights that take
# ImageNet statistics (the architectures' timm defaults are [-1, 1]) and resample their positions
# as MAE's fine-tuning and ViTDet do (timm's antialiased bicubic differs by ~0.3 when growing
# 14 x 14 to 64 x 64). A property of the weights, not of the architecture: a file converted from
# the ``mae`` layout (or with the ``mae`` tag, for timm's ``.mae`` files) records both.
MAE = WeightsTag(
    "mae", mean=IMAGENET_MEAN, std=IMAGENET_STD, arch_options={"pos_interpolation": "mae"}, layouts=("mae",)
)

VIT = BackboneFamily(
    "vit",
    checkpoint_filter,
    layouts=("dinov2", "mae", "openai_clip", "timm"),
    objectives=("supervised", "contrastive", "random"),
    feature_levels=spread_levels,
    pyramid=True,
    intermediate_norm=True,
    weight_tags=(MAE,),
)


_DINOV2 = dict(patch_size=14, init_values=1e-5, native_img_size=518, pos_interpolation="dinov2")
# dinov2/hub/backbones.py builds the register models with interpolate_antialias=True, interpolate_offset=0.0
_REGISTERS = dict(reg_tokens=4, no_embed_class=True, interpolate_offset=0.0, interpolate_antialias=True)
for name, kw in [
    ("vit_small_patch14_dinov2", dict(embed_dim=384, depth=12, num_heads=6)),
    ("vit_base_patch14_dinov2", dict(embed_dim=768, depth=12, num_heads=12)),
    ("vit_large_patch14_dinov2", dict(embed_dim=1024, depth=24, num_heads=16)),
    # registers: the class token's position is folded into it, registers carry none (timm's layout)
    ("vit_small_patch14_reg4_dinov2", dict(embed_dim=384, depth=12, num_heads=6, **_REGISTERS)),
    ("vit_base_patch14_reg4_dinov2", dict(embed_dim=768, depth=12, num_heads=12, **_REGISTERS)),
]:
    register_arch(ArchSpec(name, VIT, build_vit, {**_DINOV2, **kw}, img_size=518))

for name, kw in [
    ("vit_base_patch16_224", dict(embed_dim=768, depth=12, num_heads=12)),
    ("vit_large_patch16_224", dict(embed_dim=1024, depth=24, num_heads=16)),
]:
    register_arch(
        ArchSpec(
            name,
            VIT,
            build_vit,
            dict(patch_size=16, **kw, native_img_size=224),
            img_size=224,
            mean=HALF_MEAN_STD,
            std=HALF_MEAN_STD,
            notes="timm's augreg weights; inputs normalised to [-1, 1]",
        )
    )
# The MAE weights were two more architectures once, differing from these only in what the weights take.
for name in ("vit_base_patch16_224", "vit_large_patch16_224"):
    retire_arch(
        f"{name}.mae",
        f"MAE weights are {name} converted from the mae layout (or with the mae tag), "
        "which records MAE's normalisation and position resampling in the converted file",
    )
# SigLIP image towers (Zhai et al., ICCV 2023): no class token, attention pooling (dropped with the head)
register_arch(
    ArchSpec(
        "vit_base_patch16_siglip_224",
        VIT,
        build_vit,
        dict(
            patch_size=16,
            embed_dim=768,
            depth=12,
            num_heads=12,
            class_token=False,
            global_pool="map",
            native_img_size=224,
        ),
        img_size=224,
        mean=HALF_MEAN_STD,
        std=HALF_MEAN_STD,
    )
)
# CLIP image towers. OpenAI's compute QuickGELU, open_clip's LAION-trained towers plain GELU; the
# same tensors load into either architecture cleanly and compute something else in the other, so
# the activation is part of the name (timm's convention) and the notes say which weights take which.
_CLIP = dict(
    patch_size=16,
    embed_dim=768,
    depth=12,
    num_heads=12,
    pre_norm=True,
    native_img_size=224,
    norm_layer=functools.partial(LayerNorm, eps=1e-5),
)
register_arch(
    ArchSpec(
        "vit_base_patch16_clip_quickgelu_224",
        VIT,
        build_vit,
        dict(_CLIP, act_layer="quick_gelu"),
        img_size=224,
        mean=OPENAI_CLIP_MEAN,
        std=OPENAI_CLIP_STD,
        notes="OpenAI's CLIP ViT-B/16 (openai_clip layout)",
    )
)
register_arch(
    ArchSpec(
        "vit_base_patch16_clip_224",
        VIT,
        build_vit,
        _CLIP,
        img_size=224,
        mean=OPENAI_CLIP_MEAN,
        std=OPENAI_CLIP_STD,
        notes="GELU CLIP towers (open_clip's LAION ViT-B-16); OpenAI's weights need the quickgelu one",
    )
)
