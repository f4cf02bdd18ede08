"""`frozenbench validate`: every broken case is reported, naming the file and the problem."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from frozenbench.data.synth import synthesize
from frozenbench.data.validate import validate

from .conftest import run_cmd
from .test_synth import tiny_spec


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pristine")
    names = {"coco": "shapes-coco", "ade": "shapes-ade", "kinetics": "shapes-k400", "imagefolder": "shapes-pretrain"}
    for fmt, name in names.items():
        synthesize(tiny_spec(name), root / fmt)
    return {fmt: root / fmt for fmt in names}


@pytest.fixture
def copy_of(pristine, tmp_path):
    def make(fmt: str) -> Path:
        dst = tmp_path / fmt
        shutil.copytree(pristine[fmt], dst)
        return dst

    return make


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def problems_for(fmt: str, root: Path) -> list[str]:
    return [str(p) for p in validate(fmt, root).problems]


def edit_coco(root: Path, edit) -> Path:
    path = root / "annotations" / "instances_train2017.json"
    coco = json.loads(path.read_text())
    edit(coco)
    path.write_text(json.dumps(coco))
    return path


def test_truncated_and_empty_jpeg(copy_of):
    root = copy_of("coco")
    first, second = sorted((root / "train2017").glob("*.jpg"))[:2]
    truncate(first)
    second.write_bytes(b"")
    found = problems_for("coco", root)
    assert any(str(first) in p and "unreadable image" in p for p in found), found
    assert any(str(second) in p and "empty file" in p for p in found), found


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["annotations"][0].__setitem__("bbox", [1.0, 2.0, float("nan"), 3.0]), "bbox must be 4 finite"),
        (lambda c: c["annotations"][0].__setitem__("bbox", [1.0, 2.0, -5.0, 3.0]), "negative width"),
        (lambda c: c["annotations"][0].__setitem__("bbox", [100.0, 2.0, 50.0, 3.0]), "outside"),
        (lambda c: c["annotations"][0].__setitem__("category_id", 99), "unknown category_id 99"),
        (lambda c: c["annotations"][0].__setitem__("segmentation", [[1.0, 2.0, 3.0, 4.0]]), "polygon with 2 points"),
        (lambda c: c["annotations"][0].__setitem__("image_id", 12345), "unknown image_id 12345"),
        (lambda c: c["images"][0].__setitem__("width", 77), "but the annotation says 77x128"),
        # pycocotools keeps one of two categories sharing an id: the other class's boxes change class
        (lambda c: c["categories"].append(dict(c["categories"][0], name="dup")), "duplicate category id"),
        (lambda c: c["annotations"][0].__setitem__("id", "7"), "annotation id must be an integer, got '7'"),
        (lambda c: c["annotations"][0].pop("segmentation"), "no segmentation: frozenbench's detectors"),
    ],
)
def test_coco_annotation_problems(copy_of, edit, message):
    root = copy_of("coco")
    path = edit_coco(root, edit)
    found = problems_for("coco", root)
    hits = [p for p in found if message in p]
    assert hits, found
    # every problem names a file: the json (with the annotation id) or the image
    assert all(str(path) in p or str(root / "train2017") in p for p in hits)


@pytest.mark.openmmlab
def test_training_refuses_what_would_change_the_meaning_of_a_coco_file(copy_of):
    # training may run without validate first: mmdet stopped on a KeyError (box-only) or an
    # AssertionError (duplicate annotation ids) mid-run
    from frozenbench.errors import UserError
    from frozenbench.tasks import detection

    root = copy_of("coco")
    path = edit_coco(root, lambda c: c["annotations"][1].pop("segmentation"))
    with pytest.raises(UserError, match=f"^{path} \\(annotation id 2\\): no segmentation"):
        detection.build_dataset(root, "train", 64, train=True)
    edit_coco(root, lambda c: c["annotations"][1].update(id=1, segmentation=c["annotations"][0]["segmentation"]))
    with pytest.raises(UserError, match="duplicate annotation id"):
        detection.build_dataset(root, "train", 64, train=True)


def test_exif_orientation_is_a_warning_and_upright_annotations_a_problem(copy_of):
    from .test_images import save_with_orientation

    root = copy_of("coco")
    first, second = sorted((root / "train2017").glob("*.jpg"))[:2]
    # a square photo tagged "rotate 90° to display", annotated in its stored frame: legal, a warning
    save_with_orientation(np.asarray(Image.open(first).convert("RGB")), first, 6)
    report = validate("coco", root)
    assert [str(w) for w in report.warnings] == [
        f"{first}: EXIF orientation 6 (rotated 90° clockwise for display): read as stored, the tag ignored, "
        "as the annotations are in the stored frame"
    ]
    assert report.ok, report.problems
    cli = run_cmd(["frozenbench", "validate", "--format", "coco", str(root)])
    assert cli.returncode == 0 and f"warning: {first}: EXIF orientation 6" in cli.stderr, cli.stderr
    assert "1 warning(s)" in cli.stdout
    # a non-square photo whose json gives the displayed (rotated) size: annotated on the rotated view
    save_with_orientation(np.zeros((128, 64, 3), np.uint8), second, 8)
    name = second.name
    edit_coco(root, lambda c: next(i for i in c["images"] if i["file_name"] == name).update(width=128, height=64))
    found = problems_for("coco", root)
    assert any(
        p.startswith(f"{second}: stored 64x128 with EXIF orientation 8 (shown 128x64)")
        and "the labels were drawn on the rotated view" in p
        for p in found
    ), found


def test_ade_label_map_saved_as_jpeg(copy_of):
    root = copy_of("ade")
    label = sorted((root / "annotations" / "validation").glob("*.png"))[0]
    Image.open(label).convert("L").save(label, "JPEG")
    found = problems_for("ade", root)
    assert f"{label}: label map is a JPEG file under a .png name (needs lossless PNG)" in found, found


def test_ade_label_map_of_the_rotated_view(copy_of):
    from .test_images import save_with_orientation

    root = copy_of("ade")
    image = sorted((root / "images" / "training").glob("*.jpg"))[0]
    label = root / "annotations" / "training" / f"{image.stem}.png"
    save_with_orientation(np.zeros((128, 64, 3), np.uint8), image, 6)  # stored 64 wide, shown 128x64
    Image.fromarray(np.zeros((64, 128), np.uint8)).save(label)  # drawn on the shown view
    found = problems_for("ade", root)
    assert any(
        p.startswith(f"{image}: stored 64x128 with EXIF orientation 6 (shown 128x64), and its label map says 128x64")
        for p in found
    ), found


def test_coco_bad_json(copy_of):
    root = copy_of("coco")
    path = root / "annotations" / "instances_val2017.json"
    path.write_text('{"images": [')
    found = problems_for("coco", root)
    assert any(str(path) in p and "invalid JSON" in p for p in found), found


def test_ade_out_of_range_and_size_mismatch_and_missing_pair(copy_of):
    root = copy_of("ade")
    labels = sorted((root / "annotations" / "training").glob("*.png"))
    bad_values, bad_size, orphan_image = labels[0], labels[1], labels[2]
    label = np.asarray(Image.open(bad_values)).copy()
    label[0, 0] = 200
    Image.fromarray(label).save(bad_values)
    Image.fromarray(np.zeros((50, 60), np.uint8)).save(bad_size)
    orphan_image.unlink()
    found = problems_for("ade", root)
    assert any(str(bad_values) in p and "[200] out of range 0..7" in p for p in found), found
    assert any(str(bad_size) in p and "label map is 60x50 but its image is 128x128" in p for p in found), found
    assert any(orphan_image.stem in p and "no label map" in p for p in found), found


def test_kinetics_zero_byte_and_truncated_videos(copy_of):
    root = copy_of("kinetics")
    videos = sorted((root / "videos" / "train").glob("*.mp4"))
    videos[0].write_bytes(b"")
    truncate(videos[1], 0.3)
    found = problems_for("kinetics", root)
    assert any(str(videos[0]) in p and "empty file" in p for p in found), found
    assert any(str(videos[1]) in p and "undecodable video" in p for p in found), found


def test_kinetics_bad_csv_rows(copy_of):
    root = copy_of("kinetics")
    csv_path = root / "annotations" / "val.csv"
    lines = csv_path.read_text().splitlines()
    fields = lines[1].split(",")
    lines[1] = ",".join(["juggling"] + fields[1:])
    csv_path.write_text("\n".join(lines) + "\n")
    found = problems_for("kinetics", root)
    assert any(f"{csv_path}:2" in p and "'juggling' not in classes.txt" in p for p in found), found


def test_imagefolder_empty_class_and_mismatched_classes(copy_of):
    root = copy_of("imagefolder")
    for path in (root / "val" / "circle").iterdir():
        path.unlink()
    (root / "train" / "blob").mkdir()
    (root / "train" / "blob" / "x.jpg").write_bytes(b"not a jpeg")
    found = problems_for("imagefolder", root)
    assert any(str(root / "val" / "circle") in p and "empty class folder" in p for p in found), found
    assert any("x.jpg" in p and "unreadable image" in p for p in found), found
    assert any("different classes: blob" in p for p in found), found


def test_validate_cli_exit_codes(pristine, copy_of):
    ok = run_cmd(["frozenbench", "validate", "--format", "ade", str(pristine["ade"])])
    assert ok.returncode == 0 and ": ok;" in ok.stdout
    root = copy_of("imagefolder")
    truncate(next((root / "train" / "square").glob("*.jpg")))
    bad = run_cmd(["frozenbench", "validate", "--format", "imagefolder", str(root)])
    assert bad.returncode == 1
    assert "1 problem(s)" in bad.stdout and "unreadable image" in bad.stderr
