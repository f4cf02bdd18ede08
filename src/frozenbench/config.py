"""Study configuration: read a YAML file strictly and validate it against schemas/config.schema.yaml.

The one validator: the Snakefile reads each config file with :func:`read_yaml` and calls
:func:`validate_config` and :func:`check_references` at DAG start, and the CLI calls
:func:`load_config`, so a subcommand run by hand gets the same checks, the same defaults and the
same error messages (naming the file, the line or the offending key).

Plain ``yaml.safe_load`` lets a config change the study without a word: a second ``train:`` silently
replaces the first, ``off:`` becomes the key ``False``, a few aliases expand to a billion values. The
reader here refuses each of these, naming the file and line, before anything is built from the file.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

import yaml

from frozenbench.errors import UserError

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"


class ConfigError(UserError, ValueError):
    """A configuration file that cannot be used; the message names the file and key."""


# -- the strict YAML reader ------------------------------------------------------------------------

# Values a document may expand to through its aliases: the shipped paper.yaml has under 1,000, and
# the billion-laughs bomb (nine levels of ten aliases) needs 10**9; stopping at this bound keeps
# the schema validation, deep copies and JSON dumps that follow a load bounded too.
MAX_NODES = 100_000
# nesting deeper than any config needs; PyYAML's composer recurses once per level
MAX_DEPTH = 64

_TAG = "tag:yaml.org,2002:"
_KEY_KINDS = {"null": "null (nothing)", "int": "an integer", "float": "a number", "timestamp": "a date"}


def read_yaml(path: str | Path) -> Any:
    """The one document of the YAML file ``path``, read strictly.

    Raises:
        ConfigError: naming ``path`` (and the line) for a file that is not UTF-8, not YAML, empty,
            several documents, indented with tabs, has a duplicate key or a key YAML reads as a
            boolean, null, number or date, nests deeper than ``MAX_DEPTH`` or whose aliases
            expand it beyond ``MAX_NODES`` values.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config file: {err.strerror or err}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}:{line}: not UTF-8 text (byte 0x{raw[err.start]:02x}); save the config as UTF-8"
        ) from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError(f"{path}: the config file is empty (expected a mapping: seed, paths, datasets, ...)")
        _check_nodes(node, path)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as err:
        raise ConfigError(_yaml_problem(path, err)) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a config (more than {MAX_DEPTH} levels)") from None
    finally:
        loader.dispose()


def _yaml_problem(path: Path, err: yaml.MarkedYAMLError) -> str:
    """One line: file:line:column and what is wrong there (never a snippet of the file's text)."""
    mark = err.problem_mark or err.context_mark
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
    problem = err.problem or err.context or "not valid YAML"
    if err.context == "expected a single document in the stream":
        return f"{where}: a second YAML document starts here ('---'); a config file is one document"
    if "'\\t'" in problem:
        return f"{where}: a tab character where YAML expects indentation; indent with spaces"
    context = f" ({err.context})" if err.context and err.problem else ""
    return f"{where}: not valid YAML: {problem}{context}"


def _check_nodes(root: yaml.Node, path: Path) -> None:
    """Refuse what safe_load would silently accept: walk the composed document (aliases expanded,
    so a bomb or a recursive alias stops at ``MAX_NODES``) in document order."""
    seen = 0
    stack: list[tuple[yaml.Node, str, int]] = [(root, "", 0)]
    while stack:
        node, where, depth = stack.pop()
        seen += 1
        if seen > MAX_NODES:
            raise ConfigError(
                f"{path}:{node.start_mark.line + 1}: aliases (*name) expand the document beyond {MAX_NODES} "
                "values (an alias bomb, or an alias inside its own anchor); write the values out"
            )
        if depth > MAX_DEPTH:
            raise ConfigError(
                f"{path}:{node.start_mark.line + 1}: nested more than {MAX_DEPTH} levels deep "
                "(or an alias inside its own anchor)"
            )
        if isinstance(node, yaml.SequenceNode):
            stack.extend((item, _join(where, i), depth + 1) for i, item in reversed(list(enumerate(node.value))))
        elif isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            children = []
            for key, value in node.value:
                name = _key_name(key, where, path)
                line = key.start_mark.line + 1
                if name in first:
                    raise ConfigError(
                        f"{path}:{line}: duplicate key {_join(where, name)} (first at {path}:{first[name]}); "
                        "YAML would silently keep only this second one: remove one"
                    )
                first[name] = line
                children.append((value, _join(where, name), depth + 1))
            stack.extend(reversed(children))


