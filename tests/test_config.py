from __future__ import annotations

import copy

import pytest
import yaml

from frozenbench.config import ConfigError, load_config, validate_config

from .conftest import REPO, run_cmd


def default_config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


@pytest.mark.parametrize("path", ["config.yaml", "configs/ci.yaml", "configs/paper.yaml", "configs/paper-smoke.yaml"])
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
    "weights_tag_the_family_does_not_have": (
        lambda c: c["backbones"].__setitem__(
            "my_vit",
            {
                "arch": "vit_small_patch14_dinov2",
                "checkpoint": {
                    "file": "weights/vit.pth",
                    "layout": "timm",
                    "objective": "mim",
                    "data": "in1k",
                    "weights_tag": "mea",
                },
            },
        ),
        "backbones.my_vit.checkpoint.weights_tag",
        "the vit family has no weights tag 'mea' (its tags: mae)",
    ),
    # values the schema's types allow but the study cannot mean (issue 25)
    "seed_beyond_64_bits": (lambda c: c.__setitem__("seed", 2**64), "seed", "greater than the maximum of 4294967295"),
    "warmup_beyond_steps": (
        lambda c: c["tasks"]["ade"]["train"].__setitem__("warmup_steps", 3000),
        "tasks.ade.train.warmup_steps",
        "3000, more than the run's 600 steps (tasks.ade.train.steps)",
    ),
    "finetune_shorter_than_the_warmup": (
        lambda c: c["tasks"]["ade"]["finetune"].__setitem__("steps", 10),
        "tasks.ade.train.warmup_steps",
        "30, more than the run's 10 steps (tasks.ade.finetune.steps)",
    ),
    "steps_below_the_default_warmup": (
        lambda c: c["tasks"]["coco"].__setitem__("train", {"steps": 10}),
        "tasks.coco.train.steps",
        "10 steps, fewer than the default warmup_steps 20",
    ),
    "pretrain_warmup_beyond_a_backbones_steps": (
        lambda c: c["backbones"]["convstem_swin_tiny_mim"]["pretrain"].__setitem__("options", {"steps": 50}),
        "pretrain.options.warmup_steps",
        "100, more than the run's 50 steps (backbones.convstem_swin_tiny_mim.pretrain.options.steps)",
    ),
    "path_outside_the_project": (
        lambda c: c["paths"].__setitem__("runs", "/etc/frozenbench"),
        "paths.runs",
        "'/etc/frozenbench' is outside the project",
    ),
    "path_climbing_out": (
        lambda c: c["paths"].__setitem__("data", "data/../../shared"),
        "paths.data",
        "climbs out of the project",
    ),
    "path_with_tilde": (lambda c: c["paths"].__setitem__("logs", "~/logs"), "paths.logs", "'~' is not expanded"),
    "checkpoint_file_outside_the_project": (
        lambda c: c["backbones"].__setitem__(
            "theirs",
            {
                "arch": "convstem_swin_tiny",
                "checkpoint": {"file": "/home/someone/w.pth", "layout": "timm", "objective": "random", "data": "none"},
            },
        ),
        "backbones.theirs.checkpoint.file",
        "is outside the project",
    ),
    "allowed_root_of_everything": (
        lambda c: c["paths"].__setitem__("allowed_roots", ["/"]),
        "paths.allowed_roots.0",
        "'/' is not an absolute directory below /",
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


# -- the strict reader: the file means what it says (issue 25) -----------------------------------

SHIPPED_TEXT = (REPO / "config.yaml").read_text()
ADE_TRAIN = (
    "    train: {steps: 600, batch_size: 4, lr: 0.001, warmup_steps: 30, checkpoint_every: 100, log_every: 10}\n"
)


def _line_of(text: str, fragment: str, occurrence: int = 1) -> int:
    index = -1
    for _ in range(occurrence):
        index = text.index(fragment, index + 1)
    return text[:index].count("\n") + 1


def test_a_duplicate_key_names_both_lines(tmp_path):
    text = SHIPPED_TEXT.replace(ADE_TRAIN, ADE_TRAIN + "    train: {steps: 60}\n")
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    first, second = _line_of(text, "    train: {steps: 600"), _line_of(text, "    train: {steps: 60}")
    assert str(err.value) == (
        f"{path}:{second}: duplicate key tasks.ade.train (first at {path}:{first}); "
        "YAML would silently keep only this second one: remove one"
    )


@pytest.mark.parametrize(
    "text, line, fragment",
    [
        ("seed: 0\nno: 1\n", 2, "key 'no' under the top level is read by YAML as the boolean False"),
        ("seed: 0\npaths:\n  On: x\n", 3, "key 'On' under paths is read by YAML as the boolean True"),
        ("seed: 0\n~: 1\n", 2, "key '~' under the top level is read by YAML as null (nothing)"),
        ("tasks:\n  2017: {}\n", 2, "key '2017' under tasks is read by YAML as an integer"),
        ("datasets:\n  2017-01-01: {}\n", 2, "key '2017-01-01' under datasets is read by YAML as a date"),
        ("seed: 0\n? [a, b]\n: 1\n", 2, "a sequence as a key under the top level"),
        ("a: &x [*x]\n", 1, "an alias inside its own anchor"),
        ("seed: 0\npaths:\n\tdata: data\n", 3, "a tab character where YAML expects indentation"),
        ("seed: 0\n---\nseed: 1\n", 2, "a second YAML document starts here"),
        ("seed: [0\n", 2, "not valid YAML"),
        ("seed: 0\n# caf\xe9\n", 2, "not UTF-8 text (byte 0xe9)"),
    ],
)
def test_the_strict_reader_names_file_line_and_problem(tmp_path, text, line, fragment):
    from frozenbench.config import read_yaml

    path = tmp_path / "c.yaml"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(ConfigError) as err:
        read_yaml(path)
    message = str(err.value)
    assert message.startswith(f"{path}:{line}") and fragment in message and "\n" not in message, message


def test_quoted_keys_anchors_and_merges_still_read(tmp_path):
    from frozenbench.config import read_yaml

    path = tmp_path / "c.yaml"
    path.write_text("'off': 1\nbase: &base {steps: 2, lr: 0.1}\nrun: {<<: *base, steps: 3}\n")
    assert read_yaml(path) == {"off": 1, "base": {"steps": 2, "lr": 0.1}, "run": {"steps": 3, "lr": 0.1}}


def test_an_alias_bomb_is_refused_quickly(tmp_path):
    import time

    from frozenbench.config import MAX_NODES

    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    start = time.monotonic()
    with pytest.raises(ConfigError, match=f"beyond {MAX_NODES} values"):
        load_config(path)
    assert time.monotonic() - start < 10


def test_credentials_are_refused_and_never_printed(tmp_path):
    config = default_config()
    config["datasets"]["coco-dl"] = {
        "source": "download",
        "format": "coco",
        # a space the URL pattern refuses: the schema's message would quote the password
        "download": {"files": [{"url": "https://bob:pass word@h.example/x.zip", "filename": "x.zip"}]},
    }
    config["backbones"]["convstem_swin_tiny_random"] = {
        "arch": "convstem_swin_tiny",
        "checkpoint": {
            "url": "https://h.example/w.pth?X-Amz-Signature=abc123def&X-Amz-Expires=60",
            "filename": "w.pth",
            "checksum": {"unpublished": "x"},
            "layout": "mm",
            "objective": "random",
            "data": "none",
        },
    }
    with pytest.raises(ConfigError) as err:
        validate_config(config, source="creds.yaml")
    message = str(err.value)
    assert "pass word" not in message and "abc123def" not in message, message
    assert "at datasets.coco-dl.download.files.0.url: credentials in the URL https://***@h.example/x.zip" in message
    assert "https://h.example/w.pth?X-Amz-Signature=***&X-Amz-Expires=60" in message


def test_paths_under_an_allowed_root_are_accepted(tmp_path):
    config = default_config()
    config["paths"].update({"data": "/scratch/fb/data", "runs": "runs/../runs2", "allowed_roots": ["/scratch/fb"]})
    assert validate_config(config)["paths"]["data"] == "/scratch/fb/data"


def test_the_dag_refuses_a_duplicate_key_naming_both_lines(workflow_copy):
    text = SHIPPED_TEXT.replace(ADE_TRAIN, ADE_TRAIN + "    train: {steps: 60}\n")
    path = workflow_copy / "dup.yaml"
    path.write_text(text)
    proc = run_cmd(["snakemake", "-n", "--configfile", str(path)], cwd=workflow_copy, timeout=300)
    said = proc.stdout + proc.stderr
    first, second = _line_of(text, "    train: {steps: 600"), _line_of(text, "    train: {steps: 60}")
    assert proc.returncode != 0
    assert f"{path}:{second}: duplicate key tasks.ade.train (first at {path}:{first})" in said, said


def test_check_config_into_a_closed_pipe_stops_quietly():
    """`frozenbench check-config x | head -1`: the reader is gone before the report is written.

    The CI config, not the paper's: the paper's memory check counts SwinV2-G's parameters on a
    cold cache (~100 s), which says nothing about the pipe."""
    import subprocess

    from .conftest import VENV_BIN

    proc = subprocess.Popen(
        [str(VENV_BIN / "frozenbench"), "check-config", "configs/ci.yaml"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # closed long before the command has imported anything, so every write fails
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, stderr
    assert "Traceback" not in stderr, stderr
