"""mmcv's compiled ops, routed to kernels that torch's and torchvision's own wheels carry.

The project's mmcv is built without CUDA (a CUDA build needs nvcc, the CUDA headers and a
compile per GPU architecture on every machine). The heads reach mmcv's extension module
(``mmcv._ext``) for RoIAlign and NMS (Mask R-CNN, Cascade, HTC: RPN proposals, RoI features,
mask targets, test-time NMS), and the Mask2Former pixel decoder reaches it for multi-scale
deformable attention when its input is on a GPU. :func:`route_mmcv_ops` replaces those entry
points, on every device, so the code that runs on a GPU is the code CI runs on the CPU:

- ``nms`` -> ``torchvision.ops.nms`` (same greedy suppression, indices by descending score);
- ``roi_align_forward`` / ``roi_align_backward`` (average pooling, as mmdet configures it) ->
  torchvision's ``roi_align`` and its backward kernel, in fp32;
- multi-scale deformable attention -> mmcv's own pure-torch implementation (``grid_sample``),
  which it already uses on the CPU.

Every other ``mmcv._ext`` function is wrapped too: it still runs on CPU tensors, and on CUDA
tensors fails with a message naming the op instead of mmcv's dispatcher error. Calls are counted
(:func:`ext_calls`) so a test can show that no head reaches an unrouted op.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import importlib
from collections.abc import Callable
from typing import Any

import torch

from frozenbench.engine.device import is_gpu_tensor

ROI_ALIGN_AVG = 1  # mmcv's pool_mode code for average pooling (0 is max)

_calls: collections.Counter[str] = collections.Counter()
_originals: dict[str, Callable[..., Any]] = {}


def _nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, offset: int = 0) -> torch.Tensor:
    from torchvision.ops import nms

    if offset != 0:
        raise NotImplementedError("NMS with offset=1 (mmcv's legacy box convention) has no torchvision kernel")
    return nms(boxes.float(), scores.float(), float(iou_threshold))


@dataclasses.dataclass(frozen=True)
class _RoIAlignParams:
    """The keyword arguments mmcv passes to both ``roi_align_forward`` and ``roi_align_backward``."""

    aligned_height: int
    aligned_width: int
    spatial_scale: float
    sampling_ratio: int
    pool_mode: int
    aligned: bool

    def __post_init__(self) -> None:
        if self.pool_mode != ROI_ALIGN_AVG:
            raise NotImplementedError("RoIAlign with max pooling has no torchvision kernel")


def _roi_align_forward(
    input: torch.Tensor,
    rois: torch.Tensor,
    output: torch.Tensor,
    argmax_y: torch.Tensor,
    argmax_x: torch.Tensor,
    **params: Any,
) -> None:
    from torchvision.ops import roi_align

    p = _RoIAlignParams(**params)
    size = (p.aligned_height, p.aligned_width)
    output.copy_(roi_align(input.float(), rois.float(), size, p.spatial_scale, p.sampling_ratio, p.aligned))


def _roi_align_backward(
    grad_output: torch.Tensor,
    rois: torch.Tensor,
    argmax_y: torch.Tensor,
    argmax_x: torch.Tensor,
    grad_input: torch.Tensor,
    **params: Any,
) -> None:
    import torchvision  # noqa: F401  (registers torch.ops.torchvision)

    p = _RoIAlignParams(**params)
    n, c, h, w = grad_input.shape
    grad_input.copy_(
        torch.ops.torchvision._roi_align_backward(
            grad_output.float(),
            rois.float(),
            p.spatial_scale,
            p.aligned_height,
            p.aligned_width,
            n,
            c,
            h,
            w,
            p.sampling_ratio,
            p.aligned,
        )
    )


ROUTES: dict[str, Callable[..., Any]] = {
    "nms": _nms,
    "roi_align_forward": _roi_align_forward,
    "roi_align_backward": _roi_align_backward,
}


def _counted(name: str, impl: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(impl)
    def call(*args: Any, **kwargs: Any) -> Any:
        _calls[name] += 1
        return impl(*args, **kwargs)

    call._frozenbench_route = name  # type: ignore[attr-defined]
    return call


def _guarded(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """``original`` on CPU tensors; on CUDA tensors a clear error (this mmcv has no CUDA kernels)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        _calls[name] += 1
        if any(is_gpu_tensor(a) for a in (*args, *kwargs.values())):
            raise NotImplementedError(
                f"mmcv op {name!r} has no CUDA kernel in this mmcv build (built without CUDA) and no route to "
                "torch / torchvision in frozenbench.openmmlab.ops; add a route there"
            )
        return original(*args, **kwargs)

    call._frozenbench_route = None  # type: ignore[attr-defined]
    return call


