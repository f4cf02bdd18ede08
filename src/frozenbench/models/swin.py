"""Swin Transformer (V1, V2) backbones on timm, plus the conv-stem mini Swin of the mini-study.

Papers: Swin (Liu et al., ICCV 2021), SwinV2 (Liu et al., CVPR 2022). The paper
study uses the official Microsoft checkpoints (converted to timm key names by
:mod:`frozenbench.checkpoint.convert`); SwinV2-G (3B params) is defined here
for memory planning and the architecture table, but its weights were never
released.

The mini family (``convstem_swin_tiny``, ``convstem_swin_small``) replaces the 4x4 patch embedding by two
stride-2 3x3 convolutions. Measured on 2 CPU cores (``docs/measurements.md``): a plain
tiny Swin stays at chance for minutes of pretraining, the conv stem leaves the
plateau within a few hundred steps. The Swin stages are unchanged. It was called ``cswin_*``
before, a name easily read as the published CSWin Transformer (Dong et al., CVPR 2022), which it
is not; the old names stay aliases so results recorded under them still resolve.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models import swin_transformer, swin_transformer_v2
from timm.models.swin_transformer import SwinTransformer, SwinTransformerBlock
from timm.models.swin_transformer_v2 import SwinTransformerV2, SwinTransformerV2Block

from frozenbench.models.registry import (
    MINI_MEAN,
    MINI_STD,
    PRETRAIN_OBJECTIVES,
    ArchSpec,
    BackboneFamily,
    register_arch,
)

__all__ = ["ConvStemEmbed", "PadThenShift", "build_swin", "build_swinv2"]


class ConvStemEmbed(nn.Module):
    """Patch embedding by two 3x3 stride-2 convs (BN + GELU), then a 1x1 projection and LayerNorm.

    Same call signature and NHWC output as ``timm.layers.PatchEmbed`` so it drops into
    ``SwinTransformer(embed_layer=...)``; only ``patch_size=4`` is meaningful.
    """

    def __init__(
        self,
        img_size: Any = 224,
        patch_size: int = 4,
        in_chans: int = 3,
        embed_dim: int = 96,
        norm_layer: Any = None,
        strict_img_size: bool = True,
        output_fmt: str = "NHWC",
        **_: Any,
    ) -> None:
        super().__init__()
        if patch_size != 4:
            raise ValueError("ConvStemEmbed downsamples by 4 (two stride-2 convs)")
        size = img_size if isinstance(img_size, (tuple, list)) else (img_size, img_size)
        self.img_size = tuple(size)
        self.patch_size = (4, 4)
        self.grid_size = (size[0] // 4, size[1] // 4)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.strict_img_size = strict_img_size
        mid = max(embed_dim // 2, 8)
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, mid, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(mid),
            nn.GELU(),
            nn.Conv2d(mid, embed_dim, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(embed_dim),
            nn.GELU(),
        )
        self.proj = nn.Conv2d(embed_dim, embed_dim, 1)
        self.norm = norm_layer(embed_dim) if norm_layer else nn.Identity()

    def set_input_size(self, img_size: Any = None, patch_size: Any = None) -> None:
        if img_size is not None:
            size = img_size if isinstance(img_size, (tuple, list)) else (img_size, img_size)
            self.img_size, self.grid_size = tuple(size), (size[0] // 4, size[1] // 4)
            self.num_patches = self.grid_size[0] * self.grid_size[1]

    def dynamic_feat_size(self, img_size: tuple[int, int]) -> tuple[int, int]:
        return img_size[0] // 4, img_size[1] // 4

    def feat_ratio(self, as_scalar: bool = True) -> Any:
        return 4 if as_scalar else (4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(self.stem(x)).permute(0, 2, 3, 1)  # NHWC, as timm's Swin stages expect
        return self.norm(x)


# Any input size: ``img_size`` fixes each stage's window and shift (as the official code does,
# a stage whose map is no larger than the window attends globally without shift), and maps that
# are not window multiples are padded to one before the shift (:class:`PadThenShift`), with their
# attention masks built per forward (timm's ``strict_img_size=False``). A portrait COCO image and a
# 2100x1400 ADE image go through the same model as the square training crops.


class PadThenShift:
    """Window attention of a map that is not a window multiple as the official Swin detection and
    segmentation code computes it: pad the map (right, bottom) to the window multiple, then shift
    it, with the attention mask of the padded grid. timm shifts first and pads the shifted map, so
    the zero tokens sit inside the map's wrapped-around rows instead of after them: the same weights
    give other features (0.5-0.7 max abs at the last stage of a Swin-T at 1024 px).

    Padding here leaves timm's own ``_attn`` a window multiple, on which its shift, mask (built on
    the padded grid) and crop are the official ones."""

    def _attn(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[1], x.shape[2]
        pad_h, pad_w = -height % self.window_size[0], -width % self.window_size[1]
        if not (pad_h or pad_w):
            return super()._attn(x)
        return super()._attn(F.pad(x, (0, 0, 0, pad_w, 0, pad_h)))[:, :height, :width]


class SwinBlock(PadThenShift, SwinTransformerBlock):
    pass


class SwinV2Block(PadThenShift, SwinTransformerV2Block):
    """The official SwinV2 code takes only maps that are window multiples (its window partition
    fails on any other); SwinV2 pads as the official V1 detection code does, the only official way
    Swin handles other sizes."""


def _pad_then_shift(model: nn.Module, timm_block: type, block: type) -> nn.Module:
    # timm builds its blocks inside its stages with no hook to pass a block class
    for module in model.modules():
        if type(module) is timm_block:
            module.__class__ = block
    return model


def build_swin(img_size: int, conv_stem: bool = False, **kwargs: Any) -> SwinTransformer:
    kwargs.setdefault("drop_path_rate", 0.0)
    kwargs.setdefault("strict_img_size", False)
    if conv_stem:
        kwargs["embed_layer"] = ConvStemEmbed
    return _pad_then_shift(SwinTransformer(img_size=img_size, num_classes=0, **kwargs), SwinTransformerBlock, SwinBlock)


def build_swinv2(img_size: int, **kwargs: Any) -> SwinTransformerV2:
    kwargs.setdefault("drop_path_rate", 0.0)
    kwargs.setdefault("strict_img_size", False)
    return _pad_then_shift(
        SwinTransformerV2(img_size=img_size, num_classes=0, **kwargs), SwinTransformerV2Block, SwinV2Block
    )


def resize_bias_tables(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Relative-position-bias tables of another window size resized as the official Swin loader does
    (``load_pretrained``: bicubic over the (2w-1) x (2w-1) grid of each head). timm's filter resizes
    them by a different (geometric) interpolation, whose values differ from the official ones."""
    target = {k: v.shape for k, v in model.state_dict().items() if k.endswith("relative_position_bias_table")}
    out = dict(state_dict)
    for key, shape in target.items():
        table = state_dict.get(key)
        if table is None or table.shape == shape or table.shape[1] != shape[1]:
            continue  # absent, already the size, or another head count (the key check reports it)
        old, new, heads = math.isqrt(table.shape[0]), math.isqrt(shape[0]), shape[1]
        grid = table.float().permute(1, 0).reshape(1, heads, old, old)
        resized = F.interpolate(grid, size=(new, new), mode="bicubic")
        out[key] = resized.reshape(heads, new * new).permute(1, 0).to(table.dtype)
    return out


