"""The frozen backbone: no gradients, no activations kept, no moving statistics, same weights after training."""

from __future__ import annotations

import hashlib

import pytest
import torch
import torch.nn as nn

from frozenbench.models.backbone import Backbone
from frozenbench.models.registry import build_arch, get_arch, list_archs


def weights_digest(module: nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def graph_leaves(tensor: torch.Tensor) -> set[int]:
    """ids of every leaf tensor the autograd graph of ``tensor`` reaches."""
    seen, leaves, stack = set(), set(), [tensor.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if hasattr(fn, "variable"):
            leaves.add(id(fn.variable))
        stack.extend(next_fn for next_fn, _ in fn.next_functions)
    return leaves


class TinyHead(nn.Module):
    def __init__(self, channels: list[int]) -> None:
        super().__init__()
        self.proj = nn.ModuleList(nn.Conv2d(c, 8, 1) for c in channels)
        self.fc = nn.Linear(8 * len(channels), 3)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.fc(torch.cat([p(f).mean(dim=(2, 3)) for p, f in zip(self.proj, feats)], dim=1))


@pytest.mark.parametrize("arch", ["convstem_swin_tiny", "convnext_mini"])
def test_frozen_backbone_trains_head_only(arch):
    torch.manual_seed(0)
    backbone = Backbone(arch, img_size=64, frozen=True)
    head = TinyHead(backbone.channels)
    model = nn.ModuleDict({"backbone": backbone, "head": head})
    before = weights_digest(backbone)
    bn_stats_before = [m.running_mean.clone() for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(not p.requires_grad for p in backbone.parameters())
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == {id(p) for p in head.parameters()}

    x, y = torch.randn(8, 3, 64, 64), torch.randint(0, 3, (8,))
    model.train()  # a detector calls .train() on everything: the backbone must stay in eval mode
    assert not backbone.model.training and head.training
    losses = []
    for _ in range(5):
        feats = backbone(x)
        assert all(f.grad_fn is None and not f.requires_grad for f in feats)  # no activations kept
        loss = nn.functional.cross_entropy(head(feats), y)
        assert graph_leaves(loss).isdisjoint({id(p) for p in backbone.parameters()})
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert weights_digest(backbone) == before  # byte-identical
    bn_stats_after = [m.running_mean for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.equal(a, b) for a, b in zip(bn_stats_before, bn_stats_after))


def test_finetune_mode_keeps_the_graph():
    backbone = Backbone("convstem_swin_tiny", img_size=64, frozen=False)
    feats = backbone(torch.randn(2, 3, 64, 64))
    assert all(f.requires_grad for f in feats)
    feats[-1].sum().backward()
    assert backbone.model.patch_embed.proj.weight.grad is not None


def test_bf16_autocast_returns_fp32_close_to_fp32():
    torch.manual_seed(0)
    fp32 = Backbone("convstem_swin_tiny", img_size=64)
    bf16 = Backbone("convstem_swin_tiny", img_size=64, bf16=True)
    bf16.load_state_dict(fp32.state_dict())
    x = torch.randn(2, 3, 64, 64)
    for a, b in zip(fp32(x), bf16(x)):
        assert b.dtype == torch.float32
        assert torch.allclose(a, b, atol=0.1, rtol=0.1)
        assert not torch.equal(a, b)  # it really ran in bf16


def test_compiled_frozen_backbone_matches_eager():
    """The compiled forward (weights frozen into the graph) gives the eager features; a backbone
    that trains is never compiled that way, since freezing would bake in stale weights."""
    torch.manual_seed(0)
    eager = Backbone("convstem_swin_tiny", img_size=32)
    compiled = Backbone("convstem_swin_tiny", img_size=32, compile=True)
    compiled.load_state_dict(eager.state_dict())
    x = torch.randn(2, 3, 32, 32)
    for a, b in zip(eager(x), compiled(x)):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    assert compiled._compiled is not None
    assert not Backbone("convstem_swin_tiny", img_size=32, frozen=False, compile=True).compile


def test_feature_specs_come_from_feature_info():
    backbone = Backbone("convstem_swin_small", img_size=128)
    assert backbone.strides == [4, 8, 16, 32]
    assert backbone.channels == [48, 96, 192, 384]
    feats = backbone(torch.randn(1, 3, 128, 128))
    assert [tuple(f.shape[1:]) for f in feats] == [(48, 32, 32), (96, 16, 16), (192, 8, 8), (384, 4, 4)]


def test_registry_covers_the_paper_architectures():
    for name in [
        "swin_tiny",
        "swin_small",
        "swin_base",
        "swin_large",
        "swinv2_tiny",
        "swinv2_small",
        "swinv2_base",
        "swinv2_large",
        "swinv2_giant",
    ]:
        assert name in list_archs()
    assert not get_arch("swinv2_giant").public_weights
    with torch.device("meta"):  # no memory: just the parameter count
        giant = build_arch("swinv2_giant")
    assert 2.9e9 < sum(p.numel() for p in giant.parameters()) < 3.1e9
    with pytest.raises(KeyError, match="unknown backbone architecture 'swin_huge'"):
        get_arch("swin_huge")
