"""Peak GPU memory of a study cell, estimated before any job is queued (docs/memory.md).

A cell that cannot fit its GPU would otherwise OOM after hours in a Slurm queue. The estimate of
one training step's peak adds up:

- **weights**: the backbone's parameters in fp32 (counted on the meta device);
- **gradients and AdamW moments**: 12 bytes per trainable backbone parameter (fine-tuned cells);
  on several ranks ZeRO shards them, which this single-rank figure does not count on (an upper
  bound on this part);
- **backbone activations**: fine-tuned cells, the bytes of every tensor autograd saves for backward
  in the backbone's forward at the cell's per-GPU input (frames x clips for video), under bf16
  autocast when the task sets it, plus with activation checkpointing the largest block's
  recomputation in backward; frozen cells, the peak of live tensors of the ``no_grad`` forward
  (one frame chunk at a time);
- **heads**: whatever else a measured step of the same cell kind and mode used on a GPU (the smoke
  record's ``train_gpu_peak_mb`` minus its own backbone part computed as above), scaled by batch x
  input area. Without a GPU record the heads' share is unknown and the estimate is a lower bound.

Activations are counted without memory or compute: the backbone is built on the meta device and its
weights become fake CPU tensors (``torch._subclasses.FakeTensorMode``: meta storage with a CPU
device). Plain meta tensors would count something no GPU does: they take no autocast, and their
attention falls back to the math kernel that keeps the N x N attention matrix, where the CPU's and
the GPU's fused kernels keep only the output and its log-sum-exp. tests/test_memory_estimate.py
checks the count against the same forward on real CPU tensors.

Counting a large Swin at a cell's input takes seconds of CPU (fake tensors dispatch every op through
Python), and the DAG-start check runs at every snakemake start: counts are kept in memory and on
disk (``$FROZENBENCH_MEMORY_CACHE``, default ``~/.cache/frozenbench/memory_counts.json``), keyed by
the counting code, the backbone code and the torch and timm versions, so only the first start with
a new config or new code counts.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import weakref
from collections.abc import Iterator
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

from frozenbench.config import ConfigError
from frozenbench.tasks.registry import get_task_type

MIB = 2**20
# A cell must fit in this fraction of the card: the CUDA context (~0.5 GiB), the allocator's
# fragmentation and kernels' workspaces take the rest.
FIT_MARGIN = 0.9
# Memory of one GPU in GB by Slurm GPU type (gpu_model, compared in lower case): where a card comes
# in two sizes, the smaller one, with a note saying how to declare the larger.
KNOWN_GPU_MEMORY_GB = {
    "a100": 40,
    "a100_80gb": 80,
    "a100-80gb": 80,
    "h100": 80,
    "h200": 141,
    "gh200": 96,
    "b200": 180,
    "v100": 32,
    "a40": 48,
    "l40": 48,
    "l40s": 48,
    "a6000": 48,
    "rtx_a6000": 48,
    "a30": 24,
    "a10": 24,
    "l4": 24,
    "rtx_3090": 24,
    "rtx_4090": 24,
    "t4": 16,
}
GPU_MEMORY_NOTES = {
    "a100": "a100 taken as the 40 GB model; on 80 GB A100s set compute.{kind}.gpu_memory_gb: 80",
    "v100": "v100 taken as the 32 GB model; on 16 GB V100s set compute.{kind}.gpu_memory_gb: 16",
}
# Frames through the backbone per call at test time unless frame_chunk says otherwise
# (openmmlab/video.py FramewiseBackbone.max_frames_per_call) and views per evaluation batch
# (tasks/video.py MAX_TEST_VIEWS_PER_BATCH); images per evaluation batch: the task type's eval_batch.
VIDEO_TEST_FRAMES_PER_CALL = 64
VIDEO_TEST_VIEWS_PER_BATCH = 8
RECORDS_DIR = Path(__file__).resolve().parents[3] / "bench" / "records"
_CHECKPOINT_KWARGS = ("use_reentrant", "context_fn", "determinism_check", "debug", "preserve_rng_state")


# -- counting on fake tensors ------------------------------------------------------------------------


@dataclass(frozen=True)
class BackboneCount:
    """Bytes of one backbone step at one input: ``saved`` kept for backward (fine-tuned), ``recompute``
    the largest checkpointed block's own saved tensors (rebuilt in backward, one at a time),
    ``forward_peak`` the peak of live tensors in a ``no_grad`` forward (frozen, evaluation)."""

    params: int
    saved: int = 0
    recompute: int = 0
    forward_peak: int = 0


def _storage_key(tensor: Any) -> int:
    return tensor.untyped_storage()._cdata


class _SavedBytes:
    """Bytes of the distinct storages autograd saves for backward (parameters left out: they are
    the weights), and with checkpointing the inputs each checkpointed block keeps for its replay."""

    def __init__(self, exclude: set[int]) -> None:
        self.exclude = exclude
        self.storages: dict[int, int] = {}
        self.largest_region = 0

    def add(self, tensor: Any) -> None:
        key = _storage_key(tensor)
        if key not in self.exclude:
            self.storages[key] = tensor.untyped_storage().nbytes()

    def pack(self, tensor: Any) -> Any:
        self.add(tensor)
        return tensor

    @property
    def total(self) -> int:
        return sum(self.storages.values())

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        import torch
        import torch.utils.checkpoint

        original = torch.utils.checkpoint.checkpoint

        def checkpoint(function, *args, **kwargs):
            # non-reentrant checkpointing keeps a block's inputs in a closure, not as saved tensors
            for arg in args:
                if isinstance(arg, torch.Tensor):
                    self.add(arg)
            # what the block would save itself: rebuilt in backward, one block at a time
            inner = _SavedBytes(self.exclude)
            own = {k: v for k, v in kwargs.items() if k not in _CHECKPOINT_KWARGS}
            with torch.autograd.graph.saved_tensors_hooks(inner.pack, _unpack):
                function(*args, **own)
            self.largest_region = max(self.largest_region, inner.total)
            return original(function, *args, **kwargs)

        with (
            mock.patch.object(torch.utils.checkpoint, "checkpoint", checkpoint),
            torch.autograd.graph.saved_tensors_hooks(self.pack, _unpack),
        ):
            yield


def _unpack(tensor: Any) -> Any:
    return tensor


def _live_peak_mode(exclude: set[int]):
    """A dispatch mode tracking the bytes of live storages (each released when its last tensor dies)
    and their peak: a ``no_grad`` forward's working set."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class LivePeak(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.refs: dict[int, int] = {}
            self.sizes: dict[int, int] = {}
            self.current = self.peak = 0

        def _release(self, key: int) -> None:
            self.refs[key] -= 1
            if not self.refs[key]:
                self.current -= self.sizes.pop(key)
                del self.refs[key]

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for tensor in tree_flatten(out)[0]:
                if not isinstance(tensor, torch.Tensor):
                    continue
                key = _storage_key(tensor)
                if key in exclude:
                    continue
                if key not in self.refs:
                    self.refs[key] = 0
                    self.sizes[key] = tensor.untyped_storage().nbytes()
                    self.current += self.sizes[key]
                    self.peak = max(self.peak, self.current)
                self.refs[key] += 1
                weakref.finalize(tensor, self._release, key)
            return out

    return LivePeak()