def swin_filter(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """The official bicubic bias-table resize, then timm's Swin filter (downsample index shift)."""
    return swin_transformer.checkpoint_filter_fn(resize_bias_tables(state_dict, model), model)


# Buffers every Swin implementation rebuilds from the window and input sizes.
_SWIN_BUFFERS = ("relative_position_index", "attn_mask", "relative_coords_table")
SWIN = BackboneFamily(
    "swin",
    swin_filter,
    layouts=("official_swin", "simmim", "moby", "mm", "swin_det", "timm"),
    # SimMIM masks the patch embedding's NHWC tokens: any Swin-stage model can take it
    objectives=PRETRAIN_OBJECTIVES,
    recomputed_buffers=_SWIN_BUFFERS,
)
SWINV2 = BackboneFamily(
    "swinv2",
    swin_transformer_v2.checkpoint_filter_fn,
    layouts=("official_swinv2", "simmim", "timm"),
    objectives=PRETRAIN_OBJECTIVES,
    recomputed_buffers=_SWIN_BUFFERS,
)
# The conv stem changes only the patch embedding: Swin's filter, grouping and objectives apply.
CONVSTEM_SWIN = BackboneFamily(
    "convstem_swin", swin_filter, layouts=("timm",), objectives=PRETRAIN_OBJECTIVES, recomputed_buffers=_SWIN_BUFFERS
)

_SWIN = dict(patch_size=4)
for name, img, kw in [
    ("swin_tiny", 224, dict(window_size=7, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))),
    ("swin_small", 224, dict(window_size=7, embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24))),
    ("swin_base", 224, dict(window_size=7, embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))),
    ("swin_base_w12", 384, dict(window_size=12, embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))),
    ("swin_large", 224, dict(window_size=7, embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48))),
    ("swin_large_w12", 384, dict(window_size=12, embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48))),
]:
    register_arch(ArchSpec(name, SWIN, build_swin, {**_SWIN, **kw}, img_size=img))

