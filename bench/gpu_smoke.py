"""GPU smoke test and benchmark of the study: every cell kind ``configs/paper.yaml`` contains, frozen
and fine-tuned at the paper's per-GPU batch sizes, the in-DAG pretraining objectives, the probe and
a plain ViT-L, each through the real command line, within a time budget.

    make gpu-smoke                    # on a GPU node: writes bench/records/gpu_<device>.json
    make gpu-smoke DEVICE=cpu         # tiny sizes on the CPU (what CI runs so it cannot rot)
    python bench/gpu_smoke.py --device cuda --out RECORD [--cells KIND[:MODE] ...] [--budget-s 540]

The rows, in this fixed priority order (``--cells`` picks a subset and never reorders; a cell kind
names its every mode, ``kind:mode`` one row):
 1. the paper's frozen cells, which most of the study is: Mask R-CNN (``coco_mask_rcnn``) and HTC
    (``coco_htc``) + FPN at 1024 (batch 2), Mask2Former with 1 + 4 blocks (``ade_mask2former``) at
    640 (batch 2), the temporal head (``k400_temporal``) at 224 on 16 frames 4 apart (batch 8 clips);
 2. the paper's fine-tuned cells of those kinds (layer decay 0.9, K400's fine-tuning lr, activation
    checkpointing where paper.yaml sets it): the memory risk, measured before any job queues;
 3. Mask2Former on a plain DINOv2 ViT-L/14 (``ade_mask2former_vit``), frozen;
 4. the in-DAG pretraining objectives (``pretrain_supervised``, ``pretrain_contrastive``,
    ``pretrain_mim``: ``frozenbench pretrain`` with config.yaml's recipe, convstem Swin-T at 64 px,
    batch 128, on a synthetic image folder), then the probe (``probe``: ``--objective random``, the
    DAG's random backbone, which runs the probe alone);
 5. what paper.yaml does not train but a study may: the ViT fine-tuned, HTC fine-tuned.
The script refuses to start when paper.yaml has a (kind, mode) no row measures.

A task row is ``frozenbench train`` (``--nproc`` ranks: torchrun + DeepSpeed ZeRO-2 when > 1,
DataLoader workers, bf16) then ``frozenbench evaluate`` on its val split with paper.yaml's test
views. Its spec is ``frozenbench.study.task_spec`` of paper.yaml (what the DAG runs) with a short
schedule (``--steps``, one warmup step, one checkpoint at the end) and, on the CPU only, tiny inputs
and the mini-study's head widths. A fine-tuned row is not evaluated again when its kind's frozen row
was: evaluation runs the same forward under ``no_grad`` on weights of the same shapes, so the row
carries the frozen row's evaluation fields, marked ``"eval_from": "frozen"``.

What bounds the 10 minutes on one H100 (16 cores), docs/gpu-smoke.md has the estimate:
``--budget-s`` (540 on the GPU: a row that would start after it is skipped, a running subprocess is
killed at it); ``--steps`` per row (16 on the GPU, the first quarter untimed); the synthetic val
splits (4 images, 8 clips); the test views (paper.yaml's: 6 scales x flip on ADE20K, 4 clips x
3 crops on K400); one subprocess per train / evaluate / pretrain (each pays its imports and model
build, ~10 s); the backbone (``--arch``, default swin_large on the GPU, so the paper's large
backbones are what is measured; the FLOP counts let ``frozenbench cost`` scale to the others).

Recorded per row (docs/gpu-smoke.md): seconds per step and the data-wait fraction over the steps
after the first quarter, samples per second over all ranks, peak GPU memory of training and
evaluation (``max_memory_allocated``; null on the CPU, nothing made up) and peak RSS, evaluation
seconds per sample (its wall time includes the model's build: an upper bound), the forward GFLOP
per sample of the backbone and of the rest of the model (``torch.utils.flop_counter`` in this
process: the model and one training batch at the full crop built as ``frozenbench train`` builds
them, its loss forward counted once, the backbone's share read from the counter's module
hierarchy), and the frozen backbone's FLOP rate at the cell's input as a fraction of a dense matmul
(bf16 on a GPU, fp32 on the CPU) timed in the same run, repeat by repeat. The probe row's step is
the whole probe (every image featurized, k-NN and linear fit), timed inside a pretraining run.

The record is rewritten atomically after every row, so a run killed at its budget leaves what it
measured. A failed row is ``status: failed`` with the last lines of its error, and the run goes on;
the exit status is 1 when a row failed (or its FLOP count did), else 0 (skipped rows are no
failure). Nothing needs the network: random-weight checkpoints, synthetic data, ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import RESULTS, interleaved, machine, matmul_case, spread  # noqa: E402

REPO = HERE.parent
RECORDS = HERE / "records"
PAPER = REPO / "configs" / "paper.yaml"
MINI_STUDY = REPO / "config.yaml"  # the DAG's in-study pretraining recipe
SCHEMA = 2


@dataclass(frozen=True)
class TaskKind:
    """A task cell kind: paper.yaml's task and head, the synthetic dataset it trains on, and a
    backbone of its own per device where it is not ``--arch``'s."""

    task: str
    head: str
    dataset: str
    archs: dict[str, str] = field(default_factory=dict)