def _key_name(key: yaml.Node, where: str, path: Path) -> str:
    """The name a mapping key stands for; a key YAML reads as something else is refused (a schema
    would only report ``False was unexpected``, and ``off: ...`` never meant the boolean)."""
    line, under = f"{path}:{key.start_mark.line + 1}", where or "the top level"
    if not isinstance(key, yaml.ScalarNode):
        raise ConfigError(f"{line}: a {key.id} as a key under {under}; keys are names")
    kind = key.tag.removeprefix(_TAG)
    if kind == "bool":
        kind = "the boolean " + str(yaml.SafeLoader.bool_values[key.value.lower()])
    elif kind in _KEY_KINDS:
        kind = _KEY_KINDS[kind]
    elif kind != "str" and kind != "merge":
        kind = f"a {kind}"
    else:
        return key.value
    raise ConfigError(
        f"{line}: key {key.value!r} under {under} is read by YAML as {kind}, not a name; quote it: '{key.value}':"
    )


def _join(where: str, key: object) -> str:
    return f"{where}.{key}" if where else str(key)


def _key_path(error: Any) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "<top level>"


def load_schema(path: Path = SCHEMA_PATH) -> dict[str, Any]:
    return read_yaml(path)


def _listing(source: str, title: str, problems: list[tuple[str, str]]) -> str:
    """One line per problem, each naming its dotted key (at most 10, then how many more)."""
    lines = [f"{source}: {title}"] + [f"  at {key}: {why}" for key, why in problems[:10]]
    if len(problems) > 10:
        lines.append(f"  ... and {len(problems) - 10} more")
    return "\n".join(lines)


