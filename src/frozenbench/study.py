"""The study's config logic: what each cell, backbone and job of a config is, as pure functions.

The DAG (``rules/common.smk``) only calls these, so every value a rule puts on a command line is
built here and unit-tested (``tests/test_study.py``). Every function takes the validated config
(defaults filled in by :func:`frozenbench.config.validate_config` or Snakemake's validator).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from frozenbench.config import ConfigError
from frozenbench.errors import UserError
from frozenbench.tasks.registry import get_task_type

Config = dict[str, Any]


def study_cells(config: Config) -> Iterator[tuple[str, str, str, str]]:
    """(task, backbone, mode, head) of every configured cell, in config order."""
    for cell in config.get("study", {}).get("cells", []):
        for backbone in cell["backbones"]:
            for mode in cell["modes"]:
                for head in cell["heads"]:
                    yield cell["task"], backbone, mode, head


def study_seeds(config: Config) -> list[int]:
    """The seeds every cell runs at unless its study entry names its own: ``study.seeds``, else
    the config's ``seed``."""
    return list(config.get("study", {}).get("seeds") or [config["seed"]])


def cell_seeds(config: Config) -> dict[tuple[str, str, str, str], list[int]]:
    """Each cell's seeds, in config order: its study entries' ``seeds`` (else :func:`study_seeds`),
    the union where a cell is listed in more than one entry."""
    seeds: dict[tuple[str, str, str, str], list[int]] = {}
    for cell in config.get("study", {}).get("cells", []):
        entry_seeds = cell.get("seeds") or study_seeds(config)
        for backbone in cell["backbones"]:
            for mode in cell["modes"]:
                for head in cell["heads"]:
                    have = seeds.setdefault((cell["task"], backbone, mode, head), [])
                    have += [seed for seed in entry_seeds if seed not in have]
    return seeds


def seed_folder(seed: int) -> str:
    """The folder of one seed's run under its cell's: ``seed<N>``."""
    return f"seed{seed}"


def study_runs(config: Config) -> Iterator[tuple[str, str, str, str, int]]:
    """(task, backbone, mode, head, seed) of every run: each cell at each of its seeds."""
    for cell, seeds in cell_seeds(config).items():
        for seed in seeds:
            yield (*cell, seed)


def run_paths(config: Config) -> list[str]:
    """``task/backbone/mode/head/seed<N>`` of every run: what its run folder and results sit under."""
    return ["/".join((*cell, seed_folder(seed))) for *cell, seed in study_runs(config)]


def pretrain_spec(config: Config, backbone: str) -> dict[str, Any]:
    """The backbone's pretraining objective, dataset and options (study defaults overridden per backbone)."""
    entry = config["backbones"][backbone]["pretrain"]
    defaults = config.get("pretrain", {})
    return {
        "objective": entry["objective"],
        "dataset": entry.get("dataset", defaults.get("dataset")),
        "options": {**defaults.get("options", {}), **entry.get("options", {})},
    }


def objective_of(config: Config, backbone: str) -> str:
    """The pretraining objective a backbone's weights come from (``none`` for unreleased weights)."""
    entry = config["backbones"][backbone]
    if "pretrain" in entry:
        return pretrain_spec(config, backbone)["objective"]
    return entry.get("checkpoint", {}).get("objective", "none")


def checkpoint_origin(checkpoint: dict[str, Any]) -> str:
    """Where a published checkpoint comes from, as recorded in the converted file's metadata."""
    if "url" in checkpoint:
        return checkpoint["url"]
    if "file" in checkpoint:
        return checkpoint["file"]
    if "hub" in checkpoint:
        return f"hf://{checkpoint['hub']}/{checkpoint['filename']}"
    return f"synth:{checkpoint['layout']}:seed={checkpoint['synth']['seed']}"


def checkpoint_meta(config: Config, backbone: str) -> dict[str, Any]:
    checkpoint = config["backbones"][backbone]["checkpoint"]
    return {
        "name": backbone,
        "url": checkpoint_origin(checkpoint),
        "pretrain_objective": checkpoint["objective"],
        "pretrain_data": checkpoint["data"],
        # what the weights take beyond their architecture: conversion records them in the file
        **{key: checkpoint[key] for key in ("weights_tag", "normalization") if key in checkpoint},
    }


