"""The one resumable training loop: task heads on a frozen (or fine-tuned) backbone, and the
pretraining objectives.

- The contract with the model is detectron2's: ``parts = model(batch)`` takes one collated batch
  and returns ``{name: scalar tensor}``. The step's total is the sum of the entries whose name
  contains "loss", in the dict's order (mmengine's rule: accuracies and other statistics are
  logged, not trained on); the log gets ``{"loss": total, **parts}``. How a kind of model turns
  a batch into such a dict (an OpenMMLab data preprocessor, ``mode="loss"`` and its per-loss
  reduction: :class:`frozenbench.openmmlab.training.OpenMMLabLosses`; an objective's own loss)
  is the model's business, so the loop imports nothing of OpenMMLab.
- A :class:`~frozenbench.engine.steppers.Stepper` (one process, or DeepSpeed ranks) calls the
  model and updates it. A model says how its batches reach the device through its optional
  ``set_non_blocking_copies`` (:func:`frozenbench.engine.device.place_model`); nothing here asks
  which device it is.
- Only parameters with ``requires_grad`` reach the optimizer (the heads, in frozen mode).
- The batch at step k is a pure function of (seed, k) (:mod:`frozenbench.engine.data`): the
  sample order comes from a per-epoch seeded permutation and the data augmentation RNGs are
  reseeded every step, in whichever DataLoader worker builds it; the model's own RNGs (RoI
  sampling, point sampling) are reseeded before each step's forward. A run killed and resumed
  from its newest checkpoint ends with the same weights, whatever the number of workers.
- ``TrainOptions.batch_size`` is the global batch of an optimizer step, whatever the number of ranks:
  :func:`~frozenbench.engine.options.split_batch` splits it into ranks x micro-batches (at most
  ``max_rank_batch`` samples a forward), each rank takes its micro-batches from the same global batch
  indices, and each micro-batch's total is scaled by its share (1 / accumulation) before backward:
  with ranks averaging their gradients, the step's gradient is that of the mean of the per-micro-batch
  losses over the global batch (exactly the gradient of the global batch's mean loss for a loss that
  is a per-sample mean). A step's log line holds the mean of its micro-batches' values; SIGTERM and
  checkpoints act between optimizer steps only, never between micro-batches.
- Loaders pin batches on the GPU path and models copy them without blocking there; the forward
  runs under bf16 autocast when asked (``TrainOptions.autocast_bf16``).
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
from typing import Any, Callable

import torch
import torch.nn as nn

from frozenbench.engine.data import StepBatches, seed_step, train_batches
from frozenbench.engine.device import pin_memory, place_model
from frozenbench.engine.options import BatchSplit, TrainOptions, split_batch
from frozenbench.engine.schedule import warmup_cosine
from frozenbench.engine.steppers import LocalStepper, Stepper, remove_leftovers, truncate_log
from frozenbench.utils import signals


def lr_at(step: int, opts: TrainOptions) -> float:
    return warmup_cosine(step, opts.steps, opts.warmup_steps, opts.lr)


def total_loss(parts: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(total, logged parts) of a model's named scalars: the total is the sum of the entries named
    "...loss...", added in the dict's order from 0 as mmengine's ``BaseModel.parse_losses`` adds
    them (so totals and logs are bit for bit the ones its reduction gave); the logged parts are
    ``{"loss": total, **parts}``, in which a part named "loss" (an objective's one loss, the total
    itself) takes the total's place, as in mmengine's log."""
    for name, value in parts.items():
        if not isinstance(value, torch.Tensor) or value.ndim != 0:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise TypeError(f"the model's {name!r} must be a scalar tensor, got {shape}; reduce it in the model")
    losses = [value for name, value in parts.items() if "loss" in name]
    if not losses:
        raise ValueError(f"the model returned no entry named like a loss, only {sorted(parts)}")
    total = sum(losses)
    return total, {"loss": total, **parts}


