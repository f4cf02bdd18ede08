"""Train, evaluate and submit one cell of the study: (task, backbone, mode, head).

The runner sits above the task types: it reads the cell's :class:`~frozenbench.cells.spec.CellSpec`,
asks the task type's module (:class:`~frozenbench.tasks.registry.TaskModule`) for the dataset, the
model and the scores, and the engine (:mod:`frozenbench.engine`) for the training loop.

``train_cell`` writes ``{run_dir}/state.pt`` (resumable, final after the last step),
``log.jsonl`` and ``done.json``; ``evaluate_cell`` rebuilds the model, loads the
final state, scores the validation split and writes ``metrics.json`` with the
provenance a table needs (config hash, checkpoint sha256, seed, package versions,
wall time, peak memory).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from frozenbench.checkpoint.io import safe_load, sha256_of
from frozenbench.engine.device import (
    autocast,
    configure_precision,
    device_record,
    place_model,
    reset_peak_memory,
    select_device,
)
from frozenbench.cells.spec import CellSpec
from frozenbench.engine.loop import train
from frozenbench.errors import UserError
from frozenbench.evaluation.headline import primary_metric
from frozenbench.tasks.registry import BackboneRequest, TaskModule
from frozenbench.utils.atomic import write_json

PACKAGES = ("torch", "timm", "mmengine", "mmcv", "mmdet", "mmsegmentation", "mmaction2", "frozenbench")


def run_fingerprint(spec: CellSpec, checkpoint_sha256: str, mode: str, seed: int) -> str:
    """What identifies a run's inputs: a saved state with another fingerprint is not this run's.

    The spec's explicit training inputs (:meth:`CellSpec.training_inputs`, with its version); the
    dataset enters by content (its digest), not by path: a dataset rebuilt in place with other
    content retrains its heads. The task module's ``PIPELINE_VERSION`` marks code changes of the data
    pipeline that change what a head trains on, ``FEATURES_VERSION`` those of the backbones' forward.
    Test-time options are not training inputs: changing them re-evaluates, never retrains."""
    from frozenbench.data.manifest import dataset_digest
    from frozenbench.models.backbone import FEATURES_VERSION

    digest = spec.fingerprint(
        dataset_digest=dataset_digest(spec.data),
        pipeline_version=getattr(spec.task_type.load(), "PIPELINE_VERSION", 1),
        features_version=FEATURES_VERSION,
    )
    return f"{digest}:{checkpoint_sha256}:{mode}:{seed}"


@dataclass(frozen=True)
class CellRun:
    """One seed's run of a cell: what it trains (``spec``), on which converted backbone
    ``checkpoint`` and in which ``mode`` (frozen | finetune), where its state lives (``run_dir``)
    and its ``seed``. The spec may be given as its JSON (text or dict)."""

    spec: CellSpec
    checkpoint: str
    mode: str
    run_dir: Path
    seed: int

    def __post_init__(self) -> None:
        if self.mode not in ("frozen", "finetune"):
            raise UserError(f"mode must be frozen or finetune, got {self.mode!r}")
        object.__setattr__(self, "spec", as_spec(self.spec))
        object.__setattr__(self, "checkpoint", str(self.checkpoint))
        object.__setattr__(self, "run_dir", Path(self.run_dir))

    def fingerprint(self, checkpoint_sha256: str) -> str:
        return run_fingerprint(self.spec, checkpoint_sha256, self.mode, self.seed)


def as_spec(spec: CellSpec | dict[str, Any] | str) -> CellSpec:
    """A cell spec from its JSON (text or dict), or itself."""
    return spec if isinstance(spec, CellSpec) else CellSpec.from_json(spec)


def _build(spec: CellSpec, checkpoint: str, mode: str, device: torch.device):
    """(task module, data root, number of classes, the trainable model on ``device``) of a cell."""
    from frozenbench.models.backbone import apply_memory_options  # activation_checkpointing, frame_chunk

    task = spec.task_type.load()
    data = Path(spec.data)
    num_classes = len(task.class_names(data))
    backbone = BackboneRequest(
        checkpoint,
        spec.img_size,
        frozen=(mode == "frozen"),
        arch=spec.arch,
        bf16=spec.bf16,
        # random augmentation makes every training input new: a feature cache could only miss and grow
        feature_cache=spec.feature_cache and not spec.augment,
        compile_backbone=spec.compile_backbone,
    )
    model = task.build_model(spec.head, backbone, num_classes)
    apply_memory_options(model, spec.memory_options())
    configure_precision(device, spec.tf32)
    reset_peak_memory(device)
    return task, data, num_classes, place_model(trainable(task, model), device)


def trainable(task: TaskModule, model: torch.nn.Module) -> torch.nn.Module:
    """The model the loop steps (``loss_dict = model(batch)``) for the task model ``model``: the task
    module's ``trainable`` wrapper (OpenMMLab's models: :mod:`frozenbench.openmmlab.training`,
    whose task model is its ``.model``), else the task model itself. A run saves this model's state
    and evaluation loads it into the same wrapper, then scores :func:`task_model` of it."""
    wrap = getattr(task, "trainable", None)
    return wrap(model) if wrap is not None else model


def task_model(task: TaskModule, trained: torch.nn.Module) -> torch.nn.Module:
    """The task model inside :func:`trainable`'s wrapper: what ``evaluate`` scores."""
    return trained.model if getattr(task, "trainable", None) is not None else trained


