"""Segmentation end to end on a tiny shapes-ade: train the head on a frozen backbone, resume, evaluate."""

from __future__ import annotations

import json

import pytest
import torch
from frozenbench.tasks.registry import BackboneRequest, SegmentationHead

from frozenbench.data.synth import synthesize
from frozenbench.engine.loop import TrainOptions, train
from frozenbench.engine.steppers import trainable_state
from frozenbench.errors import UserError
from frozenbench.openmmlab.training import wrap_for_training
from frozenbench.tasks import segmentation

from .test_synth import tiny_spec

pytestmark = pytest.mark.openmmlab

HEAD = {"width": 32, "num_queries": 8, "num_points": 256}
FROZEN_TINY = BackboneRequest(None, 64, frozen=True, arch="convstem_swin_tiny")


@pytest.fixture(scope="module")
def ade(tmp_path_factory):
    root = tmp_path_factory.mktemp("ade") / "shapes-ade"
    synthesize(tiny_spec("shapes-ade", image_size=64, num_train=8, num_val=4), root)
    return root


def mmseg_iou(model, dataset, num_classes: int, scales, flip: bool) -> dict[str, float]:
    """mIoU / aAcc (%) of the model's predictions, image by image, by mmseg's own IoUMetric arithmetic."""
    import numpy as np
    from mmengine.dataset import pseudo_collate
    from mmseg.evaluation.metrics import IoUMetric

    metric = IoUMetric(ignore_index=255)
    totals = [torch.zeros(num_classes, dtype=torch.float64) for _ in range(4)]
    with torch.no_grad():
        for index in range(len(dataset)):
            data = pseudo_collate([dataset[index]])
            (score,) = segmentation._tta_scores(model, data, scales, flip)
            label = data["data_samples"][0].gt_sem_seg.data[0]
            areas = metric.intersect_and_union(score.argmax(0), label, num_classes, 255)
            totals = [t + a.double() for t, a in zip(totals, areas)]
    result = metric.total_area_to_metrics(*totals, ["mIoU"])
    return {"mIoU": 100.0 * float(np.nanmean(result["IoU"])), "aAcc": 100.0 * float(result["aAcc"])}


