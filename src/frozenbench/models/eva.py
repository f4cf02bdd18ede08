"""EVA-02 backbones on timm (Fang et al., 2023): plain ViTs with rotary position embeddings and SwiGLU.

A family of its own because timm builds them with its ``Eva`` class, not ``VisionTransformer``:
its own checkpoint filter and layer grouping, the plain-ViT treatment otherwise (four blocks
through the final norm, a simple feature pyramid for dense heads). Rotary and absolute position
embeddings follow each input's grid (``dynamic_img_size``); inputs are padded to the patch multiple.
"""

from __future__ import annotations

from typing import Any

from timm.models import eva
from timm.models.eva import Eva

from frozenbench.models.registry import ArchSpec, BackboneFamily, StateDict, register_arch
from frozenbench.models.vit import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, refuse_other_patch_size, spread_levels


def build_eva(img_size: int, native_img_size: int, **kwargs: Any) -> Eva:
    del img_size  # the position grid stays the weights' own, resampled per input
    kwargs.setdefault("drop_path_rate", 0.0)
    return Eva(img_size=native_img_size, num_classes=0, dynamic_img_size=True, **kwargs)


def checkpoint_filter(state_dict: StateDict, model: Eva) -> StateDict:
    refuse_other_patch_size(state_dict, model)
    return eva.checkpoint_filter_fn(state_dict, model)


EVA = BackboneFamily(
    "eva",
    checkpoint_filter,
    layouts=("timm",),
    objectives=("supervised", "contrastive", "random"),
    feature_levels=spread_levels,
    pyramid=True,
    intermediate_norm=True,
)

# timm's EVA-02 masked-image-modeling weights (``.mim_in22k``), at timm's names and sizes
_EVA02 = dict(
    patch_size=14,
    mlp_ratio=4 * 2 / 3,
    swiglu_mlp=True,
    use_rot_pos_emb=True,
    ref_feat_shape=(16, 16),
    native_img_size=224,
)
register_arch(
    ArchSpec(
        "eva02_small_patch14_224.mim_in22k",
        EVA,
        build_eva,
        dict(_EVA02, embed_dim=384, depth=12, num_heads=6),
        img_size=224,
        mean=OPENAI_CLIP_MEAN,
        std=OPENAI_CLIP_STD,
    )
)
register_arch(
    ArchSpec(
        "eva02_base_patch14_224.mim_in22k",
        EVA,
        build_eva,
        dict(_EVA02, embed_dim=768, depth=12, num_heads=12, qkv_fused=False, scale_mlp=True),
        img_size=224,
        mean=OPENAI_CLIP_MEAN,
        std=OPENAI_CLIP_STD,
    )
)
