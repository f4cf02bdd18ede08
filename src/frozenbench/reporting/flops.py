"""Forward FLOPs of a backbone at any input size, counted without computing anything.

The backbone is built on PyTorch's meta device (shapes only: no weight is allocated, no
arithmetic runs) and its forward is run under ``torch.utils.flop_counter.FlopCounterMode``,
which adds up the FLOPs of every matmul and convolution from their shapes (a multiply-add is
2 FLOPs). Swin-L at 1024 px counts in about half a second on a CPU core.

Attention is counted through the math backend of ``scaled_dot_product_attention``: its matmuls
are the ones the counter knows. The fused CPU kernel (``_scaled_dot_product_flash_attention_for_cpu``)
has no FLOP formula in the counter (torch 2.14), so a real CPU forward with the default backend
reports Swin-T at 224 px 3 % low (8.70 instead of 8.98 GFLOP); with the math backend a real
forward counts exactly what the meta one does (``tests/test_cost.py``).
"""

from __future__ import annotations

import functools

from frozenbench.errors import UserError


class FlopCountError(UserError):
    """A backbone whose forward cannot be counted on the meta device."""


def count_forward_flops(body, img_size: int, device: str = "meta") -> int:
    """FLOPs of one ``(1, 3, img_size, img_size)`` forward of the module ``body`` (on ``device``)."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, img_size, img_size, device=device)
    counter = FlopCounterMode(display=False)
    with counter, sdpa_kernel(SDPBackend.MATH):
        body(x)
    return int(counter.get_total_flops())


@functools.lru_cache(maxsize=None)
def frame_flops(arch: str, img_size: int, built_for: int | None = None) -> int:
    """FLOPs of one frame's (one image's) forward of the ``frozenbench.models.backbone.Backbone`` of ``arch``
    at ``img_size`` px, built for ``built_for`` px (default ``img_size``; a Swin's windows are fixed
    by the size it is built for, as a task builds it for its ``img_size`` and tests other scales)."""
    import torch

    from frozenbench.models.backbone import Backbone

    try:
        with torch.device("meta"):
            body = Backbone(arch, img_size=built_for or img_size)
        return count_forward_flops(body, img_size)
    except Exception as err:  # any failure of an arch's code on meta tensors: say which arch and size
        raise FlopCountError(
            f"cannot count the forward FLOPs of backbone {arch!r} at {img_size} px on the meta device: "
            f"{type(err).__name__}: {err}"
        ) from err


def backbone_gflop(arch: str, img_size: int, frames: int = 1, built_for: int | None = None) -> float:
    """Forward GFLOP of the backbone ``arch`` for one sample at ``img_size`` px: an image, or a clip
    of ``frames`` frames (a video backbone runs every frame through the image backbone)."""
    return frames * frame_flops(arch, img_size, built_for) / 1e9
