"""What a checkpoint that failed to convert most likely is: its layout, judged from its key patterns,
and the registered architectures its tensors fit, judged from their widths and depths.

Conversion calls these only after it has failed, to turn "cannot convert" into "use --layout X" or
"use --arch Y": a guess never converts anything by itself, so a wrong guess costs a hint, not a
wrong model.
"""

from __future__ import annotations

import difflib
import math
import re
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch

from frozenbench.models.registry import ArchSpec, get_arch, list_archs

# (layout, test on the key set, what in the keys shows it), most specific first: a MoBY file also
# has ``encoder.*`` keys, a SimMIM file's encoder is an official Swin
_LAYOUT_SIGNS: list[tuple[str, Callable[[set[str]], bool], str]] = [
    (
        "moby",
        lambda keys: any(k.startswith("encoder_k.") or re.fullmatch(r"queue\d?(_ptr)?", k) for k in keys),
        "a momentum encoder encoder_k.* / queue",
    ),
    (
        "simmim",
        lambda keys: (
            any(k.startswith("encoder.") for k in keys) and all(k.startswith(("encoder.", "decoder.")) for k in keys)
        ),
        "only encoder.* and decoder.* keys",
    ),
    ("swin_det", lambda keys: any(k.startswith("backbone.layers.") for k in keys), "backbone.layers.*"),
    ("mm", lambda keys: any(k.startswith("backbone.stages.") for k in keys), "backbone.stages.*"),
    (
        "openai_clip",
        lambda keys: bool(keys & {"visual.class_embedding", "visual.conv1.weight", "class_embedding"}),
        "visual.class_embedding / conv1",
    ),
    ("mae", lambda keys: any(k.startswith("decoder_") for k in keys), "decoder_* with a plain ViT encoder"),
    ("dinov2", lambda keys: "register_tokens" in keys or {"mask_token", "blocks.0.ls1.gamma"} <= keys, "mask_token"),
    (
        "official_swinv2",
        lambda keys: any(re.match(r"layers\.0\.downsample\.", k) for k in keys) and any("cpb_mlp" in k for k in keys),
        "a downsample at the end of stage 0",
    ),
    (
        "official_swin",
        lambda keys: any(re.match(r"layers\.0\.downsample\.", k) for k in keys),
        "a downsample at the end of stage 0",
    ),
]
# Layouts that read each other's files: timm's own filter reads the official Swin order too.
_INTERCHANGEABLE = [{"official_swin", "timm"}, {"official_swinv2", "timm"}]


def _without_wrappers(keys: set[str]) -> set[str]:
    """The keys without a prefix every one of them carries (``module.``, ``model.``)."""
    while keys:
        prefix = next((p for p in ("module.", "model.") if all(k.startswith(p) for k in keys)), None)
        if prefix is None:
            break
        keys = {k[len(prefix) :] for k in keys}
    return keys


def detect_layout(state_dict: dict[str, Any]) -> tuple[str, str] | None:
    """(layout, the keys that show it) for a state dict whose key patterns are distinctive, else None."""
    keys = _without_wrappers(set(state_dict))
    return next(((layout, why) for layout, test, why in _LAYOUT_SIGNS if test(keys)), None)


def layout_hint(state_dict: dict[str, Any], layout: str) -> str | None:
    """``its keys look like ...: use --layout X`` where the keys show a layout other than ``layout``."""
    found = detect_layout(state_dict)
    if found is None or found[0] == layout or {found[0], layout} in _INTERCHANGEABLE:
        return None
    return f"its keys look like a {found[0]} checkpoint ({found[1]}): use --layout {found[0]}"


def weights_shape(state_dict: dict[str, Any]) -> dict[str, Any]:
    """What tensors in timm (or official Swin) names say of their architecture: width, patch size,
    blocks per stage (or depth), attention window, register tokens. Only what the keys show."""
    found: dict[str, Any] = {}
    stem = next(
        (
            state_dict[k]
            for k in ("patch_embed.proj.weight", "stem.0.weight")
            if isinstance(state_dict.get(k), torch.Tensor)
        ),
        None,
    )
    if stem is not None and stem.ndim == 4:
        found["embed_dim"], found["patch_size"] = int(stem.shape[0]), int(stem.shape[-1])
    stages: dict[int, set[int]] = defaultdict(set)
    blocks: set[int] = set()
    for key in state_dict:
        if m := re.match(r"(?:layers|stages)\.(\d+)\.blocks\.(\d+)\.", key):
            stages[int(m[1])].add(int(m[2]))
        elif m := re.match(r"blocks\.(\d+)\.", key):
            blocks.add(int(m[1]))
    if stages:
        found["depths"] = tuple(len(stages.get(i, ())) for i in range(max(stages) + 1))
    elif blocks:
        found["depth"] = len(blocks)
        reg = state_dict.get("reg_token")
        found["reg_tokens"] = int(reg.shape[1]) if isinstance(reg, torch.Tensor) and reg.ndim == 3 else 0
    table = state_dict.get("layers.0.blocks.0.attn.relative_position_bias_table")
    if isinstance(table, torch.Tensor) and table.ndim == 2:
        side = math.isqrt(int(table.shape[0]))
        if side * side == table.shape[0]:
            found["window_size"] = (side + 1) // 2  # the table covers (2w-1) x (2w-1) offsets
    return found


def arch_shape(spec: ArchSpec) -> dict[str, Any]:
    """The same description, read from a registered architecture's arguments."""
    kw = spec.kwargs
    dims = kw.get("dims")
    shape = {
        "embed_dim": kw.get("embed_dim", dims[0] if dims else None),
        "patch_size": kw.get("patch_size"),
        "depths": tuple(kw["depths"]) if "depths" in kw else None,
        "depth": kw.get("depth"),
        "window_size": kw.get("window_size"),
        "reg_tokens": kw.get("reg_tokens", 0) if "depth" in kw else None,
    }
    return {k: v for k, v in shape.items() if v is not None}


def fitting_archs(state_dict: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(the weights' shape, the registered architectures whose width and depths it matches)."""
    shape = weights_shape(state_dict)
    if "embed_dim" not in shape or not ({"depths", "depth"} & shape.keys()):
        return shape, []
    fits = []
    for name in list_archs():
        theirs = arch_shape(get_arch(name))
        common = shape.keys() & theirs.keys()
        if {"embed_dim"} < common and all(shape[k] == theirs[k] for k in common):
            fits.append(name)
    return shape, fits


def arch_hint(state_dict: dict[str, Any], arch: str) -> str | None:
    """``the weights have ...: use --arch X`` where they fit registered architectures other than ``arch``."""
    shape, fits = fitting_archs(state_dict)
    if not fits or arch in fits:
        return None
    described = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in shape.items())
    return f"the weights have {described}, which fit {', '.join(fits)}: use --arch {fits[0]}"


def close_arch_names(name: str) -> list[str]:
    """Registered architectures spelled like ``name`` (difflib), closest first."""
    names = list_archs()
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
    return close or [n for n in names if name.lower() in n.lower() or n.lower() in name.lower()][:5]


def activation_twin(spec: ArchSpec, activation: str) -> list[str]:
    """Registered architectures identical to ``spec`` but for their activation, which is ``activation``."""
    want = {**spec.kwargs, "act_layer": activation}
    return [n for n in list_archs() if get_arch(n).kwargs == want and get_arch(n).family is spec.family]
