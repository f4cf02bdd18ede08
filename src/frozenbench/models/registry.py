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


@dataclass(frozen=True)
class ArchSpec:
    name: str
    family: str
    build: Callable[..., nn.Module]
    kwargs: dict[str, Any] = field(default_factory=dict)
    img_size: int = 224
    public_weights: bool = True
    notes: str = ""


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
