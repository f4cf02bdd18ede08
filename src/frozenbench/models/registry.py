"""Backbone families and architectures.

A *family* (:class:`BackboneFamily`) is everything frozenbench knows about one kind of
backbone: how its published weights are filtered into the model, which feature levels a
dense head takes, whether those levels need a simple feature pyramid, how its parameters
group into layers for layer-wise lr decay, which of them take no weight decay, which
source layouts conversion accepts and which in-DAG pretraining objectives can train it.
An *architecture* (:class:`ArchSpec`) is one sized member of a family, with its default input
size and the input normalisation its usual weights were trained with (timm's ``default_cfg``).
Normalisation belongs to the weights, not the architecture: published weights that need another
one (or other build options, such as MAE's position resampling) are a :class:`WeightsTag` of the
family, and a converted checkpoint records what its weights take (:mod:`frozenbench.checkpoint`);
the architecture's values are only the default for a file that does not say.

Each family lives in one module of :mod:`frozenbench.models` (``swin``, ``convnext``,
``vit``), which declares its record and registers its architectures; adding a family is
one module plus one entry in :data:`FAMILY_MODULES`. Conversion, parameter groups,
normalisation and head sizing read the record and never name a family.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

StateDict = dict[str, torch.Tensor]

# ImageNet statistics (timm's IMAGENET_DEFAULT_MEAN / STD), in [0, 1] units: what the published
# Swin, SwinV2, ConvNeXt and DINOv2 weights were trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The mini families' own statistics: mid-grey and a quarter of the range, what the in-DAG
# pretraining of the mini-study normalises with.
MINI_MEAN = (0.5, 0.5, 0.5)
MINI_STD = (0.25, 0.25, 0.25)

# The in-DAG pretraining objectives (frozenbench.pretrain.objectives) and the labels of published ones.
PRETRAIN_OBJECTIVES = ("supervised", "contrastive", "mim", "random")
PUBLISHED_OBJECTIVES = ("supervised", "contrastive", "mim", "self-distillation", "image-text", "random")

# The modules that declare families, imported on first use of the registry.
FAMILY_MODULES = [
    "frozenbench.models.swin",
    "frozenbench.models.convnext",
    "frozenbench.models.vit",
    "frozenbench.models.eva",
]


def timm_layer_groups(model: nn.Module) -> dict[str, int]:
    """Parameter name -> layer id by the model's own ``group_matcher`` (timm's fine-grained grouping,
    what ``timm.optim.param_groups_layer_decay`` uses): 0 for the stem, then one id per block in
    depth order; a stage's downsampling shares the id of the block it feeds."""
    from timm.models._manipulate import group_parameters

    if not hasattr(model, "group_matcher"):
        raise TypeError(f"{type(model).__name__} has no group_matcher: give its family a layer_groups function")
    return group_parameters(model, model.group_matcher(coarse=False), reverse=True)


def timm_no_weight_decay(model: nn.Module) -> set[str]:
    """The model's own ``no_weight_decay()`` names (position embeddings, class tokens, bias tables)."""
    names = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    return set(names)


def all_levels(model: nn.Module) -> list[int]:
    """Every stage of a hierarchical model (strides 4-32 for the four-stage families)."""
    return list(range(len(model.feature_info)))


# What timm's ``checkpoint_filter_fn``s drop by design, as (pattern, reason): conversion compares
# the keys before and after a family's filter and refuses any other key that vanished, so no
# tensor of a checkpoint goes missing without a line in the conversion report.
TIMM_FILTER_DROPS: tuple[tuple[str, str], ...] = (
    (
        r"(relative_position_index|attn_mask|relative_coords_table)$",
        "buffer recomputed from the window and input sizes",
    ),
    (r"(^|\.)pre_logits\.", "representation layer of old ViT weights, unused by the backbone (timm's ViT filter)"),
    (r"(^|\.)rope\.(?!freqs$)", "fixed rotary embedding the model rebuilds (timm's EVA filter)"),
    (r"^(mask_token|lm_head\.(weight|bias))$", "masked-image-modelling pretraining only (timm's EVA filter)"),
)


# What a family's checkpoint filter may raise on weights of another layout or architecture, on the
# first tensor it cannot place (timm's filters look modules up by name: AttributeError).
FILTER_FAILURES = (KeyError, RuntimeError, ValueError, AttributeError, IndexError, TypeError, AssertionError)


