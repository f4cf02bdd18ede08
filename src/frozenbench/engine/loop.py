"""The one resumable training loop: task heads on a frozen (or fine-tuned) backbone, and the
pretraining objectives.

- The loop asks a model for its losses through its :class:`~frozenbench.engine.model_kind.ModelKind`
  (an OpenMMLab model's preprocessor and loss reduction by default,
  :data:`frozenbench.openmmlab.runtime.OPENMMLAB_MODEL`) and updates it through a :class:`Stepper`
  (one process, or DeepSpeed ranks). The model kind also says how batches reach the device
  (:func:`frozenbench.engine.device.place_model`); nothing here asks which device it is.
- Only parameters with ``requires_grad`` reach the optimizer (the heads, in frozen mode).
- The batch at step k is a pure function of (seed, k) (:mod:`frozenbench.engine.data`): the
  sample order comes from a per-epoch seeded permutation and the data augmentation RNGs are
  reseeded every step, in whichever DataLoader worker builds it; the model's own RNGs (RoI
  sampling, point sampling) are reseeded before each step's forward. A run killed and resumed
  from its newest checkpoint ends with the same weights, whatever the number of workers.
- Batches reach the model's device as its kind moves them (an OpenMMLab data preprocessor, an
  objective's own copies), pinned and non-blocking on the GPU path; the forward runs under bf16
  autocast when asked (``TrainOptions.autocast_bf16``).
- ``{run_dir}/state.pt`` (trainable weights, optimizer, step) is rewritten atomically
  every ``checkpoint_every`` steps; ``{run_dir}/log.jsonl`` gets one line per logged step.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
import torch.nn as nn

from frozenbench import schedule_defaults
from frozenbench.checkpoint.io import safe_load
from frozenbench.engine.data import seed_step, train_batches
from frozenbench.engine.device import autocast, pin_memory, place_model
from frozenbench.engine.model_kind import ModelKind
from frozenbench.engine.param_groups import param_groups
from frozenbench.engine.schedule import warmup_cosine
from frozenbench.openmmlab.runtime import OPENMMLAB_MODEL
from frozenbench.utils import signals
from frozenbench.utils.atomic import atomic_file, remove_temporaries


@dataclass
class TrainOptions:
    steps: int = schedule_defaults.TRAIN_STEPS
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = schedule_defaults.TRAIN_WARMUP_STEPS
    grad_clip: float = 5.0
    checkpoint_every: int = 50
    log_every: int = 10
    # Layer-wise lr decay for fine-tuning (1.0: none); no effect on a frozen backbone.
    layer_decay: float = 1.0
    # bf16 autocast of the forward (heads and a fine-tuned backbone); DeepSpeed's bf16 mode on ranks
    autocast_bf16: bool = False

    @classmethod
    def from_config(cls, entry: dict[str, Any]) -> "TrainOptions":
        return cls(**{k: v for k, v in entry.items() if k in cls.__dataclass_fields__})


def lr_at(step: int, opts: TrainOptions) -> float:
    return warmup_cosine(step, opts.steps, opts.warmup_steps, opts.lr)


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
        """The model's losses for a preprocessed batch (``model(**batch, mode="loss")``)."""

    def step(self, total: torch.Tensor, lr: float) -> None:
        """Backward ``total``, clip, one optimizer step at ``lr``, then the model's own update."""

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
        self.state_path = run_dir / "state.pt"

    def forward(self, batch: dict) -> dict:
        with autocast(self.device, self.opts.autocast_bf16):
            return self.model(**batch, mode="loss")

    def step(self, total: torch.Tensor, lr: float) -> None:
        set_lr(self.optimizer, lr)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.opts.grad_clip:
            nn.utils.clip_grad_norm_(self.params, self.opts.grad_clip)
        self.optimizer.step()
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