def feature_cache_stats(model: torch.nn.Module) -> dict[str, float] | None:
    """The hit statistics of the first feature cache any module of ``model`` keeps, else None."""
    cache = next(
        (m.feature_cache for m in model.modules() if hasattr(getattr(m, "feature_cache", None), "stats")), None
    )
    return cache.stats() if cache is not None else None


def _build_dataset(task, spec: CellSpec, data: Path, split: str, train: bool):
    options = dict(spec.data_options)
    if train:  # the training augmentation (the paper's random resize + square crop)
        if spec.augment:
            options["augment"] = spec.augment
    else:  # test-time options that change sampling (video: multi-clip, detection: test scale)
        options["test"] = spec.test
    return task.build_dataset(data, split, spec.img_size, train=train, **options)


def train_cell(run: CellRun, device: str = "auto", workers: int = 0) -> dict[str, Any]:
    """Train (or resume) one run on ``device`` (``auto`` | ``cpu`` | ``cuda``) with ``workers``
    DataLoader processes per rank; neither is a training input (the same seed gives the same
    batches whatever they are), so neither is in the fingerprint."""
    spec = run.spec
    placed = select_device(device)
    torch.manual_seed(run.seed)
    task, data, _, model = _build(spec, run.checkpoint, run.mode, placed)
    dataset = _build_dataset(task, spec, data, "train", train=True)
    fingerprint = run.fingerprint(sha256_of(run.checkpoint))
    summary = train(
        model,
        dataset,
        task.collate,
        run.run_dir,
        spec.train_options(),
        seed=run.seed,
        fingerprint=fingerprint,
        zero_stage=spec.zero_stage,
        device=placed,
        workers=workers,
    )
    summary.update(device_record(placed))
    if summary["world_size"] > 1:
        import torch.distributed as dist

        rank = dist.get_rank()
        summary["placement"] = gathered_placement(workers)
        dist.barrier()
        dist.destroy_process_group()  # before exit: gloo / NCCL ranks can abort on teardown otherwise
        if rank != 0:
            return summary
    summary.setdefault("placement", [rank_placement(workers)])
    stats = feature_cache_stats(model)
    if stats is not None:
        summary["feature_cache"] = stats
    done = {**summary, "spec_hash": spec.digest(), "mode": run.mode, "seed": run.seed}
    write_json(run.run_dir / "done.json", done)
    return summary