@dataclass(frozen=True)
class WeightsTag:
    """Published weights of a family that take more than their architecture's defaults (timm's
    pretrained tag, the ``mae`` of ``vit_base_patch16_224.mae``): the input normalisation they were
    trained with and the build options under which the architecture computes their source
    project's features. Conversion records both in the converted file.

    Args:
        name: the tag, as timm names the weights (``mae``).
        mean, std: the input normalisation in [0, 1] units, RGB.
        arch_options: keyword arguments of the family's builder (``pos_interpolation``).
        layouts: source layouts whose files are always these weights (a file in the ``mae`` layout
            is MAE's): conversion applies the tag to them unasked.
    """

    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    arch_options: dict[str, Any] = field(default_factory=dict)
    layouts: tuple[str, ...] = ()


@dataclass(frozen=True)
class BackboneFamily:
    """One family of backbones (see the module docstring).

    Args:
        name: the family's name (``swin``, ``vit``...).
        checkpoint_filter: ``(state_dict, model) -> state_dict``, timm's own ``checkpoint_filter_fn``
            where it exists: adapts weights in timm key names to the built model (resizes tables).
        layouts: the source layouts (:mod:`frozenbench.checkpoint.layouts`) its weights come in;
            conversion refuses any other.
        objectives: the in-DAG pretraining objectives that can train it.
        feature_levels: ``model -> indices`` of the levels a dense head takes by default
            (negative indices count from the last block).
        pyramid: the levels all have one stride (a plain ViT): detection and segmentation heads get
            a trainable simple feature pyramid building strides 4-32 from them.
        intermediate_norm: pass every taken level through the model's final norm (the DINOv2 and
            ViTDet practice for plain ViTs; hierarchical families drop the final norm).
        layer_groups: ``model -> {parameter name: layer id}`` for layer-wise lr decay.
        no_weight_decay: ``model -> names`` of parameters that take no weight decay.
        recomputed_buffers: name suffixes of buffers rebuilt from sizes, never loaded from weights.
        filter_drops: ``(pattern, reason)`` of the keys ``checkpoint_filter`` may drop; conversion
            refuses a checkpoint that loses any other key in the filter.
        weight_tags: published weights that take other normalisation or build options than the
            architecture's defaults (:class:`WeightsTag`).
    """

    name: str
    checkpoint_filter: Callable[[StateDict, nn.Module], StateDict]
    layouts: tuple[str, ...]
    objectives: tuple[str, ...] = ("supervised", "contrastive", "random")
    feature_levels: Callable[[nn.Module], list[int]] = all_levels
    pyramid: bool = False
    intermediate_norm: bool = False
    layer_groups: Callable[[nn.Module], dict[str, int]] = timm_layer_groups
    no_weight_decay: Callable[[nn.Module], set[str]] = timm_no_weight_decay
    recomputed_buffers: tuple[str, ...] = ()
    filter_drops: tuple[tuple[str, str], ...] = TIMM_FILTER_DROPS
    weight_tags: tuple[WeightsTag, ...] = ()

    def weights_tag(self, name: str) -> WeightsTag:
        """The tag ``name`` of this family; an unknown one is an error listing the family's tags."""
        for tag in self.weight_tags:
            if tag.name == name:
                return tag
        known = ", ".join(t.name for t in self.weight_tags) or "none"
        raise KeyError(f"the {self.name} family has no weights tag {name!r} (its tags: {known})")

    def layout_tag(self, layout: str) -> WeightsTag | None:
        """The tag whose weights every file of ``layout`` holds, if any."""
        return next((tag for tag in self.weight_tags if layout in tag.layouts), None)

    @property
    def weight_options(self) -> frozenset[str]:
        """The builder options a checkpoint may set: those some tag of the family sets."""
        return frozenset(key for tag in self.weight_tags for key in tag.arch_options)

    def stored(self, key: str) -> bool:
        """Whether a canonical checkpoint holds ``key`` of a built model: a buffer rebuilt from the
        window and input sizes is not stored, nor is the classifier head (not part of the backbone)."""
        return not key.endswith(self.recomputed_buffers) and not key.startswith("head.")

    def filter_drop_reason(self, key: str) -> str | None:
        """Why ``checkpoint_filter`` may drop ``key`` (its declared reason), or None if it may not."""
        return next((why for pattern, why in self.filter_drops if re.search(pattern, key)), None)


