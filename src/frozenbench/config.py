"""Study configuration: load a YAML file and validate it against schemas/config.schema.yaml.

The one validator: the Snakefile calls :func:`validate_config` at DAG start and the CLI calls
:func:`load_config`, so a subcommand run by hand gets the same checks, the same defaults and the
same error messages (naming the file and the offending key).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from frozenbench.errors import UserError

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"


class ConfigError(UserError, ValueError):
    """A configuration file that cannot be used; the message names the file and key."""


def _key_path(error: Any) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "<top level>"


def load_schema(path: Path = SCHEMA_PATH) -> dict[str, Any]:
    with open(path) as f:
        return yaml.safe_load(f)


def validate_config(config: dict[str, Any], source: str = "<config>", schema: dict | None = None) -> dict[str, Any]:
    """Validate ``config`` and return a copy with schema defaults filled in.

    Raises:
        ConfigError: naming ``source`` and the dotted key of the first problem found
            (errors are sorted by key so the message is deterministic).
    """
    import jsonschema

    renamed = renamed_keys(config)
    if renamed:
        raise ConfigError("\n".join([f"{source}: invalid config"] + [f"  at {key}: {why}" for key, why in renamed]))
    schema = schema or load_schema()
    validator_cls = jsonschema.validators.validator_for(schema)
    validator = validator_cls(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    if errors:
        lines = [f"{source}: invalid config"]
        for err in errors[:10]:
            lines.append(f"  at {_key_path(err)}: {err.message}")
        if len(errors) > 10:
            lines.append(f"  ... and {len(errors) - 10} more")
        raise ConfigError("\n".join(lines))
    return fill_defaults(copy.deepcopy(config), schema)


def renamed_keys(config: dict[str, Any]) -> list[tuple[str, str]]:
    """Keys an older config spelled otherwise, with the new name (checked before the schema, whose
    message would only say the old key is unexpected)."""
    found = []

    def options(entry: Any, key: str) -> None:
        if isinstance(entry, dict) and "task_options" in entry:
            found.append((f"{key}.task_options", "renamed objective_options"))

    if isinstance(config.get("pretrain"), dict):
        options(config["pretrain"].get("options"), "pretrain.options")
    for name, backbone in (config.get("backbones") or {}).items():
        if not isinstance(backbone, dict):
            continue
        for section in ("pretrain", "checkpoint"):
            entry = backbone.get(section)
            if isinstance(entry, dict) and "task" in entry:
                found.append(
                    (
                        f"backbones.{name}.{section}.task",
                        "renamed objective (the pretraining objective, not a study task)",
                    )
                )
        if isinstance(backbone.get("pretrain"), dict):
            options(backbone["pretrain"].get("options"), f"backbones.{name}.pretrain.options")
    return found


def fill_defaults(config: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Fill ``default`` values of declared properties, following local ``$ref`` and ``if/then``."""
    defs = schema.get("$defs", {})

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        ref = node.get("$ref")
        if ref and ref.startswith("#/$defs/"):
            return resolve(defs[ref.split("/")[-1]])
        return node

    def visit(instance: Any, node: dict[str, Any]) -> None:
        node = resolve(node)
        if not isinstance(instance, dict):
            if isinstance(instance, list) and isinstance(node.get("items"), dict):
                for item in instance:
                    visit(item, node["items"])
            return
        props = dict(node.get("properties", {}))
        for clause in node.get("allOf", []):
            if _matches(instance, clause.get("if", {})):
                for key, sub in clause.get("then", {}).get("properties", {}).items():
                    props[key] = sub
        for key, sub in props.items():
            sub = resolve(sub)
            if key not in instance and "default" in sub:
                instance[key] = copy.deepcopy(sub["default"])
            if key in instance:
                visit(instance[key], sub)
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            for key, value in instance.items():
                if key not in props:
                    visit(value, extra)

    visit(config, schema)
    return config


def _matches(instance: dict[str, Any], condition: dict[str, Any]) -> bool:
    for key, sub in condition.get("properties", {}).items():
        if "const" in sub and instance.get(key) != sub["const"]:
            return False
    return bool(condition)


# which dataset format each task type trains on
TASK_FORMATS = {"segmentation": "ade", "detection": "coco", "video": "kinetics"}


