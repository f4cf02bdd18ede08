"""Source checkpoint layouts -> timm key names, as small pure functions.

Every function takes the raw state dict of one published layout and returns
``(state_dict, dropped)``: the tensors renamed to timm's naming,
and the keys it deliberately left out with the reason. Dropping is always by an
explicit pattern; anything else that does not fit the model is an error raised
later by :func:`frozenbench.checkpoint.convert.convert_state_dict`.

Layouts:
- ``official_swin`` / ``official_swinv2``: microsoft/Swin-Transformer releases (``{"model": ...}``);
- ``simmim``: microsoft/SimMIM, the encoder under ``encoder.``, plus decoder and mask token;
- ``moby``: SwinTransformer/Transformer-SSL (MoBY), query encoder ``encoder.``, key encoder ``encoder_k.``;
- ``mm``: mmdetection / mmsegmentation detectors and segmentors with their own Swin under ``backbone.``;
- ``swin_det``: the official Swin detection / segmentation code's files (the official Swin under ``backbone.``);
- ``dinov2``: facebookresearch/dinov2 backbone files (plain ViTs, with or without registers);
- ``mae``: facebookresearch/mae checkpoints (encoder of a pretraining file);
- ``openai_clip``: openai/CLIP image towers (TorchScript files read as data) and open_clip's own towers;
- ``timm``: timm's own names (also what frozenbench's pretraining writes).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import torch

StateDict = dict[str, torch.Tensor]
Dropped = list[tuple[str, str]]

# Buffers that every Swin implementation recomputes; never weights.
BUFFER_PATTERNS = [
    (re.compile(r"relative_position_index$"), "buffer recomputed from the window size"),
    (re.compile(r"attn_mask$"), "buffer recomputed from the input size"),
    (re.compile(r"relative_coords_table$"), "SwinV2 buffer recomputed from the window size"),
]
HEAD_PATTERN = (re.compile(r"^head\."), "classification head")


class CheckpointProblem(ValueError):
    """The checkpoint's content is not a state dict of weights (the message says which key and why)."""


