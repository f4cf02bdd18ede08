"""Pretraining a backbone by one objective, on the training engine the task heads use.

The objective (:mod:`frozenbench.pretrain.objectives`) is the engine's model, so pretraining has
the engine's determinism (the batch and augmentation of step k are a pure function of (seed, k)),
resume, SIGTERM handling, logging and, under a launcher, DeepSpeed. Writes, for one backbone:
- ``{run_dir}/state.pt``: the newest resumable state (rewritten atomically every
  ``checkpoint_every`` steps); rerunning the same command resumes from it, a run with other
  options, seed or training data starts afresh instead;
- ``{run_dir}/log.jsonl``: one line per logged step (the loss curve);
- ``{out}``: the canonical backbone checkpoint, with the probe result in its meta;
- ``{run_dir}/probe.json``: k-NN and linear-probe accuracy on the held-out split.
"""

from __future__ import annotations

import hashlib
import json
import time
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import TensorDataset

from frozenbench import schedule_defaults
from frozenbench.checkpoint.io import save_backbone
from frozenbench.engine.device import device_record, reset_peak_memory
from frozenbench.engine.loop import lr_at, train
from frozenbench.engine.options import CADENCE_OPTIONS, SPLIT_OPTIONS, TrainOptions
from frozenbench.models.registry import PRETRAIN_OBJECTIVES, build_arch
from frozenbench.pretrain.data import ImageSet, load_imagefolder, normalize
from frozenbench.pretrain.objectives import build_objective, collate
from frozenbench.pretrain.probe import probe
from frozenbench.utils.atomic import write_json

__all__ = ["PretrainOptions", "lr_at", "pretrain", "state_fingerprint"]


# The loop's schedule for pretraining: the heads' TrainOptions with pretraining's defaults.
PRETRAIN_SCHEDULE = TrainOptions(
    batch_size=schedule_defaults.PRETRAIN_BATCH,
    steps=schedule_defaults.PRETRAIN_STEPS,
    warmup_steps=schedule_defaults.PRETRAIN_WARMUP_STEPS,
    checkpoint_every=100,
)
# the schedule options a pretraining entry sets (fine-tuning's layer decay and autocast are not among them)
SCHEDULE_KEYS = (
    "batch_size",
    "steps",
    "lr",
    "weight_decay",
    "warmup_steps",
    "grad_clip",
    "checkpoint_every",
    "log_every",
    "max_rank_batch",  # batch_size is the global batch; this bounds a rank's forward (engine/options.py)
)


@dataclass
class PretrainOptions:
    """A pretraining run's options: the image size, the loop's schedule (the same
    :class:`TrainOptions` the heads train with) and the objective's own options."""

    image_size: int = 64
    train: TrainOptions = field(default_factory=lambda: PRETRAIN_SCHEDULE)
    objective_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, entry: dict[str, Any]) -> "PretrainOptions":
        """From a config's flat ``pretrain.options`` entry (schedule keys beside image_size)."""
        schedule = {k: v for k, v in entry.items() if k in SCHEDULE_KEYS}
        return cls(
            image_size=entry.get("image_size", cls.image_size),
            train=dataclasses.replace(PRETRAIN_SCHEDULE, **schedule),
            objective_options=dict(entry.get("objective_options", {})),
        )

    def train_options(self) -> TrainOptions:
        """The engine's options: every knob of the loop is the same knob as for the task heads."""
        return self.train

    def flat(self) -> dict[str, Any]:
        """The options in the config's flat shape (what a run's fingerprint and record hold)."""
        schedule = {k: getattr(self.train, k) for k in SCHEDULE_KEYS}
        if schedule["max_rank_batch"] is None:  # unset: the shape (and fingerprint) the options had before it
            del schedule["max_rank_batch"]
        return {"image_size": self.image_size, **schedule, "objective_options": self.objective_options}