def accumulate(stepper: Stepper, micro_batches: list[dict], run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    """Forward and backward each of this rank's micro-batches of a step, each total scaled by its
    share (1 / their number: the split makes them equal), so the gradients add up to those of the
    mean over the micro-batches; the step's logged values are the micro-batches' means (one
    micro-batch: its own values, as they were)."""
    share = 1.0 / len(micro_batches)
    logged: dict[str, torch.Tensor] = {}
    for index, data in enumerate(micro_batches):
        total, parts = total_loss(stepper.forward(data))
        if not torch.isfinite(total):
            where = f" (micro-batch {index + 1} of {len(micro_batches)})" if len(micro_batches) > 1 else ""
            raise FloatingPointError(f"{run_dir}: loss became {total.item()} at step {step}{where}")
        stepper.backward(total, share)
        if len(micro_batches) == 1:
            return parts
        for name, value in parts.items():
            logged[name] = logged.get(name, 0.0) + value.detach().float() * share
    return logged


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


def _resumed_stepper(
    model: nn.Module,
    opts: TrainOptions,
    run_dir: Path,
    fingerprint: str,
    zero_stage: int,
    device: torch.device,
    split: BatchSplit,
    rank: int,
    log: Callable[[str], None],
) -> tuple[Stepper, int]:
    """The run's stepper (DeepSpeed's under a multi-rank launcher, else the local one) and the step
    it resumes from: its saved state when that state has ``fingerprint``, else 0 with any state
    of other inputs discarded; the log is cut back to the resumed step."""
    if split.ranks > 1:
        from frozenbench.engine.deepspeed_engine import DeepSpeedStepper

        stepper: Stepper = DeepSpeedStepper(model, opts, run_dir, zero_stage, device, split)
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
    return stepper, step


def _run_steps(
    model: nn.Module,
    stepper: Stepper,
    batches: Any,
    hooks: list[Hook],
    state: StepState,
    opts: TrainOptions,
    seed: int,
    run_dir: Path,
    rank: int,
) -> None:
    """The steps from ``state.step`` to the schedule's end (or a stop a hook asks for): each takes
    its micro-batches, the step's learning rate and one optimizer update, then runs the hooks;
    SIGTERM is held until a step is whole. Rank 0 appends the log."""
    model.train()
    log_lines = open(run_dir / "log.jsonl", "a") if rank == 0 else contextlib.nullcontext()
    with log_lines as log_file, signals.deferred() as term:
        state.log_file, state.term = log_file, term
        while state.step < opts.steps:
            waited = time.time()
            micro_batches = next(batches)
            state.data_seconds += time.time() - waited
            seed_step(seed, state.step)  # the model's own sampling RNGs, whichever process built the batch
            state.lr = lr_at(state.step, opts)
            state.losses = accumulate(stepper, micro_batches, run_dir, state.step)
            stepper.step(state.lr)
            state.step += 1
            for hook in hooks:
                hook.after_step(state)
            if state.stop:
                break


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
) -> dict[str, Any]:
    """Train (or resume) ``model`` on ``device`` (default CPU), its batches built by ``workers``
    DataLoader processes; ``model(batch)`` gives a step's named scalars (see the module docstring).
    ``fingerprint`` identifies the run's inputs (spec, backbone, mode, seed): a saved state with
    another fingerprint belongs to another run and is discarded.

    ``opts.batch_size`` is the global batch of a step. Under a launcher with WORLD_SIZE > 1 the step
    runs through DeepSpeed (ZeRO ``zero_stage``) and each rank takes its share of it; a share over
    ``opts.max_rank_batch`` is accumulated over micro-batches (:func:`split_batch`, whose errors name
    the option).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = device or torch.device("cpu")
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    split = split_batch(opts.batch_size, world, opts.max_rank_batch)
    if rank == 0:
        remove_leftovers(run_dir)
    place_model(model, device)
    stepper, step = _resumed_stepper(model, opts, run_dir, fingerprint, zero_stage, device, split, rank, log)
    steps = StepBatches(dataset, collate, split, seed, rank)
    batches = train_batches(steps, step, opts.steps, workers, pin_memory=pin_memory(device))
    state = StepState(step=step, started=time.time())
    first_step = step
    hooks = build_hooks(stepper, opts, run_dir, fingerprint, world, device, log)
    _run_steps(model, stepper, batches, hooks, state, opts, seed, run_dir, rank)
    step, data_seconds, started = state.step, state.data_seconds, state.started
    elapsed = time.time() - started
    return {
        "steps": step,
        "train_seconds": round(elapsed, 1),
        "world_size": world,
        "global_batch": split.global_batch,
        "rank_micro_batch": split.micro,
        "accumulation": split.accumulation,
        "steps_this_run": step - first_step,
        "data_wait_fraction": round(data_seconds / max(elapsed, 1e-9), 4),
    }