TASK_KINDS = {
    "coco_mask_rcnn": TaskKind("coco", "mrcnn_fpn", "shapes-coco"),
    "coco_htc": TaskKind("coco", "htc", "shapes-coco"),
    "ade_mask2former": TaskKind("ade", "m2f_b4", "shapes-ade"),
    "k400_temporal": TaskKind("k400", "temporal_b2", "shapes-k400"),
    # a researcher's plain ViT (patch 14: the 640 px crops are padded to its patch multiple and its
    # maps resampled to the stride-16 grid)
    "ade_mask2former_vit": TaskKind(
        "ade", "m2f_b4", "shapes-ade", {"cuda": "vit_large_patch14_dinov2", "cpu": "vit_small_patch14_dinov2"}
    ),
}
# pretraining rows -> config.yaml's backbone whose pretraining the row runs (its arch, objective, options)
PRETRAIN_KINDS = {
    "pretrain_supervised": "convstem_swin_tiny_supervised",
    "pretrain_contrastive": "convstem_swin_tiny_contrastive",
    "pretrain_mim": "convstem_swin_tiny_mim",
    "probe": "convstem_swin_tiny_random",  # objective random: the probe alone
}
# (cell kind, mode) in the order they run; the reasons are in the module docstring
PRIORITY = [
    ("coco_mask_rcnn", "frozen"),
    ("ade_mask2former", "frozen"),
    ("k400_temporal", "frozen"),
    ("coco_htc", "frozen"),
    ("coco_mask_rcnn", "finetune"),
    ("ade_mask2former", "finetune"),
    ("k400_temporal", "finetune"),
    ("ade_mask2former_vit", "frozen"),
    ("pretrain_supervised", "pretrain"),
    ("pretrain_contrastive", "pretrain"),
    ("pretrain_mim", "pretrain"),
    ("probe", "probe"),
    ("ade_mask2former_vit", "finetune"),
    ("coco_htc", "finetune"),
]
# On the CPU one row runs on two ranks (torchrun + DeepSpeed ZeRO-2, with layer-decay groups and
# bf16), the others on one: every path is exercised and CI pays the two-rank startup once.
CPU_TWO_RANK_ROW = ("ade_mask2former", "finetune")
# What the tiny CPU run keeps of paper.yaml: small inputs, short clips, the mini-study's head widths
# (config.yaml) and fewer test views; the batch sizes stay the paper's.
TINY_INPUTS = {
    "coco": {"img_size": 128, "crop": 128},
    "ade": {"img_size": 128, "crop": 128, "test": {"scales": [0.75, 1.0], "flip": True}},
    "k400": {"img_size": 64, "num_frames": 4, "frame_interval": 2, "test": {"num_clips": 1, "num_crops": 3}},
}
TINY_HEADS = {
    "coco": {"width": 64, "rpn_samples": 128, "rcnn_samples": 128},
    "ade": {"width": 64, "num_queries": 20, "num_points": 2048},
    "k400": {"width": 64},
}
TINY_PRETRAIN_BATCH = 16
TARGETS = {"data_wait_below": 0.10, "backbone_fraction_of_matmul_at_least": 0.50}


def datasets(tiny: bool) -> dict[str, dict]:
    """The synthetic datasets of the task cells (real formats; images drawn small, the pipelines
    resize them to the cells' inputs). Four val images / eight val clips bound the evaluations."""
    size = {"image_size": 64 if tiny else 128}
    return {
        "shapes-coco": {
            "source": "synth",
            "format": "coco",
            "synth": {
                "seed": 1,
                **size,
                "num_classes": 4,
                "num_train": 8,
                "num_val": 4,
                "max_instances": 4,
                "texture": 0.2,
                "size_profile": "real",
            },
        },
        "shapes-ade": {
            "source": "synth",
            "format": "ade",
            "synth": {
                "seed": 1,
                **size,
                "num_stuff": 3,
                "num_things": 4,
                "num_train": 8,
                "num_val": 4,
                "texture": 0.2,
                "size_profile": "real",
            },
        },
        "shapes-k400": {
            "source": "synth",
            "format": "kinetics",
            "synth": {
                "seed": 1,
                "frame_size": 64,
                "num_frames": 12,
                "num_train_per_class": 1,  # 8 classes: 8 clips, one paper batch
                "num_val_per_class": 1,
                "texture": 0.2,
                "size_profile": "real",
            },
        },
    }