def state_fingerprint(
    arch: str, objective: str, opts: PretrainOptions, seed: int, images: torch.Tensor, labels: torch.Tensor
) -> str:
    """What a resumable state was computed from: backbone, objective, options, seed and the training
    images' and labels' bytes (already in memory, so hashing them costs no extra read). A state with
    another fingerprint is never resumed. The global batch is an input; how it is split over ranks and
    micro-batches (the rank count, ``max_rank_batch``) is not: a state resumes on any of them."""
    options = {k: v for k, v in opts.flat().items() if k not in CADENCE_OPTIONS + SPLIT_OPTIONS}
    digest = hashlib.sha256(
        json.dumps(
            {"arch": arch, "objective": objective, "options": options, "seed": seed}, sort_keys=True, default=str
        ).encode()
    )
    for tensor in (images, labels):
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{tuple(data.shape)}{data.dtype}".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def pretrain(
    arch: str,
    objective: str,
    data_root: str | Path,
    out: str | Path,
    run_dir: str | Path,
    opts: PretrainOptions,
    seed: int = 0,
    meta: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
    device: torch.device | None = None,
) -> dict[str, Any]:
    """Pretrain ``arch`` by ``objective`` on ``device`` (default CPU), probe it, write ``out``."""
    device = device or torch.device("cpu")
    if objective not in PRETRAIN_OBJECTIVES:
        raise ValueError(f"unknown pretraining objective {objective!r}; choose from {', '.join(PRETRAIN_OBJECTIVES)}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)  # the backbone's and the objective's initial weights
    reset_peak_memory(device)
    train_set = load_imagefolder(data_root, "train", opts.image_size)
    val_set = load_imagefolder(data_root, "val", opts.image_size)
    backbone = build_arch(arch, opts.image_size)
    started = time.time()
    steps = 0
    if objective != "random":
        result = _train_objective(arch, objective, backbone, train_set, run_dir, opts, seed, log, device)
        steps = result["steps"]
        if steps < opts.train.steps:  # stopped by SIGTERM: the state is saved, a rerun resumes
            return result
    train_seconds = time.time() - started
    result = probe(backbone.to(device), train_set, val_set, arch, seed=seed)
    result.update(
        {
            "arch": arch,
            "objective": objective,
            "steps": steps,
            "train_seconds": round(train_seconds, 1),
            "seed": seed,
            # the job's peak memory (training and probe): what the GPU smoke and a memory plan read
            **{k: v for k, v in device_record(device).items() if k in ("device_name", "gpu_peak_mb", "peak_rss_mb")},
        }
    )
    write_json(run_dir / "probe.json", result)
    _save_pretrained(out, arch, backbone, objective, data_root, opts, seed, result, meta)
    log(json.dumps(result))
    return result


def _train_objective(
    arch: str,
    objective: str,
    backbone: torch.nn.Module,
    train_set: ImageSet,
    run_dir: Path,
    opts: PretrainOptions,
    seed: int,
    log: Callable[[str], None],
    device: torch.device,
) -> dict[str, Any]:
    """Train ``backbone`` in place by ``objective`` on the training split: the engine loop's result."""
    model = build_objective(objective, backbone, len(train_set.classes), opts.image_size, opts.objective_options)
    dataset = TensorDataset(normalize(train_set.images, arch), train_set.labels)
    return train(
        model,
        dataset,
        collate,
        run_dir,
        opts.train_options(),
        seed=seed,
        log=log,
        fingerprint=state_fingerprint(arch, objective, opts, seed, train_set.images, train_set.labels),
        device=device,
    )


def _save_pretrained(
    out: str | Path,
    arch: str,
    backbone: torch.nn.Module,
    objective: str,
    data_root: str | Path,
    opts: PretrainOptions,
    seed: int,
    result: dict[str, Any],
    meta: dict[str, Any] | None,
) -> None:
    """Write the canonical backbone checkpoint ``out``, with how it was pretrained and its probe in the meta."""
    save_backbone(
        out,
        arch,
        backbone.cpu().state_dict(),
        {
            "pretrain_objective": objective,
            "pretrain_data": str(data_root),
            "image_size": opts.image_size,
            "seed": seed,
            "options": opts.flat(),  # the config's flat shape, as before
            "probe": result,
            **(meta or {}),
        },
    )