def unwrap(checkpoint: Any) -> StateDict:
    """The tensor dict inside the usual wrappers (``model``, ``state_dict``, ``module`` from DDP).

    Every value must be a dense tensor with values: a list, a number, a sparse, quantised or
    meta tensor where a weight belongs is refused by name, never skipped. A key that DDP's
    ``module.`` prefix hides another of (``module.x`` beside ``x``) is refused too: one of the two
    would be dropped without a word.
    """
    sd = checkpoint
    for key in ("model", "state_dict", "module"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise CheckpointProblem(f"holds a {type(sd).__name__}, not a state dict")
    if not sd:
        raise CheckpointProblem("holds an empty state dict: no weights to convert")
    out: StateDict = {}
    origin: dict[str, str] = {}
    for key, value in sd.items():
        if not isinstance(key, str):
            raise CheckpointProblem(f"key {key!r:.60} is not a name")
        _check_tensor(key, value)
        name = key.removeprefix("module.")
        if name in out:
            raise CheckpointProblem(f"{origin[name]} and {key} are both {name} once DDP's module. prefix is removed")
        out[name], origin[name] = value, key
    return out


def _check_tensor(key: str, value: Any) -> None:
    """Refuse what is no dense tensor of values (before any layout touches it)."""
    if not isinstance(value, torch.Tensor):
        raise CheckpointProblem(f"{key} holds a {type(value).__name__}, not a tensor")
    if value.layout != torch.strided:
        # a sparse tensor can declare any size at no cost: densifying it could take all memory
        raise CheckpointProblem(f"{key} is a {value.layout} tensor of size {tuple(value.shape)}; weights are dense")
    if value.is_meta:
        raise CheckpointProblem(f"{key} is a meta tensor: a shape without values (saved from an unmaterialised model)")
    if value.is_quantized or value.is_nested:
        raise CheckpointProblem(f"{key} is a quantised or nested tensor; weights are plain dense tensors")


def _put(out: StateDict, key: str, value: torch.Tensor, source: str) -> None:
    """``out[key] = value``, refusing a second tensor under one name (a layout's renaming collides)."""
    if key in out:
        raise KeyError(f"two tensors map to {key} (the second is {source})")
    out[key] = value


def _drop(sd: StateDict, patterns: list[tuple[re.Pattern, str]]) -> tuple[StateDict, Dropped]:
    kept, dropped = {}, []
    for key, value in sd.items():
        reason = next((why for pattern, why in patterns if pattern.search(key)), None)
        if reason is None:
            kept[key] = value
        else:
            dropped.append((key, reason))
    return kept, dropped


def _strip_wrappers(sd: StateDict) -> StateDict:
    """Without the prefix a training wrapper put on every key (``module.`` from DDP, ``model.``,
    ``backbone.`` from a feature-extraction wrapper), repeatedly: ``module.backbone.blocks.0...``."""
    while sd:
        prefix = next((p for p in ("module.", "model.", "backbone.") if all(k.startswith(p) for k in sd)), None)
        if prefix is None:
            return sd
        sd = _take_prefix(sd, prefix)
    return sd


def _take_prefix(sd: StateDict, prefix: str) -> StateDict:
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def _under(sd: StateDict, prefix: str, why: str, dropped: Dropped) -> Iterator[tuple[str, str, torch.Tensor]]:
    """(key, key without ``prefix``, tensor) of each entry under ``prefix``, in order; the others are
    added to ``dropped`` as ``why``."""
    for key, value in sd.items():
        if key.startswith(prefix):
            yield key, key.removeprefix(prefix), value
        else:
            dropped.append((key, why))


def official_swin(sd: StateDict) -> tuple[StateDict, Dropped]:
    return _drop(sd, BUFFER_PATTERNS + [HEAD_PATTERN])


official_swinv2 = official_swin


def timm_layout(sd: StateDict) -> tuple[StateDict, Dropped]:
    # ConvNeXt's classifier is head.fc, a ViT's is head itself
    return _drop(
        _strip_wrappers(sd), BUFFER_PATTERNS + [(re.compile(r"^head\.(fc\.)?(weight|bias)$"), "classification head")]
    )


def dinov2(sd: StateDict) -> tuple[StateDict, Dropped]:
    """facebookresearch/dinov2 backbones (the hub's ``dinov2_vit*14[_reg4]_pretrain.pth``) -> timm names.

    The iBOT mask token is pretraining-only; with registers, the class token's position is folded
    into the token and the registers become timm's ``reg_token`` (timm's ``no_embed_class`` layout,
    which computes the same as the official one); SwiGLU (ViT-g) ``w12`` / ``w3`` become
    ``fc1`` / ``fc2``; training checkpoints that store blocks in chunks (``blocks.<chunk>.<i>``,
    ``i`` counting over the whole depth) are flattened. A full MAE file also holds a mask token but
    brings ``decoder_*`` keys: it is refused here, not read as DINOv2.
    """
    kept, dropped = _drop(
        _strip_wrappers(sd),
        [
            (re.compile(r"^mask_token$"), "DINOv2 iBOT mask token (pretraining only)"),
            (re.compile(r"^head\.(weight|bias)$"), "classification head"),
        ],
    )
    decoder = [k for k in kept if k.startswith(("decoder_", "decoder."))]
    if decoder:
        raise KeyError(f"decoder keys ({', '.join(decoder[:3])}): an MAE or other pretraining file, not DINOv2")
    out: StateDict = {}
    if "register_tokens" in kept:
        pos = kept.pop("pos_embed")
        out["reg_token"] = kept.pop("register_tokens")
        out["cls_token"] = kept.pop("cls_token") + pos[:, :1]
        out["pos_embed"] = pos[:, 1:]
    for key, value in kept.items():
        name = re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", key)
        name = re.sub(r"^(blocks\.\d+\.mlp)\.w12\.", r"\1.fc1.", name)
        name = re.sub(r"^(blocks\.\d+\.mlp)\.w3\.", r"\1.fc2.", name)
        _put(out, name, value, key)
    for required in ("cls_token", "pos_embed", "patch_embed.proj.weight"):
        if required not in out:
            raise KeyError(f"no {required}")
    return out, dropped


def simmim(sd: StateDict) -> tuple[StateDict, Dropped]:
    rest, dropped = _drop(
        sd,
        [
            (re.compile(r"^decoder\."), "SimMIM pixel decoder"),
            (re.compile(r"^encoder\.mask_token$"), "SimMIM mask token"),
        ],
    )
    others = [(k, "not part of the SimMIM encoder") for k in rest if not k.startswith("encoder.")]
    if others:
        raise KeyError(f"unexpected keys outside encoder./decoder.: {', '.join(k for k, _ in others[:5])}")
    encoder, more = official_swin(_take_prefix(rest, "encoder."))
    return encoder, dropped + [("encoder." + k, why) for k, why in more]


def moby(sd: StateDict) -> tuple[StateDict, Dropped]:
    rest, dropped = _drop(
        sd,
        [
            (re.compile(r"^encoder_k\."), "MoBY momentum (key) encoder; the query encoder is kept"),
            (re.compile(r"^projector(_k)?\."), "MoBY projector"),
            (re.compile(r"^predictor\."), "MoBY predictor"),
            (re.compile(r"^queue\d?(_ptr)?$"), "MoBY negative queue"),
        ],
    )
    unknown = [k for k in rest if not k.startswith("encoder.")]
    if unknown:
        raise KeyError(f"unexpected keys outside the MoBY encoders: {', '.join(unknown[:5])}")
    encoder, more = official_swin(_take_prefix(rest, "encoder."))
    return encoder, dropped + [("encoder." + k, why) for k, why in more]


def _mm_reduction_to_official(x: torch.Tensor) -> torch.Tensor:
    """Undo mmdet's ``correct_unfold_reduction_order`` (nn.Unfold patch merging order)."""
    out_channel, in_channel = x.shape
    return (
        x.reshape(out_channel, in_channel // 4, 4).transpose(1, 2)[:, [0, 2, 1, 3], :].reshape(out_channel, in_channel)
    )


def _mm_norm_to_official(x: torch.Tensor) -> torch.Tensor:
    """Undo mmdet's ``correct_unfold_norm_order``."""
    in_channel = x.shape[0]
    return x.reshape(in_channel // 4, 4).transpose(0, 1)[[0, 2, 1, 3], :].reshape(in_channel)


def _detector_backbone(sd: StateDict) -> tuple[StateDict, Dropped]:
    """The ``backbone.`` part of a detector / segmentor file, with its per-level output norms:
    the last one (``norm3``) is the final norm, the others are dropped."""
    backbone, dropped = {}, []
    for key, k, value in _under(sd, "backbone.", "detector/segmentor head (not the backbone)", dropped):
        if re.fullmatch(r"norm3\.(weight|bias)", k):
            k = k.replace("norm3.", "norm.")  # the last stage's output norm is the final norm
        elif re.fullmatch(r"norm\d\.(weight|bias)", k):
            dropped.append((key, "per-level output norm (frozenbench heads bring their own)"))
            continue
        _put(backbone, k, value, key)
    return backbone, dropped


def mm(sd: StateDict) -> tuple[StateDict, Dropped]:
    """mmdet/mmseg's own Swin (``backbone.stages.*``, ``w_msa``, ``ffn.layers``) -> official names.

    mmdet's Swin merges patches in ``nn.Unfold`` channel order, which its converter reorders on
    the way in; undoing that on a file that never had it loads cleanly and computes something
    else, so files of the official Swin detection code (``backbone.layers.*``) are refused here
    and read by :func:`swin_det`.
    """
    if any(k.startswith("backbone.layers.") for k in sd):
        raise KeyError(
            "backbone.layers.* keys: a file of the official Swin detection / segmentation code, whose "
            "patch merging is already in the official channel order: convert it with --layout swin_det"
        )
    raw, dropped = _detector_backbone(sd)
    backbone = {}
    for key, value in raw.items():
        k = key.replace("patch_embed.projection.", "patch_embed.proj.")
        k = re.sub(r"^stages\.", "layers.", k)
        k = k.replace("attn.w_msa.", "attn.")
        k = k.replace("ffn.layers.0.0.", "mlp.fc1.").replace("ffn.layers.1.", "mlp.fc2.")
        if k.endswith("downsample.reduction.weight"):
            value = _mm_reduction_to_official(value)
        elif re.search(r"downsample\.norm\.(weight|bias)$", k):
            value = _mm_norm_to_official(value)
        _put(backbone, k, value, f"backbone.{key}")
    kept, more = official_swin(backbone)
    return kept, dropped + more


def swin_det(sd: StateDict) -> tuple[StateDict, Dropped]:
    """microsoft Swin-Transformer-Object-Detection / -Semantic-Segmentation files: the official Swin
    (``backbone.layers.*``, official patch-merging order) inside an mmdet 2 / mmseg 0.x model."""
    if any(k.startswith("backbone.stages.") for k in sd):
        raise KeyError(
            "backbone.stages.* keys: OpenMMLab's own Swin, whose patch merging is reordered: "
            "convert it with --layout mm"
        )
    backbone, dropped = _detector_backbone(sd)
    if not any(k.startswith("layers.") for k in backbone):
        raise KeyError("no backbone.layers.* keys")
    kept, more = official_swin(backbone)
    return kept, dropped + more


def mae(sd: StateDict) -> tuple[StateDict, Dropped]:
    """facebookresearch/mae checkpoints (pretraining files with the decoder, or the encoder-only
    release) -> timm names: the encoder already has them; decoder and mask token are dropped."""
    kept, dropped = _drop(
        _strip_wrappers(sd),
        [
            (re.compile(r"^decoder_"), "MAE decoder (pretraining only)"),
            (re.compile(r"^mask_token$"), "MAE mask token (pretraining only)"),
            (re.compile(r"^head\.(weight|bias)$"), "classification head"),
        ],
    )
    if "fc_norm.weight" in kept and "norm.weight" not in kept:
        raise KeyError(
            "fc_norm without norm: a global-pool fine-tuned MAE model, whose blocks' outputs were "
            "never normalised as a frozen backbone's are here"
        )
    for required in ("cls_token", "pos_embed", "patch_embed.proj.weight"):
        if required not in kept:
            raise KeyError(f"no {required}")
    return kept, dropped


_CLIP_SWAPS = [
    ("conv1.", "patch_embed.proj."),
    ("ln_pre.", "norm_pre."),
    ("ln_post.", "norm."),
    ("transformer.resblocks.", "blocks."),
    (".ln_1.", ".norm1."),
    (".ln_2.", ".norm2."),
    (".attn.in_proj_weight", ".attn.qkv.weight"),
    (".attn.in_proj_bias", ".attn.qkv.bias"),
    (".attn.out_proj.", ".attn.proj."),
    (".mlp.c_fc.", ".mlp.fc1."),
    (".mlp.c_proj.", ".mlp.fc2."),
]


def openai_clip(sd: StateDict) -> tuple[StateDict, Dropped]:
    """openai/CLIP image towers (the released TorchScript files, read as data by
    :mod:`frozenbench.checkpoint.torchscript`, or a state dict; open_clip's non-timm towers have the
    same names) -> timm names. The text tower and the image-text projection ``visual.proj`` are
    not part of the image backbone. OpenAI's towers compute QuickGELU (``*_clip_quickgelu_*``
    architectures), open_clip's LAION towers GELU: either loads the other's tensors cleanly and
    computes something else, so the architecture named must be the one the weights were trained as.
    """
    sd = _strip_wrappers(sd)
    if not any(k.startswith("visual.") for k in sd) and "class_embedding" in sd:
        sd = {f"visual.{k}": v for k, v in sd.items()}  # a visual tower saved on its own
    out, dropped = {}, []
    for key, k, value in _under(sd, "visual.", "CLIP text tower", dropped):
        if k == "proj":
            dropped.append((key, "CLIP image-text projection (not a backbone feature)"))
            continue
        if k == "class_embedding":
            k, value = "cls_token", value.reshape(1, 1, -1)
        elif k == "positional_embedding":
            k, value = "pos_embed", value.unsqueeze(0)
        for old, new in _CLIP_SWAPS:
            k = k.replace(old, new) if k.startswith(old) or old.startswith(".") else k
        _put(out, k, value, key)
    for required in ("cls_token", "pos_embed", "patch_embed.proj.weight"):
        if required not in out:
            raise KeyError(f"no visual.{required}")
    return out, dropped


LAYOUTS: dict[str, Callable[[StateDict], tuple[StateDict, Dropped]]] = {
    "official_swin": official_swin,
    "official_swinv2": official_swinv2,
    "simmim": simmim,
    "moby": moby,
    "mm": mm,
    "swin_det": swin_det,
    "timm": timm_layout,
    "dinov2": dinov2,
    "mae": mae,
    "openai_clip": openai_clip,
}


# Writers: timm names -> a published layout, the inverse of the readers above. They make the
# random-weight source files a test or a CI study converts exactly as it would the real release.


def to_timm(sd: StateDict) -> StateDict:
    return dict(sd)


def to_dinov2(sd: StateDict) -> StateDict:
    """timm names -> the DINOv2 hub layout: a mask token, registers back under ``register_tokens``
    with the class token's position entry restored (zero: the token already holds its position)."""
    out = {k: v for k, v in sd.items() if not k.startswith(("head.", "fc_norm."))}
    dim = out["cls_token"].shape[-1]
    out["mask_token"] = torch.zeros(1, dim)
    if "reg_token" in out:
        out["register_tokens"] = out.pop("reg_token")
        out["pos_embed"] = torch.cat([torch.zeros(1, 1, dim), out["pos_embed"]], dim=1)
    return out


WRITERS: dict[str, Callable[[StateDict], StateDict]] = {"timm": to_timm, "dinov2": to_dinov2}
