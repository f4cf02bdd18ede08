"""Detection end to end on a tiny shapes-coco: Mask R-CNN head on a frozen backbone, COCO AP on val."""

from __future__ import annotations

import json

import pytest
import torch
from frozenbench.tasks.registry import BackboneRequest, DetectionHead

from frozenbench.data.synth import synthesize
from frozenbench.evaluation import bootstrap
from frozenbench.engine.loop import TrainOptions, train
from frozenbench.openmmlab.training import wrap_for_training
from frozenbench.tasks import detection

from .test_backbones import weights_digest
from .test_synth import tiny_spec

pytestmark = pytest.mark.openmmlab

HEAD = {"width": 32, "rpn_samples": 64, "rcnn_samples": 64}


def pycocotools_stats(ann_file, results, iou_type: str):
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_file))
        evaluation = COCOeval(gt, gt.loadRes([dict(r) for r in results]), iou_type)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation.stats


def test_mask_rcnn_trains_and_reports_box_and_mask_ap(tmp_path, monkeypatch):
    from mmengine.dataset import pseudo_collate

    monkeypatch.chdir(tmp_path)
    root = tmp_path / "shapes-coco"
    synthesize(tiny_spec("shapes-coco", image_size=64, num_train=8, num_val=4), root)
    root = root.relative_to(tmp_path)  # rules pass relative paths
    names = detection.class_names(root)
    assert names == ["circle", "square", "triangle", "star"]
    train_set = detection.build_dataset(root, "train", 64, train=True)
    val_set = detection.build_dataset(root, "val", 64, train=False)
    torch.manual_seed(0)
    model = detection.build_model(
        DetectionHead(**HEAD), BackboneRequest(None, 64, frozen=True, arch="convstem_swin_tiny"), len(names)
    )
    before = weights_digest(model.backbone)
    train(
        wrap_for_training(model),
        train_set,
        pseudo_collate,
        tmp_path / "run",
        TrainOptions(steps=6, batch_size=2, lr=1e-3, warmup_steps=1, checkpoint_every=3, log_every=1),
        seed=1,
        log=lambda m: None,
    )
    assert weights_digest(model.backbone) == before
    record = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert {"loss_rpn_cls", "loss_cls", "loss_mask"} <= set(record[-1])
    metrics = detection.evaluate(model, val_set, len(names))
    # the same predictions scored by pycocotools directly, one image at a time
    results = detection.predict_test_dev(model, val_set, batch_size=1)
    assert results, "the trained detector predicts nothing: nothing below is checked"
    for iou_type in ("bbox", "segm"):
        assert set(metrics[iou_type]) == {"AP", "AP50", "AP75", "APs", "APm", "APl", "bootstrap"}
        assert len(metrics[iou_type]["bootstrap"]["AP"]["replicates"]) == bootstrap.REPLICATES
        stats = pycocotools_stats(val_set.ann_file, results, iou_type)
        assert metrics[iou_type]["AP"] == pytest.approx(100.0 * stats[0], abs=1e-6)
        assert metrics[iou_type]["AP50"] == pytest.approx(100.0 * stats[1], abs=1e-6)


@pytest.mark.slow  # ~17 s: trains and predicts a cell
def test_test_dev_submission_is_an_upload_zip_of_coco_results(tmp_path):
    import zipfile

    from pycocotools.coco import COCO

    from frozenbench.checkpoint import save_random_backbone

    from .conftest import run_cmd

    root = tmp_path / "shapes-coco"
    synthesize(tiny_spec("shapes-coco", image_size=64, num_train=4, num_val=2, num_test_dev=3), root)
    checkpoint = save_random_backbone(tmp_path / "convstem_swin_tiny_random.pth", "convstem_swin_tiny", 64)
    spec = json.dumps(
        {
            "type": "detection",
            "data": str(root),
            "img_size": 64,
            "head": HEAD,
            "train": {"steps": 2, "batch_size": 2, "warmup_steps": 1, "checkpoint_every": 2},
        }
    )
    common = [
        "--spec",
        spec,
        "--checkpoint",
        str(checkpoint),
        "--mode",
        "frozen",
        "--run-dir",
        str(tmp_path / "run"),
        "--threads",
        "1",
    ]
    run_cmd(["frozenbench", "train", *common], check=True, timeout=300)
    out = tmp_path / "submission" / "detections.zip"
    run_cmd(["frozenbench", "submit", *common, "--out", str(out), "--alg", "mini"], check=True, timeout=300)
    with zipfile.ZipFile(out) as archive:
        assert archive.namelist() == ["detections_test-dev2017_mini_results.json"]
        results = json.loads(archive.read("detections_test-dev2017_mini_results.json"))
    image_info = root / "annotations" / "image_info_test-dev2017.json"
    test_ids = {img["id"] for img in json.loads(image_info.read_text())["images"]}
    assert results and {r["image_id"] for r in results} <= test_ids
    assert all(set(r) == {"image_id", "category_id", "bbox", "score", "segmentation"} for r in results)
    # the file loads as COCO results against the test-dev image list, boxes and masks alike
    coco = COCO(str(image_info))
    loaded = coco.loadRes(results)
    assert len(loaded.getAnnIds()) == len(results)
    assert all(loaded.annToMask(a).shape == (64, 64) for a in loaded.loadAnns(loaded.getAnnIds()[:3]))
    # a cell trained for another task type has no test-dev
    bad = json.dumps({**json.loads(spec), "type": "video", "head": {}})  # a valid video spec: no test-dev
    result = run_cmd(["frozenbench", "submit", "--spec", bad, *common[2:], "--out", str(tmp_path / "x.zip")])
    assert result.returncode != 0 and "no test-dev submission" in result.stderr
    assert not (tmp_path / "x.zip").exists()