def task_spec(
    config: Config,
    task: str,
    head: str,
    mode: str,
    data_dir: str,
    evaluation: bool = False,
    backbone: str | None = None,
) -> dict[str, Any]:
    """What `frozenbench train/evaluate` need of a cell, as the JSON of its
    :class:`~frozenbench.cells.spec.CellSpec` (every field, defaults included): its task type,
    data, input size, head, schedule (a fine-tune cell's is `train` updated by `finetune`, so
    frozen cells ignore `finetune`) and the backbone's arch when ``backbone`` is named. Test-time
    options go to evaluation only, so changing them re-evaluates without retraining."""
    from frozenbench.cells.spec import CellSpec
    from frozenbench.engine.options import TrainOptions

    entry = config["tasks"][task]
    schedule = dict(entry.get("train", {}))
    if mode == "finetune":
        schedule.update(entry.get("finetune", {}))
    where = f"tasks.{task}"
    spec = CellSpec(
        type=entry["type"],
        data=str(data_dir),
        img_size=entry["img_size"],
        head=get_task_type(entry["type"]).make_head(entry["heads"][head], where=f"{where}.heads.{head}"),
        train=TrainOptions.parse(schedule, where=f"{where}.train"),
        arch=config["backbones"][backbone]["arch"] if backbone else None,
        data_options=dict(entry.get("data_options", {})),
        augment=dict(entry.get("augment") or {}),
        test=dict(entry.get("test", {})),
        bf16=entry.get("bf16", False),
        feature_cache=entry.get("feature_cache", False),
        compile_backbone=entry.get("compile_backbone", False),
        autocast_bf16=entry.get("autocast_bf16", False),
        tf32=entry.get("tf32", False),
        # a frozen backbone keeps no activation: the option is a no-op there and stays out of its spec
        activation_checkpointing=mode == "finetune" and entry.get("activation_checkpointing", False),
        frame_chunk=entry.get("frame_chunk") or 0,
        zero_stage=entry.get("zero_stage", 2),
    )
    return spec.to_json(evaluation=evaluation)


def cell_labels(config: Config, task: str, backbone: str, head: str) -> dict[str, str]:
    """What a table needs to know of a cell beyond its path (recorded in metrics.json, all strings)."""
    entry = config["backbones"][backbone]
    head_cfg = config["tasks"][task]["heads"][head]
    task_type = get_task_type(config["tasks"][task]["type"])
    dataset = config["tasks"][task]["dataset"]
    labels = {
        "task_type": task_type.name,
        "head_kind": task_type.head_kind(task_type.make_head(head_cfg)),
        "dataset": dataset,
        # the published benchmark the data is, if any (datasets.<name>.benchmark): the paper table's delta
        "benchmark": config.get("datasets", {}).get(dataset, {}).get("benchmark", ""),
        "pretrain_objective": objective_of(config, backbone),
        "family_size": entry.get("family_size", "-"),
        "arch": entry["arch"],
        "extra_blocks": head_cfg.get("extra_blocks", 0),
        "capacity": task_type.capacity_label(head_cfg),
    }
    return {k: str(v) for k, v in labels.items()}


MODES = ("frozen", "finetune")


def cell_type(task: dict[str, Any], head: dict[str, Any], task_name: str) -> str:
    """The benchmark's name of a cell's kind: ``<task>_<head kind>`` (e.g. ``coco_htc``), what a
    GPU smoke record measures once and the cost and memory estimates price every cell from (the
    head kind is the task type record's ``head_kind``)."""
    task_type = get_task_type(task["type"])
    return f"{task_name}_{task_type.head_kind(task_type.make_head(head))}"


