"""Dataset formats with a home: each format module's writers, readers, validator and layout agree,
and the layout is written nowhere else in the package."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from frozenbench.data import validate
from frozenbench.data.formats import MODULES, ORIENTATION_BY_FORMAT, ade, coco, imagefolder, kinetics
from frozenbench.data.synth import ade as synth_ade
from frozenbench.data.synth import shapes, synthesize
from frozenbench.errors import UserError

from .conftest import REPO
from .test_synth import tiny_spec

SRC = REPO / "src" / "frozenbench"
FORMAT_OF = {"shapes-coco": "coco", "shapes-ade": "ade", "shapes-k400": "kinetics", "shapes-pretrain": "imagefolder"}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    """One tiny mini dataset per format, keyed by format."""
    root = tmp_path_factory.mktemp("formats")
    built = {}
    for name, fmt in FORMAT_OF.items():
        synthesize(tiny_spec(name), root / name)
        built[fmt] = root / name
    return built


@pytest.mark.parametrize("fmt", sorted(MODULES))
def test_a_mini_dataset_passes_its_format_validator(datasets, fmt):
    report = MODULES[fmt].validate(datasets[fmt])
    assert report.ok, [str(p) for p in report.problems]
    assert report.files_checked > 0
    # the entry point and the names the validators had before the formats had a home reach the same checker
    assert validate.VALIDATORS[fmt] is MODULES[fmt].validate
    assert getattr(validate, f"validate_{fmt}") is MODULES[fmt].validate


def test_ade_class_names_read_back_what_the_writer_wrote(tmp_path):
    names = ["wall", "sky", "tab\u00e9", "circle"]
    ade.write_object_info(tmp_path, names, [5, 3, 0, 2], [1, 1, 0, 1], [0, 1, 0, 1])
    assert ade.class_names(tmp_path) == names
    assert ade.read_num_classes(tmp_path) == validate.read_ade_num_classes(tmp_path) == len(names)
    lines = (tmp_path / ade.INFO_FILE).read_text().splitlines()
    assert lines[0] == "Idx\tRatio\tTrain\tVal\tName"
    assert lines[1] == "1\t0.5000\t1\t0\twall"


def test_ade_mini_dataset_names_the_generator_classes(datasets):
    params = tiny_spec("shapes-ade")["synth"]
    assert ade.class_names(datasets["ade"]) == synth_ade.class_names(params["num_stuff"], params["num_things"])
    for split in ade.SPLIT_FOLDERS:
        first = ade.file_stem(split, 1)
        assert (datasets["ade"] / ade.image_dir(split) / f"{first}{ade.IMAGE_SUFFIX}").is_file()
        assert (datasets["ade"] / ade.label_dir(split) / f"{first}{ade.LABEL_SUFFIX}").is_file()


def test_kinetics_class_names_and_lists_read_back_what_the_writers_wrote(tmp_path):
    rows = [
        {"label": "b", "youtube_id": "has space", "time_start": 3, "time_end": 13, "split": "train"},
        {"label": "a", "youtube_id": "plainId0001", "time_start": 0, "time_end": 10, "split": "train"},
    ]
    kinetics.write_lists(tmp_path, {"train": rows}, ["a", "b"])
    kinetics.write_csv(kinetics.csv_path(tmp_path, "train"), rows)
    assert kinetics.class_names(tmp_path) == ["a", "b"]
    listed = kinetics.list_path(tmp_path, "train").read_text().splitlines()
    # the id with a space is percent-encoded: mmaction2 splits list lines on spaces
    assert listed == [
        f"{kinetics.listed_path('train', 'has%20space_000003_000013.mp4')} 1",
        f"{kinetics.listed_path('train', 'plainId0001_000000_000010.mp4')} 0",
    ]
    header = kinetics.csv_path(tmp_path, "train").read_text().splitlines()[0]
    assert header.split(",") == kinetics.CSV_COLUMNS


def test_kinetics_mini_dataset_lists_every_clip_under_its_class_index(datasets):
    root = datasets["kinetics"]
    classes = kinetics.class_names(root)
    for split in kinetics.SPLITS:
        for line in kinetics.list_path(root, split).read_text().splitlines():
            path, index = line.split(" ")
            assert (root / path).is_file() and path.startswith(kinetics.listed_path(split, ""))
            assert 0 <= int(index) < len(classes)


def test_the_kinetics_validator_looks_where_the_format_says(datasets, tmp_path):
    import shutil

    root = tmp_path / "k"
    shutil.copytree(datasets["kinetics"], root)
    kinetics.list_path(root, "val").unlink()
    report = kinetics.validate(root)
    assert [p.path for p in report.problems] == [str(kinetics.list_path(root, "val"))]


def test_coco_class_names_follow_category_ids_whatever_order_the_file_lists_them(tmp_path):
    categories = [{"id": 7, "name": "phone"}, {"id": 2, "name": "cup"}, {"id": 4, "name": "mug"}]
    coco.write_annotations(tmp_path, "val", {"images": [], "annotations": [], "categories": categories})
    assert coco.annotation_path(tmp_path, "val").is_file()
    assert coco.class_names(tmp_path) == ["cup", "mug", "phone"]


def test_coco_mini_dataset_lies_where_the_format_says(datasets):
    root = datasets["coco"]
    params = tiny_spec("shapes-coco")["synth"]
    assert coco.class_names(root) == list(shapes.SHAPES[: params["num_classes"]])
    for split, count in (("train", params["num_train"]), ("val", params["num_val"]), ("test-dev", 3)):
        content = json.loads(coco.annotation_file(root, split).read_text())
        assert len(content["images"]) == count
        assert all((coco.image_folder(root, split) / img["file_name"]).is_file() for img in content["images"])


def test_imagefolder_class_names_are_the_sorted_class_folders(datasets):
    params = tiny_spec("shapes-pretrain")["synth"]
    expected = sorted(shapes.SHAPES[: params["num_classes"]])
    assert imagefolder.class_names(datasets["imagefolder"]) == expected
    assert imagefolder.class_names(datasets["imagefolder"], "val") == expected


@pytest.mark.parametrize(
    ("read", "missing"),
    [
        (ade.class_names, ade.INFO_FILE),
        (kinetics.class_names, kinetics.CLASSES_FILE),
        (coco.class_names, f"{coco.ANNOTATIONS_FOLDER}/{coco.ANNOTATION_FILES['val']}"),
        (imagefolder.class_names, "train"),
    ],
)
def test_a_missing_class_list_is_an_error_naming_the_file(tmp_path, read, missing):
    with pytest.raises(UserError, match="missing") as err:
        read(tmp_path)
    assert str(err.value).startswith(str(tmp_path / missing))


def test_orientation_rules_come_from_the_format_modules():
    # labels drawn in the stored frame (COCO, ADE) read the stored pixels; a class label holds
    # for the image in any orientation (imagefolder), so its images are turned upright
    assert ORIENTATION_BY_FORMAT == {"coco": False, "ade": False, "imagefolder": True}
    assert all(ORIENTATION_BY_FORMAT[f] is MODULES[f].APPLY_EXIF_ORIENTATION for f in ORIENTATION_BY_FORMAT)


def _imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # a relative import: resolved against the file's package
                package = ".".join(path.relative_to(SRC.parent).with_suffix("").parts[: -node.level])
                base = f"{package}.{node.module}" if node.module else package
            else:
                base = node.module
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def test_prepare_imports_nothing_from_the_generators():
    imported = _imported_modules(SRC / "data" / "prepare.py")
    assert not [m for m in imported if m.startswith("frozenbench.data.synth")]
    assert "frozenbench.data.formats" in imported  # it writes through the format modules


def test_the_format_modules_depend_on_no_generator():
    for path in sorted((SRC / "data" / "formats").glob("*.py")):
        assert not [m for m in _imported_modules(path) if m.startswith("frozenbench.data.synth")], path


def test_importing_the_formats_loads_no_heavy_library():
    # the Snakefile and the config checks may import them: no torch, OpenMMLab, decoders or numpy
    heavy = ("torch", "mmengine", "mmcv", "mmdet", "mmseg", "mmaction", "av", "pycocotools", "numpy", "PIL")
    code = "import sys, frozenbench.data.formats; print(' '.join(sorted(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert not [m for m in loaded if m.split(".")[0] in heavy]


# The names of each format's layout: written in the format modules only (docstrings and comments
# elsewhere may name them). File names are looked for anywhere in a string, folder names as a whole
# string or a path's first part ("train2017.zip", a download's name, is no layout). ADE's split
# folders (training, validation) are words any message may hold: not looked for.
LAYOUT_FILES = (
    "objectInfo150.txt",
    "classes.txt",
    "_list_videos.txt",
    "instances_train2017",
    "instances_val2017",
    "image_info_test-dev2017",
)
LAYOUT_FOLDERS = ("ADEChallengeData2016", "train2017", "val2017", "test2017")


def _layout_names_in(text: str) -> list[str]:
    folder = text.split("/")[0]
    return [name for name in LAYOUT_FILES if name in text] + [name for name in LAYOUT_FOLDERS if folder == name]


def _code_strings(tree: ast.AST) -> list[ast.Constant]:
    """The string constants of ``tree`` that are not docstrings."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_layout_names_are_written_only_in_the_format_modules():
    formats = SRC / "data" / "formats"
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        if formats in path.parents:
            continue
        for node in _code_strings(ast.parse(path.read_text())):
            offenders += [f"{path.relative_to(SRC)}:{node.lineno}: {name}" for name in _layout_names_in(node.value)]
    assert not offenders


def test_the_layout_check_sees_a_layout_name_in_code():
    # the check above would pass vacuously if it skipped f-strings or took code for a docstring
    tree = ast.parse('"""objectInfo150.txt is read"""\nx = f"{root}/objectInfo150.txt"\ny = "val2017/" + name\n')
    assert [_layout_names_in(n.value) for n in _code_strings(tree)] == [["objectInfo150.txt"], ["val2017"]]
    assert _layout_names_in("train2017.zip") == []
