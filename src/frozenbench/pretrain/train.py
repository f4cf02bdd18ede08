"""The pretraining loop: seeded, resumable, logged as JSON lines, gated by a probe.

Writes, for one backbone:
- ``{run_dir}/state.pt``: the newest resumable state (rewritten atomically every
  ``checkpoint_every`` steps); rerunning the same command resumes from it, a run with other
  options, seed or training data starts afresh instead;
- ``{run_dir}/log.jsonl``: one line per logged step (the loss curve);
- ``{out}``: the canonical backbone checkpoint, with the probe result in its meta;
- ``{run_dir}/probe.json``: k-NN and linear-probe accuracy on the held-out split.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from frozenbench.checkpoint.io import safe_load, save_backbone
from frozenbench.engine.loop import truncate_log
from frozenbench.engine.param_groups import param_groups
from frozenbench.engine.schedule import warmup_cosine
from frozenbench.models.registry import build_arch
from frozenbench.pretrain.data import load_imagefolder, normalize
from frozenbench.pretrain.probe import probe
from frozenbench.pretrain.tasks import build_task
from frozenbench.utils.atomic import atomic_file, write_json

TASKS = ("supervised", "contrastive", "mim", "random")


@dataclass
class PretrainOptions:
    image_size: int = 64
    batch_size: int = 128
    steps: int = 600
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    grad_clip: float = 5.0
    checkpoint_every: int = 100
    log_every: int = 10
    task_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, entry: dict[str, Any]) -> "PretrainOptions":
        known = {k: v for k, v in entry.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def lr_at(step: int, opts: PretrainOptions) -> float:
    return warmup_cosine(step, opts.steps, opts.warmup_steps, opts.lr)


# options that change how often a run writes, not what it computes
_CADENCE_OPTIONS = ("checkpoint_every", "log_every")


def state_fingerprint(
    arch: str, task_name: str, opts: PretrainOptions, seed: int, images: torch.Tensor, labels: torch.Tensor
) -> str:
    """What a resumable state was computed from: backbone, objective, options, seed and the training
    images' and labels' bytes (already in memory, so hashing them costs no extra read). A state with
    another fingerprint is never resumed."""
    import hashlib

    options = {k: v for k, v in asdict(opts).items() if k not in _CADENCE_OPTIONS}
    digest = hashlib.sha256(
        json.dumps(
            {"arch": arch, "task": task_name, "options": options, "seed": seed}, sort_keys=True, default=str
        ).encode()
    )
    for tensor in (images, labels):
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{tuple(data.shape)}{data.dtype}".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _save_state(
    path: Path, task: nn.Module, optimizer: torch.optim.Optimizer, step: int, gen: torch.Generator, fingerprint: str
) -> None:
    with atomic_file(path) as tmp:
        torch.save(
            {
                "step": step,
                "model": task.state_dict(),
                "optimizer": optimizer.state_dict(),
                "generator": gen.get_state(),
                "torch_rng": torch.get_rng_state(),
                "fingerprint": fingerprint,
            },
            tmp,
        )


def pretrain(
    arch: str,
    task_name: str,
    data_root: str | Path,
    out: str | Path,
    run_dir: str | Path,
    opts: PretrainOptions,
    seed: int = 0,
    meta: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
    device: torch.device | None = None,
) -> dict[str, Any]:
    """Pretrain ``arch`` by ``task_name`` on ``device`` (default CPU), probe it, write ``out``."""
    device = device or torch.device("cpu")
    if task_name not in TASKS:
        raise ValueError(f"unknown pretraining task {task_name!r}; choose from {', '.join(TASKS)}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    train = load_imagefolder(data_root, "train", opts.image_size)
    val = load_imagefolder(data_root, "val", opts.image_size)
    backbone = build_arch(arch, opts.image_size)
    started = time.time()
    step = 0
    if task_name != "random":
        task = build_task(task_name, backbone, len(train.classes), opts.image_size, opts.task_options).to(device)
        optimizer = torch.optim.AdamW(param_groups(task, opts.weight_decay), lr=opts.lr, betas=(0.9, 0.999))
        state_path, log_path = run_dir / "state.pt", run_dir / "log.jsonl"
        fingerprint = state_fingerprint(arch, task_name, opts, seed, train.images, train.labels)
        state = safe_load(state_path) if state_path.exists() else None
        if state is not None and state.get("fingerprint") != fingerprint:
            log(f"{state_path}: saved by a run with other options, seed or data; starting afresh")
            state_path.unlink()
            state = None
        if state is not None:
            task.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            gen.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            step = state["step"]
            log(f"resuming {arch}/{task_name} from step {step} ({state_path})")
        truncate_log(log_path, step)  # also on a fresh start: drop what a killed first attempt logged
        images = normalize(train.images, arch)
        order = torch.randperm(len(images), generator=gen)
        cursor = 0
        task.train()
        with open(log_path, "a") as log_file:
            while step < opts.steps:
                if cursor + opts.batch_size > len(order):
                    order, cursor = torch.randperm(len(images), generator=gen), 0
                idx = order[cursor : cursor + opts.batch_size]
                cursor += opts.batch_size
                lr = lr_at(step, opts)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss = task.loss(images[idx], train.labels[idx], gen)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"{arch}/{task_name}: loss became {loss.item()} at step {step}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(task.parameters(), opts.grad_clip)
                optimizer.step()
                if hasattr(task, "after_step"):
                    task.after_step()
                step += 1
                if step % opts.log_every == 0 or step == opts.steps:
                    record = {
                        "step": step,
                        "loss": round(loss.item(), 5),
                        "lr": lr,
                        "elapsed_s": round(time.time() - started, 2),
                    }
                    log_file.write(json.dumps(record) + "\n")
                    log_file.flush()
                if step % opts.checkpoint_every == 0 or step == opts.steps:
                    # A resumed run draws a fresh sample order from the restored generator; the
                    # uninterrupted run draws the same one here, so both continue identically.
                    _save_state(state_path, task, optimizer, step, gen, fingerprint)
                    order, cursor = torch.randperm(len(images), generator=gen), 0
    train_seconds = time.time() - started
    result = probe(backbone.to(device), train, val, arch, seed=seed)
    result.update(
        {"arch": arch, "task": task_name, "steps": step, "train_seconds": round(train_seconds, 1), "seed": seed}
    )
    write_json(run_dir / "probe.json", result)
    save_backbone(
        out,
        arch,
        backbone.cpu().state_dict(),
        {
            "pretrain_task": task_name,
            "pretrain_data": str(data_root),
            "image_size": opts.image_size,
            "seed": seed,
            "options": asdict(opts),
            "probe": result,
            **(meta or {}),
        },
    )
    log(json.dumps(result))
    return result
