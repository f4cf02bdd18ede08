"""A resumable training loop for OpenMMLab models whose backbone may be frozen.

- Only parameters with ``requires_grad`` reach the optimizer (the heads, in frozen mode).
- The batch at step k is a pure function of (seed, k): the sample order comes from a
  per-epoch seeded permutation and the data augmentation RNGs are reseeded every step,
  so a run killed and resumed from its newest checkpoint ends with the same weights.
- ``{run_dir}/state.pt`` (trainable weights, optimizer, step) is rewritten atomically
  every ``checkpoint_every`` steps; ``{run_dir}/log.jsonl`` gets one line per logged step.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from frozenbench.checkpoint.io import safe_load
from frozenbench.engine.schedule import warmup_cosine
from frozenbench.utils.atomic import atomic_file


@dataclass
class TrainOptions:
    steps: int = 200
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 20
    grad_clip: float = 5.0
    checkpoint_every: int = 50
    log_every: int = 10

    @classmethod
    def from_config(cls, entry: dict[str, Any]) -> "TrainOptions":
        return cls(**{k: v for k, v in entry.items() if k in cls.__dataclass_fields__})


def lr_at(step: int, opts: TrainOptions) -> float:
    return warmup_cosine(step, opts.steps, opts.warmup_steps, opts.lr)


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """What a run must save to resume: every trainable parameter and every buffer outside frozen parts."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    frozen_prefixes = tuple(f"{n}." for n, m in model.named_modules()
                            if getattr(m, "frozen", False) and hasattr(m, "body"))
    state = {}
    for name, tensor in model.state_dict().items():
        if name in trainable or not name.startswith(tuple(p + "body." for p in frozen_prefixes)):
            state[name] = tensor
    return state


def batch_indices(step: int, batch_size: int, num_samples: int, seed: int) -> list[int]:
    """Sample indices of step ``step``: consecutive slices of a per-epoch seeded permutation."""
    per_epoch = max(num_samples // batch_size, 1)
    epoch, offset = divmod(step, per_epoch)
    order = torch.randperm(num_samples, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    return order[offset * batch_size:(offset + 1) * batch_size].tolist()


def seed_step(seed: int, step: int) -> None:
    """Reseed the RNGs that OpenMMLab transforms draw from (random, numpy, torch)."""
    value = (seed * 1_000_003 + step) % (2 ** 31)
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


def train(model: nn.Module, dataset, collate: Callable, run_dir: str | Path, opts: TrainOptions, seed: int = 0,
          log: Callable[[str], None] = print, fingerprint: str = "") -> dict[str, Any]:
    """Train (or resume) ``model``. ``fingerprint`` identifies the run's inputs (spec, backbone,
    mode, seed): a saved state with another fingerprint belongs to another run and is discarded."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": opts.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=opts.lr)
    state_path, log_path = run_dir / "state.pt", run_dir / "log.jsonl"
    step = 0
    if state_path.exists() and safe_load(state_path).get("fingerprint", "") != fingerprint:
        log(f"{state_path}: saved by a run with other inputs; starting afresh")
        state_path.unlink()
        log_path.unlink(missing_ok=True)
    if state_path.exists():
        state = safe_load(state_path)
        missing, unexpected = model.load_state_dict(state["model"], strict=False)
        if unexpected:
            raise RuntimeError(f"{state_path}: unexpected keys {unexpected[:5]}")
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
        log(f"resuming from step {step} ({state_path})")
        if log_path.exists():
            kept = [l for l in log_path.read_text().splitlines() if l and json.loads(l)["step"] <= step]
            with atomic_file(log_path) as tmp:
                tmp.write_text("".join(l + "\n" for l in kept))
    started = time.time()
    model.train()
    with open(log_path, "a") as log_file:
        while step < opts.steps:
            seed_step(seed, step)
            data = collate([dataset[i] for i in batch_indices(step, opts.batch_size, len(dataset), seed)])
            lr = lr_at(step, opts)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = model.data_preprocessor(data, training=True)
            losses = model(**batch, mode="loss")
            total, parsed = model.parse_losses(losses)
            if not torch.isfinite(total):
                raise FloatingPointError(f"loss became {total.item()} at step {step}")
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            if opts.grad_clip:
                nn.utils.clip_grad_norm_(params, opts.grad_clip)
            optimizer.step()
            step += 1
            if step % opts.log_every == 0 or step == opts.steps:
                record = {"step": step, "lr": lr, "elapsed_s": round(time.time() - started, 2),
                          **{k: round(float(v.detach()), 5) for k, v in parsed.items()}}
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
            if step % opts.checkpoint_every == 0 or step == opts.steps:
                with atomic_file(state_path) as tmp:
                    torch.save({"step": step, "model": trainable_state(model), "optimizer": optimizer.state_dict(),
                                "fingerprint": fingerprint}, tmp)
    return {"steps": step, "train_seconds": round(time.time() - started, 1)}
