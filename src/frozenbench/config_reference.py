"""The config reference (``docs/config.md``), generated from the schema every config is checked against.

    python -m frozenbench.config_reference > docs/config.md      # make docs-config

One row per key, by its dotted path (``tasks.<task>.train.steps``): its type, allowed values,
default and description, all read from ``schemas/config.schema.yaml``, so the reference cannot
drift from what the validator accepts (``tests/test_config_reference.py`` fails when
``docs/config.md`` is older than the schema).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from frozenbench.config import SCHEMA_PATH, read_yaml

HEADER = """# Config reference

Generated from `schemas/config.schema.yaml` by `python -m frozenbench.config_reference`
(`make docs-config`); do not edit by hand. Every config (`config.yaml`, `configs/*.yaml`) is
checked against that schema when Snakemake starts and by `frozenbench check-config`. `<name>`
in a path stands for a key you choose (a dataset, backbone or task name).

| key | type | default | description |
|---|---|---|---|
"""


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """``node`` with a ``$ref`` into ``$defs`` replaced by its target (the node's own keys win)."""
    seen = set()
    while "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        if name in seen:  # a recursive definition: stop at the reference
            break
        seen.add(name)
        node = {**defs[name], **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _type(node: dict[str, Any]) -> str:
    if "enum" in node:
        return " or ".join(f"`{json.dumps(v)}`" for v in node["enum"])
    if "const" in node:
        return f"`{json.dumps(node['const'])}`"
    kind = node.get("type")
    if isinstance(kind, list):
        kind = " or ".join(kind)
    for combinator in ("oneOf", "anyOf"):
        if combinator in node and not kind:
            kind = " or ".join(_type(option) for option in node[combinator] if isinstance(option, dict)) or "any"
    if kind == "array" and isinstance(node.get("items"), dict):
        kind = f"list of {_type(node['items'])}"
    bounds = [
        f"{word} {node[key]}"
        for key, word in (("minimum", ">="), ("maximum", "<="), ("exclusiveMinimum", ">"), ("minItems", "items >="))
        if key in node
    ]
    return (kind or "any") + (f" ({', '.join(bounds)})" if bounds else "")


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def rows(node: dict[str, Any], defs: dict[str, Any], path: str = "") -> list[tuple[str, str, str, str]]:
    """(dotted path, type, default, description) of ``node`` and every key below it, in schema order."""
    node = _resolve(node, defs)
    out = []
    if path:
        default = f"`{json.dumps(node['default'])}`" if "default" in node else ""
        out.append((f"`{path}`", _cell(_type(node)), _cell(default), _cell(node.get("description", ""))))
    for key, child in node.get("properties", {}).items():
        out += rows(child, defs, f"{path}.{key}" if path else key)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        out += rows(extra, defs, f"{path}.<name>" if path else "<name>")
    for pattern_child in node.get("patternProperties", {}).values():
        out += rows(pattern_child, defs, f"{path}.<name>" if path else "<name>")
    items = node.get("items")
    if isinstance(items, dict) and _resolve(items, defs).get("properties"):
        out += [row for row in rows(items, defs, f"{path}[]") if row[0] != f"`{path}[]`"]
    return out


def render(schema_path: Path = SCHEMA_PATH) -> str:
    schema = read_yaml(schema_path)
    defs = schema.get("$defs", {})
    lines = ["| " + " | ".join(row) + " |" for row in rows(schema, defs)]
    return HEADER + "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
