"""Detection end to end on a tiny shapes-coco: Mask R-CNN head on a frozen backbone, COCO AP on val."""

from __future__ import annotations

import json
import math

import pytest
import torch

from frozenbench.data.synth import synthesize
from frozenbench.engine.loop import TrainOptions, train
from frozenbench.tasks import detection

from .test_backbones import weights_digest
from .test_synth import tiny_spec

pytestmark = pytest.mark.openmmlab

HEAD = {"width": 32, "rpn_samples": 64, "rcnn_samples": 64}


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
    model = detection.build_model(HEAD, len(names), 64, None, frozen=True, arch="cswin_tiny")
    before = weights_digest(model.backbone)
    train(model, train_set, pseudo_collate, tmp_path / "run",
          TrainOptions(steps=6, batch_size=2, lr=1e-3, warmup_steps=1, checkpoint_every=3, log_every=1),
          seed=1, log=lambda m: None)
    assert weights_digest(model.backbone) == before
    record = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert {"loss_rpn_cls", "loss_cls", "loss_mask"} <= set(record[-1])
    metrics = detection.evaluate(model, val_set, len(names))
    for iou_type in ("bbox", "segm"):
        ap = metrics[iou_type]["AP"]
        assert math.isnan(ap) or 0.0 <= ap <= 100.0
        assert set(metrics[iou_type]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