def test_train_resume_and_evaluate(ade, tmp_path):
    num_classes = len(segmentation.class_names(ade))
    train_set = segmentation.build_dataset(ade, "train", 64, train=True)
    val_set = segmentation.build_dataset(ade, "val", 64, train=False)
    from mmengine.dataset import pseudo_collate

    def run(run_dir, steps):
        torch.manual_seed(0)
        model = segmentation.build_model(SegmentationHead(**HEAD), FROZEN_TINY, num_classes)
        opts = TrainOptions(steps=steps, batch_size=4, lr=1e-3, warmup_steps=2, checkpoint_every=3, log_every=1)
        train(wrap_for_training(model), train_set, pseudo_collate, run_dir, opts, seed=5, log=lambda m: None)
        return model

    full = run(tmp_path / "full", 6)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    assert len(losses) == 6 and losses[-1] < losses[0]

    # "kill" after the step-3 checkpoint, then rerun: same weights as the uninterrupted run
    run(tmp_path / "resumed", 3)
    resumed = run(tmp_path / "resumed", 6)
    a, b = trainable_state(full), trainable_state(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not any(k.startswith("backbone.body.") for k in a)  # the frozen backbone is not saved per run

    metrics = segmentation.evaluate(full, val_set, num_classes)
    assert len(metrics["per_class_IoU"]) == num_classes
    reference = mmseg_iou(full, val_set, num_classes, [1.0], flip=False)
    assert metrics["mIoU"] == pytest.approx(reference["mIoU"]) and metrics["aAcc"] == pytest.approx(reference["aAcc"])


def test_multi_scale_flip_testing(ade):
    from mmengine.dataset import pseudo_collate

    num_classes = len(segmentation.class_names(ade))
    val_set = segmentation.build_dataset(ade, "val", 64, train=False)
    torch.manual_seed(0)
    model = segmentation.build_model(SegmentationHead(**HEAD), FROZEN_TINY, num_classes).eval()
    data = pseudo_collate([val_set[0], val_set[1]])
    with torch.no_grad():
        plain = [s.seg_logits.data.softmax(0) for s in model.test_step(data)]
        # one scale, no flip: the sliding window covers the image in one crop = plain inference
        single = segmentation._tta_scores(model, data, [1.0], flip=False)
        # scale 0.5 is padded up to the backbone's input size, 1.5 covered by sliding windows
        multi = segmentation._tta_scores(model, data, [0.5, 1.0, 1.5], flip=True)
    for p, s, m in zip(plain, single, multi):
        # the same scores as plain inference (an exact argmax would hinge on float ties of an untrained head)
        torch.testing.assert_close(s, p, rtol=0, atol=1e-5)
        assert m.shape == s.shape == (num_classes, 64, 64)
        assert torch.allclose(m.sum(0), torch.ones(64, 64), atol=1e-4)  # mean of softmaxed views
    metrics = segmentation.evaluate(model, val_set, num_classes, test={"scales": [0.5, 1.0, 1.5], "flip": True})
    assert metrics["mIoU"] == pytest.approx(mmseg_iou(model, val_set, num_classes, [0.5, 1.0, 1.5], flip=True)["mIoU"])
    with pytest.raises(UserError, match="num_clips"):
        segmentation.evaluate(model, val_set, num_classes, test={"num_clips": 2})


@pytest.mark.slow  # ~16 s per mode: two CLI processes
@pytest.mark.parametrize("mode", ["frozen", "finetune"])
def test_train_and_evaluate_cli_write_metrics_with_provenance(ade, tmp_path, mode):
    from frozenbench.checkpoint import safe_load, save_random_backbone

    from .conftest import run_cmd

    checkpoint = save_random_backbone(tmp_path / "convstem_swin_tiny_random.pth", "convstem_swin_tiny", 64)
    spec = json.dumps(
        {
            "type": "segmentation",
            "data": str(ade),
            "img_size": 64,
            "head": HEAD,
            "train": {"steps": 4, "batch_size": 2, "warmup_steps": 1, "checkpoint_every": 2, "layer_decay": 0.75},
        }
    )
    common = [
        "--spec",
        spec,
        "--checkpoint",
        str(checkpoint),
        "--mode",
        mode,
        "--run-dir",
        str(tmp_path / "run"),
        "--threads",
        "1",
    ]
    run_cmd(["frozenbench", "train", *common], check=True, timeout=300)
    trained = safe_load(tmp_path / "run" / "state.pt")["model"]
    stem = "model.backbone.body.model.patch_embed.stem.0.weight"  # the training wrapper's names
    if mode == "frozen":  # the run saves its heads only; the backbone is the checkpoint's
        assert not any(k.startswith("model.backbone.body.") for k in trained)
    else:  # the whole backbone trained, the stem too (at the smallest layer-decayed lr)
        original = safe_load(checkpoint)["state_dict"]["patch_embed.stem.0.weight"]
        assert not torch.equal(trained[stem], original)
    out = tmp_path / "results" / "metrics.json"
    run_cmd(
        [
            "frozenbench",
            "evaluate",
            *common,
            "--out",
            str(out),
            "--label",
            "task=ade",
            "--label",
            "backbone=convstem_swin_tiny_random",
            "--label",
            "head=tiny",
        ],
        check=True,
        timeout=300,
    )
    record = json.loads(out.read_text())
    assert record["task"] == "ade" and record["backbone"] == "convstem_swin_tiny_random" and record["mode"] == mode
    assert record["split"] == "val" and record["num_val"] == 4 and record["steps"] == 4
    assert set(record["metrics"]) >= {"mIoU", "mAcc", "aAcc"}
    assert len(record["checkpoint_sha256"]) == 64 and record["versions"]["mmsegmentation"] == "1.2.2"


def test_unknown_task_type_is_a_clear_error(tmp_path):
    from .conftest import run_cmd

    spec = json.dumps({"type": "keypoints", "data": str(tmp_path), "img_size": 64, "head": {}})
    proc = run_cmd(
        [
            "frozenbench",
            "train",
            "--spec",
            spec,
            "--checkpoint",
            "x.pth",
            "--mode",
            "frozen",
            "--run-dir",
            str(tmp_path / "run"),
        ],
        timeout=120,
    )
    assert proc.returncode == 1
    assert "unknown task type 'keypoints' (known: detection, segmentation, video)" in proc.stderr


def test_state_of_a_run_with_other_inputs_is_not_resumed(ade, tmp_path):
    from mmengine.dataset import pseudo_collate

    train_set = segmentation.build_dataset(ade, "train", 64, train=True)
    num_classes = len(segmentation.class_names(ade))
    messages = []

    def run(steps, fingerprint):
        torch.manual_seed(0)
        model = segmentation.build_model(SegmentationHead(**HEAD), FROZEN_TINY, num_classes)
        opts = TrainOptions(steps=steps, batch_size=2, warmup_steps=1, checkpoint_every=2, log_every=1)
        train(
            wrap_for_training(model),
            train_set,
            pseudo_collate,
            tmp_path / "run",
            opts,
            seed=0,
            log=messages.append,
            fingerprint=fingerprint,
        )

    run(2, "spec-a")
    run(4, "spec-b")  # e.g. the schedule changed in the config: start afresh, do not resume at step 2
    assert any("starting afresh" in m for m in messages) and not any("resuming" in m for m in messages)
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
