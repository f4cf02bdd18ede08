"""Where bf16 autocast stops: the parts of a model that must compute in fp32.

bf16 keeps 8 significant bits: pixel coordinates above 256 are spaced 2 apart, above 1024 by 8.
A detector's box regression and decoding (RPN proposals, RoI boxes, mask pasting) under bf16
would move every box by pixels, and mmdet's mask pasting clamps a bf16 box edge to the image
size and fails when the rounded edge lies past it (measured: an HTC evaluation under autocast
stopped with "shape mismatch" in ``_do_paste_mask``). The backbone and FPN, where the FLOPs
are, keep bf16; the heads run in fp32 on fp32 features.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from frozenbench.engine.device import autocast_disabled

# the entry points of mmdet's RPN and RoI heads that two-stage detectors call
DETECTOR_HEAD_METHODS = ("loss", "predict", "loss_and_predict")


def _to_fp32(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.dtype in (torch.bfloat16, torch.float16):
        return value.float()
    if isinstance(value, (list, tuple)):
        return type(value)(_to_fp32(v) for v in value)
    return value


def run_in_fp32(module: torch.nn.Module, methods: tuple[str, ...]) -> torch.nn.Module:
    """Make ``module``'s ``methods`` compute in fp32 inside any autocast region: autocast off,
    half-precision tensor arguments (also inside lists and tuples) cast to fp32."""
    for name in methods:
        original = getattr(module, name, None)
        if original is None:
            continue

        @functools.wraps(original)
        def fp32_call(*args, _original=original, **kwargs):
            with autocast_disabled():
                return _original(*_to_fp32(args), **{k: _to_fp32(v) for k, v in kwargs.items()})

        setattr(module, name, fp32_call)
    return module


def detector_heads_in_fp32(detector: torch.nn.Module) -> torch.nn.Module:
    """A two-stage detector whose RPN and RoI heads compute in fp32 (see the module docstring)."""
    for head in ("rpn_head", "roi_head"):
        if hasattr(detector, head):
            run_in_fp32(getattr(detector, head), DETECTOR_HEAD_METHODS)
    return detector
