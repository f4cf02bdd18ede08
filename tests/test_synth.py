"""Mini datasets: real formats, deterministic from a seed, masks that pycocotools reproduces."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from frozenbench.config import load_config
from frozenbench.data.synth import synthesize
from frozenbench.data.synth import coco as synth_coco
from frozenbench.data.validate import validate

from .conftest import REPO

TINY = {
    "shapes-pretrain": {"train_per_class": 3, "val_per_class": 2},
    "shapes-coco": {"num_train": 30, "num_val": 4, "num_test_dev": 3},
    "shapes-ade": {"num_train": 6, "num_val": 3},
    "shapes-k400": {"num_train_per_class": 2, "num_val_per_class": 1},
}
FORMATS = {"shapes-pretrain": "imagefolder", "shapes-coco": "coco", "shapes-ade": "ade", "shapes-k400": "kinetics"}


def tiny_spec(name: str, **overrides) -> dict:
    spec = copy.deepcopy(load_config(REPO / "config.yaml")["datasets"][name])
    spec["synth"].update(TINY[name], **overrides)
    return spec


def tree_digest(root: Path, pattern: str = "**/*") -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.glob(pattern))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def tiny_datasets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("synth")
    for name in TINY:
        synthesize(tiny_spec(name), root / name)
    return {name: root / name for name in TINY}


@pytest.mark.parametrize("name", sorted(TINY))
def test_generated_dataset_validates_clean(tiny_datasets, name):
    report = validate(FORMATS[name], tiny_datasets[name])
    assert report.ok, [str(p) for p in report.problems]
    assert report.files_checked > 0


@pytest.mark.parametrize("name", sorted(TINY))
def test_same_seed_gives_identical_files_and_another_seed_does_not(tiny_datasets, tmp_path, name):
    again = tmp_path / "again"
    synthesize(tiny_spec(name), again)
    assert tree_digest(again) == tree_digest(tiny_datasets[name])

    other = tmp_path / "other"
    synthesize(tiny_spec(name, seed=tiny_spec(name)["synth"]["seed"] + 1), other)
    assert tree_digest(other) != tree_digest(tiny_datasets[name])


def test_coco_annotations_load_in_pycocotools_and_reproduce_drawn_masks(tiny_datasets):
    from pycocotools.coco import COCO

    root = tiny_datasets["shapes-coco"]
    spec = tiny_spec("shapes-coco")["synth"]
    coco = COCO(str(root / "annotations" / "instances_train2017.json"))
    assert len(coco.getImgIds()) == spec["num_train"]
    kinds = {"polygon": 0, "rle": 0, "crowd": 0}
    for index, image_id in enumerate(sorted(coco.getImgIds())):
        # Redraw the image from the generator's own seed and compare every mask.
        rng = np.random.default_rng([spec["seed"], 0, index])
        crowd = bool(rng.random() < synth_coco.CROWD_FRACTION)
        _, instances = synth_coco.draw_image(
            rng,
            spec["image_size"],
            spec["image_size"],
            spec["num_classes"],
            spec["max_instances"],
            spec["texture"],
            crowd,
        )
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id], iscrowd=None))
        assert len(anns) == len(instances)
        for ann, inst in zip(sorted(anns, key=lambda a: a["id"]), instances):
            np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), inst["mask"])
            assert ann["area"] == inst["mask"].sum()
            ys, xs = np.nonzero(inst["mask"])
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            if ann["iscrowd"]:
                kinds["crowd"] += 1
                assert isinstance(ann["segmentation"]["counts"], list)
            elif isinstance(ann["segmentation"], list):
                kinds["polygon"] += 1
            else:
                kinds["rle"] += 1
    # the formats COCO uses all occur: polygons, RLE of occluded instances, crowd RLE
    assert kinds["polygon"] > 0 and kinds["rle"] > 0 and kinds["crowd"] > 0, kinds


def test_ade_label_maps_match_images_and_class_list(tiny_datasets):
    root = tiny_datasets["shapes-ade"]
    spec = tiny_spec("shapes-ade")["synth"]
    names = [line.split("\t")[-1] for line in (root / "objectInfo150.txt").read_text().splitlines()[1:]]
    assert len(names) == spec["num_stuff"] + spec["num_things"]
    seen = set()
    for label_path in sorted((root / "annotations" / "training").glob("*.png")):
        label = np.asarray(Image.open(label_path))
        image = Image.open(root / "images" / "training" / (label_path.stem + ".jpg"))
        assert label.ndim == 2 and label.dtype == np.uint8 and label.shape == image.size[::-1]
        seen |= set(np.unique(label).tolist())
    assert 0 in seen  # unlabeled boundaries exist
    assert max(seen) <= len(names)
    assert any(v > spec["num_stuff"] for v in seen)  # things are labelled


def test_kinetics_clips_decode_with_pyav_and_lists_match_csv(tiny_datasets):
    import av

    root = tiny_datasets["shapes-k400"]
    spec = tiny_spec("shapes-k400")["synth"]
    classes = (root / "classes.txt").read_text().splitlines()
    assert classes == sorted(classes) and len(classes) == 8
    lines = (root / "val_list_videos.txt").read_text().splitlines()
    assert len(lines) == 8 * spec["num_val_per_class"]
    for line in lines:
        rel, label = line.rsplit(" ", 1)
        with av.open(str(root / rel)) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264"
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert len(frames) == spec["num_frames"]
        assert frames[0].shape == (spec["frame_size"], spec["frame_size"], 3)
        assert 0 <= int(label) < len(classes)
        # the clip moves: first and last frames differ well beyond codec noise
        assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 1.0


def test_manifest_records_spec_and_counts(tiny_datasets):
    manifest = json.loads((tiny_datasets["shapes-coco"] / "frozenbench_dataset.json").read_text())
    assert manifest["format"] == "coco"
    assert manifest["counts"] == {"train": 30, "val": 4, "test-dev": 3}


def test_failed_generation_leaves_no_folder(tmp_path, monkeypatch):
    def boom(spec, out):
        (out / "partial.txt").write_text("half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(synth_coco, "generate", boom)
    with pytest.raises(RuntimeError):
        synthesize(tiny_spec("shapes-coco"), tmp_path / "shapes-coco")
    assert list(tmp_path.iterdir()) == []
