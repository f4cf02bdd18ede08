"""How the training loop updates a model and keeps its resumable state: the :class:`Stepper`
protocol, the one-process :class:`LocalStepper` and the state helpers both steppers share.

A stepper calls the model as the loop's contract says: ``model(batch)`` on one collated batch,
returning ``{name: scalar tensor}`` (see :mod:`frozenbench.engine.loop`). The DeepSpeed stepper
(:mod:`frozenbench.engine.deepspeed_engine`) imports its helpers from here, so the loop, which
picks a stepper, and the steppers depend on each other in one direction only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn as nn

from frozenbench.checkpoint.io import safe_load
from frozenbench.engine.device import autocast
from frozenbench.engine.options import TrainOptions
from frozenbench.engine.param_groups import param_groups
from frozenbench.utils.atomic import atomic_file, remove_temporaries


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The scheduled lr, times each group's layer-decay scale."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """What a run must save to resume: every trainable parameter and every buffer outside frozen parts.

    A module names its frozen parts through ``frozen_parts()`` (submodule names whose weights and
    buffers come from a checkpoint and never change); the engine knows nothing else of backbones."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    frozen_prefixes = tuple(
        f"{n}.{part}." if n else f"{part}."
        for n, m in model.named_modules()
        if callable(getattr(m, "frozen_parts", None))
        for part in m.frozen_parts()
    )
    return {
        name: tensor
        for name, tensor in model.state_dict().items()
        if name in trainable or not name.startswith(frozen_prefixes)
    }


def truncate_log(path: Path, step: int) -> None:
    """Keep the log lines up to ``step`` (the state a run starts or resumes from): lines a killed run
    wrote after its last checkpoint, and a line cut short by the kill, are dropped."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    with atomic_file(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in kept))


def remove_leftovers(run_dir: Path) -> None:
    """Delete the temporary siblings a killed run's atomic writers left in ``run_dir`` (a SIGKILL
    during a checkpoint save skips every cleanup); this run is the only writer of its folder."""
    remove_temporaries(run_dir, "*")


def saved_fingerprint(state_path: Path) -> str | None:
    """The fingerprint of the resumable state at ``state_path``; None when there is none (a state
    without optimizer, e.g. an older export, cannot be resumed)."""
    if not state_path.exists():
        return None
    state = safe_load(state_path)
    return state.get("fingerprint", "") if "optimizer" in state else None


def after_update(model: nn.Module) -> None:
    """A model's own update after each optimizer step (a momentum encoder's average): part of the
    step, so a state saved after it resumes to the same weights."""
    hook = getattr(model, "after_optimizer_step", None)
    if callable(hook):
        hook()


def load_trainable(model: nn.Module, state: dict[str, Any], state_path: Path) -> None:
    """Put a saved state's trainable weights into ``model`` (tensors copy onto its device)."""
    _, unexpected = model.load_state_dict(state["model"], strict=False)
    if unexpected:
        raise RuntimeError(f"{state_path}: unexpected keys {unexpected[:5]}")


class Stepper(Protocol):
    """How the loop updates a model and keeps its resumable state (``{run_dir}/state.pt``)."""

    model: nn.Module

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """The model's named scalars for one collated batch (``model(batch)``), under the run's autocast."""

    def backward(self, total: torch.Tensor, share: float) -> None:
        """Backward one micro-batch's ``total`` times ``share`` (its part of this rank's samples of the
        step), adding to the gradients of the micro-batches before it in the step."""

    def step(self, lr: float) -> None:
        """Clip the accumulated gradients, one optimizer step at ``lr`` (gradients averaged over the
        ranks), then the model's own update; the next backward starts the next step's gradients."""

    def saved_fingerprint(self) -> str | None:
        """The fingerprint of the state on disk; None when there is none to resume."""

    def discard(self) -> None:
        """Delete the state on disk (it belongs to a run with other inputs)."""

    def load(self) -> int:
        """Load the state on disk into model and optimizer; the step it was saved at."""

    def save(self, step: int, fingerprint: str) -> None:
        """Write model and optimizer state atomically (collective on every rank)."""


class LocalStepper:
    """One process: torch AdamW over the trainable parameters; state in ``state.pt``."""

    def __init__(self, model: nn.Module, opts: TrainOptions, run_dir: Path, device: torch.device) -> None:
        self.model = model
        self.opts = opts
        self.device = device
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(param_groups(model, opts.weight_decay, opts.layer_decay), lr=opts.lr)
        self.optimizer.zero_grad(set_to_none=True)  # a step's gradients are its micro-batches' alone
        self.state_path = run_dir / "state.pt"

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        with autocast(self.device, self.opts.autocast_bf16):
            return self.model(batch)

    def backward(self, total: torch.Tensor, share: float) -> None:
        (total if share == 1 else total * share).backward()

    def step(self, lr: float) -> None:
        set_lr(self.optimizer, lr)
        if self.opts.grad_clip:
            nn.utils.clip_grad_norm_(self.params, self.opts.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        after_update(self.model)

    def saved_fingerprint(self) -> str | None:
        return saved_fingerprint(self.state_path)

    def discard(self) -> None:
        self.state_path.unlink(missing_ok=True)

    def load(self) -> int:
        state = safe_load(self.state_path)
        load_trainable(self.model, state, self.state_path)
        self.optimizer.load_state_dict(state["optimizer"])
        return state["step"]

    def save(self, step: int, fingerprint: str) -> None:
        with atomic_file(self.state_path) as tmp:
            torch.save(
                {
                    "step": step,
                    "model": trainable_state(self.model),
                    "optimizer": self.optimizer.state_dict(),
                    "fingerprint": fingerprint,
                },
                tmp,
            )