def reference_problems(config: dict[str, Any]) -> list[str]:
    """Every broken cross-reference of a schema-valid ``config``, each as ``<dotted key>: <problem>``:
    what would otherwise fail late, inside a job."""
    from frozenbench.models.registry import get_arch, list_archs

    datasets, backbones, tasks = config.get("datasets", {}), config.get("backbones", {}), config.get("tasks", {})
    problems = []

    def dataset_of(key: str, name: str | None, fmt: str, purpose: str) -> None:
        if name is None:
            problems.append(f"{key}: missing (the {fmt} dataset {purpose})")
        elif name not in datasets:
            problems.append(f"{key}: unknown dataset {name!r} (have: {', '.join(sorted(datasets))})")
        elif datasets[name]["format"] != fmt:
            problems.append(f"{key}: {purpose} needs a dataset of format {fmt}; {name!r} is {datasets[name]['format']}")

    archs = {}
    for name, backbone in backbones.items():
        try:
            archs[name] = get_arch(backbone["arch"])
        except KeyError:
            problems.append(
                f"backbones.{name}.arch: unknown architecture {backbone['arch']!r} (known: {', '.join(list_archs())})"
            )
        family = archs[name].family if name in archs else None
        if family is not None and "pretrain" in backbone and backbone["pretrain"]["objective"] not in family.objectives:
            problems.append(
                f"backbones.{name}.pretrain.objective: {backbone['pretrain']['objective']} cannot pretrain a "
                f"{family.name} backbone (its objectives: {', '.join(family.objectives)})"
            )
        layout = backbone.get("checkpoint", {}).get("layout")
        if family is not None and layout is not None and layout not in family.layouts:
            problems.append(
                f"backbones.{name}.checkpoint.layout: {family.name} weights come in the "
                f"{', '.join(family.layouts)} layout(s), not {layout}"
            )
        if "pretrain" in backbone:
            default = config.get("pretrain", {}).get("dataset")
            where = "dataset" if "dataset" in backbone["pretrain"] else None
            key = f"backbones.{name}.pretrain.dataset" if where else "pretrain.dataset"
            dataset_of(key, backbone["pretrain"].get("dataset", default), "imagefolder", "pretraining")
    for name, task in tasks.items():
        dataset_of(f"tasks.{name}.dataset", task["dataset"], TASK_FORMATS[task["type"]], f"task type {task['type']}")
        clip_frames = task.get("data_options", {}).get("num_frames")
        for head_name, head in task["heads"].items():
            if (
                task["type"] == "video"
                and clip_frames is not None
                and head.get("num_frames", clip_frames) != clip_frames
            ):
                problems.append(
                    f"tasks.{name}.heads.{head_name}.num_frames: {head['num_frames']} frames per clip, "
                    f"but tasks.{name}.data_options.num_frames samples {clip_frames}"
                )
    for index, cell in enumerate(config.get("study", {}).get("cells", [])):
        key = f"study.cells.{index}"
        task = tasks.get(cell["task"])
        if task is None:
            problems.append(f"{key}.task: unknown task {cell['task']!r} (have: {', '.join(sorted(tasks))})")
            continue
        for head in cell["heads"]:
            if head not in task["heads"]:
                owners = [t for t, entry in tasks.items() if head in entry["heads"]]
                also = f"; it is a head of {', '.join(map(repr, owners))}" if owners else ""
                problems.append(
                    f"{key}.heads: {head!r} is not a head of task {cell['task']!r}{also} "
                    f"(its heads: {', '.join(task['heads'])})"
                )
        for backbone in cell["backbones"]:
            if backbone not in backbones:
                problems.append(
                    f"{key}.backbones: unknown backbone {backbone!r} (have: {', '.join(sorted(backbones))})"
                )
                continue
            spec = archs.get(backbone)
            if spec is None:
                continue
            sizes = {"img_size": task["img_size"], "augment.crop_size": task.get("augment", {}).get("crop_size")}
            for size_key, size in sizes.items():
                if size is None:
                    continue
                if spec.patch_size and size % spec.patch_size:
                    problems.append(
                        f"tasks.{cell['task']}.{size_key}: {size} is not a multiple of {spec.patch_size}, "
                        f"the patch size of {spec.name} (backbone {backbone!r})"
                    )
                if size < spec.total_stride:
                    problems.append(
                        f"tasks.{cell['task']}.{size_key}: {size} is below {spec.total_stride}, the last "
                        f"stage's stride of {spec.name} (backbone {backbone!r})"
                    )
    tables = config.get("study", {}).get("tables", {})
    for task_name, head in tables.get("heads", {}).items():
        if task_name not in tasks:
            problems.append(f"study.tables.heads.{task_name}: unknown task {task_name!r}")
        elif head not in tasks[task_name]["heads"]:
            problems.append(f"study.tables.heads.{task_name}: {head!r} is not a head of task {task_name!r}")
    if "paper_backbone" in tables and tables["paper_backbone"] not in backbones:
        problems.append(f"study.tables.paper_backbone: unknown backbone {tables['paper_backbone']!r}")
    return list(dict.fromkeys(problems))


def check_references(config: dict[str, Any], source: str = "<config>") -> None:
    """Raise :class:`ConfigError` listing every broken cross-reference (see :func:`reference_problems`)."""
    problems = reference_problems(config)
    if problems:
        raise ConfigError("\n".join([f"{source}: inconsistent config"] + [f"  at {p}" for p in problems]))


def load_config(path: str | Path) -> dict[str, Any]:
    """Read and validate a study config file."""
    path = Path(path)
    try:
        with open(path) as f:
            config = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(config).__name__}")
    config = validate_config(config, source=str(path))
    check_references(config, source=str(path))
    return config
