"""Task types are records (frozenbench.tasks.registry): a fourth one is one record plus one module
(tests/task_types/classification_probe.py), and the config checks, the cell runner, the tables, the
cost report and DVC's outs take it without another change."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from frozenbench import study
from frozenbench.tasks import registry
from frozenbench.tasks.registry import TaskType, get_task_type, list_task_types

from .task_types.classification_probe import ProbeHead

REPO = Path(__file__).resolve().parents[1]

PROBE = TaskType(
    name="classification",
    dataset_format="imagefolder",
    module="tests.task_types.classification_probe",
    headline_metrics=(("top-1", ("top1",)),),
    head=ProbeHead,
    conventional_name="imnet",
    capacity_knobs=("extra_blocks", "dropout"),
    head_kind=lambda head: "linear",
)


@pytest.fixture
def probe_type(monkeypatch):
    monkeypatch.setitem(registry._TASK_TYPES, PROBE.name, PROBE)
    return PROBE


def probe_config(tmp_path: Path) -> dict:
    """configs/ci.yaml with a classification task on its pretraining image folder, one cell."""
    from frozenbench.config import load_config

    config = copy.deepcopy(load_config(REPO / "configs" / "ci.yaml"))
    config["paths"] = {k: str(tmp_path / k) for k in ("data", "checkpoints", "runs", "results", "tables", "logs")}
    backbone = next(iter(config["backbones"]))
    config["tasks"]["shapes_probe"] = {
        "type": "classification",
        "dataset": config["pretrain"]["dataset"],
        "img_size": 64,
        "heads": {"linear": {}, "linear_dropout": {"dropout": 0.5}},
        "train": {"steps": 4, "batch_size": 4, "warmup_steps": 1, "checkpoint_every": 2, "log_every": 1},
    }
    config["study"]["cells"] = [
        {"task": "shapes_probe", "backbones": [backbone], "modes": ["frozen"], "heads": ["linear", "linear_dropout"]}
    ]
    return config


def test_the_built_in_types_are_records_with_their_formats_and_metrics():
    assert list_task_types()[:3] == ["detection", "segmentation", "video"]
    assert [get_task_type(t).dataset_format for t in ("detection", "segmentation", "video")] == [
        "coco",
        "ade",
        "kinetics",
    ]
    assert get_task_type("segmentation").headline_metrics[0][0] == "mIoU"


@pytest.mark.parametrize("task_type", ["detection", "segmentation", "video"])
def test_the_schema_describes_each_head_dataclass_and_its_defaults_are_the_dataclass_ones(task_type):
    """Defaults live once, in the head dataclass: the schema names the same knobs, and any default it
    states is the dataclass's."""
    schema = yaml.safe_load((REPO / "schemas" / "config.schema.yaml").read_text())
    properties = schema["$defs"][f"{task_type}_head"]["properties"]
    fields = {f.name: f.default for f in dataclasses.fields(get_task_type(task_type).head)}
    assert set(properties) == set(fields)
    for name, entry in properties.items():
        if "default" in entry:
            assert entry["default"] == fields[name], name


def test_a_fourth_task_type_passes_the_config_checks_and_a_typo_in_its_head_is_named(probe_type, tmp_path):
    from frozenbench.config import reference_problems

    config = probe_config(tmp_path)
    assert reference_problems(config) == []
    config["tasks"]["shapes_probe"]["heads"]["linear"] = {"dropuot": 0.1}
    assert "tasks.shapes_probe.heads.linear: unknown classification head setting(s) ['dropuot']" in " ".join(
        reference_problems(config)
    )
    config["tasks"]["shapes_probe"]["type"] = "depth"
    assert any("tasks.shapes_probe.type: unknown task type 'depth'" in p for p in reference_problems(config))


@pytest.mark.slow  # two cells trained and evaluated twice: ~40 s on 2 idle cores
def test_a_fourth_task_type_trains_evaluates_and_shows_in_the_tables_cost_and_dvc_outs(probe_type, tmp_path):
    from frozenbench.cells.run import CellRun, evaluate_cell, train_cell
    from frozenbench.checkpoint.io import save_random_backbone
    from frozenbench.data.synth import synthesize
    from frozenbench.reporting.cost import study_cost
    from frozenbench.reporting.tables import build_tables

    config = probe_config(tmp_path)
    data_name = config["tasks"]["shapes_probe"]["dataset"]
    synthesize({**config["datasets"][data_name], "name": data_name}, Path(config["paths"]["data"]) / data_name)
    records = []
    for task, backbone, mode, head in study.study_cells(config):
        cell = f"{task}/{backbone}/{mode}/{head}"
        run = study.cell_run(config, cell, evaluation=True)
        if not Path(run["checkpoint"]).exists():
            Path(run["checkpoint"]).parent.mkdir(parents=True, exist_ok=True)
            save_random_backbone(run["checkpoint"], config["backbones"][backbone]["arch"], 64)
        cell_run = CellRun(run["spec"], run["checkpoint"], mode, run["run_dir"], run["seed"])
        summary = train_cell(cell_run)
        assert summary["steps"] == 4
        record = evaluate_cell(cell_run, run["out"], run["labels"])
        assert record["task_type"] == "classification" and record["primary_metric"]["name"] == "top-1"
        assert 0.0 <= record["primary_metric"]["value"] <= 100.0 and record["num_val"] > 0
        again = evaluate_cell(cell_run, tmp_path / "again.json", run["labels"])
        assert again["metrics"] == record["metrics"]  # same weights, same scores
        records.append(record)

    tables = {
        t.name: t for t in build_tables(config["paths"]["results"], tmp_path / "tables", study.tables_plan(config))
    }
    capacity = tables["head_capacity"]  # the two heads told apart by the record's capacity knobs
    assert [row[1:4] for row in capacity.rows] == [
        ["shapes_probe", "linear", "extra_blocks=0"],
        ["shapes_probe", "linear_dropout", "extra_blocks=0 dropout=0.5"],
    ]
    assert capacity.header[4:] == ["shapes_probe top-1"]
    assert [row[4] for row in capacity.rows] == [r["primary_metric"]["value"] for r in records]
    summary_json = json.loads((tmp_path / "tables" / "summary.json").read_text())
    assert any("shapes_probe" in key for key in summary_json), summary_json

    cost = study_cost(
        config, json.loads(next((REPO / "bench" / "records").glob("cpu_2core/gpu_smoke_cpu.json")).read_text())
    )
    assert {row["cell_type"] for row in cost["rows"]} == {"shapes_probe_linear"}  # its own kind, not "<task>_temporal"
    assert cost["rows"][0]["basis"] == "not priced" and "no shapes_probe_linear row" in cost["rows"][0]["reason"]

    assert study.dvc_cell_outs(config) == [
        f"{config['paths']['runs']}/shapes_probe",
        f"{config['paths']['results']}/shapes_probe",
    ]
