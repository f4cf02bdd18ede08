"""Backbone architecture registry.

Each architecture is a name (``swin_tiny``, ``swinv2_giant``, ``cswin_tiny``...)
mapped to a builder that returns a timm-style model exposing
``forward_intermediates`` and ``feature_info``. Model families register their
architectures in their own module (one file per family, as in timm).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch.nn as nn


# ImageNet statistics (timm's IMAGENET_DEFAULT_MEAN / STD), in [0, 1] units: what the published
# Swin, SwinV2 and ConvNeXt weights were trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The mini families' own statistics: mid-grey and a quarter of the range, what the in-DAG
# pretraining of the mini-study normalises with.
MINI_MEAN = (0.5, 0.5, 0.5)
MINI_STD = (0.25, 0.25, 0.25)


@dataclass(frozen=True)
class ArchSpec:
    """An architecture: its builder and arguments, default input size, and the input
    normalisation its weights expect (``mean`` / ``std`` in [0, 1] units, RGB, as timm's
    ``default_cfg``). Every task and pretraining normalises through :func:`normalization`."""

    name: str
    family: str
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
        asserts it), else None (ConvNeXt's strided stem takes any size)."""
        return self.kwargs.get("patch_size")

    @property
    def total_stride(self) -> int:
        """The last stage's stride: the stem's 4, halved resolution at every later stage."""
        return (self.patch_size or 4) * 2 ** (len(self.kwargs.get("depths", (0, 0, 0, 0))) - 1)


_ARCHS: dict[str, ArchSpec] = {}


def register_arch(spec: ArchSpec) -> ArchSpec:
    if spec.name in _ARCHS:
        raise ValueError(f"architecture {spec.name!r} registered twice")
    _ARCHS[spec.name] = spec
    return spec


def _load_families() -> None:
    # Importing a family module registers its architectures.
    from frozenbench.models import convnext, swin  # noqa: F401


def get_arch(name: str) -> ArchSpec:
    _load_families()
    try:
        return _ARCHS[name]
    except KeyError:
        raise KeyError(f"unknown backbone architecture {name!r}; known: {', '.join(sorted(_ARCHS))}") from None


def list_archs(family: str | None = None) -> list[str]:
    _load_families()
    return sorted(n for n, s in _ARCHS.items() if family is None or s.family == family)


def build_model(name: str, img_size: int | None = None, **overrides: Any) -> nn.Module:
    """Instantiate architecture ``name`` (random weights) for inputs of ``img_size``."""
    spec = get_arch(name)
    kwargs = {**spec.kwargs, **overrides}
    return spec.build(img_size=img_size or spec.img_size, **kwargs)


def normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) in [0, 255] pixel units (RGB) for inputs of architecture ``name``: the form
    OpenMMLab's data preprocessors take."""
    spec = get_arch(name)
    return tuple(255.0 * m for m in spec.mean), tuple(255.0 * s for s in spec.std)