def validate_config(config: dict[str, Any], source: str = "<config>", schema: dict | None = None) -> dict[str, Any]:
    """Validate ``config`` and return a copy with schema defaults filled in.

    Raises:
        ConfigError: naming ``source`` and the dotted key of the first problem found
            (errors are sorted by key so the message is deterministic).
    """
    import jsonschema

    early = renamed_keys(config) + secret_problems(config)
    if early:
        raise ConfigError(_listing(source, "invalid config", early))
    schema = schema or load_schema()
    validator_cls = jsonschema.validators.validator_for(schema)
    validator = validator_cls(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    if errors:
        # masked again: a value the schema refuses is quoted whole in its message
        problems = [(_key_path(err), mask_secrets(err.message)) for err in errors]
        raise ConfigError(_listing(source, "invalid config", problems))
    filled = fill_defaults(copy.deepcopy(config), schema)
    outside = path_problems(filled)
    if outside:
        raise ConfigError(_listing(source, "invalid config", outside))
    return filled


# -- credentials, paths and schedules: what the schema cannot say ---------------------------------

# query parameters that carry a credential: tokens, API keys, signed-URL signatures (S3, Azure SAS)
_SECRET_PARAM = (
    r"access_?token|token|auth|api_?key|apikey|key|secret|client_secret|password|passwd|pwd|private_token"
    r"|sig|signature|x-amz-signature|x-amz-credential|x-amz-security-token"
)
# user:password@ before a host, spaces included: the schema refuses such a URL by quoting it whole
_USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://)[^/?#@\s'\"]*(?: [^/?#@\s'\"]*)*@")
_SECRET_QUERY = re.compile(rf"(?i)([?&;](?:{_SECRET_PARAM})=)[^&;#\s'\"]*")


def mask_secrets(text: str) -> str:
    """``text`` with the user:password of every URL in it and its credential query values as ***."""
    return _SECRET_QUERY.sub(r"\1***", _USERINFO.sub(r"\1***@", text))


def secret_problems(config: Any, where: str = "") -> list[tuple[str, str]]:
    """Every string of ``config`` holding a URL with credentials, as (dotted key, problem with the URL
    masked): checked before the schema, whose messages would quote the URL whole."""
    if isinstance(config, dict):
        return [p for key, value in config.items() for p in secret_problems(value, _join(where, key))]
    if isinstance(config, list):
        return [p for i, value in enumerate(config) for p in secret_problems(value, _join(where, i))]
    if isinstance(config, str) and mask_secrets(config) != config:
        return [
            (
                where or "<top level>",
                f"credentials in the URL {mask_secrets(config)}: the config is logged and committed, and "
                "the downloader sends none; remove them and fetch that file by hand (e.g. with a ~/.netrc)",
            )
        ]
    return []


def path_problems(config: dict[str, Any], project: Path | None = None) -> list[tuple[str, str]]:
    """Paths of a schema-valid ``config`` that lead outside the project (the working directory,
    where relative paths resolve) and outside every ``paths.allowed_roots``, as (dotted key, problem).
    Checked on the text (symbolic links inside the project, e.g. data -> /scratch, stay allowed)."""
    project = Path(os.path.normpath(project or Path.cwd()))
    paths = config.get("paths", {})
    roots, problems = [project], []
    for index, root in enumerate(paths.get("allowed_roots", [])):
        norm = Path(os.path.normpath(root))
        if not norm.is_absolute() or ".." in Path(root).parts or norm == Path(norm.anchor):
            problems.append((f"paths.allowed_roots.{index}", f"{root!r} is not an absolute directory below /"))
        else:
            roots.append(norm)
    named = {f"paths.{key}": value for key, value in paths.items() if key != "allowed_roots"}
    for name, backbone in config.get("backbones", {}).items():
        if "file" in backbone.get("checkpoint", {}):
            named[f"backbones.{name}.checkpoint.file"] = backbone["checkpoint"]["file"]
    if "memory_record" in config.get("compute", {}):
        named["compute.memory_record"] = config["compute"]["memory_record"]
    for key, value in named.items():
        if value.startswith("~"):
            problems.append((key, f"{value!r}: '~' is not expanded here; write the path out"))
            continue
        norm = os.path.normpath(value)
        if not os.path.isabs(norm) and norm.split(os.sep)[0] == "..":
            problems.append((key, f"{value!r} climbs out of the project ({project}) with '..'"))
        elif os.path.isabs(norm) and not any(Path(norm).is_relative_to(root) for root in roots):
            problems.append((key, f"{value!r} is outside the project ({project}); add its root to paths.allowed_roots"))
    return problems


def schedule_problems(config: dict[str, Any]) -> list[str]:
    """Training schedules whose warmup outlasts the run (the lr would never reach its set value), as
    ``<dotted key>: <problem>``: the effective options (defaults, then study-wide, then per-entry)."""
    from frozenbench import schedule_defaults

    def check(layers: list[tuple[str, dict[str, Any]]], defaults: tuple[int, int]) -> list[str]:
        known = {"steps": (defaults[0], None), "warmup_steps": (defaults[1], None)}
        for prefix, options in layers:
            known.update({k: (v, f"{prefix}.{k}") for k, v in options.items() if k in known})
        (warmup, warmup_key), (steps, steps_key) = known["warmup_steps"], known["steps"]
        if warmup <= steps:
            return []
        if warmup_key is None:
            return [f"{steps_key}: {steps} steps, fewer than the default warmup_steps {warmup}; set warmup_steps too"]
        of = f" ({steps_key})" if steps_key else " (the default)"
        return [f"{warmup_key}: {warmup}, more than the run's {steps} steps{of}; the lr would never reach its value"]

    problems = []
    study_wide = ("pretrain.options", config.get("pretrain", {}).get("options", {}))
    problems += check([study_wide], schedule_defaults.PRETRAINING)
    for name, backbone in config.get("backbones", {}).items():
        if "options" in backbone.get("pretrain", {}):
            own = (f"backbones.{name}.pretrain.options", backbone["pretrain"]["options"])
            problems += check([study_wide, own], schedule_defaults.PRETRAINING)
    for name, task in config.get("tasks", {}).items():
        train = (f"tasks.{name}.train", task.get("train", {}))
        problems += check([train], schedule_defaults.HEADS)
        if "finetune" in task:
            problems += check([train, (f"tasks.{name}.finetune", task["finetune"])], schedule_defaults.HEADS)
    return problems


def train_ranks(config: dict[str, Any]) -> int:
    """Ranks of a training job: one per GPU of ``compute.train`` (one on a CPU job) on each of its nodes."""
    train = config.get("compute", {}).get("train", {})
    return max(1, int(train.get("gpus", 0))) * int(train.get("nodes", 1))


def batch_problems(config: dict[str, Any]) -> list[str]:
    """Global batches a training job cannot split exactly (``engine.options.split_batch``), as
    ``<dotted key>: <problem>``: each task's ``batch_size`` (the global batch per optimizer step) over
    the train job's ranks, within its ``max_rank_batch``; pretraining runs on one rank."""
    from frozenbench import schedule_defaults
    from frozenbench.engine.options import TrainOptions, split_batch
    from frozenbench.errors import UserError

    def check(layers: list[tuple[str, dict[str, Any]]], ranks: int, batch: int) -> list[str]:
        where = {"batch_size": layers[0][0], "max_rank_batch": layers[0][0]}
        options: dict[str, Any] = {"batch_size": batch, "max_rank_batch": None}
        for prefix, layer in layers:
            for key in where:
                if key in layer:
                    where[key], options[key] = prefix, layer[key]
        try:
            split_batch(options["batch_size"], ranks, options["max_rank_batch"], *where.values())
        except UserError as err:
            return [str(err)]
        return []

    problems = []
    ranks = train_ranks(config)
    for name, task in config.get("tasks", {}).items():
        train = (f"tasks.{name}.train", task.get("train", {}))
        problems += check([train], ranks, TrainOptions().batch_size)
        if "finetune" in task:
            problems += check([train, (f"tasks.{name}.finetune", task["finetune"])], ranks, TrainOptions().batch_size)
    study_wide = ("pretrain.options", config.get("pretrain", {}).get("options", {}))
    problems += check([study_wide], 1, schedule_defaults.PRETRAIN_BATCH)
    for name, backbone in config.get("backbones", {}).items():
        if "options" in backbone.get("pretrain", {}):
            own = (f"backbones.{name}.pretrain.options", backbone["pretrain"]["options"])
            problems += check([study_wide, own], 1, schedule_defaults.PRETRAIN_BATCH)
    return list(dict.fromkeys(problems))


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


def reference_problems(config: dict[str, Any]) -> list[str]:
    """Every broken cross-reference of a schema-valid ``config``, each as ``<dotted key>: <problem>``:
    what would otherwise fail late, inside a job."""
    from frozenbench.models.registry import get_arch

    archs = {}
    for name, backbone in config.get("backbones", {}).items():
        try:
            archs[name] = get_arch(backbone["arch"])
        except KeyError:
            pass  # named by _backbone_problems
    problems = [
        *_backbone_problems(config, archs),
        *_task_problems(config),
        *_cell_problems(config, archs),
        *_table_problems(config),
    ]
    return list(dict.fromkeys(problems))


def _dataset_problem(config: dict[str, Any], key: str, name: str | None, fmt: str, purpose: str) -> list[str]:
    """The problem with ``key`` naming dataset ``name`` where a ``fmt`` dataset is needed, if any."""
    datasets = config.get("datasets", {})
    if name is None:
        return [f"{key}: missing (the {fmt} dataset {purpose})"]
    if name not in datasets:
        return [f"{key}: unknown dataset {name!r} (have: {', '.join(sorted(datasets))})"]
    if datasets[name]["format"] != fmt:
        return [f"{key}: {purpose} needs a dataset of format {fmt}; {name!r} is {datasets[name]['format']}"]
    return []


def _backbone_problems(config: dict[str, Any], archs: dict[str, Any]) -> list[str]:
    """Each backbone's architecture, pretraining objective, checkpoint layout and weights settings,
    and its pretraining dataset."""
    from frozenbench.models.registry import list_archs

    problems = []
    for name, backbone in config.get("backbones", {}).items():
        if name not in archs:
            problems.append(
                f"backbones.{name}.arch: unknown architecture {backbone['arch']!r} (known: {', '.join(list_archs())})"
            )
        family = archs[name].family if name in archs else None
        if family is not None and "pretrain" in backbone and backbone["pretrain"]["objective"] not in family.objectives:
            problems.append(
                f"backbones.{name}.pretrain.objective: {backbone['pretrain']['objective']} cannot pretrain a "
                f"{family.name} backbone (its objectives: {', '.join(family.objectives)})"
            )
        checkpoint = backbone.get("checkpoint", {})
        layout = checkpoint.get("layout")
        if family is not None and layout is not None and layout not in family.layouts:
            problems.append(
                f"backbones.{name}.checkpoint.layout: {family.name} weights come in the "
                f"{', '.join(family.layouts)} layout(s), not {layout}"
            )
        elif family is not None and "weights_tag" in checkpoint:
            try:
                family.weights_tag(checkpoint["weights_tag"])
            except KeyError as err:
                problems.append(f"backbones.{name}.checkpoint.weights_tag: {err.args[0]}")
        if "pretrain" in backbone:
            default = config.get("pretrain", {}).get("dataset")
            where = "dataset" if "dataset" in backbone["pretrain"] else None
            key = f"backbones.{name}.pretrain.dataset" if where else "pretrain.dataset"
            dataset = backbone["pretrain"].get("dataset", default)
            problems += _dataset_problem(config, key, dataset, "imagefolder", "pretraining")
    return problems


def _task_problems(config: dict[str, Any]) -> list[str]:
    """Each task's type, dataset, heads (by the type's head record), test options and clip settings."""
    from frozenbench.tasks.registry import get_task_type, list_task_types

    problems = []
    for name, task in config.get("tasks", {}).items():
        if task["type"] not in list_task_types():
            problems.append(
                f"tasks.{name}.type: unknown task type {task['type']!r} (known: {', '.join(list_task_types())})"
            )
            continue
        task_type = get_task_type(task["type"])
        problems += _dataset_problem(
            config, f"tasks.{name}.dataset", task["dataset"], task_type.dataset_format, f"task type {task['type']}"
        )
        for head_name, head in task["heads"].items():
            try:
                task_type.make_head(head, where=f"tasks.{name}.heads.{head_name}")
            except UserError as err:
                problems.append(str(err))
        for option in sorted(set(task.get("test", {})) - set(task_type.test_options)):
            problems.append(
                f"tasks.{name}.test.{option}: not a {task_type.name} test option "
                f"(known: {', '.join(task_type.test_options) or 'none'})"
            )
        if task.get("frame_chunk") and not task_type.clips:
            problems.append(
                f"tasks.{name}.frame_chunk: only video tasks feed their backbone frames in chunks "
                f"(this task is {task['type']}); remove it"
            )
        clip_frames = task.get("data_options", {}).get("num_frames")
        for head_name, head in task["heads"].items():
            if task_type.clips and clip_frames is not None and head.get("num_frames", clip_frames) != clip_frames:
                problems.append(
                    f"tasks.{name}.heads.{head_name}.num_frames: {head['num_frames']} frames per clip, "
                    f"but tasks.{name}.data_options.num_frames samples {clip_frames}"
                )
    return problems


def _cell_problems(config: dict[str, Any], archs: dict[str, Any]) -> list[str]:
    """Each study cell's task, heads and backbones, and the task's input sizes on each backbone."""
    tasks, backbones = config.get("tasks", {}), config.get("backbones", {})
    problems = []
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
            elif backbone in archs:
                problems += _size_problems(cell["task"], task, backbone, archs[backbone])
    return problems


def _size_problems(task_name: str, task: dict[str, Any], backbone: str, spec: Any) -> list[str]:
    """The task's input and crop sizes that backbone ``spec`` cannot take: not a multiple of its
    patch, or below its last stage's stride."""
    problems = []
    sizes = {"img_size": task["img_size"], "augment.crop_size": task.get("augment", {}).get("crop_size")}
    for size_key, size in sizes.items():
        if size is None:
            continue
        if spec.patch_size and size % spec.patch_size:
            problems.append(
                f"tasks.{task_name}.{size_key}: {size} is not a multiple of {spec.patch_size}, "
                f"the patch size of {spec.name} (backbone {backbone!r})"
            )
        if size < spec.total_stride:
            problems.append(
                f"tasks.{task_name}.{size_key}: {size} is below {spec.total_stride}, the last "
                f"stage's stride of {spec.name} (backbone {backbone!r})"
            )
    return problems


def _table_problems(config: dict[str, Any]) -> list[str]:
    """The tables' head per task and paper backbone."""
    tasks, backbones = config.get("tasks", {}), config.get("backbones", {})
    tables = config.get("study", {}).get("tables", {})
    problems = []
    for task_name, head in tables.get("heads", {}).items():
        if task_name not in tasks:
            problems.append(f"study.tables.heads.{task_name}: unknown task {task_name!r}")
        elif head not in tasks[task_name]["heads"]:
            problems.append(f"study.tables.heads.{task_name}: {head!r} is not a head of task {task_name!r}")
    if "paper_backbone" in tables and tables["paper_backbone"] not in backbones:
        problems.append(f"study.tables.paper_backbone: unknown backbone {tables['paper_backbone']!r}")
    return problems


def check_references(config: dict[str, Any], source: str = "<config>") -> None:
    """Raise :class:`ConfigError` listing every broken cross-reference (see :func:`reference_problems`)
    and every schedule that cannot run as written (see :func:`schedule_problems` and
    :func:`batch_problems`)."""
    problems = reference_problems(config) + schedule_problems(config) + batch_problems(config)
    if problems:
        raise ConfigError(_listing(source, "inconsistent config", [tuple(p.split(": ", 1)) for p in problems]))


def load_config(path: str | Path) -> dict[str, Any]:
    """Read (strictly, see :func:`read_yaml`) and validate a study config file."""
    path = Path(path)
    config = read_yaml(path)
    if not isinstance(config, dict):
        kind = {
            "list": "a list",
            "str": "a string",
            "int": "a number",
            "float": "a number",
            "bool": "a boolean",
            "NoneType": "null",
        }
        raise ConfigError(
            f"{path}: the top level is {kind.get(type(config).__name__, type(config).__name__)}, "
            "not a mapping of seed, paths, datasets, ..."
        )
    config = validate_config(config, source=str(path))
    check_references(config, source=str(path))
    return config