def _cache_path() -> Path:
    if os.environ.get("FROZENBENCH_MEMORY_CACHE"):
        return Path(os.environ["FROZENBENCH_MEMORY_CACHE"])
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "frozenbench" / "memory_counts.json"


@functools.lru_cache(maxsize=1)
def _code_key() -> str:
    """What a count depends on besides its arguments: this module, the backbone modules and the
    torch and timm versions (read from the installed metadata: no import of torch)."""
    from importlib.metadata import version

    models = Path(__file__).resolve().parents[1] / "models"
    digest = hashlib.sha256(f"torch {version('torch')} timm {version('timm')}".encode())
    for path in [Path(__file__).resolve(), *sorted(models.glob("*.py"))]:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _read_cache() -> dict[str, Any]:
    try:
        cache = json.loads(_cache_path().read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return cache if isinstance(cache, dict) and cache.get("code") == _code_key() else {}


@functools.lru_cache(maxsize=None)
def count_backbone(*args: Any, **kwargs: Any) -> BackboneCount:
    """:func:`count_backbone_now`, kept in memory and in the on-disk cache (module docstring)."""
    if kwargs.get("device", "fake") != "fake":
        return count_backbone_now(*args, **kwargs)
    key = json.dumps([args, sorted(kwargs.items())])
    cache = _read_cache()
    if key in cache.get("counts", {}):
        return BackboneCount(**cache["counts"][key])
    count = count_backbone_now(*args, **kwargs)
    cache = _read_cache() or {"code": _code_key(), "counts": {}}
    cache["counts"][key] = dataclasses.asdict(count)
    try:
        from frozenbench.utils.atomic import write_json

        _cache_path().parent.mkdir(parents=True, exist_ok=True)
        write_json(_cache_path(), cache)
    except OSError:
        pass  # a read-only home: counted again next time, nothing lost
    return count


def count_backbone_now(
    arch: str,
    img_size: int,
    frames: int,
    finetune: bool,
    checkpointing: bool = False,
    bf16: bool = False,
    chunk: int = 0,
    last_level_only: bool = False,
    device: str = "fake",
) -> BackboneCount:
    """One backbone step of ``frames`` images of ``img_size`` squared, ``chunk`` (0: all) per call as
    the video backbone takes them: saved bytes and the largest recomputation when ``finetune``, else
    the ``no_grad`` forward's peak of live tensors. ``device="cpu"`` runs the same count on real
    CPU tensors (what the test compares the fake count with)."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    fake = device == "fake"
    body = _counted_backbone(arch, img_size, finetune, checkpointing, bf16, last_level_only, device)
    params = sum(p.numel() for p in body.parameters())
    with FakeTensorMode(allow_non_fake_inputs=True) if fake else contextlib.nullcontext():
        if fake:
            body.to_empty(device="cpu")
        exclude = {_storage_key(t) for t in [*body.parameters(), *body.buffers()]}
        body.train(finetune)
        per_call = chunk or frames
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
        if finetune:
            saved = _SavedBytes(exclude)
            with saved.counting(), autocast:
                feats = _forward_in_chunks(body, frames, per_call, img_size)
            del feats
            return BackboneCount(params, saved=saved.total, recompute=saved.largest_region)
        live = _live_peak_mode(exclude)
        with torch.no_grad(), autocast, live:
            feats = _forward_in_chunks(body, frames, per_call, img_size)
            del feats
        return BackboneCount(params, forward_peak=live.peak)


def _counted_backbone(
    arch: str, img_size: int, finetune: bool, checkpointing: bool, bf16: bool, last_level_only: bool, device: str
) -> Any:
    """The backbone as the cell builds it, its weights on the meta device (``device="fake"``) or on ``device``."""
    import torch

    from frozenbench.models.backbone import Backbone

    with torch.device("meta" if device == "fake" else device):
        return Backbone(
            arch,
            img_size=img_size,
            frozen=not finetune,
            bf16=bf16,
            out_indices=(-1,) if last_level_only else None,
            activation_checkpointing=checkpointing,
        )


def _forward_in_chunks(body: Any, frames: int, per_call: int, img_size: int) -> list[Any]:
    """The last level's features of ``frames`` empty images, ``per_call`` per backbone call."""
    import torch

    return [
        body(torch.empty(min(per_call, frames - start), 3, img_size, img_size))[-1]
        for start in range(0, frames, per_call)
    ]


# -- the configured card and the record --------------------------------------------------------------


def on_gpu(config: dict[str, Any], kind: str = "train") -> bool:
    """Whether ``kind`` jobs (train, evaluate) run on a GPU: ``device: cuda``, or GPUs requested and
    the device not forced to the CPU."""
    compute = config.get("compute", {}).get(kind, {})
    device = compute.get("device", "auto")
    return device == "cuda" or (device != "cpu" and compute.get("gpus", 0) > 0)


def gpu_memory(config: dict[str, Any], kind: str = "train") -> tuple[float | None, str]:
    """(MiB of one GPU of ``kind`` jobs or None, how it was obtained): ``compute.<kind>.gpu_memory_gb``,
    else the known size of ``gpu_model``; None with a note for an unknown or missing model."""
    compute = config.get("compute", {}).get(kind, {})
    if "gpu_memory_gb" in compute:
        return compute["gpu_memory_gb"] * 1024, f"compute.{kind}.gpu_memory_gb: {compute['gpu_memory_gb']}"
    model = str(compute.get("gpu_model", "")).lower().removeprefix("nvidia_")
    if not model:
        return None, (
            f"compute.{kind} names no gpu_model and no gpu_memory_gb: memory not checked "
            f"(set compute.{kind}.gpu_memory_gb)"
        )
    if model not in KNOWN_GPU_MEMORY_GB:
        return None, (
            f"compute.{kind}.gpu_model {model!r} is not a card of known memory "
            f"({', '.join(sorted(KNOWN_GPU_MEMORY_GB))}): memory not checked (set compute.{kind}.gpu_memory_gb)"
        )
    size = KNOWN_GPU_MEMORY_GB[model]
    how = f"{model}: {size} GB"
    if model in GPU_MEMORY_NOTES:
        how += f" ({GPU_MEMORY_NOTES[model].format(kind=kind)})"
    return size * 1024, how


def _usable_record(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict) or record.get("schema") != 2 or record.get("device") != "cuda":
        return None
    if not any(row.get("status") == "ok" for row in record.get("cells", [])):
        return None
    return record


def default_record_path(records_dir: Path = RECORDS_DIR) -> Path | None:
    """The newest ``gpu_*.json`` under ``records_dir`` with schema-2 GPU rows, else None."""
    found = [p for p in records_dir.glob("gpu_*.json") if _usable_record(p) is not None]
    return max(found, key=lambda p: (p.stat().st_mtime, p.name)) if found else None


def load_record(config: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """(the GPU record the heads' share comes from or None, where it came from)."""
    named = config.get("compute", {}).get("memory_record")
    if named is not None:
        record = _usable_record(Path(named))
        if record is None:
            raise ConfigError(
                f"compute.memory_record: {named} is not a readable GPU smoke record with schema 2 and a "
                "successful cell (bench/gpu_smoke.py writes one); fix the path or remove the key"
            )
        return record, named
    path = default_record_path()
    if path is None:
        return None, "no GPU record (bench/records/gpu_*.json with schema 2)"
    return _usable_record(path), str(path)


# -- one cell -----------------------------------------------------------------------------------------


@dataclass
class MemoryEstimate:
    """A cell's estimated peak GPU memory in training and evaluation, part by part (MiB)."""

    cell: str
    train_parts: dict[str, float]
    eval_parts: dict[str, float]
    heads_known: bool
    notes: list[str] = field(default_factory=list)

    @property
    def train_mib(self) -> float:
        return sum(self.train_parts.values())

    @property
    def eval_mib(self) -> float:
        return sum(self.eval_parts.values())

    def describe(self, kind: str = "train") -> str:
        parts = self.train_parts if kind == "train" else self.eval_parts
        total = sum(parts.values())
        listed = ", ".join(f"{name} {value:,.0f}" for name, value in parts.items())
        bound = "" if self.heads_known else " (lower bound: backbone only, no GPU record for the heads)"
        return f"{total:,.0f} MiB{bound} = {listed}"


def _key(task: dict[str, Any], task_name: str, mode: str, option: str) -> str:
    """The dotted key a cell's schedule ``option`` comes from (``finetune`` overrides ``train``)."""
    section = "finetune" if mode == "finetune" and option in task.get("finetune", {}) else "train"
    return f"tasks.{task_name}.{section}.{option}"


def _cell_inputs(config: dict[str, Any], task_name: str, mode: str) -> dict[str, Any]:
    """The per-GPU input of a cell's training step and evaluation call, and the keys its batch comes
    from. ``batch_size`` is the global batch of a step: a GPU's forward takes the per-rank
    micro-batch, global / ranks / gradient-accumulation steps (``engine.options.split_batch``)."""
    from frozenbench.config import train_ranks
    from frozenbench.engine.options import TrainOptions, split_batch

    task = config["tasks"][task_name]
    schedule = {**task.get("train", {}), **(task.get("finetune", {}) if mode == "finetune" else {})}
    batch_key = _key(task, task_name, mode, "batch_size")
    bound_key = _key(task, task_name, mode, "max_rank_batch")
    split = split_batch(
        int(schedule.get("batch_size", TrainOptions().batch_size)),
        train_ranks(config),
        schedule.get("max_rank_batch"),
        batch_key.rsplit(".", 1)[0],
        bound_key.rsplit(".", 1)[0],
    )
    batch = split.micro
    keys = dict(batch_key=batch_key, bound_key=bound_key, split=split)
    img = int(task["img_size"])
    train_size = int(task.get("augment", {}).get("crop_size", img))
    task_type = get_task_type(task["type"])
    if task_type.clips:
        frames = int(task.get("data_options", {}).get("num_frames", 8))
        test = task.get("test", {})
        views = int(test.get("num_clips", 1)) * int(test.get("num_crops", 1))
        eval_frames = max(1, min(batch, VIDEO_TEST_VIEWS_PER_BATCH // views)) * views * frames
        chunk = int(task.get("frame_chunk", 0))
        eval_chunk = min(eval_frames, chunk or VIDEO_TEST_FRAMES_PER_CALL)
        return dict(
            batch=batch,
            **keys,
            size=train_size,
            frames=batch * frames,
            chunk=chunk,
            eval_size=img,
            eval_frames=eval_frames,
            eval_chunk=eval_chunk,
            video=True,
        )
    scales = task.get("test", {}).get("scales", [1.0])
    eval_size = int(math.ceil(img * max(scales)))
    eval_batch = task_type.eval_batch
    return dict(
        batch=batch,
        **keys,
        size=train_size,
        frames=batch,
        chunk=0,
        eval_size=eval_size,
        eval_frames=eval_batch,
        eval_chunk=0,
        video=False,
    )


def _backbone_parts(
    arch: str, size: int, frames: int, chunk: int, finetune: bool, checkpointing: bool, bf16: bool, video: bool
) -> dict[str, float]:
    """The backbone's share of a training step, in MiB by part."""
    count = count_backbone(arch, size, frames, finetune, checkpointing and finetune, bf16, chunk if video else 0, video)
    parts = {"backbone weights": count.params * 4 / MIB}
    if finetune:
        parts["backbone grads + AdamW moments"] = count.params * 12 / MIB
        parts["backbone activations kept for backward"] = count.saved / MIB
        if count.recompute:
            parts["recomputed block (checkpointing)"] = count.recompute / MIB
    else:
        parts["frozen backbone forward peak"] = count.forward_peak / MIB
    return parts


def _eval_parts(arch: str, inputs: dict[str, Any], bf16: bool) -> dict[str, float]:
    count = count_backbone(
        arch, inputs["eval_size"], inputs["eval_frames"], False, False, bf16, inputs["eval_chunk"], inputs["video"]
    )
    return {"backbone weights": count.params * 4 / MIB, "backbone forward peak": count.forward_peak / MIB}


def _record_row(record: dict[str, Any] | None, kind: str, mode: str) -> dict[str, Any] | None:
    for row in (record or {}).get("cells", []):
        if row.get("cell") == kind and row.get("mode") == mode and row.get("status") == "ok":
            return row
    return None


def _head_share(
    row: dict[str, Any], inputs: dict[str, Any], bf16: bool, video: bool
) -> tuple[float | None, float | None]:
    """(training, evaluation) MiB the record's row used beyond its own backbone part, scaled to the
    cell's batch x input area; None where the row has no peak."""
    finetune = row["mode"] == "finetune"
    size, batch = int(row["img_size"]), int(row["batch"])
    frames = batch * int(row.get("num_frames", 1)) if video else batch
    scale = (inputs["batch"] * inputs["size"] ** 2) / (batch * size**2)
    train = evaluation = None
    if row.get("train_gpu_peak_mb") is not None:
        own = _backbone_parts(
            row["arch"], size, frames, 0, finetune, bool(row.get("activation_checkpointing")), bf16, video
        )
        train = max(0.0, row["train_gpu_peak_mb"] - sum(own.values())) * scale
    if row.get("eval_gpu_peak_mb") is not None:
        own_eval = _eval_parts(row["arch"], {**inputs, "eval_size": size}, bf16)
        evaluation = max(0.0, row["eval_gpu_peak_mb"] - sum(own_eval.values())) * scale
    return train, evaluation


def estimate_cell_memory(
    config: dict[str, Any], cell: tuple[str, str, str, str], record: dict[str, Any] | None = None
) -> MemoryEstimate:
    """Estimated peak GPU memory of ``cell`` = (task, backbone, mode, head) of the validated ``config``
    in training and evaluation, with its parts; the heads' share from ``record`` (a GPU smoke record,
    docs/memory.md) when it has a row of the cell's kind and mode, else left out (a lower bound)."""
    from frozenbench.study import cell_type

    task_name, backbone, mode, head = cell
    task = config["tasks"][task_name]
    arch = config["backbones"][backbone]["arch"]
    finetune = mode == "finetune"
    bf16 = bool(task.get("bf16") or (finetune and task.get("autocast_bf16")))
    checkpointing = bool(task.get("activation_checkpointing")) and finetune
    inputs = _cell_inputs(config, task_name, mode)
    train = _backbone_parts(
        arch, inputs["size"], inputs["frames"], inputs["chunk"], finetune, checkpointing, bf16, inputs["video"]
    )
    evaluation = _eval_parts(arch, inputs, bool(task.get("bf16") or task.get("autocast_bf16")))
    notes = []
    kind = cell_type(task, task["heads"][head], task_name)
    row = _record_row(record, kind, mode)
    heads_known = False
    if row is not None:
        head_train, head_eval = _head_share(row, inputs, bf16, inputs["video"])
        if head_train is not None:
            train["heads (GPU record)"] = head_train
            heads_known = True
        if head_eval is not None:
            evaluation["heads (GPU record)"] = head_eval
    else:
        notes.append(f"no GPU record row for {kind} ({mode}): the heads' share is unknown")
    return MemoryEstimate("/".join(cell), train, evaluation, heads_known, notes)


# -- the check at DAG start ----------------------------------------------------------------------------


def _settings_to_change(
    config: dict[str, Any], cell: tuple[str, str, str, str], inputs: dict[str, Any], kind: str, record: Any
) -> list[str]:
    task_name, _, mode, _ = cell
    task = config["tasks"][task_name]
    options = []
    if mode == "finetune" and not task.get("activation_checkpointing"):
        changed = {**config, "tasks": {**config["tasks"], task_name: {**task, "activation_checkpointing": True}}}
        with_it = estimate_cell_memory(changed, cell, record)
        options.append(f"tasks.{task_name}.activation_checkpointing: true (estimate then {with_it.train_mib:,.0f} MiB)")
    if kind == "train" and inputs["batch"] > 1:
        split = inputs["split"]
        options.append(
            f"a smaller {inputs['bound_key']} (now {inputs['batch']} per GPU: {inputs['batch_key']} "
            f"{split.global_batch} over {split.ranks} rank(s) x {split.accumulation} micro-batch(es); "
            "the same global batch by gradient accumulation, the recipe unchanged)"
        )
    if inputs["video"]:
        options.append(
            f"tasks.{task_name}.frame_chunk"
            + (" (with activation_checkpointing in a fine-tuned cell)" if mode == "finetune" else "")
        )
    options.append(f"compute.{kind}.gpu_memory_gb (if the card has more memory than assumed)")
    return options


def memory_problems(
    config: dict[str, Any], record: dict[str, Any] | None = None, margin: float = FIT_MARGIN
) -> tuple[list[str], list[str]]:
    """(refusals, notes) for the validated ``config``: each cell whose estimated training or evaluation
    peak exceeds ``margin`` of its GPU, with its estimate, the card and the settings to change.
    Nothing is counted when no job runs on a GPU (the CPU studies)."""
    from frozenbench.study import study_cells

    kinds = [kind for kind in ("train", "evaluate") if on_gpu(config, kind)]
    if not kinds:
        return [], []
    refusals, notes = [], []
    cards = {}
    for kind in kinds:
        mib, how = gpu_memory(config, kind)
        if mib is None:
            notes.append(how)
        else:
            cards[kind] = (mib, how)
    if not cards:
        return [], notes
    lower_bound = False
    for cell in dict.fromkeys(study_cells(config)):
        estimate = estimate_cell_memory(config, cell, record)
        lower_bound |= not estimate.heads_known
        inputs = _cell_inputs(config, cell[0], cell[2])
        for kind, (mib, how) in cards.items():
            needed = estimate.train_mib if kind == "train" else estimate.eval_mib
            if needed <= margin * mib:
                continue
            change = _settings_to_change(config, cell, inputs, kind, record)
            refusals.append(
                f"cell {estimate.cell} will not fit one GPU of compute.{kind} ({how}: {mib:,.0f} MiB, "
                f"{margin:.0%} = {margin * mib:,.0f} MiB usable): "
                f"{'training' if kind == 'train' else 'evaluation'} needs {estimate.describe(kind)}; "
                f"change one of: {'; '.join(change)}"
            )
    if lower_bound:
        notes.append("memory estimates without a GPU record cover the backbone only (docs/memory.md)")
    return refusals, notes


def check_memory(config: dict[str, Any], source: str = "config") -> list[str]:
    """Refuse (:class:`ConfigError`) a config with a cell that will not fit its GPU; else the notes."""
    if not any(on_gpu(config, kind) for kind in ("train", "evaluate")):
        return []
    record, _ = load_record(config)
    refusals, notes = memory_problems(config, record)
    if refusals:
        lines = [f"{source}: cells that will not fit their GPU (estimated before submission, docs/memory.md)"]
        lines += [f"  {line}" for line in refusals]
        raise ConfigError("\n".join(lines))
    return notes
