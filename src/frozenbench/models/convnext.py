"""ConvNeXt backbones on timm: a second mini family beside the conv-stem Swin.

Measured on 2 CPU cores (``docs/measurements.md``): a ConvNeXt with depths 2-2-2-2 and dims
32-64-128-256 learns the shapes pretraining within a few hundred steps, and does
~3 points better with layer scale off.
"""

from __future__ import annotations

from typing import Any

from timm.models import convnext
from timm.models.convnext import ConvNeXt

from frozenbench.models.registry import MINI_MEAN, MINI_STD, ArchSpec, BackboneFamily, register_arch

# No SimMIM here: the masking works on NHWC patch tokens, which a conv stem does not produce.
CONVNEXT = BackboneFamily("convnext", convnext.checkpoint_filter_fn, layouts=("timm",))


def build_convnext(img_size: int, **kwargs: Any) -> ConvNeXt:
    del img_size  # fully convolutional: any input size
    kwargs.setdefault("drop_path_rate", 0.0)
    return ConvNeXt(num_classes=0, **kwargs)


register_arch(
    ArchSpec(
        "convnext_mini",
        CONVNEXT,
        build_convnext,
        dict(depths=(2, 2, 2, 2), dims=(32, 64, 128, 256), ls_init_value=None),
        img_size=64,
        public_weights=False,
        mean=MINI_MEAN,
        std=MINI_STD,
    )
)
register_arch(
    ArchSpec(
        "convnext_tiny", CONVNEXT, build_convnext, dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768)), img_size=224
    )
)