def pretrain_dataset(mini_study: dict, batch: int) -> dict:
    """config.yaml's pretraining image folder, with just enough training images for two batches
    (a smaller set would make short batches) and a small held-out split for the probe."""
    spec = copy.deepcopy(mini_study["datasets"][mini_study["pretrain"]["dataset"]])
    classes = spec["synth"]["num_classes"]
    spec["synth"].update(train_per_class=-(-2 * batch // classes), val_per_class=max(2, batch // (4 * classes)))
    return spec


# -- what a row runs -----------------------------------------------------------------------------------


def task_cell_spec(kind: TaskKind, mode: str, paper: dict, data: Path, steps: int, batch: int | None, tiny: bool):
    """The train / evaluate spec of a task row: ``frozenbench.study.task_spec`` of paper.yaml (task
    options, head, the fine-tuning schedule, test views) with a short schedule; tiny on the CPU."""
    from frozenbench.study import task_spec

    spec = task_spec(paper, kind.task, kind.head, mode, str(data / kind.dataset), evaluation=True)
    spec["head"] = dict(spec["head"])
    # one GPU's share of paper.yaml's global batch (its max_rank_batch, the reference node's per-GPU
    # batch): the step a rank times, which the cost report scales by global batch / GPUs
    per_gpu = spec["train"].pop("max_rank_batch", None) or spec["train"]["batch_size"]
    spec["train"] = {
        **spec["train"],
        "steps": steps,
        "warmup_steps": 1,
        "checkpoint_every": steps,
        "log_every": 1,
        "batch_size": batch or per_gpu,
    }
    if tiny:
        small = TINY_INPUTS[kind.task]
        spec["img_size"] = small["img_size"]
        if "augment" in spec and "crop_size" in spec["augment"]:
            spec["augment"] = {**spec["augment"], "crop_size": small["crop"]}
        if "num_frames" in small:
            spec["data_options"] = {
                **spec["data_options"],
                "num_frames": small["num_frames"],
                "frame_interval": small["frame_interval"],
            }
            spec["head"]["num_frames"] = small["num_frames"]
        if "test" in small:
            spec["test"] = dict(small["test"])
        spec["head"].update(TINY_HEADS[kind.task])
    return spec


def input_size(spec: dict) -> int:
    """The side of the backbone's training input: the random crop, else the task's image size."""
    return int(spec.get("augment", {}).get("crop_size", spec["img_size"]))


def pretrain_options(mini_study: dict, backbone: str, steps: int, tiny: bool) -> tuple[str, str, dict]:
    """(arch, objective, options) of a config.yaml backbone's pretraining, with a short schedule."""
    from frozenbench.study import pretrain_spec

    spec = pretrain_spec(mini_study, backbone)
    options = {**spec["options"], "steps": steps, "warmup_steps": 1, "checkpoint_every": steps, "log_every": 1}
    if tiny:
        options["batch_size"] = TINY_PRETRAIN_BATCH
    return mini_study["backbones"][backbone]["arch"], spec["objective"], options


# -- subprocesses within the budget --------------------------------------------------------------------


class RowFailed(RuntimeError):
    """A row's run failed; the message is what its record row says."""


def tail(text: str, lines: int = 30, chars: int = 4000) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])[-chars:]


