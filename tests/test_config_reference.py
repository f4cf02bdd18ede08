"""docs/config.md is the schema, rendered: regenerated whenever the schema changes, every key in it."""

from __future__ import annotations

from frozenbench.config import SCHEMA_PATH, read_yaml
from frozenbench.config_reference import render, rows

from .conftest import REPO


def test_docs_config_is_the_schema_rendered():
    assert (REPO / "docs" / "config.md").read_text() == render(), (
        "docs/config.md is older than schemas/config.schema.yaml: run `make docs-config`"
    )


def test_every_key_a_config_may_hold_has_a_row():
    schema = read_yaml(SCHEMA_PATH)
    keys = {key.strip("`") for key, *_ in rows(schema, schema["$defs"])}
    for path in (
        "seed",
        "compute.train.gpu_memory_gb",
        "tasks.<name>.train.steps",
        "tasks.<name>.activation_checkpointing",
        "backbones.<name>.checkpoint.url",
        "study.cells[].backbones",
    ):
        assert path in keys, (path, sorted(keys)[:20])
    # a key the schema does not have is not invented
    assert not any("no_such_key" in key for key in keys)


def test_a_reference_row_reads_type_default_and_description_from_the_schema(tmp_path):
    schema = tmp_path / "schema.yaml"
    schema.write_text(
        "$defs:\n  mode: {type: string, enum: [frozen, finetune]}\n"
        "type: object\nproperties:\n"
        "  steps: {type: integer, minimum: 1, default: 10, description: 'optimizer | steps'}\n"
        "  mode: {$ref: '#/$defs/mode', description: the backbone's mode}\n"
    )
    text = render(schema)
    assert "| `steps` | integer (>= 1) | `10` | optimizer \\| steps |" in text
    assert '| `mode` | `"frozen"` or `"finetune"` |  | the backbone\'s mode |' in text
