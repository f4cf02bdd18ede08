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
        (
            lambda c: c["datasets"]["shapes-coco"]["synth"].__setitem__("image_size", 8),
            "datasets.shapes-coco.synth.image_size",
            "less than the minimum",
        ),
        (lambda c: c["datasets"]["shapes-ade"].__setitem__("format", "voc"), "datasets.shapes-ade.format", "'voc'"),
        (lambda c: c["paths"].pop("results"), "paths", "'results' is a required property"),
        # keys an older config spelled otherwise name their new spelling
        (
            lambda c: c["backbones"]["convstem_swin_tiny_mim"].__setitem__("pretrain", {"task": "mim"}),
            "backbones.convstem_swin_tiny_mim.pretrain.task",
            "renamed objective",
        ),
        (
            lambda c: c["backbones"]["convstem_swin_tiny_contrastive"]["pretrain"]["options"].__setitem__(
                "task_options", {"momentum": 0.0}
            ),
            "backbones.convstem_swin_tiny_contrastive.pretrain.options.task_options",
            "renamed objective_options",
        ),
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


# -- names that cannot run code, references that cannot fail late ------------------------------


def _first_backbone(c: dict) -> str:
    return next(iter(c["backbones"]))


def _cell_of(c: dict, task: str) -> dict:
    return next(cell for cell in c["study"]["cells"] if cell["task"] == task)


# name -> (mutation of the shipped config.yaml, dotted key named, problem named)
CONFIG_CASES = {
    "unsafe_arch": (
        lambda c: c["backbones"][_first_backbone(c)].__setitem__("arch", "convstem_swin_tiny; touch x"),
        "arch",
        "does not match",
    ),
    "unsafe_dataset_name": (
        lambda c: c["datasets"].__setitem__("shapes $(id)", c["datasets"]["shapes-ade"]),
        "datasets",
        "does not match",
    ),
    "unsafe_path": (lambda c: c["paths"].__setitem__("runs", "runs;rm -rf ~"), "paths.runs", "does not match"),
    "unsafe_url": (
        lambda c: c["datasets"].__setitem__(
            "coco-dl",
            {
                "source": "download",
                "format": "coco",
                "download": {
                    "files": [{"url": "file:///etc/passwd", "filename": "passwd", "checksum": {"unpublished": "x"}}]
                },
            },
        ),
        "datasets.coco-dl.download.files.0.url",
        "does not match",
    ),
    "head_of_another_task": (
        lambda c: _cell_of(c, "coco").__setitem__("heads", ["m2f_b4"]),
        "study.cells.",
        "'m2f_b4' is not a head of task 'coco'; it is a head of 'ade'",
    ),
    "unknown_arch": (
        lambda c: c["backbones"][_first_backbone(c)].__setitem__("arch", "convstem_swin_tiny2"),
        "backbones.",
        "unknown architecture 'convstem_swin_tiny2'",
    ),
    "unknown_backbone_in_cell": (
        lambda c: _cell_of(c, "ade")["backbones"].append("swin_nope"),
        "study.cells.0.backbones",
        "unknown backbone 'swin_nope'",
    ),
    "type_vs_format": (
        lambda c: c["tasks"]["ade"].__setitem__("dataset", "shapes-coco"),
        "tasks.ade.dataset",
        "task type segmentation needs a dataset of format ade; 'shapes-coco' is coco",
    ),
    "img_size_not_patch_multiple": (
        lambda c: c["tasks"]["ade"].__setitem__("img_size", 126),
        "tasks.ade.img_size",
        "126 is not a multiple of 4, the patch size of convstem_swin_tiny",
    ),
    "num_frames_mismatch": (
        lambda c: c["tasks"]["k400"]["heads"]["temporal_b2"].__setitem__("num_frames", 16),
        "tasks.k400.heads.temporal_b2.num_frames",
        "16 frames per clip, but tasks.k400.data_options.num_frames samples 8",
    ),
    "pretrain_dataset_format": (
        lambda c: c["pretrain"].__setitem__("dataset", "shapes-coco"),
        "pretrain.dataset",
        "pretraining needs a dataset of format imagefolder",
    ),
    "objective_the_family_cannot_take": (
        lambda c: c["backbones"].__setitem__(
            "vit_mim", {"arch": "vit_small_patch14_dinov2", "pretrain": {"objective": "mim"}}
        ),
        "backbones.vit_mim.pretrain.objective",
        "mim cannot pretrain a vit backbone",
    ),
    "layout_the_family_is_not_published_in": (
        lambda c: c["backbones"].__setitem__(
            "my_dinov2",
            {
                "arch": "vit_small_patch14_dinov2",
                "checkpoint": {
                    "file": "weights/dinov2_vits14_pretrain.pth",
                    "layout": "official_swin",
                    "objective": "self-distillation",
                    "data": "lvd142m",
                },
            },
        ),
        "backbones.my_dinov2.checkpoint.layout",
        "vit weights come in the dinov2, mae, openai_clip, timm layout(s)",
    ),
}


def broken_config(name: str) -> dict:
    config = default_config()
    CONFIG_CASES[name][0](config)
    return config


@pytest.mark.parametrize("name", sorted(CONFIG_CASES))
def test_unsafe_names_and_broken_references_fail_at_load_naming_the_key(name, tmp_path):
    _, key, problem = CONFIG_CASES[name]
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(broken_config(name)))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert str(path) in text and key in text and problem in text, text


def test_every_shipped_config_passes_the_reference_checks():
    from frozenbench.config import reference_problems

    for path in ["config.yaml", "configs/ci.yaml", "configs/paper-smoke.yaml", "configs/paper.yaml"]:
        assert reference_problems(load_config(REPO / path)) == [], path


def test_the_dag_refuses_a_broken_reference_at_start_naming_the_key(workflow_copy):
    path = workflow_copy / "broken.yaml"
    path.write_text(yaml.safe_dump(broken_config("head_of_another_task")))
    proc = run_cmd(["snakemake", "-n", "--configfile", str(path)], cwd=workflow_copy, timeout=300)
    assert proc.returncode != 0
    assert "'m2f_b4' is not a head of task 'coco'" in proc.stdout + proc.stderr


def test_the_dag_validates_with_frozenbenchs_validator_naming_the_key(workflow_copy):
    path = workflow_copy / "unsafe.yaml"
    path.write_text(yaml.safe_dump(broken_config("unsafe_path")))
    proc = run_cmd(["snakemake", "-n", "--configfile", str(path)], cwd=workflow_copy, timeout=300)
    said = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "config: invalid config" in said and "at paths.runs" in said, said