def run_step(name: str, command: list[str], env: dict[str, str], deadline: float, log: Path) -> None:
    """Run ``command`` to completion before ``deadline`` (time.monotonic()), its output in ``log``.

    It runs in a session of its own, so a timeout ends the whole process group (torchrun's ranks and
    DataLoader workers included): SIGTERM first (training saves its state and exits), SIGKILL 15 s
    later. Raises :class:`RowFailed` with the output's last lines on a timeout or a non-zero exit."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise RowFailed(f"{name}: time budget: no time left to start it")
    with open(log, "w") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout=left)
        except subprocess.TimeoutExpired:
            _end_group(proc)
            raise RowFailed(
                f"{name}: time budget: killed after {left:.0f} s (the budget's end)\n{tail(log.read_text())}"
            ) from None
    if code != 0:
        raise RowFailed(f"{name}: exit status {code}\n{tail(log.read_text())}")


def _end_group(proc: subprocess.Popen) -> None:
    for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def step_timing(log: list[dict], per_step_samples: int) -> dict[str, Any]:
    """Seconds per step, samples per second and the data-wait fraction over the steps after the
    first quarter (the first steps pay one-off costs: workers starting, kernels tuned, allocator
    growing), from the cumulative ``elapsed_s`` and ``data_wait`` of each step's log line."""
    if len(log) < 2:
        raise RowFailed(f"the run logged {len(log)} step(s): a step time needs two (raise --steps)")
    if not all(torch.isfinite(torch.tensor(float(r["loss"]))) for r in log):
        raise RowFailed(f"a loss was not finite: {[r['loss'] for r in log]}")
    warm = min(len(log) - 1, max(1, len(log) // 4))
    start, end = log[warm - 1], log[-1]
    seconds = end["elapsed_s"] - start["elapsed_s"]
    per_step = seconds / (len(log) - warm)
    waited = end["data_wait"] * end["elapsed_s"] - start["data_wait"] * start["elapsed_s"]
    return {
        "steps": len(log),
        "timed_steps": len(log) - warm,
        "seconds_per_step": round(per_step, 4),
        "samples_per_second": round(per_step_samples / per_step, 3) if per_step > 0 else None,
        "data_wait": round(min(1.0, max(0.0, waited / seconds)), 4) if seconds > 0 else None,
        "loss_first_last": [log[0]["loss"], log[-1]["loss"]],
    }


# -- FLOPs and the backbone's rate -----------------------------------------------------------------------


def flop_counter():
    """A FlopCounterMode that also counts the CPU's fused attention (torch has no formula for
    ``_scaled_dot_product_flash_attention_for_cpu``: Swin's and ViT's attention would count 0)."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_sdpa(query, key, value, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(query, key, value)

    return FlopCounterMode(
        display=False, custom_mapping={torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_sdpa}
    )


def split_flops(run: Callable[[], Any], root: torch.nn.Module, backbone_names: list[str]) -> tuple[float, float]:
    """(all, backbone) forward FLOPs of ``run()``, which calls ``root``; the backbone's are what ran
    inside the submodules ``backbone_names`` (or inside their children, when a model calls a
    backbone's parts directly, as SimMIM does), read from the counter's module hierarchy."""
    counter = flop_counter()
    with torch.no_grad(), counter:
        run()
    counts = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    prefixes = [f"{type(root).__name__}.{name}" for name in backbone_names]
    inside = [n for n in counts if any(n == p or n.startswith(p + ".") for p in prefixes)]
    outermost = [n for n in inside if not any(n.startswith(other + ".") for other in inside if other != n)]
    return float(counter.get_total_flops()), float(sum(counts[n] for n in outermost))


def backbone_rate(body: torch.nn.Module, x: torch.Tensor, device: str, repeats: int) -> dict[str, Any]:
    """The frozen backbone's forward on ``x``: its FLOP rate as a fraction of a dense matmul's (bf16
    on a GPU, fp32 on a CPU, where bf16 matmul units are rare), the two interleaved repeat by repeat."""
    on_gpu = device == "cuda"
    dtype = torch.bfloat16 if on_gpu else torch.float32
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    counter = flop_counter()
    with torch.no_grad():
        with counter:
            body(x)
        flops = counter.get_total_flops()
        matmul, matmul_flops = matmul_case(8192 if on_gpu else 1024, device, dtype)
        times = interleaved({"backbone": lambda: body(x), "matmul": matmul}, repeats, warmup=2, sync=sync)
    fractions = spread([(flops / b) / (matmul_flops / m) for b, m in zip(times["backbone"], times["matmul"])])
    return {
        "backbone_fraction_of_matmul": round(fractions["median"], 4),
        "backbone_fraction_spread": {k: round(v, 4) for k, v in fractions.items()},
        "backbone_tflops": round(flops / min(times["backbone"]) / 1e12, 4),
        "matmul_tflops": round(matmul_flops / min(times["matmul"]) / 1e12, 4),
        "rate_input": list(x.shape),
    }


def gflop(flops: float) -> float:
    """GFLOP to 4 significant digits (a linear probe head is ~1e-5 GFLOP, a Swin-L at 1024 ~1e3)."""
    return float(f"{flops / 1e9:.4g}")


def release(device: str) -> None:
    if device == "cuda":
        torch.cuda.empty_cache()


def task_flops(spec: dict, checkpoint: Path, device: str, repeats: int) -> dict[str, Any]:
    """A task row's FLOPs per sample and its backbone's rate. The model and one training batch are
    built as ``frozenbench train`` builds them (``frozenbench.cells.run``); the loss forward of the
    frozen model is counted (fine-tuning runs the same forward). The rate is timed on that model's
    own backbone at the cell's input (a clip's frames as one batch, as the temporal head runs them)."""
    from frozenbench.cells import run as engine
    from frozenbench.models.backbone import Backbone
    from frozenbench.openmmlab.runtime import collate

    torch.manual_seed(0)
    placed = torch.device(device)
    if "scale_range" in spec.get("augment", {}):  # counted at the full crop: the top of the scale range
        top = max(spec["augment"]["scale_range"])
        spec = {**spec, "augment": {**spec["augment"], "scale_range": [top, top]}}
    spec = engine.as_spec(spec)
    task, data, _, model = engine._build(spec, str(checkpoint), "frozen", placed)
    dataset = engine._build_dataset(task, spec, data, "train", train=True)
    batch = spec.train.batch_size
    samples = collate([dataset[i % len(dataset)] for i in range(batch)])
    name, body = next((n, m) for n, m in model.named_modules() if isinstance(m, Backbone))
    model.train()
    total, backbone = split_flops(lambda: model(samples), model, [name])  # the engine's call: loss_dict = model(batch)
    frames = batch * int(spec.data_options.get("num_frames", 1)) if spec.task_type.clips else batch
    size = input_size(spec.to_json())
    x = torch.randn(frames, 3, size, size, device=placed)
    result = {
        "backbone_gflop_per_sample": gflop(backbone / batch),
        "head_gflop_per_sample": gflop((total - backbone) / batch),
        **backbone_rate(body.eval(), x, device, repeats),
    }
    return result


def pretrain_flops(arch: str, objective: str, options: dict, data: Path, device: str, repeats: int) -> dict:
    """A pretraining row's FLOPs per sample (the objective's loss forward on one batch: both views of
    a contrastive pair, a masked image for MIM; the backbone's share being what runs inside
    ``backbone`` / ``key_backbone``) and the backbone's rate on a batch at the pretraining size. The
    probe row counts the probe's feature extraction (the backbone's ``forward_intermediates``)."""
    from frozenbench.models.backbone import Backbone
    from frozenbench.models.registry import build_arch
    from frozenbench.pretrain.data import load_imagefolder, normalize
    from frozenbench.pretrain.objectives import build_objective, collate

    torch.manual_seed(0)
    placed = torch.device(device)
    size, batch = options["image_size"], options["batch_size"]
    train = load_imagefolder(data, "train", size)
    images = normalize(train.images[:batch], arch)
    if objective == "random":
        backbone = build_arch(arch, size).to(placed).eval()
        total = backbone_flops = split_flops(
            lambda: backbone.forward_intermediates(images.to(placed), intermediates_only=True), backbone, []
        )[0]
        head = None
    else:
        model = build_objective(
            objective, build_arch(arch, size), len(train.classes), size, options.get("objective_options", {})
        ).to(placed)
        samples = collate(list(zip(images, train.labels[:batch])))
        names = [n for n in ("backbone", "key_backbone") if hasattr(model, n)]
        model.train()
        total, backbone_flops = split_flops(lambda: model(samples), model, names)
        head = gflop((total - backbone_flops) / len(images))
    body = Backbone(arch, img_size=size, bf16=device == "cuda").to(placed)
    result = {
        "backbone_gflop_per_sample": gflop(backbone_flops / len(images)),
        "head_gflop_per_sample": head,
        **backbone_rate(body, torch.randn(batch, 3, size, size, device=placed), device, repeats),
    }
    return result


# -- the rows --------------------------------------------------------------------------------------------


@dataclass
class Context:
    device: str
    tiny: bool
    arch: str
    steps: int
    batch: int | None
    nproc: int | None
    workers: int
    threads: int
    repeats: int
    work: Path
    deadline: float
    paper: dict
    mini_study: dict
    env: dict[str, str]
    cli: list[str]  # this interpreter's frozenbench command line
    measured: dict[str, dict] = field(default_factory=dict)  # cell kind -> its frozen row (evaluation)
    probe_timing: dict[str, Any] = field(default_factory=dict)  # the probe part of the first pretraining run
    flops: dict[str, tuple[str, dict]] = field(default_factory=dict)  # cell kind -> (mode counted, FLOPs and rate)


def checkpoint_for(ctx: Context, arch: str, img_size: int) -> Path:
    """A random-weight checkpoint of ``arch`` (built for ``img_size``), made once per run."""
    from frozenbench.checkpoint import save_random_backbone

    path = ctx.work / "checkpoints" / f"{arch}_{img_size}.pth"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        save_random_backbone(path, arch, img_size)
    return path


def ranks_of(ctx: Context, cell: str, mode: str) -> int:
    if ctx.nproc:
        return ctx.nproc
    if ctx.device == "cuda":
        return torch.cuda.device_count()
    return 2 if (cell, mode) == CPU_TWO_RANK_ROW else 1


def run_task_row(ctx: Context, cell: str, mode: str, row: dict) -> None:
    kind = TASK_KINDS[cell]
    arch = kind.archs.get(ctx.device, ctx.arch)
    spec = task_cell_spec(kind, mode, ctx.paper, ctx.work / "data", ctx.steps, ctx.batch, ctx.tiny)
    nproc = ranks_of(ctx, cell, mode)
    row.update(arch=arch, img_size=spec["img_size"], batch=spec["train"]["batch_size"], world_size=nproc)
    if spec["type"] == "video":
        row["num_frames"] = int(spec["data_options"].get("num_frames", spec["head"].get("num_frames", 8)))
    row["activation_checkpointing"] = bool(spec.get("activation_checkpointing", False))
    row["layer_decay"] = spec["train"].get("layer_decay", 1.0)
    row["lr"] = spec["train"].get("lr")
    checkpoint = checkpoint_for(ctx, arch, spec["img_size"])
    folder = ctx.work / "cells" / f"{cell}_{mode}"
    folder.mkdir(parents=True, exist_ok=True)
    run_dir, metrics = folder / "run", folder / "metrics.json"
    common = [
        *("--spec", json.dumps(spec), "--checkpoint", str(checkpoint), "--mode", mode),
        *("--run-dir", str(run_dir), "--device", ctx.device, "--workers", str(ctx.workers)),
        *("--threads", str(ctx.threads)),
    ]
    env = {**ctx.env, "OMP_NUM_THREADS": str(max(1, ctx.threads // nproc))}
    started = time.monotonic()
    run_step(
        f"{cell} {mode}: frozenbench train",
        [*ctx.cli, "train", *common, "--nproc", str(nproc)],
        env,
        ctx.deadline,
        folder / "train.log",
    )
    row["train_wall_s"] = round(time.monotonic() - started, 1)
    done = json.loads((run_dir / "done.json").read_text())
    row["world_size"] = done["world_size"]
    row.update(step_timing(read_log(run_dir / "log.jsonl"), row["batch"] * done["world_size"]))
    row.update(
        data_wait_whole_run=done.get("data_wait_fraction"),
        train_gpu_peak_mb=done.get("gpu_peak_mb"),
        train_peak_rss_mb=done.get("peak_rss_mb"),
        train_device_name=done.get("device_name"),
    )
    frozen = ctx.measured.get(cell)
    if mode == "finetune" and frozen is not None:
        for key in EVAL_FIELDS:
            row[key] = frozen.get(key)
        row["eval_from"] = "frozen"
    else:
        started = time.monotonic()
        run_step(
            f"{cell} {mode}: frozenbench evaluate",
            [*ctx.cli, "evaluate", *common, "--out", str(metrics)],
            env,
            ctx.deadline,
            folder / "evaluate.log",
        )
        record = json.loads(metrics.read_text())
        # evaluate_cell's wall time includes building the model and loading the state: an upper
        # bound per sample on a split this small (inference_seconds, when recorded, excludes them)
        seconds = record.get("inference_seconds", record["eval_seconds"])
        row.update(
            eval_wall_s=round(time.monotonic() - started, 1),
            eval_seconds=record["eval_seconds"],
            eval_includes_build="inference_seconds" not in record,
            num_val=record["num_val"],
            eval_seconds_per_sample=round(seconds / max(1, record["num_val"]), 4),
            eval_views=spec.get("test") or "single scale",
            eval_gpu_peak_mb=record.get("gpu_peak_mb"),
            eval_peak_rss_mb=record.get("peak_rss_mb"),
            metrics=record["metrics"],
            eval_from=mode,
        )
        if mode == "frozen":
            ctx.measured[cell] = row
    if cell in ctx.flops:  # counted for the other mode of this kind: the same forward
        counted_in, counted = ctx.flops[cell]
        row.update({k: v for k, v in counted.items() if k != "flop_wall_s"}, flops_from=counted_in)
    else:
        ctx.flops[cell] = (mode, guarded_flops(ctx, lambda: task_flops(spec, checkpoint, ctx.device, ctx.repeats)))
        row.update(ctx.flops[cell][1])


EVAL_FIELDS = (
    "eval_wall_s",
    "eval_seconds",
    "eval_includes_build",
    "num_val",
    "eval_seconds_per_sample",
    "eval_views",
    "eval_gpu_peak_mb",
    "eval_peak_rss_mb",
)


def run_pretrain_row(ctx: Context, cell: str, row: dict) -> None:
    backbone = PRETRAIN_KINDS[cell]
    arch, objective, options = pretrain_options(ctx.mini_study, backbone, ctx.steps, ctx.tiny)
    data = ctx.work / "data" / "shapes-pretrain"
    row.update(
        arch=arch,
        objective=objective,
        img_size=options["image_size"],
        batch=None if objective == "random" else options["batch_size"],
        world_size=1,
        activation_checkpointing=False,
        config_backbone=backbone,
    )
    folder = ctx.work / "cells" / cell
    run_dir = folder / "run"
    folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    run_step(
        f"{cell}: frozenbench pretrain --objective {objective}",
        [
            *ctx.cli,
            *("pretrain", "--arch", arch, "--objective", objective, "--data", str(data)),
            *("--options", json.dumps(options), "--threads", str(ctx.threads), "--device", ctx.device),
            *("--out", str(folder / f"{backbone}.pth"), "--run-dir", str(run_dir)),
        ],
        {**ctx.env, "OMP_NUM_THREADS": str(ctx.threads)},
        ctx.deadline,
        folder / "pretrain.log",
    )
    row["wall_s"] = round(time.monotonic() - started, 1)
    probe_path = run_dir / "probe.json"
    probe = json.loads(probe_path.read_text())
    row["probe"] = {k: probe.get(k) for k in ("knn_top1", "linear_top1", "chance", "num_train", "num_val")}
    # the GPU peak when the pretraining job records one (its probe.json), else unknown
    row.update(train_gpu_peak_mb=probe.get("gpu_peak_mb"), train_peak_rss_mb=probe.get("peak_rss_mb"))
    if objective != "random":
        row.update(step_timing(read_log(run_dir / "log.jsonl"), options["batch_size"]))
        # the probe part of this run: from its last state (written after the last step) to probe.json
        row["probe_seconds"] = round(
            (probe_path.stat().st_mtime_ns - (run_dir / "state.pt").stat().st_mtime_ns) / 1e9, 3
        )
        ctx.probe_timing.setdefault("seconds", row["probe_seconds"])
        ctx.probe_timing.setdefault("from", cell)
    else:
        # Objective random runs the probe alone, but its wall time includes the imports and the image
        # loading: the probe part of a pretraining run of this one is its time when there is one. The
        # row's "step" is the whole probe (every train and val image featurized, k-NN and linear fit),
        # its batch the images probed, so seconds per image is seconds_per_step / batch as elsewhere.
        images = probe["num_train"] + probe["num_val"]
        seconds = ctx.probe_timing.get("seconds", row["wall_s"])
        row.update(
            batch=images,
            seconds_per_step=seconds,
            samples_per_second=round(images / seconds, 3) if seconds > 0 else None,
            data_wait=None,
            probe_seconds=seconds,
            probe_timed_in=ctx.probe_timing.get("from", "probe (wall time, imports included)"),
            eval_seconds_per_sample=round(seconds / images, 5),
        )
    row.update(guarded_flops(ctx, lambda: pretrain_flops(arch, objective, options, data, ctx.device, ctx.repeats)))


def guarded_flops(ctx: Context, count: Callable[[], dict]) -> dict:
    """The FLOP count and rate, or null fields and ``flop_error`` (the run's timings stay: the row
    is ok, the script exits 1). Skipped once the budget is spent."""
    nulls = {"backbone_gflop_per_sample": None, "head_gflop_per_sample": None, "backbone_fraction_of_matmul": None}
    if time.monotonic() >= ctx.deadline:
        return {**nulls, "flop_error": "time budget: not counted"}
    started = time.monotonic()
    try:
        return {**count(), "flop_wall_s": round(time.monotonic() - started, 1)}
    except Exception as err:  # a counting problem must not lose the row's measured run
        return {**nulls, "flop_error": f"{type(err).__name__}: {err}"[-2000:]}
    finally:
        release(ctx.device)  # the models built for counting are gone: give their memory back


# -- the record ------------------------------------------------------------------------------------------


def select_rows(names: list[str] | None) -> list[tuple[str, str]]:
    """The rows ``--cells`` names (a cell kind: all its modes; ``kind:mode``: that row), in priority order."""
    if not names:
        return list(PRIORITY)
    wanted = set()
    for name in (n for entry in names for n in entry.replace(",", " ").split()):
        cell, _, mode = name.partition(":")
        matches = [(c, m) for c, m in PRIORITY if c == cell and (not mode or m == mode)]
        if not matches:
            valid = sorted({c for c, _ in PRIORITY} | {f"{c}:{m}" for c, m in PRIORITY})
            sys.exit(f"gpu_smoke: --cells {name}: no such row; choose from {', '.join(valid)}")
        wanted.update(matches)
    return [row for row in PRIORITY if row in wanted]


def uncovered_paper_kinds(paper: dict) -> list[str]:
    """(kind, mode) pairs of paper.yaml's cells that no row measures: the smoke must grow with the study."""
    from frozenbench.study import cell_type
    from frozenbench.study import study_cells

    covered = set(PRIORITY)
    missing = set()
    for task, _, mode, head in study_cells(paper):
        entry = paper["tasks"][task]
        pair = (cell_type(entry, entry["heads"][head], task), mode)
        if pair not in covered:
            missing.add(f"{pair[0]}:{pair[1]}")
    return sorted(missing)


