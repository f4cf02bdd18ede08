"""Train and evaluate one cell of the study: (task, backbone, mode, head).

``train_cell`` writes ``{run_dir}/state.pt`` (resumable, final after the last step),
``log.jsonl`` and ``done.json``; ``evaluate_cell`` rebuilds the model, loads the
final state, scores the validation split and writes ``metrics.json`` with the
provenance a table needs (config hash, checkpoint sha256, seed, package versions,
wall time, peak memory).
"""

from __future__ import annotations

import hashlib
import json
import resource
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from frozenbench.checkpoint.io import safe_load, sha256_of
from frozenbench.engine.loop import TrainOptions, train
from frozenbench.errors import UserError
from frozenbench.utils.atomic import write_json

PACKAGES = ("torch", "timm", "mmengine", "mmcv", "mmdet", "mmsegmentation", "mmaction2", "frozenbench")


TASK_MODULES = {"segmentation": "frozenbench.tasks.segmentation", "detection": "frozenbench.tasks.detection",
                "video": "frozenbench.tasks.video"}


def _task_module(kind: str):
    """The task's module: class_names, build_dataset, build_model, evaluate."""
    import importlib

    if kind not in TASK_MODULES:
        raise UserError(f"task type {kind!r} has no training driver yet (available: {', '.join(TASK_MODULES)})")
    return importlib.import_module(TASK_MODULES[kind])


def run_fingerprint(spec: dict[str, Any], checkpoint: str, mode: str, seed: int) -> str:
    """What identifies a run's inputs: a saved state with another fingerprint is not this run's.
    Test-time options are not training inputs: changing them re-evaluates, never retrains."""
    trained_on = {k: v for k, v in spec.items() if k != "test"}
    return f"{spec_hash(trained_on)}:{sha256_of(checkpoint)}:{mode}:{seed}"


def spec_hash(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _build(spec: dict[str, Any], checkpoint: str, mode: str):
    task = _task_module(spec["type"])
    data = Path(spec["data"])
    num_classes = len(task.class_names(data))
    # random augmentation makes every training input new: a feature cache could only miss and grow
    feature_cache = spec.get("feature_cache", False) and not spec.get("augment")
    model = task.build_model(spec["head"], num_classes, spec["img_size"], checkpoint, frozen=(mode == "frozen"),
                             bf16=spec.get("bf16", False), feature_cache=feature_cache,
                             compile_backbone=spec.get("compile_backbone", False))
    return task, data, num_classes, model


def _build_dataset(task, spec: dict[str, Any], data: Path, split: str, train: bool):
    options = dict(spec.get("data_options", {}))
    if train:  # the training augmentation (the paper's random resize + square crop)
        if spec.get("augment"):
            options["augment"] = spec["augment"]
    else:  # test-time options that change sampling (video: multi-clip, detection: test scale)
        options["test"] = spec.get("test", {})
    return task.build_dataset(data, split, spec["img_size"], train=train, **options)


def train_cell(spec: dict[str, Any], checkpoint: str, mode: str, run_dir: str | Path, seed: int) -> dict[str, Any]:
    if mode not in ("frozen", "finetune"):
        raise UserError(f"mode must be frozen or finetune, got {mode!r}")
    from mmengine.dataset import pseudo_collate

    torch.manual_seed(seed)
    task, data, _, model = _build(spec, checkpoint, mode)
    dataset = _build_dataset(task, spec, data, "train", train=True)
    fingerprint = run_fingerprint(spec, checkpoint, mode, seed)
    summary = train(model, dataset, pseudo_collate, run_dir, TrainOptions.from_config(spec.get("train", {})), seed=seed,
                    fingerprint=fingerprint, zero_stage=spec.get("zero_stage", 2))
    if summary["world_size"] > 1:
        import torch.distributed as dist

        rank = dist.get_rank()
        dist.barrier()
        dist.destroy_process_group()  # ZeRO-3 ranks abort at exit without it
        if rank != 0:
            return summary
    cache = getattr(getattr(getattr(model, "backbone", None), "body", None), "feature_cache", None)
    if cache is not None:
        summary["feature_cache"] = cache.stats()
    write_json(Path(run_dir) / "done.json", {**summary, "spec_hash": spec_hash(spec), "mode": mode, "seed": seed})
    return summary


def _load_trained(model: torch.nn.Module, spec: dict[str, Any], checkpoint: str, mode: str, run_dir: str | Path,
                  seed: int) -> dict[str, Any]:
    """Load a finished run's trained weights into ``model``; refuse a state trained on other inputs."""
    state_path = Path(run_dir) / "state.pt"
    state = safe_load(state_path)
    if state.get("fingerprint") != run_fingerprint(spec, checkpoint, mode, seed):
        raise UserError(f"{state_path}: trained with other inputs (spec, backbone, mode or seed); train this cell again")
    _, unexpected = model.load_state_dict(state["model"], strict=False)
    if unexpected:
        raise UserError(f"{state_path}: unexpected keys {unexpected[:5]}")
    return state


def evaluate_cell(spec: dict[str, Any], checkpoint: str, mode: str, run_dir: str | Path, out: str | Path,
                  seed: int, labels: dict[str, str]) -> dict[str, Any]:
    started = time.time()
    torch.manual_seed(seed)
    task, data, num_classes, model = _build(spec, checkpoint, mode)
    state = _load_trained(model, spec, checkpoint, mode, run_dir, seed)
    test = spec.get("test", {})
    val = _build_dataset(task, spec, data, "val", train=False)
    metrics = task.evaluate(model, val, num_classes, test=test)
    done_path = Path(run_dir) / "done.json"
    try:
        done = json.loads(done_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"{done_path}: unreadable ({err}); train this cell first") from None
    record = {
        **labels, "mode": mode, "split": "val", "metrics": metrics,
        "num_val": len(val), "steps": state["step"], "seed": seed, "spec_hash": spec_hash(spec),
        "checkpoint": str(checkpoint), "checkpoint_sha256": sha256_of(checkpoint),
        "train_seconds": done.get("train_seconds"), "eval_seconds": round(time.time() - started, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "versions": {p: _version(p) for p in PACKAGES},
        "train_curve": _loss_curve(Path(run_dir) / "log.jsonl"),
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


def submit_cell(spec: dict[str, Any], checkpoint: str, mode: str, run_dir: str | Path, out: str | Path,
                seed: int, alg: str = "frozenbench") -> int:
    """Predict the test-dev split with a trained cell and write the evaluation server's upload zip.

    Returns the number of detections written."""
    from frozenbench.evaluation import write_submission

    if not hasattr(_task_module(spec["type"]), "predict_test_dev"):
        raise UserError(f"task type {spec['type']!r} has no test-dev submission (detection only)")
    torch.manual_seed(seed)
    task, data, _, model = _build(spec, checkpoint, mode)
    _load_trained(model, spec, checkpoint, mode, run_dir, seed)
    results = task.predict_test_dev(model, task.build_dataset(data, "test-dev", spec["img_size"], train=False))
    write_submission(out, results, alg)
    return len(results)