@dataclass(frozen=True)
class ArchSpec:
    """An architecture: its family, builder and arguments, default input size, and the input
    normalisation of its default weights (``mean`` / ``std`` in [0, 1] units, RGB, as timm's
    ``default_cfg``): what a checkpoint that records none takes (see :class:`WeightsTag`)."""

    name: str
    family: BackboneFamily
    build: Callable[..., nn.Module]
    kwargs: dict[str, Any] = field(default_factory=dict)
    img_size: int = 224
    public_weights: bool = True
    notes: str = ""
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @property
    def patch_size(self) -> int | None:
        """The patch embedding's size where inputs must be a multiple of it (Swin's patch embed
        asserts it), else None: ConvNeXt's strided stem takes any size, a plain ViT pads its
        inputs to its patch multiple."""
        return None if self.family.pyramid else self.kwargs.get("patch_size")

    @property
    def total_stride(self) -> int:
        """The coarsest stride a dense head sees: for hierarchical families the stem's 4, halved
        resolution at every later stage; for a plain ViT its simple feature pyramid's 32 (or its
        patch, if larger)."""
        if self.family.pyramid:
            return max(32, int(self.kwargs["patch_size"]))
        return (self.patch_size or 4) * 2 ** (len(self.kwargs.get("depths", (0, 0, 0, 0))) - 1)


_ARCHS: dict[str, ArchSpec] = {}
_FAMILIES: dict[str, BackboneFamily] = {}
# Names an architecture had before, still read in old results and configs.
_ALIASES: dict[str, str] = {}
# Names that are no architecture any more, with what to use instead (said when one is asked for).
_RETIRED: dict[str, str] = {}


def register_family(family: BackboneFamily) -> BackboneFamily:
    if family.name in _FAMILIES and _FAMILIES[family.name] is not family:
        raise ValueError(f"backbone family {family.name!r} registered twice")
    _FAMILIES[family.name] = family
    return family


def register_arch(spec: ArchSpec, aliases: tuple[str, ...] = ()) -> ArchSpec:
    if spec.name in _ARCHS or spec.name in _ALIASES:
        raise ValueError(f"architecture {spec.name!r} registered twice")
    register_family(spec.family)
    _ARCHS[spec.name] = spec
    for alias in aliases:
        _ALIASES[alias] = spec.name
    return spec


def retire_arch(name: str, instead: str) -> None:
    """``name`` is no architecture any more: asking for it says ``instead``."""
    _RETIRED[name] = instead


def retired(name: str) -> str | None:
    """What to use instead of ``name``, if it is a retired architecture name."""
    _load_families()
    return _RETIRED.get(name)


def _load_families() -> None:
    # Importing a family module registers its family and architectures.
    for module in FAMILY_MODULES:
        importlib.import_module(module)


def canonical_name(name: str) -> str:
    """``name``, or the architecture it is an old alias of."""
    _load_families()
    return _ALIASES.get(name, name)


def get_arch(name: str) -> ArchSpec:
    _load_families()
    try:
        return _ARCHS[_ALIASES.get(name, name)]
    except KeyError:
        if name in _RETIRED:
            raise KeyError(f"{name!r} is no registered architecture any more: {_RETIRED[name]}") from None
        raise KeyError(f"unknown backbone architecture {name!r}; known: {', '.join(sorted(_ARCHS))}") from None


def get_family(name: str) -> BackboneFamily:
    _load_families()
    try:
        return _FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown backbone family {name!r}; known: {', '.join(sorted(_FAMILIES))}") from None


def list_archs(family: str | None = None) -> list[str]:
    _load_families()
    return sorted(n for n, s in _ARCHS.items() if family is None or s.family.name == family)


def list_families() -> list[str]:
    _load_families()
    return sorted(_FAMILIES)


def build_arch(name: str, img_size: int | None = None, **overrides: Any) -> nn.Module:
    """Instantiate architecture ``name`` (random weights) for inputs of ``img_size``."""
    spec = get_arch(name)
    kwargs = {**spec.kwargs, **overrides}
    return spec.build(img_size=img_size or spec.img_size, **kwargs)


def normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) in [0, 255] pixel units (RGB) of architecture ``name``'s default weights (the
    mini-study's pretraining; a converted checkpoint may record other values, which
    :class:`frozenbench.models.backbone.Backbone` reads): the form OpenMMLab's data preprocessors take."""
    spec = get_arch(name)
    return pixel_units(spec.mean, spec.std)


def pixel_units(mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) given in [0, 1] units, in [0, 255] pixel units."""
    return tuple(255.0 * m for m in mean), tuple(255.0 * s for s in std)