def cell_run(config: Config, cell: str, evaluation: bool = False) -> dict[str, Any]:
    """Everything `frozenbench train` / `evaluate` take for the run named ``task/backbone/mode/head``
    (its first seed) or ``task/backbone/mode/head/seed<N>``, as the DAG's train_head / evaluate_head
    rules give it: the spec, the backbone checkpoint, the run folder, the metrics file, the seed and
    the labels (one run by hand without writing its JSON)."""
    parts = cell.split("/")
    if len(parts) not in (4, 5):
        raise UserError(
            f"--cell {cell!r}: expected task/backbone/mode/head[/seed<N>], e.g. ade/swin_base_in22k/frozen/m2f_b4/seed0"
        )
    task, backbone, mode, head = parts[:4]
    choices = {
        "task": (task, sorted(config.get("tasks", {}))),
        "backbone": (backbone, sorted(config.get("backbones", {}))),
        "mode": (mode, list(MODES)),
    }
    for what, (value, known) in choices.items():
        if value not in known:
            raise UserError(f"--cell {cell!r}: no {what} {value!r} in the config; one of {', '.join(known)}")
    heads = sorted(config["tasks"][task].get("heads", {}))
    if head not in heads:
        raise UserError(f"--cell {cell!r}: task {task!r} has no head {head!r}; one of {', '.join(heads)}")
    seeds = cell_seeds(config).get((task, backbone, mode, head)) or study_seeds(config)
    seed = seeds[0] if len(parts) == 4 else _seed_of(cell, parts[4])
    paths = config["paths"]
    data = f"{paths['data']}/{config['tasks'][task]['dataset']}"
    run = f"{task}/{backbone}/{mode}/{head}/{seed_folder(seed)}"
    return {
        "spec": task_spec(config, task, head, mode, data, evaluation=evaluation, backbone=backbone),
        "checkpoint": f"{paths['checkpoints']}/{backbone}.pth",
        "mode": mode,
        "run_dir": f"{paths['runs']}/{run}",
        "out": f"{paths['results']}/{run}/metrics.json",
        "seed": seed,
        "labels": {"task": task, "backbone": backbone, "head": head, **cell_labels(config, task, backbone, head)},
    }


def _seed_of(cell: str, folder: str) -> int:
    if not (folder.startswith("seed") and folder[4:].isdigit()):
        raise UserError(f"--cell {cell!r}: the fifth part names the seed's run, e.g. seed0; got {folder!r}")
    return int(folder[4:])


def dvc_cell_outs(config: Config) -> list[str]:
    """The folders DVC versions for the cells stage: each studied task's runs and results
    (``dvc.yaml`` lists them for ``config.yaml``; ``tests/test_dvc_stages.py`` holds it to this)."""
    tasks = list(dict.fromkeys(task for task, *_ in study_cells(config)))
    paths = config.get("paths", {})
    return [f"{paths.get('runs', 'runs')}/{task}" for task in tasks] + [
        f"{paths.get('results', 'results')}/{task}" for task in tasks
    ]


def tables_plan(config: Config) -> dict[str, Any]:
    """What `frozenbench tables --plan` takes: every run (each cell at each seed; missing until run),
    the head per task of the comparison tables (`study.tables.heads`, else the first head of the
    task's first cell) and the paper comparison's backbone (`study.tables.paper_backbone`, else the largest run)."""
    cells, first_head = [], {}
    for task, backbone, mode, head, seed in study_runs(config):
        first_head.setdefault(task, head)
        cells.append(
            {
                "task": task,
                "backbone": backbone,
                "mode": mode,
                "head": head,
                "seed": seed,
                **cell_labels(config, task, backbone, head),
            }
        )
    chosen = config.get("study", {}).get("tables", {})
    plan = {"cells": cells, "heads": {**first_head, **chosen.get("heads", {})}}
    if chosen.get("paper_backbone"):
        plan["paper_backbone"] = chosen["paper_backbone"]
    return plan


# Per-job compute for the heavy rules: CPU-only defaults (the mini-study); a GPU cluster
# config sets gpus (per node; and gpu_model) so the Slurm plugin requests them.
COMPUTE_DEFAULTS = {
    "train": {"gpus": 0, "threads": 2, "mem_mb": 8000, "runtime": 24 * 60, "workers": 0, "nodes": 1, "device": "auto"},
    "evaluate": {"gpus": 0, "threads": 2, "mem_mb": 8000, "runtime": 60, "workers": 0, "nodes": 1, "device": "auto"},
    # dataset preparation: one process per thread (Kinetics re-encodes its clips in a pool)
    "prepare": {"gpus": 0, "threads": 4, "mem_mb": 8000, "runtime": 12 * 60, "workers": 0, "nodes": 1, "device": "cpu"},
}


def compute_settings(config: Config) -> dict[str, dict[str, Any]]:
    """Each job kind's compute: the defaults above, overridden by the config's ``compute.<kind>``."""
    compute = {
        kind: {**defaults, **config.get("compute", {}).get(kind, {})} for kind, defaults in COMPUTE_DEFAULTS.items()
    }
    if compute["evaluate"]["nodes"] != 1 or compute["prepare"]["nodes"] != 1:
        raise ConfigError("compute: only train jobs span several nodes (evaluate and prepare run on one)")
    return compute
