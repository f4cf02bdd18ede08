"""Study configuration: load a YAML file and validate it against schemas/config.schema.yaml.

The Snakefile validates the same file with ``snakemake.utils.validate``; the CLI
uses :func:`load_config` so a subcommand run by hand gets the same checks and the
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
    return validate_config(config, source=str(path))
