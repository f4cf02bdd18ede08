"""DeepSpeed for multi-rank head training (ZeRO stage from config), CPU (gloo) or GPU (NCCL).

Only parameters with ``requires_grad`` are handed to DeepSpeed, so with a frozen backbone
the optimizer state (and, with ZeRO, its shards) covers the heads alone. Launch with
``torchrun`` or ``srun`` (one rank per GPU); ranks on CPU devices run DeepSpeed's CPU
accelerator over gloo, ranks on GPUs its CUDA accelerator over NCCL.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn as nn


def deepspeed_config(
    zero_stage: int, micro_batch_size: int, lr: float, weight_decay: float = 0.05, grad_clip: float = 5.0
) -> dict[str, Any]:
    """DeepSpeed's config for head training. Its ``bf16`` section stays off: it would cast the whole
    module (the frozen backbone too) to bf16 and wrap the optimizer in its own fp32 master copy, so a
    multi-rank run would train other numbers than the one-rank run (and save another optimizer
    format). bf16 comes from ``torch.autocast`` around the forward instead, on one rank or many:
    fp32 weights and AdamW, bf16 matmuls."""
    if zero_stage not in (0, 1, 2):
        # ZeRO-3 would shard the weights too: unneeded for heads (a fine-tuned 3B-parameter backbone's fp32
        # weights are 12 GB per GPU), and its partitioned parameters defeat the portable checkpoint
        raise ValueError(f"ZeRO stage must be 0, 1 or 2, got {zero_stage}")
    return {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": 1,
        # torch's AdamW: DeepSpeed's fused CPU Adam would need a C++ build on every new machine.
        "optimizer": {"type": "AdamW", "params": {"lr": lr, "weight_decay": weight_decay, "torch_adam": True}},
        # No elastic_checkpoint: DeepSpeed 0.19.8 saves it but cannot load it back with torch's AdamW
        # (AssertionError in _restore_step_from_elastic_checkpoint, measured on 2 CPU ranks); the
        # training loop saves a state of its own that loads on any rank count instead.
        "zero_optimization": {"stage": zero_stage},
        "gradient_clipping": grad_clip,
        "steps_per_print": 10**9,
    }


def initialize(
    model: nn.Module,
    config: dict[str, Any],
    groups: list[dict[str, Any]] | None = None,
    device: torch.device | None = None,
):
    """(engine, optimizer) over the trainable parameters of ``model`` (or the given parameter groups),
    on ``device`` (default: a GPU unless ``DS_ACCELERATOR=cpu``)."""
    if "LOCAL_RANK" not in os.environ:
        raise RuntimeError("DeepSpeed training needs a launcher (torchrun, deepspeed or srun) setting LOCAL_RANK")
    on_cpu = device.type == "cpu" if device is not None else os.environ.get("DS_ACCELERATOR") == "cpu"
    if on_cpu:  # DeepSpeed picks its accelerator once, at import: say which before it is imported
        os.environ["DS_ACCELERATOR"] = "cpu"
    import deepspeed

    deepspeed.init_distributed(dist_backend="gloo" if on_cpu else "nccl")
    if groups is None:
        groups = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    engine, optimizer, _, _ = deepspeed.initialize(model=model, model_parameters=groups, config=config)
    return engine, optimizer
