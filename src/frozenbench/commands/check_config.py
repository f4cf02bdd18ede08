"""``frozenbench check-config``: validate a study config, say what each backbone will be built as,
refuse cells that will not fit their GPU (as the DAG does at its start) and print the config with
defaults filled in."""

from __future__ import annotations

import argparse

import yaml

from frozenbench.config import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", default="config.yaml", help="study config (default: config.yaml)")
    parser.add_argument("--print", action="store_true", help="print the config with schema defaults filled in")
    parser.add_argument(
        "--memory",
        action="store_true",
        help="print every cell's estimated peak GPU memory in training and evaluation (docs/memory.md)",
    )


def hub_origin(ckpt: dict) -> str:
    from frozenbench.checkpoint.hub import cached_file
    from frozenbench.errors import UserError

    try:
        path = cached_file(ckpt["hub"], ckpt["filename"], ckpt.get("revision"))
        return f"hub {ckpt['hub']}/{ckpt['filename']} (cached: {path})"
    except UserError as err:
        return f"MISSING: {err}"


def backbone_plan(name: str, entry: dict) -> str:
    """One line on what backbone ``name`` will be: family, feature levels and strides, what the dense
    heads get, input normalisation and where the weights come from (built on the meta device: no
    weight is allocated or read)."""
    import torch

    from frozenbench.models.backbone import Backbone
    from frozenbench.models.registry import get_arch

    spec = get_arch(entry["arch"])
    with torch.device("meta"):
        body = Backbone(spec.name)
    levels = f"levels {body.out_indices} (strides {body.strides}, channels {body.channels})"
    dense = "simple feature pyramid -> strides [4, 8, 16, 32]" if body.needs_pyramid else "as they are"
    if "pretrain" in entry:
        weights = f"pretrained here ({entry['pretrain']['objective']})"
    else:
        ckpt = entry.get("checkpoint", {})
        origin = (
            "download"
            if "url" in ckpt
            else f"file {ckpt['file']}"
            if "file" in ckpt
            else "seeded random weights"
            if "synth" in ckpt
            else hub_origin(ckpt)
            if "hub" in ckpt
            else "not released"
        )
        weights = f"{origin}, {ckpt['layout']} layout ({ckpt['objective']}, {ckpt['data']})" if ckpt else origin
    notes = f" ({spec.notes})" if spec.notes else ""
    # the weights' normalisation, as conversion will record it (the mae layout's is MAE's, not the arch's)
    norm = {"mean": list(spec.mean), "std": list(spec.std)}
    checkpoint = entry.get("checkpoint", {})
    if checkpoint.get("layout"):
        from frozenbench.checkpoint.convert import weights_settings

        norm = weights_settings(
            spec.name, checkpoint["layout"], checkpoint.get("weights_tag"), checkpoint.get("normalization")
        ).normalization
    return (
        f"{name}: {spec.name} ({spec.family.name} family){notes}, {levels}; dense heads: {dense}; video: the "
        f"last level's tokens; inputs normalised with mean {norm['mean']} std {norm['std']}; weights: {weights}"
    )


def memory_table(config: dict) -> list[str]:
    """One line per cell: its estimated training and evaluation peaks with their parts."""
    from frozenbench.cluster.memory import estimate_cell_memory, load_record
    from frozenbench.study import study_cells

    record, origin = load_record(config)
    lines = [f"estimated peak GPU memory per cell (MiB; heads' share from {origin}):"]
    for cell in dict.fromkeys(study_cells(config)):
        estimate = estimate_cell_memory(config, cell, record)
        lines.append(f"  {estimate.cell}: train {estimate.describe('train')}")
        lines.append(f"  {' ' * len(estimate.cell)}  eval  {estimate.describe('evaluate')}")
    return lines


def run(args: argparse.Namespace) -> int:
    from frozenbench.cluster.memory import check_memory

    config = load_config(args.config)
    notes = check_memory(config, source=args.config)
    if args.print:
        print(yaml.safe_dump(config, sort_keys=False), end="")
    else:
        print(f"{args.config}: ok ({len(config['datasets'])} datasets)")
        for name, entry in config.get("backbones", {}).items():
            print("  " + backbone_plan(name, entry))
        for note in notes:
            print(f"  memory: {note}")
    if args.memory:
        print("\n".join(memory_table(config)))
    return 0
