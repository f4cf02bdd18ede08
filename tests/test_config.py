from __future__ import annotations

import copy

import pytest
import yaml

from frozenbench.config import ConfigError, load_config, validate_config

from .conftest import REPO, run_cmd


def default_config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


@pytest.mark.parametrize("path", ["config.yaml", "configs/ci.yaml", "configs/paper.yaml"])
def test_shipped_configs_validate(path):
    config = load_config(REPO / path)
    assert config["datasets"]


def test_defaults_are_filled():
    config = default_config()
    del config["datasets"]["shapes-coco"]["synth"]["max_instances"]
    filled = validate_config(config)
    assert filled["datasets"]["shapes-coco"]["synth"]["max_instances"] == 4
    assert "max_instances" not in config["datasets"]["shapes-coco"]["synth"]  # input left untouched


@pytest.mark.parametrize(
    "mutate, key, fragment",
    [
        (lambda c: c.__setitem__("seed", "zero"), "seed", "is not of type 'integer'"),
        (lambda c: c.__setitem__("epochs", 3), "<top level>", "'epochs' was unexpected"),
        (lambda c: c["datasets"]["shapes-coco"]["synth"].__setitem__("image_size", 8),
         "datasets.shapes-coco.synth.image_size", "less than the minimum"),
        (lambda c: c["datasets"]["shapes-ade"].__setitem__("format", "voc"), "datasets.shapes-ade.format", "'voc'"),
        (lambda c: c["paths"].pop("results"), "paths", "'results' is a required property"),
    ],
)
def test_bad_config_names_the_key(mutate, key, fragment):
    config = copy.deepcopy(default_config())
    mutate(config)
    with pytest.raises(ConfigError) as info:
        validate_config(config, source="my.yaml")
    message = str(info.value)
    assert message.startswith("my.yaml: invalid config")
    assert f"at {key}:" in message and fragment in message


def test_check_config_cli_reports_file_and_key(tmp_path):
    bad = default_config()
    bad["datasets"]["shapes-k400"]["synth"]["num_frames"] = "many"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    proc = run_cmd(["frozenbench", "check-config", str(path)])
    assert proc.returncode == 1
    assert str(path) in proc.stderr
    assert "datasets.shapes-k400.synth.num_frames" in proc.stderr
    assert "Traceback" not in proc.stderr

    ok = run_cmd(["frozenbench", "check-config", str(REPO / "config.yaml")], check=True)
    assert "ok" in ok.stdout