def default_out(device: str, name: str) -> Path:
    if device == "cuda":
        return RECORDS / f"gpu_{re.sub(r'[^a-z0-9]+', '_', name.lower()).strip('_')}.json"
    return RESULTS / "gpu_smoke_cpu.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    parser.add_argument(
        "--arch",
        default=None,
        help="backbone of the paper cells (random weights); default swin_large on a GPU, swin_tiny on the CPU",
    )
    parser.add_argument("--steps", type=int, default=None, help="training steps per row (default 16 GPU, 3 CPU)")
    parser.add_argument(
        "--batch", type=int, default=None, help="per-rank batch of the task rows (default: paper.yaml's)"
    )
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers per rank (default 4 GPU, 1 CPU)")
    parser.add_argument(
        "--nproc", type=int, default=None, help="ranks of the task rows (default: every GPU; on the CPU 1, one row 2)"
    )
    parser.add_argument(
        "--cells", nargs="*", default=None, help="rows to run: cell kinds (every mode) or kind:mode (default: all)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats of each backbone-rate measurement")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="wall-clock seconds for the whole run: later rows are skipped, a running one killed (540 GPU, 1800 CPU)",
    )
    parser.add_argument(
        "--rehearse-cuda",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="on the CPU, run every job on the CUDA path's logic (FROZENBENCH_CUDA_REHEARSAL=1: pinned loaders, "
        "non-blocking copies, TF32 flags, the GPU memory record's branch); default on with --device cpu",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    clock = time.monotonic()
    on_gpu = args.device == "cuda"
    if on_gpu and not torch.cuda.is_available():
        sys.exit("gpu_smoke: --device cuda but torch sees no GPU")
    from frozenbench.config import load_config
    from frozenbench.data.synth import synthesize
    from frozenbench.utils.atomic import write_json

    paper, mini_study = load_config(PAPER), load_config(MINI_STUDY)
    missing = uncovered_paper_kinds(paper)
    if missing:
        sys.exit(f"gpu_smoke: {PAPER} has cell kinds no row measures: {', '.join(missing)}; add them to PRIORITY")
    rows = select_rows(args.cells)
    tiny = not on_gpu
    budget = args.budget_s if args.budget_s is not None else (540.0 if on_gpu else 1800.0)
    name = torch.cuda.get_device_name(0) if on_gpu else "cpu"
    out = args.out or default_out(args.device, name)
    steps = args.steps or (16 if on_gpu else 3)
    # nothing may reach the network: timm / huggingface_hub are told so as well
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    # CI's CPU run takes the branch a GPU takes (engine/device.py), so a GPU hour never meets it first
    rehearse = (not on_gpu) if args.rehearse_cuda is None else (args.rehearse_cuda and not on_gpu)
    env["FROZENBENCH_CUDA_REHEARSAL"] = "1" if rehearse else "0"
    record: dict[str, Any] = {
        "benchmark": "gpu_smoke",
        "schema": SCHEMA,
        "device": args.device,
        "device_name": name,
        "gpu_memory_mb": round(torch.cuda.get_device_properties(0).total_memory / 2**20) if on_gpu else None,
        "torch": torch.__version__,
        "tiny": tiny,
        "nproc": args.nproc or (torch.cuda.device_count() if on_gpu else 1),
        "arch": args.arch or ("swin_large" if on_gpu else "swin_tiny"),
        "steps": steps,
        "workers": args.workers if args.workers is not None else (4 if on_gpu else 1),
        "budget_s": budget,
        "cuda_path_rehearsed": rehearse,
        "machine": machine(),
        "targets": TARGETS,
        "cells": [],
        "failures": [],
        "skipped": [],
    }

    def save() -> None:
        record["elapsed_s"] = round(time.monotonic() - clock, 1)
        write_json(out, record)

    with tempfile.TemporaryDirectory(prefix="gpu_smoke_") as tmp:
        work = Path(tmp)
        needed = {TASK_KINDS[c].dataset for c, _ in rows if c in TASK_KINDS}
        for dataset, spec in datasets(tiny).items():
            if dataset in needed:
                synthesize(spec, work / "data" / dataset)
        if any(c in PRETRAIN_KINDS for c, _ in rows):
            batch = TINY_PRETRAIN_BATCH if tiny else mini_study["pretrain"]["options"]["batch_size"]
            synthesize(pretrain_dataset(mini_study, batch), work / "data" / "shapes-pretrain")
        ctx = Context(
            device=args.device,
            tiny=tiny,
            arch=record["arch"],
            steps=steps,
            batch=args.batch,
            nproc=args.nproc,
            workers=record["workers"],
            threads=len(os.sched_getaffinity(0)),
            repeats=args.repeats,
            work=work,
            deadline=clock + budget,
            paper=paper,
            mini_study=mini_study,
            env=env,
            cli=[sys.executable, "-m", "frozenbench.cli"],  # the interpreter this smoke runs in
        )
        matmul, matmul_flops = matmul_case(
            8192 if on_gpu else 1024, args.device, torch.bfloat16 if on_gpu else torch.float32
        )
        seconds = interleaved(
            {"matmul": matmul}, args.repeats, warmup=2, sync=torch.cuda.synchronize if on_gpu else (lambda: None)
        )
        record["matmul"] = {
            "dtype": "bfloat16" if on_gpu else "float32",
            "size": 8192 if on_gpu else 1024,
            "tflops": round(matmul_flops / min(seconds["matmul"]) / 1e12, 3),
        }
        save()
        for cell, mode in rows:
            row: dict[str, Any] = {"cell": cell, "mode": mode, "status": "ok", "error": None}
            row_started = time.monotonic()
            if row_started >= ctx.deadline:
                row.update(status="skipped", error="time budget")
                record["skipped"].append(f"{cell}:{mode}")
            else:
                try:
                    if cell in TASK_KINDS:
                        run_task_row(ctx, cell, mode, row)
                    else:
                        run_pretrain_row(ctx, cell, row)
                except Exception as err:  # one failed row must not cost the others: recorded, run goes on
                    message = str(err) if isinstance(err, RowFailed) else f"{type(err).__name__}: {err}"
                    kept = {k: row[k] for k in ("cell", "mode", "arch", "img_size", "num_frames", "batch") if k in row}
                    row = {**kept, "status": "failed", "error": tail(message)}
                    record["failures"].append(f"{cell}:{mode}: {tail(message, lines=1)}")
                if row.get("flop_error"):
                    record["failures"].append(f"{cell}:{mode}: FLOP count: {row['flop_error']}")
                row["row_wall_s"] = round(time.monotonic() - row_started, 1)
            record["cells"].append(row)
            save()
            print(json.dumps({k: row.get(k) for k in SUMMARY if k in row}), flush=True)
        save()
    print(out)
    sys.exit(1 if record["failures"] else 0)


SUMMARY = (
    "cell",
    "mode",
    "status",
    "arch",
    "batch",
    "seconds_per_step",
    "samples_per_second",
    "data_wait",
    "train_gpu_peak_mb",
    "eval_seconds_per_sample",
    "backbone_gflop_per_sample",
    "head_gflop_per_sample",
    "backbone_fraction_of_matmul",
    "error",
)


if __name__ == "__main__":
    main()
