"""DeepSpeed for multi-rank training (ZeRO stage from config), CPU (gloo) or GPU (NCCL): its
config, its initialisation and the training loop's stepper over it; nothing else imports it.

Only parameters with ``requires_grad`` are handed to DeepSpeed, so with a frozen backbone
the optimizer state (and, with ZeRO, its shards) covers the heads alone. Launch with
``torchrun`` or ``srun`` (one rank per GPU); ranks on CPU devices run DeepSpeed's CPU
accelerator over gloo, ranks on GPUs its CUDA accelerator over NCCL.

A step's global batch (``TrainOptions.batch_size``) reaches DeepSpeed as its own three numbers,
``train_batch_size`` = ``train_micro_batch_size_per_gpu`` x ranks x ``gradient_accumulation_steps``
(:func:`frozenbench.engine.options.split_batch`; DeepSpeed checks the product at initialisation),
and the accumulation is DeepSpeed's: with ZeRO-2 the gradients are reduced into each rank's
partition inside ``backward`` according to the accumulation boundary, which only DeepSpeed's own
accumulation sets right (torch's ``no_sync`` does not exist under ZeRO-2). The stepper sets the
boundary itself before each micro-batch (DeepSpeed's ``set_gradient_accumulation_boundary``), so a
resumed run, whose engine counts micro-steps from 0 after ``load``'s extra zero step, still steps
on the last micro-batch of each optimizer step, and calls ``engine.step()`` once per optimizer step.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from frozenbench.checkpoint.io import safe_load
from frozenbench.engine.device import autocast, deepspeed_accelerator
from frozenbench.engine.options import BatchSplit, TrainOptions
from frozenbench.engine.param_groups import param_groups
from frozenbench.engine.steppers import after_update, load_trainable, saved_fingerprint, set_lr, trainable_state
from frozenbench.utils.atomic import atomic_file


def deepspeed_config(
    zero_stage: int, split: BatchSplit, lr: float, weight_decay: float = 0.05, grad_clip: float = 5.0
) -> dict[str, Any]:
    """DeepSpeed's config for head training. Its ``bf16`` section stays off: it would cast the whole
    module (the frozen backbone too) to bf16 and wrap the optimizer in its own fp32 master copy, so a
    multi-rank run would train other numbers than the one-rank run (and save another optimizer
    format). bf16 comes from ``torch.autocast`` around the forward instead, on one rank or many:
    fp32 weights and AdamW, bf16 matmuls. The batch is ``split``'s (micro-batch per rank, gradient
    accumulation, and the global batch, which DeepSpeed checks the other two multiply to)."""
    if zero_stage not in (0, 1, 2):
        # ZeRO-3 would shard the weights too: unneeded for heads (a fine-tuned 3B-parameter backbone's fp32
        # weights are 12 GB per GPU), and its partitioned parameters defeat the portable checkpoint
        raise ValueError(f"ZeRO stage must be 0, 1 or 2, got {zero_stage}")
    batches = {
        "train_micro_batch_size_per_gpu": split.micro,
        "gradient_accumulation_steps": split.accumulation,
        "train_batch_size": split.global_batch,
    }
    return {
        **batches,
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
    on_cpu = deepspeed_accelerator(device) == "cpu"
    if on_cpu:  # DeepSpeed picks its accelerator once, at import: say which before it is imported
        os.environ["DS_ACCELERATOR"] = "cpu"
    import deepspeed

    deepspeed.init_distributed(dist_backend="gloo" if on_cpu else "nccl")
    if groups is None:
        groups = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    engine, optimizer, _, _ = deepspeed.initialize(model=model, model_parameters=groups, config=config)
    return engine, optimizer


class DeepSpeedStepper:
    """Several ranks: a DeepSpeed engine (ZeRO stage from the config) over the trainable parameters.

    Its state is saved in the one-rank format (``state.pt``: the trainable weights and a torch
    AdamW ``state_dict`` with the full moments, gathered from ZeRO's shards, written by rank 0
    atomically), so a run resumes on any number of ranks: after a requeue onto another node
    count, or on one rank. DeepSpeed's own sharded checkpoints load only on the rank count that
    saved them, and its elastic format does not load back in the DeepSpeed this project pins.
    The gather costs the full optimizer state in rank 0's host memory: small for frozen-backbone
    heads, 12 bytes per parameter for a fine-tuned backbone.
    """

    def __init__(
        self,
        model: nn.Module,
        opts: TrainOptions,
        run_dir: Path,
        zero_stage: int,
        device: torch.device,
        split: BatchSplit,
    ) -> None:
        self.model = model
        self.opts = opts
        self.device = device
        self.zero_stage = zero_stage
        self.split = split
        self.micro = 0  # micro-batches of the current optimizer step put through backward so far
        groups = param_groups(model, opts.weight_decay, opts.layer_decay)
        # torch AdamW's index of a parameter is its position in the groups, in order; its saved
        # param_groups (what the one-rank stepper's AdamW over the same groups holds) are built once
        self.params = [p for group in groups for p in group["params"]]
        # (from copies: torch's optimizers write their defaults into the group dicts they are given)
        self.adamw_groups = torch.optim.AdamW([dict(g) for g in groups], lr=opts.lr).state_dict()["param_groups"]
        self.engine, self.optimizer = initialize(
            model,
            deepspeed_config(zero_stage, split, opts.lr, opts.weight_decay, opts.grad_clip),
            groups,
            device=device,
        )
        self.state_path = run_dir / "state.pt"

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        # the last micro-batch of the step is the boundary at which ZeRO reduces and the step applies
        self.engine.set_gradient_accumulation_boundary(self.micro == self.split.accumulation - 1)
        with autocast(self.device, self.opts.autocast_bf16):
            return self.engine(batch)

    def backward(self, total: torch.Tensor, share: float) -> None:
        # the share is applied here, as on one rank; DeepSpeed's own 1/gradient_accumulation_steps is
        # the same number for equal micro-batches, but one rule for both steppers keeps them equal
        self.engine.backward(total if share == 1 else total * share, scale_wrt_gas=False)
        self.micro += 1

    def step(self, lr: float) -> None:
        if self.micro != self.split.accumulation:
            raise RuntimeError(f"step after {self.micro} of {self.split.accumulation} micro-batches")
        set_lr(self.optimizer, lr)
        self.engine.step()
        self.micro = 0
        after_update(self.model)

    def saved_fingerprint(self) -> str | None:
        return saved_fingerprint(self.state_path)

    def discard(self) -> None:
        import torch.distributed as dist

        if dist.get_rank() == 0:
            self.state_path.unlink(missing_ok=True)
        dist.barrier()

    def _adamw_state(self) -> dict[str, Any]:
        """torch AdamW's ``state_dict`` of the whole run (every rank takes part in the gathers)."""
        from deepspeed.utils import safe_get_full_optimizer_state

        if self.zero_stage == 0:  # DeepSpeed's optimizer is torch's AdamW itself, replicated on every rank
            return {"state": self.optimizer.state_dict()["state"], "param_groups": self.adamw_groups}
        self._link_moments()
        steps = [s["step"] for s in self.optimizer.optimizer.state.values() if "step" in s]
        step = torch.as_tensor(steps[0], dtype=torch.float32).clone().cpu() if steps else torch.tensor(0.0)
        state = {}
        for index, param in enumerate(self.params):
            moments = {key: safe_get_full_optimizer_state(param, key) for key in ("exp_avg", "exp_avg_sq")}
            if all(m is not None for m in moments.values()):
                state[index] = {"step": step.clone(), **{k: m.detach().cpu().clone() for k, m in moments.items()}}
        return {"state": state, "param_groups": self.adamw_groups}

    def _link_moments(self) -> None:
        """Point each parameter's view into ZeRO's optimizer state at the moments of its group.
        DeepSpeed 0.19.8 links them once, after the first group's first step, when the other
        groups' moments do not exist yet (with several parameter groups, as layer decay and
        no-decay names make, their views stay empty): link again now that every group has stepped."""
        self.optimizer._hp_optimizer_states_linked = False
        self.optimizer._lazy_init_hp_params_optimizer_state()

    def save(self, step: int, fingerprint: str) -> None:
        import torch.distributed as dist

        optimizer = self._adamw_state()  # ZeRO-1/2 shard the optimizer only: every rank holds the full weights
        if dist.get_rank() == 0:
            with atomic_file(self.state_path) as tmp:
                torch.save(
                    {
                        "step": step,
                        "model": trainable_state(self.model),
                        "optimizer": optimizer,
                        "fingerprint": fingerprint,
                        "world_size": dist.get_world_size(),
                    },
                    tmp,
                )
        dist.barrier()

    def load(self) -> int:
        """Resume from ``state.pt``, whichever rank count saved it."""
        from deepspeed.utils import safe_set_full_fp32_param, safe_set_full_optimizer_state

        state = safe_load(self.state_path)
        if self.zero_stage == 0:
            load_trainable(self.model, state, self.state_path)
            self.optimizer.load_state_dict(state["optimizer"])
            return state["step"]
        # ZeRO creates its optimizer state at the first step: take one that moves nothing (lr 0,
        # zero gradients; its end copies ZeRO's masters into the weights, so they load after it),
        # then overwrite weights, masters, moments and step count with the saved ones
        set_lr(self.optimizer, 0.0)
        self.engine.set_gradient_accumulation_boundary(True)  # one zero micro-batch that steps
        self.engine.backward(sum((p * 0).sum() for p in self.params), scale_wrt_gas=False)
        self.engine.step()
        self._link_moments()
        load_trainable(self.model, state, self.state_path)  # the weights the forward uses
        saved = state["optimizer"]["state"]
        names = {id(p): n for n, p in self.model.named_parameters()}
        for index, param in enumerate(self.params):
            safe_set_full_fp32_param(param, state["model"][names[id(param)]].to(self.device))  # ZeRO's fp32 master
            if index in saved:
                for key in ("exp_avg", "exp_avg_sq"):
                    safe_set_full_optimizer_state(param, saved[index][key].to(self.device), key)
        steps = [float(s["step"]) for s in saved.values()]
        for group_state in self.optimizer.optimizer.state.values():
            if "step" in group_state:
                group_state["step"] = torch.tensor(max(steps, default=0.0), dtype=torch.float32)
        return state["step"]
