"""Video end to end on a tiny shapes-k400: per-frame frozen backbone + temporal head, top-k on val."""

from __future__ import annotations

import json

import pytest
import torch
from frozenbench.tasks.registry import BackboneRequest, VideoHead

from frozenbench.data.synth import synthesize
from frozenbench.engine.loop import TrainOptions, train
from frozenbench.errors import UserError
from frozenbench.openmmlab.training import wrap_for_training
from frozenbench.tasks import video

from .test_backbones import weights_digest
from .test_synth import tiny_spec

pytestmark = pytest.mark.openmmlab


def topk_one_by_one(model, dataset) -> tuple[float, float]:
    """Top-1 / top-5 (%) from the model's prediction for each video on its own."""
    from mmengine.dataset import pseudo_collate

    hits1 = hits5 = 0
    with torch.no_grad():
        for index in range(len(dataset)):
            (out,) = model.test_step(pseudo_collate([dataset[index]]))
            ranked = out.pred_score.argsort(descending=True).tolist()
            label = int(out.gt_label.item())
            hits1 += ranked[0] == label
            hits5 += label in ranked[:5]
    return 100.0 * hits1 / len(dataset), 100.0 * hits5 / len(dataset)


def test_temporal_head_trains_and_reports_topk(tmp_path):
    from mmengine.dataset import pseudo_collate

    root = tmp_path / "shapes-k400"
    synthesize(tiny_spec("shapes-k400", num_frames=8), root)
    names = video.class_names(root)
    assert len(names) == 8
    train_set = video.build_dataset(root, "train", 64, train=True, num_frames=4)
    val_set = video.build_dataset(root, "val", 64, train=False, num_frames=4)
    sample = train_set[0]
    assert tuple(sample["inputs"].shape) == (1, 3, 4, 64, 64)
    torch.manual_seed(0)
    model = video.build_model(
        VideoHead(num_frames=4, num_blocks=1, width=32),
        BackboneRequest(None, 64, frozen=True, arch="convstem_swin_tiny"),
        len(names),
    )
    before = weights_digest(model.backbone)
    train(
        wrap_for_training(model),
        train_set,
        pseudo_collate,
        tmp_path / "run",
        TrainOptions(steps=8, batch_size=4, lr=1e-3, warmup_steps=1, checkpoint_every=4, log_every=1),
        seed=2,
        log=lambda m: None,
    )
    assert weights_digest(model.backbone) == before
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert len(losses) == 8
    metrics = video.evaluate(model, val_set, len(names))
    assert set(metrics) == {"top1", "top5", "bootstrap"} and set(metrics["bootstrap"]) == {"top1", "top5"}
    # the batched evaluation scores what the model predicts one video at a time
    assert (metrics["top1"], metrics["top5"]) == pytest.approx(topk_one_by_one(model, val_set))
    # multi-clip testing: each video gives 3 clips that the head averages into one prediction
    multi = video.build_dataset(root, "val", 64, train=False, num_frames=4, test={"num_clips": 3})
    assert tuple(multi[0]["inputs"].shape) == (3, 3, 4, 64, 64)
    scores = model.test_step(pseudo_collate([multi[0]]))[0].pred_score
    assert scores.shape == (len(names),) and torch.isclose(scores.sum(), torch.tensor(1.0), atol=1e-4)
    multi_metrics = video.evaluate(model, multi, len(names))
    assert (multi_metrics["top1"], multi_metrics["top5"]) == pytest.approx(topk_one_by_one(model, multi))
    # multi-crop: 3 crops of each of 2 clips, one averaged prediction per video
    crops = video.build_dataset(root, "val", 64, train=False, num_frames=4, test={"num_clips": 2, "num_crops": 3})
    assert tuple(crops[0]["inputs"].shape) == (6, 3, 4, 64, 64)
    assert model.test_step(pseudo_collate([crops[0]]))[0].pred_score.shape == (len(names),)
    with pytest.raises(UserError, match="num_crops must be 1 or 3"):
        video.build_dataset(root, "val", 64, train=False, test={"num_crops": 2})
    with pytest.raises(UserError, match="unknown"):
        video.build_dataset(root, "val", 64, train=False, test={"scales": [1.0]})
