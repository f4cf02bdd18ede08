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


def deepspeed_config(zero_stage: int, micro_batch_size: int, lr: float, weight_decay: float = 0.05,
                     grad_clip: float = 5.0, bf16: bool = False) -> dict[str, Any]:
    if zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"ZeRO stage must be 0-3, got {zero_stage}")
    return {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": 1,
        # torch's AdamW: DeepSpeed's fused CPU Adam would need a C++ build on every new machine.
        "optimizer": {"type": "AdamW", "params": {"lr": lr, "weight_decay": weight_decay, "torch_adam": True}},
        # elastic (ZeRO-1/2): optimizer shards saved so that another rank count can load them, so a
        # job resumes on a different number of nodes; ZeRO-3 has no such format here
        "zero_optimization": {"stage": zero_stage, **({"elastic_checkpoint": True} if zero_stage in (1, 2) else {})},
        "gradient_clipping": grad_clip,
        "bf16": {"enabled": bf16},
        "steps_per_print": 10**9,
    }


def initialize(model: nn.Module, config: dict[str, Any], groups: list[dict[str, Any]] | None = None,
               device: torch.device | None = None):
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