def route_mmcv_ops() -> None:
    """Install the routes (idempotent): see the module docstring."""
    ext = importlib.import_module("mmcv._ext")
    for name in dir(ext):
        current = getattr(ext, name)
        if name.startswith("_") or not callable(current) or hasattr(current, "_frozenbench_route"):
            continue
        _originals[name] = current
        setattr(ext, name, _counted(name, ROUTES[name]) if name in ROUTES else _guarded(name, current))
    # mmcv picks its deformable-attention kernel by `IS_CUDA_AVAILABLE and value.is_cuda`, read from
    # its module's globals at call time: False keeps the pure-torch path on every device.
    importlib.import_module("mmcv.ops.multi_scale_deform_attn").IS_CUDA_AVAILABLE = False


def original_op(name: str) -> Callable[..., Any]:
    """mmcv's own compiled function ``name`` (the reference the routes are tested against)."""
    route_mmcv_ops()
    return _originals[name]


def ext_calls() -> dict[str, int]:
    """How often each ``mmcv._ext`` function was called since the routes were installed."""
    return dict(_calls)


def check_ops(device: str | torch.device) -> dict[str, list[int]]:
    """Run every routed op forward and backward on ``device`` (setup's import check; a GPU node
    runs it on CUDA); returns the output shapes. Raises if an op fails or gives a wrong answer."""
    from mmcv.ops import MultiScaleDeformableAttention, RoIAlign, batched_nms

    route_mmcv_ops()
    device = torch.device(device)
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 10]], device=device).float()
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6], device=device)
    _, keep = batched_nms(boxes, scores, torch.tensor([0, 0, 0, 1], device=device), dict(iou_threshold=0.5))
    if keep.tolist() != [0, 2, 3]:
        raise RuntimeError(f"batched NMS on {device} kept {keep.tolist()}, expected [0, 2, 3]")
    feats = torch.arange(2 * 16 * 16, dtype=torch.float32, device=device).view(1, 2, 16, 16).requires_grad_()
    rois = torch.tensor([[0, 2, 2, 10, 10]], dtype=torch.float32, device=device)
    pooled = RoIAlign(4, spatial_scale=1.0, sampling_ratio=0, aligned=True)(feats, rois)
    pooled.sum().backward()
    if feats.grad is None or not torch.isclose(feats.grad.sum(), torch.tensor(2 * 16.0, device=device)):
        raise RuntimeError(f"RoIAlign backward on {device}: the gradient does not sum to the pooled cells")
    msda = MultiScaleDeformableAttention(embed_dims=32, num_heads=4, num_levels=2, num_points=2, batch_first=True).to(
        device
    )
    shapes = torch.tensor([[8, 8], [4, 4]], device=device)
    starts = torch.tensor([0, 64], device=device)
    value = torch.randn(1, 80, 32, device=device, requires_grad=True)
    reference = torch.rand(1, 80, 2, 2, device=device)
    attended = msda(value, value=value, reference_points=reference, spatial_shapes=shapes, level_start_index=starts)
    attended.sum().backward()
    if value.grad is None or not torch.isfinite(attended).all():
        raise RuntimeError(f"multi-scale deformable attention on {device} gave no gradient or a non-finite output")
    return {"nms": list(keep.shape), "roi_align": list(pooled.shape), "deformable_attention": list(attended.shape)}
