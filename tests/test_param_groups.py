"""Layer-wise lr decay for fine-tuning; frozen backbones contribute no parameters at all."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from frozenbench.engine.param_groups import layer_ids, param_groups
from frozenbench.engine.steppers import set_lr
from frozenbench.models.backbone import Backbone


class Detector(nn.Module):
    def __init__(self, arch: str, frozen: bool) -> None:
        super().__init__()
        self.body = Backbone(arch, img_size=64, frozen=frozen)
        self.head = nn.Linear(self.body.channels[-1], 3)


def scale_of(groups: list[dict], param: torch.Tensor) -> float:
    (scale,) = [g["lr_scale"] for g in groups if any(p is param for p in g["params"])]
    return scale


@pytest.mark.parametrize("arch", ["convstem_swin_tiny", "convnext_mini"])
def test_layer_decay_scales_lr_from_stem_to_head(arch):
    model = Detector(arch, frozen=False)
    groups = param_groups(model, weight_decay=0.05, layer_decay=0.5)
    depths = [2, 2, 2, 2]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    stages = model.body.model.layers if arch == "convstem_swin_tiny" else model.body.model.stages
    first, last = stages[0].blocks[0], stages[-1].blocks[-1]
    stem = next(iter(model.body.model.children()))
    assert scale_of(groups, model.head.weight) == 1.0
    assert scale_of(groups, next(last.parameters())) == 0.5  # the deepest block: one step below the head
    assert scale_of(groups, next(first.parameters())) == 0.5 ** sum(depths)
    assert scale_of(groups, next(stem.parameters())) == 0.5 ** (sum(depths) + 1)
    # a stage's downsampling layer learns at the rate of the block it feeds
    down = next(stages[2].downsample.parameters())
    assert scale_of(groups, down) == scale_of(groups, next(stages[2].blocks[0].parameters()))
    # norms and biases are never decayed
    assert all(g["weight_decay"] == 0.0 for g in groups if any(p is model.head.bias for p in g["params"]))


def test_layer_ids_follow_block_order():
    model = nn.Module()
    model.backbone = nn.Module()
    model.backbone.body = Backbone("swin_tiny", frozen=False)
    ids, depth = layer_ids(model)
    names = [
        "backbone.body.model.patch_embed.proj.weight",
        "backbone.body.model.layers.0.blocks.0.mlp.fc1.weight",
        "backbone.body.model.layers.2.downsample.reduction.weight",
        "backbone.body.model.layers.2.blocks.5.attn.qkv.weight",
        "backbone.body.model.layers.3.blocks.1.norm1.bias",
    ]
    assert depth == 12
    assert [ids[n] for n in names] == [0, 1, 5, 10, 12]
    assert set(ids) == {n for n, _ in model.named_parameters()}


def test_vit_block_i_gets_decay_to_the_power_of_depth_plus_one_minus_i():
    model = Detector("vit_small_patch14_dinov2", frozen=False)
    groups = param_groups(model, weight_decay=0.05, layer_decay=0.7)
    blocks = model.body.model.blocks
    assert len(blocks) == 12  # the last level is the last block: nothing pruned
    for i, block in enumerate(blocks, start=1):
        assert scale_of(groups, block.attn.qkv.weight) == pytest.approx(0.7 ** (12 + 1 - i))
    assert scale_of(groups, model.body.model.patch_embed.proj.weight) == pytest.approx(0.7**13)
    assert scale_of(groups, model.head.weight) == 1.0
    # position embedding and class token: the model's own no-weight-decay names
    exempt = {id(p) for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    assert id(model.body.model.pos_embed) in exempt and id(model.body.model.cls_token) in exempt
    assert id(blocks[0].attn.qkv.weight) not in exempt


def test_frozen_backbone_has_no_groups_and_the_scheduled_lr_is_scaled():
    model = Detector("convstem_swin_tiny", frozen=True)
    groups = param_groups(model, weight_decay=0.05, layer_decay=0.5)
    params = [p for g in groups for p in g["params"]]
    assert {id(p) for p in params} == {id(model.head.weight), id(model.head.bias)}
    assert all(g["lr_scale"] == 1.0 for g in groups)
    tuned = param_groups(Detector("convstem_swin_tiny", frozen=False), 0.05, 0.5)
    optimizer = torch.optim.AdamW(tuned, lr=1.0)
    set_lr(optimizer, 0.1)
    assert sorted({round(g["lr"], 12) for g in optimizer.param_groups}) == sorted(
        {round(0.1 * g["lr_scale"], 12) for g in optimizer.param_groups}
    )
    assert max(g["lr"] for g in optimizer.param_groups) == pytest.approx(0.1)