# SwinV2 B / L / G were pretrained at 192 px with window 12, where the last stage's 6 x 6 map is one
# window of 6: the official transfer code normalises each stage's relative coordinates by its
# pretraining window (PRETRAINED_WINDOW_SIZES [12, 12, 12, 6] in microsoft/Swin-Transformer's
# configs for these checkpoints), not by the window it runs at, so the continuous position bias sees
# the coordinates it was trained on. The 256 px window-8 models ran every stage at window 8.
_PRETRAINED_AT_192 = {"pretrained_window_sizes": (12, 12, 12, 6)}

for name, img, kw, public in [
    ("swinv2_tiny", 256, dict(window_size=8, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)), True),
    ("swinv2_small", 256, dict(window_size=8, embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)), True),
    (
        "swinv2_base",
        192,
        dict(window_size=12, embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), **_PRETRAINED_AT_192),
        True,
    ),
    (
        "swinv2_large",
        192,
        dict(window_size=12, embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48), **_PRETRAINED_AT_192),
        True,
    ),
    # SwinV2-G (Liu et al. 2022, Table 1): C=512, depths 2-2-42-4, heads 16-32-64-128. Weights not released.
    (
        "swinv2_giant",
        192,
        dict(window_size=12, embed_dim=512, depths=(2, 2, 42, 4), num_heads=(16, 32, 64, 128), **_PRETRAINED_AT_192),
        False,
    ),
]:
    register_arch(
        ArchSpec(
            name,
            SWINV2,
            build_swinv2,
            {"patch_size": 4, **kw},
            img_size=img,
            public_weights=public,
            notes="" if public else "architecture only: the SwinV2-G weights are not public",
        )
    )

# Mini-study family: conv stem + Swin stages, window 4, for 64-128 px inputs on CPU, pretrained
# inside the DAG on inputs normalised with MINI_MEAN / MINI_STD.
_MINI = dict(conv_stem=True, patch_size=4, window_size=4, depths=(2, 2, 2, 2))
for name, alias, kw in [
    ("convstem_swin_tiny", "cswin_tiny", dict(embed_dim=32, num_heads=(1, 2, 4, 8))),
    ("convstem_swin_small", "cswin_small", dict(embed_dim=48, num_heads=(2, 4, 8, 16))),
]:
    register_arch(
        ArchSpec(
            name,
            CONVSTEM_SWIN,
            build_swin,
            {**_MINI, **kw},
            img_size=64,
            public_weights=False,
            mean=MINI_MEAN,
            std=MINI_STD,
        ),
        aliases=(alias,),
    )