def rank_placement(workers: int) -> dict[str, Any]:
    """Where this rank really ran and with what: its host, the CPUs it may run on
    (``os.sched_getaffinity``: what Slurm's task binding gave it), its torch threads and loader
    workers, its ranks, and which run of the Slurm job this is (a requeue counts up)."""
    import os
    import socket

    return {
        "host": socket.gethostname(),
        "rank": int(os.environ.get("RANK", "0")),
        "local_rank": int(os.environ.get("LOCAL_RANK", "0")),
        "node_rank": int(os.environ.get("GROUP_RANK", "0")),
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "cpus": sorted(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "workers": workers,
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm_restart_count": int(os.environ.get("SLURM_RESTART_COUNT", "0")),
    }


def gathered_placement(workers: int) -> list[dict[str, Any]]:
    """Every rank's :func:`rank_placement`, in rank order (a collective: every rank calls it)."""
    import torch.distributed as dist

    placements: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(placements, rank_placement(workers))
    return placements


def _trained(run: CellRun, checkpoint_sha256: str, device: torch.device):
    """(task module, data root, number of classes, trainable model, saved state) of a finished run:
    the cell's model built as training built it, its trained weights loaded."""
    torch.manual_seed(run.seed)
    task, data, num_classes, model = _build(run.spec, run.checkpoint, run.mode, device)
    return task, data, num_classes, model, _load_trained(model, run, checkpoint_sha256)


def _load_trained(model: torch.nn.Module, run: CellRun, checkpoint_sha256: str) -> dict[str, Any]:
    """Load a finished run's trained weights into ``model``; refuse a state trained on other inputs."""
    state_path = run.run_dir / "state.pt"
    state = safe_load(state_path)
    if state.get("fingerprint") != run.fingerprint(checkpoint_sha256):
        raise UserError(
            f"{state_path}: trained with other inputs (spec, dataset content, backbone, mode or seed); "
            f"train this cell again"
        )
    steps = run.spec.train.steps
    if state.get("step", 0) < steps:
        raise UserError(
            f"{state_path}: training stopped at step {state.get('step', 0)} of {steps}; "
            f"finish it (`frozenbench train` resumes) before evaluating"
        )
    _, unexpected = model.load_state_dict(state["model"], strict=False)
    if unexpected:
        raise UserError(f"{state_path}: unexpected keys {unexpected[:5]}")
    return state


def evaluate_cell(
    run: CellRun, out: str | Path, labels: dict[str, str], device: str = "auto", workers: int = 0
) -> dict[str, Any]:
    """Score a finished run on the validation split and write ``out`` (metrics.json)."""
    started = time.time()
    spec = run.spec
    checkpoint_sha256 = sha256_of(run.checkpoint)  # once per job: the fingerprint check and the record
    placed = select_device(device)
    task, data, num_classes, model, state = _trained(run, checkpoint_sha256, placed)
    val = _build_dataset(task, spec, data, "val", train=False)
    inference_started = time.time()  # the model's build and weight loading above are not inference
    with autocast(placed, spec.autocast_bf16):
        metrics = task.evaluate(task_model(task, model), val, num_classes, test=spec.test, workers=workers)
    inference_seconds = time.time() - inference_started
    done_path = run.run_dir / "done.json"
    try:
        done = json.loads(done_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"{done_path}: unreadable ({err}); train this cell first") from None
    record = {
        **labels,
        "mode": run.mode,
        "split": "val",
        "task_type": spec.type,
        "primary_metric": primary_metric(spec.type, metrics),
        "metrics": metrics,
        "num_val": len(val),
        "steps": state["step"],
        "seed": run.seed,
        "spec_hash": spec.digest(),
        "checkpoint": run.checkpoint,
        "checkpoint_sha256": checkpoint_sha256,
        "train_seconds": done.get("train_seconds"),
        "eval_seconds": round(time.time() - started, 1),
        "inference_seconds": round(inference_seconds, 3),
        **device_record(placed),
        "train_device": {k: done.get(k) for k in ("device", "device_name", "gpu_peak_mb", "world_size")},
        "versions": {p: _version(p) for p in PACKAGES},
        "train_curve": _loss_curve(run.run_dir / "log.jsonl"),
    }
    write_json(out, record)
    return record


def _loss_curve(log_path: Path, points: int = 100) -> list[list[float]]:
    """[step, total loss] pairs of the training log, thinned to about ``points`` (for figures)."""
    rows = []
    if log_path.exists():
        for line in log_path.read_text().splitlines():
            try:
                entry = json.loads(line)
                rows.append([int(entry["step"]), float(entry["loss"])])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
    stride = max(1, len(rows) // points)
    return rows[::stride] + ([rows[-1]] if rows and (len(rows) - 1) % stride else [])


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def submit_cell(run: CellRun, out: str | Path, alg: str = "frozenbench", device: str = "auto", workers: int = 0) -> int:
    """Predict the test-dev split with a trained run and write the evaluation server's upload zip.

    Returns the number of detections written."""
    from frozenbench.evaluation import write_submission

    spec = run.spec
    if not hasattr(spec.task_type.load(), "predict_test_dev"):
        raise UserError(f"task type {spec.type!r} has no test-dev submission")
    placed = select_device(device)
    task, data, _, model, _ = _trained(run, sha256_of(run.checkpoint), placed)
    test_dev = task.build_dataset(data, "test-dev", spec.img_size, train=False)
    with autocast(placed, spec.autocast_bf16):
        results = task.predict_test_dev(task_model(task, model), test_dev, workers=workers)
    write_submission(out, results, alg)
    return len(results)
