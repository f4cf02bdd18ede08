"""Frozen-feature cache: exact keys, bounded memory, and training with it matches training without."""

from __future__ import annotations

import json

import pytest
import torch
from frozenbench.tasks.registry import BackboneRequest, SegmentationHead

from frozenbench.models.backbone import Backbone
from frozenbench.models.feature_cache import FeatureCache


def test_cache_computes_each_distinct_image_once():
    calls = []

    def compute(x):
        calls.append(x.shape[0])
        return [x * 2, x.mean(dim=(1,), keepdim=True)]

    cache = FeatureCache()
    a, b = torch.randn(3, 4, 4), torch.randn(3, 4, 4)
    first = cache(torch.stack([a, b, a]), compute)  # the misses in one call, a (twice in the batch) once
    assert calls == [2] and len(cache) == 2
    assert torch.equal(first[0][0], a * 2) and torch.equal(first[0][2], a * 2) and torch.equal(first[0][1], b * 2)
    again = cache(torch.stack([b, a]), compute)
    assert calls == [2]  # all hits
    assert torch.equal(again[0][0], b * 2) and again[1].shape == (2, 1, 4, 4)
    # a one-ulp change is a different input
    c = a.clone()
    c[0, 0, 0] = torch.nextafter(c[0, 0, 0], torch.tensor(1e9))
    cache(c[None], compute)
    assert calls == [2, 1] and cache.stats()["hits"] == 2 and cache.stats()["misses"] == 4


def test_cache_stops_storing_at_its_memory_bound():
    cache = FeatureCache(max_bytes=2 * 16 * 4)  # room for two 16-float entries
    compute = lambda x: [x.reshape(x.shape[0], -1)]  # noqa: E731
    images = torch.randn(5, 4, 4)
    out = cache(images, compute)
    assert torch.equal(out[0], images.reshape(5, -1))  # every image answered correctly
    assert len(cache) == 2 and cache.bytes <= cache.max_bytes


def test_frozen_backbone_with_cache_matches_without():
    from frozenbench.models.registry import build_arch

    torch.manual_seed(0)
    weights = build_arch("convstem_swin_tiny", 64).state_dict()
    plain = Backbone("convstem_swin_tiny", img_size=64, state_dict=weights)
    cached = Backbone("convstem_swin_tiny", img_size=64, state_dict=weights, feature_cache=True)
    x = torch.randn(3, 3, 64, 64)
    for _ in range(2):  # a miss, then a hit
        for p, c in zip(plain(x), cached(x)):
            assert torch.allclose(p, c, atol=1e-5)
    assert cached.feature_cache.stats()["hits"] == 3
    assert Backbone("convstem_swin_tiny", img_size=64, frozen=False, feature_cache=True).feature_cache is None


@pytest.mark.openmmlab
def test_training_with_the_cache_gives_the_same_result(tmp_path):
    from mmengine.dataset import pseudo_collate

    from frozenbench.data.synth import synthesize
    from frozenbench.engine.loop import TrainOptions, train
    from frozenbench.openmmlab.training import wrap_for_training
    from frozenbench.tasks import segmentation

    from .test_synth import tiny_spec

    root = tmp_path / "shapes-ade"
    synthesize(tiny_spec("shapes-ade", image_size=64, num_train=4, num_val=2), root)
    num_classes = len(segmentation.class_names(root))
    dataset = segmentation.build_dataset(root, "train", 64, train=True)
    head = {"width": 32, "num_queries": 8, "num_points": 256}

    def run(name, cache, steps=8):
        torch.manual_seed(0)
        model = segmentation.build_model(
            SegmentationHead(**head),
            BackboneRequest(None, 64, frozen=True, arch="convstem_swin_tiny", feature_cache=cache),
            num_classes,
        )
        # warmup 3: a 4-step run follows the 8-step run's schedule exactly (a stand-in for a kill at step 4)
        opts = TrainOptions(steps=steps, batch_size=2, lr=1e-3, warmup_steps=3, checkpoint_every=4, log_every=1)
        train(wrap_for_training(model), dataset, pseudo_collate, tmp_path / name, opts, seed=3, log=lambda m: None)
        losses = [json.loads(line)["loss"] for line in (tmp_path / name / "log.jsonl").read_text().splitlines()]
        return model, losses

    plain, plain_losses = run("plain", False)
    cached, cached_losses = run("cached", True)
    # 4 images x 2 flips at most: 8 steps x 2 samples must hit the cache
    assert cached.backbone.body.feature_cache.stats()["hits"] > 0
    # the same training up to float rounding (a cached image's features come from a batch of one);
    # weights are not compared: Adam turns 1e-7 gradient differences into lr-sized steps on
    # parameters whose gradient is ~0
    assert cached_losses == pytest.approx(plain_losses, rel=1e-3, abs=1e-4)
    # resumed with an empty cache: the uninterrupted cached run up to the same rounding (the
    # resumed run's misses reach the backbone in other groups); steps 5-8 are logged by the resume
    run("resumed", True, steps=4)
    _, resumed_losses = run("resumed", True)
    assert len(resumed_losses) == 8
    assert resumed_losses == pytest.approx(cached_losses, rel=1e-3, abs=1e-4)