def _stop_requested(term, world: int, device: torch.device) -> bool:
    """Whether any rank got SIGTERM: all ranks stop after the same step (saving is collective)."""
    if world == 1:
        return term.requested
    import torch.distributed as dist

    flag = torch.tensor([1.0 if term.requested else 0.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if flag.item() and not term.requested:
        term.signum = signal.SIGTERM  # raised when the deferred block ends, as on the rank that got it
    return bool(flag.item())


@dataclass
class StepState:
    """What the hooks see after each optimizer step."""

    step: int
    started: float
    lr: float = 0.0
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    data_seconds: float = 0.0
    saved: bool = False  # the state of this step is on disk
    stop: bool = False  # end the loop after this step
    log_file: Any = None  # rank 0's log.jsonl, else None
    term: Any = None  # the deferred-SIGTERM flag of :func:`frozenbench.utils.signals.deferred`


class Hook:
    """A periodic action of the loop, run after every optimizer step."""

    def after_step(self, state: StepState) -> None:
        raise NotImplementedError


class LogHook(Hook):
    """One JSON line per ``log_every`` steps (and the last), on rank 0: step, lr, time, losses."""

    def __init__(self, every: int, total: int) -> None:
        self.every, self.total = every, total

    def after_step(self, state: StepState) -> None:
        if state.log_file is None or not (state.step % self.every == 0 or state.step == self.total):
            return
        elapsed = time.time() - state.started
        record = {
            "step": state.step,
            "lr": state.lr,
            "elapsed_s": round(elapsed, 2),
            "data_wait": round(state.data_seconds / max(elapsed, 1e-9), 4),
            **{k: round(float(v.detach()), 5) for k, v in state.losses.items()},
        }
        state.log_file.write(json.dumps(record) + "\n")
        state.log_file.flush()


class CheckpointHook(Hook):
    """The resumable state every ``every`` steps and at the last one (collective on all ranks)."""

    def __init__(self, stepper: Stepper, every: int, total: int, fingerprint: str) -> None:
        self.stepper, self.every, self.total, self.fingerprint = stepper, every, total, fingerprint

    def after_step(self, state: StepState) -> None:
        state.saved = state.step % self.every == 0 or state.step == self.total
        if state.saved:
            self.stepper.save(state.step, self.fingerprint)


class PreemptionHook(Hook):
    """On SIGTERM (any rank's, agreed on by all): save this step's state unless just saved, and stop."""

    def __init__(
        self,
        stepper: Stepper,
        total: int,
        fingerprint: str,
        world: int,
        device: torch.device,
        run_dir: Path,
        log: Callable[[str], None],
    ) -> None:
        self.stepper, self.total, self.fingerprint = stepper, total, fingerprint
        self.world, self.device, self.run_dir, self.log = world, device, run_dir, log

    def after_step(self, state: StepState) -> None:
        if not _stop_requested(state.term, self.world, self.device):
            return
        if not state.saved:
            self.stepper.save(state.step, self.fingerprint)
        self.log(f"{self.run_dir}: SIGTERM: state saved at step {state.step} of {self.total}; a rerun resumes from it")
        state.stop = True


def build_hooks(
    stepper: Stepper,
    opts: TrainOptions,
    run_dir: Path,
    fingerprint: str,
    world: int,
    device: torch.device,
    log: Callable[[str], None],
) -> list[Hook]:
    """The loop's periodic actions, in the order they run after each step:

    1. logging first: a step's log line is written before any state that includes the step, so a
       resumed run (which cuts the log back to its saved step) never lacks a line it trained;
    2. checkpointing next, on its cadence: it tells the preemption hook whether this step is saved;
    3. preemption last: it may save once more (only when the cadence did not) and ends the loop,
       so nothing may come after it.
    """
    return [
        LogHook(opts.log_every, opts.steps),
        CheckpointHook(stepper, opts.checkpoint_every, opts.steps, fingerprint),
        PreemptionHook(stepper, opts.steps, fingerprint, world, device, run_dir, log),
    ]


def train(
    model: nn.Module,
    dataset,
    collate: Callable,
    run_dir: str | Path,
    opts: TrainOptions,
    seed: int = 0,
    log: Callable[[str], None] = print,
    fingerprint: str = "",
    zero_stage: int = 2,
    device: torch.device | None = None,
    workers: int = 0,
    kind: ModelKind = OPENMMLAB_MODEL,
) -> dict[str, Any]:
    """Train (or resume) ``model`` on ``device`` (default CPU), its batches built by ``workers``
    DataLoader processes; ``kind.losses(model, batch, stepper.forward)`` gives a step's (total, parts).
    ``fingerprint`` identifies the run's inputs (spec, backbone, mode, seed): a saved state with
    another fingerprint belongs to another run and is discarded.

    Under a launcher with WORLD_SIZE > 1 the step runs through DeepSpeed (ZeRO ``zero_stage``) and
    each rank takes its slice of the global batch of ``batch_size x world_size`` samples.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = device or torch.device("cpu")
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    if rank == 0:
        remove_leftovers(run_dir)
    place_model(model, device, kind)
    if world > 1:
        from frozenbench.engine.deepspeed_engine import DeepSpeedStepper

        stepper: Stepper = DeepSpeedStepper(model, opts, run_dir, zero_stage, device)
    else:
        stepper = LocalStepper(model, opts, run_dir, device)
    log_path = run_dir / "log.jsonl"
    saved = stepper.saved_fingerprint()
    if saved is not None and saved != fingerprint:
        log(f"{run_dir}: state saved by a run with other inputs; starting afresh")
        stepper.discard()
        if rank == 0:
            log_path.unlink(missing_ok=True)
        saved = None
    step = 0
    if saved is not None:
        step = stepper.load()
        log(f"resuming from step {step} ({run_dir})")
    if rank == 0:
        truncate_log(log_path, step)
    batches = train_batches(
        dataset, collate, opts.batch_size, seed, step, opts.steps, world, rank, workers, pin_memory=pin_memory(device)
    )
    state = StepState(step=step, started=time.time())
    first_step = step
    hooks = build_hooks(stepper, opts, run_dir, fingerprint, world, device, log)
    model.train()
    with open(log_path, "a") if rank == 0 else contextlib.nullcontext() as log_file, signals.deferred() as term:
        state.log_file, state.term = log_file, term
        while state.step < opts.steps:
            waited = time.time()
            data = next(batches)
            state.data_seconds += time.time() - waited
            seed_step(seed, state.step)  # the model's own sampling RNGs, whichever process built the batch
            state.lr = lr_at(state.step, opts)
            total, state.losses = kind.losses(model, data, stepper.forward)
            if not torch.isfinite(total):
                raise FloatingPointError(f"{run_dir}: loss became {total.item()} at step {state.step}")
            stepper.step(total, state.lr)
            state.step += 1
            for hook in hooks:
                hook.after_step(state)
            if state.stop:
                break
    step, data_seconds, started = state.step, state.data_seconds, state.started
    elapsed = time.time() - started
    return {
        "steps": step,
        "train_seconds": round(elapsed, 1),
        "world_size": world,
        "steps_this_run": step - first_step,
        "data_wait_fraction": round(data_seconds / max(elapsed, 1e-9), 4),
    }
