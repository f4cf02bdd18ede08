"""The study's config logic (what the DAG puts on each command line), tested without Snakemake."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

from frozenbench import study
from frozenbench.config import ConfigError, load_config
from frozenbench.errors import UserError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ci_config() -> dict:
    return load_config(REPO / "configs" / "ci.yaml")


def test_cells_are_the_cross_product_of_each_entry_in_config_order(ci_config):
    cells = list(study.study_cells(ci_config))
    assert cells[:4] == [
        ("ade", "convstem_swin_tiny_supervised", "frozen", "m2f_b4"),
        ("ade", "convstem_swin_tiny_supervised", "finetune", "m2f_b4"),
        ("ade", "convstem_swin_tiny_random", "frozen", "m2f_b4"),
        ("ade", "convstem_swin_tiny_random", "finetune", "m2f_b4"),
    ]
    assert len(cells) == 9 and ("k400", "dinov2_vits14_random", "frozen", "temporal_b2") in cells


def test_a_finetune_cell_overrides_the_schedule_and_a_frozen_one_ignores_it(ci_config):
    frozen = study.task_spec(ci_config, "ade", "m2f_b4", "frozen", "data/shapes-ade")
    tuned = study.task_spec(ci_config, "ade", "m2f_b4", "finetune", "data/shapes-ade")
    assert frozen["train"]["layer_decay"] == 1.0 and tuned["train"]["layer_decay"] == 0.8  # 1.0: no decay
    assert {k: v for k, v in tuned["train"].items() if k != "layer_decay"} == {
        k: v for k, v in frozen["train"].items() if k != "layer_decay"
    }
    assert frozen["type"] == "segmentation" and frozen["data"] == "data/shapes-ade"


def test_test_time_options_reach_evaluation_only(ci_config):
    train = study.task_spec(ci_config, "k400", "temporal_b2", "frozen", "d")
    evaluation = study.task_spec(ci_config, "k400", "temporal_b2", "frozen", "d", evaluation=True)
    assert "test" not in train and evaluation["test"] == {"num_clips": 2}
    assert {k: v for k, v in evaluation.items() if k != "test"} == train


def test_the_spec_carries_every_field_with_its_default_and_reads_back_the_same(ci_config):
    """Defaults live once, in the dataclasses: the spec's JSON holds them all, so its identity no
    longer depends on which keys a config happened to set."""
    from frozenbench.cells.spec import CellSpec

    spec = study.task_spec(ci_config, "coco", "mrcnn_fpn", "frozen", "d", backbone="convstem_swin_tiny_supervised")
    assert spec["tf32"] is False and spec["augment"] == {} and spec["head"]["rcnn_samples"] > 0
    assert spec["arch"] == ci_config["backbones"]["convstem_swin_tiny_supervised"]["arch"]
    assert CellSpec.from_json(json.dumps(spec)).to_json(evaluation=False) == spec
    config = copy.deepcopy(ci_config)
    config["tasks"]["coco"]["tf32"] = True
    tf32 = study.task_spec(config, "coco", "mrcnn_fpn", "frozen", "d")
    assert tf32["tf32"] is True
    assert CellSpec.from_json(tf32).fingerprint() != CellSpec.from_json({**tf32, "tf32": False}).fingerprint()
    # test-time options and the checkpoint cadence are not training inputs
    base = CellSpec.from_json(tf32)
    assert CellSpec.from_json({**tf32, "test": {"scale": [64, 64]}}).fingerprint() == base.fingerprint()
    cadence = {**tf32, "train": {**tf32["train"], "checkpoint_every": 1}}
    assert CellSpec.from_json(cadence).fingerprint() == base.fingerprint()
    # a head knob added later is no training input at the value that reproduces the code before it
    assert tf32["head"]["level_norm"] is False
    without = {**tf32, "head": {k: v for k, v in tf32["head"].items() if k != "level_norm"}}
    assert CellSpec.from_json(without).fingerprint() == base.fingerprint()
    normed = {**tf32, "head": {**tf32["head"], "level_norm": True}}
    assert CellSpec.from_json(normed).fingerprint() != base.fingerprint()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"heads": 1}, "--spec: unknown key(s) ['heads']"),
        ({"head": {"widht": 8}}, "--spec head: unknown detection head setting(s) ['widht']"),
        ({"train": {"stpes": 8}}, "--spec train: unknown training option(s) ['stpes']"),
        ({"type": "depth"}, "unknown task type 'depth'"),
    ],
)
def test_a_spec_with_a_typo_names_the_key(ci_config, change, message):
    from frozenbench.cells.spec import CellSpec

    spec = {**study.task_spec(ci_config, "coco", "mrcnn_fpn", "frozen", "d"), **change}
    with pytest.raises(UserError, match=re.escape(message)):
        CellSpec.from_json(spec)


def test_pretraining_options_are_the_study_defaults_overridden_per_backbone(ci_config):
    config = copy.deepcopy(ci_config)
    config["backbones"]["convstem_swin_tiny_supervised"]["pretrain"]["options"] = {"steps": 99}
    spec = study.pretrain_spec(config, "convstem_swin_tiny_supervised")
    assert spec["objective"] == "supervised" and spec["dataset"] == "shapes-pretrain"
    assert spec["options"]["steps"] == 99 and spec["options"]["batch_size"] == 32


def test_labels_and_plan_carry_the_task_type_objective_and_capacity(ci_config):
    labels = study.cell_labels(ci_config, "coco", "dinov2_vits14_random", "mrcnn_fpn")
    assert labels == {
        "task_type": "detection",
        "pretrain_objective": "random",
        "family_size": "small",
        "arch": "vit_small_patch14_dinov2",
        "extra_blocks": "0",
        "capacity": "detector=mask_rcnn extra_blocks=0 width=32",
        "head_kind": "mask_rcnn",
        "dataset": "shapes-coco",
        "benchmark": "",  # generated data: the paper table gives it no delta
    }
    # a segmentation head carries no detector: heads have their own task type's knobs
    assert study.cell_labels(ci_config, "ade", "dinov2_vits14_random", "m2f_b4")["capacity"] == (
        "extra_blocks=0 pixel_decoder_layers=1 transformer_decoder_layers=4 width=32"
    )
    plan = study.tables_plan(ci_config)
    assert len(plan["cells"]) == 9 and plan["heads"] == {"ade": "m2f_b4", "coco": "mrcnn_fpn", "k400": "temporal_b2"}
    assert "paper_backbone" not in plan


def test_checkpoint_origins_name_their_source():
    assert study.checkpoint_origin({"url": "https://x/y.pth", "filename": "y.pth"}) == "https://x/y.pth"
    assert study.checkpoint_origin({"file": "weights/a.pth"}) == "weights/a.pth"
    assert (
        study.checkpoint_origin({"hub": "timm/v", "filename": "model.safetensors"}) == "hf://timm/v/model.safetensors"
    )
    assert study.checkpoint_origin({"synth": {"seed": 3}, "layout": "dinov2"}) == "synth:dinov2:seed=3"


def test_compute_defaults_are_overridden_per_job_kind_and_multi_node_is_train_only(ci_config):
    config = copy.deepcopy(ci_config)
    config["compute"] = {"train": {"gpus": 8, "threads": 64}}
    compute = study.compute_settings(config)
    assert compute["train"]["gpus"] == 8 and compute["train"]["mem_mb"] == study.COMPUTE_DEFAULTS["train"]["mem_mb"]
    assert compute["evaluate"] == study.COMPUTE_DEFAULTS["evaluate"]
    config["compute"] = {"evaluate": {"nodes": 2}}
    with pytest.raises(ConfigError, match="only train jobs span several nodes"):
        study.compute_settings(config)


def test_the_shipped_configs_give_every_cell_a_spec(tmp_path):
    for path in ["config.yaml", "configs/ci.yaml", "configs/paper-smoke.yaml", "configs/paper.yaml"]:
        config = load_config(REPO / path)
        for task, backbone, mode, head in study.study_cells(config):
            spec = study.task_spec(config, task, head, mode, "d", evaluation=True)
            assert spec["type"] == config["tasks"][task]["type"]
            yaml.safe_dump(spec)  # plain data: it goes on a command line as JSON


@pytest.mark.parametrize("path", ["config.yaml", "configs/ci.yaml", "configs/paper.yaml", "configs/paper-smoke.yaml"])
def test_snakemake_and_frozenbench_fill_the_same_defaults(path):
    """The DAG and every CLI command validate with frozenbench's validator; Snakemake's own (what a
    profile or a wrapper workflow may apply) fills the same defaults, so the two never disagree."""
    from snakemake.utils import validate

    raw = yaml.safe_load((REPO / path).read_text())
    by_snakemake = copy.deepcopy(raw)
    validate(by_snakemake, schema=str(REPO / "schemas" / "config.schema.yaml"), set_default=True)
    assert by_snakemake == load_config(REPO / path)


def test_heads_have_their_task_types_knobs_only():
    from frozenbench.config import validate_config

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    filled = validate_config(copy.deepcopy(config))
    heads = {name: task["heads"] for name, task in filled["tasks"].items()}
    assert all(h["detector"] == "mask_rcnn" for h in heads["coco"].values())
    assert not any("detector" in h for task in ("ade", "k400") for h in heads[task].values())
    config["tasks"]["ade"]["heads"]["m2f_b4"]["detector"] = "htc"
    with pytest.raises(ConfigError, match="detector"):
        validate_config(config)


def test_schema_enums_are_the_codes_registries():
    from frozenbench.checkpoint.layouts import LAYOUTS
    from frozenbench.models.registry import PRETRAIN_OBJECTIVES, PUBLISHED_OBJECTIVES
    from frozenbench.openmmlab.configs import DETECTORS

    schema = yaml.safe_load((REPO / "schemas" / "config.schema.yaml").read_text())
    defs = schema["$defs"]
    checkpoint = defs["backbone"]["properties"]["checkpoint"]["properties"]
    assert sorted(checkpoint["layout"]["enum"]) == sorted(LAYOUTS)
    assert sorted(checkpoint["objective"]["enum"]) == sorted(PUBLISHED_OBJECTIVES)
    assert sorted(defs["backbone"]["properties"]["pretrain"]["properties"]["objective"]["enum"]) == sorted(
        PRETRAIN_OBJECTIVES
    )
    assert sorted(defs["detection_head"]["properties"]["detector"]["enum"]) == sorted(DETECTORS)


def test_a_cell_named_by_hand_gets_what_the_dag_gives_it(ci_config):
    """`frozenbench train --config FILE --cell task/backbone/mode/head`: the spec, checkpoint, run
    folder, metrics file, seed and labels the train_head / evaluate_head rules pass for that cell."""
    task, backbone, mode, head = next(iter(study.study_cells(ci_config)))
    cell = f"{task}/{backbone}/{mode}/{head}"
    paths = ci_config["paths"]
    data = f"{paths['data']}/{ci_config['tasks'][task]['dataset']}"
    run = study.cell_run(ci_config, cell)
    assert run["spec"] == study.task_spec(ci_config, task, head, mode, data, backbone=backbone)
    assert run["checkpoint"] == f"{paths['checkpoints']}/{backbone}.pth" and run["mode"] == mode
    seed = ci_config["seed"]  # a cell named without its seed is its first seed's run
    assert run["run_dir"] == f"{paths['runs']}/{cell}/seed{seed}"
    assert run["out"] == f"{paths['results']}/{cell}/seed{seed}/metrics.json"
    assert run["seed"] == seed
    assert run["labels"] == {"task": task, "backbone": backbone, "head": head,
                             **study.cell_labels(ci_config, task, backbone, head)}  # fmt: skip
    assert study.cell_run(ci_config, cell, evaluation=True)["spec"] == study.task_spec(
        ci_config, task, head, mode, data, evaluation=True, backbone=backbone
    )


@pytest.mark.parametrize(
    "cell, message",
    [
        ("ade/swin", "expected task/backbone/mode/head"),
        ("nope/{b}/frozen/{h}", "no task 'nope' in the config; one of"),
        ("{t}/nope/frozen/{h}", "no backbone 'nope' in the config; one of"),
        ("{t}/{b}/linear/{h}", "no mode 'linear' in the config; one of frozen, finetune"),
        ("{t}/{b}/frozen/nope", "has no head 'nope'; one of"),
    ],
)
def test_a_cell_name_that_is_not_in_the_config_says_which_part(ci_config, cell, message):
    from frozenbench.errors import UserError

    task, backbone, _, head = next(iter(study.study_cells(ci_config)))
    with pytest.raises(UserError, match=message):
        study.cell_run(ci_config, cell.format(t=task, b=backbone, h=head))


def test_frozenbench_train_runs_a_cell_by_name_from_the_config(ci_config, tmp_path):
    """The command line resolves --cell to the DAG's paths (here the data folder is not built yet,
    and the error names it); without --cell or the four cell options it says what is missing."""
    from .conftest import VENV_BIN, run_cmd

    task, backbone, mode, head = next(iter(study.study_cells(ci_config)))
    data = f"{ci_config['paths']['data']}/{ci_config['tasks'][task]['dataset']}"
    proc = run_cmd(
        [str(VENV_BIN / "frozenbench"), "train", "--config", str(REPO / "configs" / "ci.yaml"),
         "--cell", f"{task}/{backbone}/{mode}/{head}", "--device", "cpu"],
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode != 0 and f"{data}/" in proc.stderr, proc.stderr[-2000:]
    bare = run_cmd([str(VENV_BIN / "frozenbench"), "train", "--mode", "frozen"], cwd=tmp_path)
    assert "--spec --checkpoint --run-dir required (or name one cell: --config FILE --cell" in bare.stderr


def test_a_checkpoints_weights_tag_and_normalization_reach_its_conversion():
    """`backbones.*.checkpoint.weights_tag` / `normalization` are what the weights take beyond their
    architecture: the convert_checkpoint rule passes them (its --meta, study.checkpoint_meta), and
    conversion records them in the file (tests/test_checkpoint_once.py reads them back)."""
    from frozenbench.config import validate_config

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    own = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    config["backbones"]["own_vit"] = {
        "arch": "vit_small_patch14_dinov2",
        "checkpoint": {
            "file": "weights/own.pth",
            "layout": "timm",
            "objective": "mim",
            "data": "in1k",
            "weights_tag": "mae",
            "normalization": own,
        },
    }
    config["backbones"]["plain_vit"] = copy.deepcopy(config["backbones"]["own_vit"])
    del config["backbones"]["plain_vit"]["checkpoint"]["weights_tag"]
    del config["backbones"]["plain_vit"]["checkpoint"]["normalization"]
    filled = validate_config(copy.deepcopy(config))
    meta = study.checkpoint_meta(filled, "own_vit")
    assert meta["weights_tag"] == "mae" and meta["normalization"] == own
    plain = study.checkpoint_meta(filled, "plain_vit")
    assert "weights_tag" not in plain and "normalization" not in plain
    config["backbones"]["own_vit"]["checkpoint"]["normalization"] = {"mean": [0.5, 0.5, 0.5], "std": [0, 1, 1]}
    with pytest.raises(ConfigError, match=r"backbones\.own_vit\.checkpoint\.normalization\.std"):
        validate_config(config)


def test_every_cell_runs_at_each_of_its_seeds_in_its_own_folder(ci_config):
    """`study.seeds` (default: [seed]) and a study entry's own `seeds`; a cell listed in two entries
    runs the union; each run is `<cell>/seed<N>` in runs/, results/ and the DAG's targets (issue 29)."""
    config = copy.deepcopy(ci_config)
    cells = list(study.study_cells(config))
    assert study.run_paths(config) == [f"{'/'.join(c)}/seed{config['seed']}" for c in dict.fromkeys(cells)]
    config["study"]["seeds"] = [0, 1, 2]
    first = config["study"]["cells"][0]
    config["study"]["cells"].append({**first, "seeds": [2, 7]})
    seeds = study.cell_seeds(config)
    task, backbone, mode, head = next(iter(study.study_cells(config)))
    assert seeds[(task, backbone, mode, head)] == [0, 1, 2, 7]
    others = [cell for cell in seeds if cell[0] != first["task"] or cell[1] not in first["backbones"]]
    assert all(seeds[cell] == [0, 1, 2] for cell in others)
    run = study.cell_run(config, f"{task}/{backbone}/{mode}/{head}/seed7")
    assert run["seed"] == 7 and run["run_dir"].endswith(f"{task}/{backbone}/{mode}/{head}/seed7")
    plan = study.tables_plan(config)
    assert len(plan["cells"]) == len(study.run_paths(config)) == sum(len(s) for s in seeds.values())
    with pytest.raises(UserError, match="seed0"):
        study.cell_run(config, f"{task}/{backbone}/{mode}/{head}/7")
