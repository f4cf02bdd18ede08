"""Backbone features as the official code computes them, at the input sizes the study uses.

Each family with a dense use is checked against its source model rebuilt from its repository
(``tests/third_party/``, vendored with the commit named in each file; ``tests/reference/`` holds
the one composition of our own): seeded random weights are
put into the official model, written in the official layout, converted by frozenbench's real
conversion path (:func:`convert_state_dict`), and every feature level of :class:`Backbone` is
compared with the official model's. Widths are tiny (CPU), the geometry is the released models'
(Swin's 4 px patches and window 7, SwinV2's windows 8 and 12, DINOv2's 14 px patches on a 37 x 37
grid, MAE's 16 px ones on 14 x 14), and the sizes are the paper's: COCO 1024 x 1024 and 800 x 1216,
ADE 640 x 640 and 512 x 512, a 480 x 640 image, K400's 224 and a 224 x 336 frame, not only the
native size, where padding and position resampling never run.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn as nn
from timm.models.vision_transformer import VisionTransformer

from frozenbench.checkpoint import convert_file, convert_state_dict
from frozenbench.models import registry
from frozenbench.models.backbone import Backbone
from frozenbench.models.registry import get_arch

from .reference import swinv2_det_padding
from .third_party import dinov2_vit, mae_pos_embed, official_swin, official_swin_det, official_swinv2

ATOL = 1e-4
TINY_SWIN = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4))
TINY_VIT = dict(embed_dim=32, depth=4, num_heads=2)


@pytest.fixture
def tiny(monkeypatch):
    """``tiny(arch)``: a registered copy of ``arch`` (family, builder, geometry) at a tiny width."""

    def register(arch: str, **width) -> str:
        spec = get_arch(arch)
        name = f"{arch}_tiny_test"
        monkeypatch.setitem(
            registry._ARCHS, name, dataclasses.replace(spec, name=name, kwargs={**spec.kwargs, **width})
        )
        return name

    return register


def seed_weights(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter random and non-trivial (norm scales around 1, biases, position tables and
    embeddings of unit scale so that their resampling and indexing show in the features)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if p.ndim >= 2 and "pos_embed" not in name and "token" not in name and "table" not in name:
                p.copy_(noise * p[0].numel() ** -0.5)  # fan-in scaled
            elif name.endswith("weight") and "norm" in name or name.endswith(("gamma", "logit_scale")):
                p.copy_(1 + 0.2 * noise)
            else:
                p.copy_(noise * (1.0 if "pos_embed" in name or "table" in name else 0.1))
    model.eval()  # not `return model.eval()`: the detection backbone's train() returns None
    return model


def image(size: tuple[int, int], seed: int = 1) -> torch.Tensor:
    return torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(seed))


def assert_levels_equal(ours: list[torch.Tensor], official: list[torch.Tensor]) -> None:
    assert len(ours) == len(official)
    for level, (a, b) in enumerate(zip(ours, official)):
        assert a.shape == b.shape, f"level {level}: {tuple(a.shape)} vs {tuple(b.shape)}"
        diff = (a - b).abs().max().item()
        assert diff <= ATOL, f"level {level} ({tuple(a.shape)}): max abs difference {diff:.2e} from the official code"


def classification_stage_outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Every stage's output (before its patch merging), NCHW, of microsoft/Swin-Transformer's V1 or V2."""
    x = model.pos_drop(model.patch_embed(x))
    outs = []
    for layer in model.layers:
        for blk in layer.blocks:
            x = blk(x)
        height, width = layer.input_resolution
        outs.append(x.transpose(1, 2).reshape(x.shape[0], -1, height, width))
        if layer.downsample is not None:
            x = layer.downsample(x)
    return outs


# ---- Swin V1: the official detection / segmentation backbone at COCO and ADE sizes ------------

# (input size, the Backbone's img_size: the task's training size)
DETECTION_SIZES = [((1024, 1024), 1024), ((800, 1216), 1024), ((640, 640), 640), ((512, 512), 512), ((480, 640), 640)]


def official_detection_backbone(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = official_swin_det.SwinTransformer(
        embed_dim=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4], window_size=7, drop_path_rate=0.0
    )
    return seed_weights(model, seed)


def detection_file(model: nn.Module) -> dict:
    """A Swin-Transformer-Object-Detection checkpoint of ``model``: the backbone under ``backbone.``."""
    return {"state_dict": {f"backbone.{k}": v for k, v in model.state_dict().items()}, "meta": {"epoch": 36}}


def detection_features(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The stages' outputs before the detector's per-level norms (frozenbench's heads bring their own)."""
    norms = [getattr(model, f"norm{i}") for i in range(4)]
    for i in range(4):
        setattr(model, f"norm{i}", nn.Identity())
    try:
        with torch.no_grad():
            return list(model(x))
    finally:
        for i, norm in enumerate(norms):
            setattr(model, f"norm{i}", norm)


@pytest.mark.parametrize(
    "size,img_size", DETECTION_SIZES, ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else str(v)
)
def test_swin_computes_the_official_detection_backbone(tiny, size, img_size):
    """Every stage map at these sizes is padded to the window multiple, before the shift as the
    official detection code does; timm's shift-then-pad differs by more than 1 with these weights."""
    arch = tiny("swin_tiny", **TINY_SWIN)
    official = official_detection_backbone()
    sd, report = convert_state_dict(detection_file(official), "swin_det", arch, img_size=img_size)
    assert not report.missing and not report.unexpected and not report.mismatched
    x = image(size)
    assert_levels_equal(Backbone(arch, img_size=img_size, state_dict=sd)(x), detection_features(official, x))


def test_convstem_swin_stages_are_the_official_detection_stages(tiny):
    """The mini family's Swin stages on its conv stem: the official detection stages fed the same stem."""
    arch = tiny("convstem_swin_tiny", window_size=7, **TINY_SWIN)
    official = official_detection_backbone()
    stages, _ = convert_state_dict(detection_file(official), "swin_det", tiny("swin_tiny", **TINY_SWIN), img_size=256)
    ours = Backbone(arch, img_size=256)
    own = ours.model.state_dict()
    missing, unexpected = ours.model.load_state_dict(
        {k: v for k, v in stages.items() if k in own and not k.startswith("patch_embed.")}, strict=False
    )
    assert not unexpected and all(k.startswith("patch_embed.") for k in missing)
    stem = seed_weights(ours.model.patch_embed, seed=3)

    class NCHWStem(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = stem

        def forward(self, x):
            return self.stem(x).permute(0, 3, 1, 2)

    official.patch_embed = NCHWStem()
    x = image((256, 320))  # stage maps of 64 x 80 down to 8 x 10: padded at every stage
    assert_levels_equal(ours(x), detection_features(official, x))


@pytest.mark.parametrize("size,img_size", [((800, 1216), 1024), ((480, 640), 640)], ids=["800x1216", "480x640"])
def test_swin_computes_mmdets_swin(tiny, size, img_size):
    """mmdet's own Swin (``mm`` layout, its own converter from the official keys) pads before the
    shift too: the same features from its files."""
    from mmdet.models.backbones import SwinTransformer
    from mmdet.models.backbones.swin import swin_converter

    arch = tiny("swin_tiny", **TINY_SWIN)
    official = official_detection_backbone()
    mm_swin = SwinTransformer(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=7)
    mm_swin.eval()  # mmdet's Swin.train() returns None, so no chaining
    keys = {k: v for k, v in official.state_dict().items() if not k.endswith("relative_position_index")}
    mm_sd = {k.removeprefix("backbone."): v for k, v in swin_converter(keys).items()}
    missing, unexpected = mm_swin.load_state_dict(mm_sd, strict=False)
    assert not unexpected and all(k.endswith("relative_position_index") for k in missing)
    raw = {"state_dict": {f"backbone.{k}": v for k, v in mm_swin.state_dict().items()}, "meta": {"epoch": 12}}
    sd, _ = convert_state_dict(raw, "mm", arch, img_size=img_size)
    stage_outputs = []  # before mmdet's per-level norms: each stage returns (x, hw, out, out_hw)
    hooks = [stage.register_forward_hook(lambda m, i, o: stage_outputs.append(o[2])) for stage in mm_swin.stages]
    x = image(size)
    with torch.no_grad():
        mm_swin(x)
    for hook in hooks:
        hook.remove()
    ours = Backbone(arch, img_size=img_size, state_dict=sd)(x)
    expected = [out.view(1, *o.shape[2:], o.shape[1]).permute(0, 3, 1, 2) for out, o in zip(stage_outputs, ours)]
    assert_levels_equal(ours, expected)


def test_swin_at_224_is_the_official_classification_model(tiny):
    """K400 frames at 224 px: the last stage's 7 x 7 map is one window, attended without shift as
    the official classification code does (the detection code would shift it)."""
    arch = tiny("swin_tiny", **TINY_SWIN)
    torch.manual_seed(0)
    official = official_swin.SwinTransformer(
        img_size=224, embed_dim=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4], window_size=7, drop_path_rate=0.0
    )
    official = seed_weights(official)
    sd, _ = convert_state_dict({"model": official.state_dict()}, "official_swin", arch, img_size=224)
    x = image((224, 224))
    with torch.no_grad():
        expected = classification_stage_outputs(official, x)
    assert_levels_equal(Backbone(arch, img_size=224, state_dict=sd)(x), expected)


# ---- SwinV2: the official model where it runs, padded as the detection code elsewhere ----------


# arch: (window, sizes whose every stage map the official model takes, the size to build the padded
# reference at: every stage a window multiple and none reduced to a single window)
SWINV2 = {"swinv2_tiny": (8, [256, 512, 1024], 512), "swinv2_base": (12, [192, 768], 768)}
# each stage's pretraining window as the official transfer code is told it (PRETRAINED_WINDOW_SIZES):
# the 192 px window-12 models' last stage was a 6 x 6 map, one window of 6
PRETRAINED_WINDOWS = {"swinv2_tiny": [0, 0, 0, 0], "swinv2_base": [12, 12, 12, 6]}
# (input size, the Backbone's img_size), maps the official SwinV2 cannot take: window 12 (the
# study's SwinV2-B/L) needs padding at 1024 px as well, and K400's 224 px frames pad the first
# three stages and attend to the whole 7 x 7 map at the last
SWINV2_PADDED = {
    "swinv2_tiny": [((640, 640), 640), ((480, 640), 640), ((800, 1216), 1024), ((224, 224), 224)],
    "swinv2_base": [
        ((1024, 1024), 1024),
        ((640, 640), 640),
        ((480, 640), 640),
        ((800, 1216), 1024),
        ((224, 224), 224),
    ],
}


def official_swinv2_model(img_size: int, window: int, pretrained_windows: list[int]) -> nn.Module:
    torch.manual_seed(0)
    model = official_swinv2.SwinTransformerV2(
        img_size=img_size,
        window_size=window,
        pretrained_window_sizes=pretrained_windows,
        drop_path_rate=0.0,
        embed_dim=16,
        depths=[2, 2, 2, 2],
        num_heads=[1, 2, 2, 4],
    )
    return seed_weights(model)


@pytest.mark.parametrize("arch,img_size", [(a, s) for a, (_, sizes, _) in SWINV2.items() for s in sizes])
def test_swinv2_computes_the_official_model_at_window_multiples(tiny, arch, img_size):
    """Native sizes (the last stage one window, or smaller than one) and larger window multiples."""
    window, _, reference_size = SWINV2[arch]
    name = tiny(arch, **TINY_SWIN)
    official = official_swinv2_model(img_size, window, PRETRAINED_WINDOWS[arch])
    sd, report = convert_state_dict({"model": official.state_dict()}, "official_swinv2", name, img_size=img_size)
    assert not report.missing and not report.unexpected and not report.mismatched
    x = image((img_size, img_size))
    with torch.no_grad():
        expected = classification_stage_outputs(official, x)
        if img_size == reference_size:  # the padded reference below is the official model where both run
            assert_levels_equal(swinv2_det_padding.stage_outputs(official, x), expected)
    assert_levels_equal(Backbone(name, img_size=img_size, state_dict=sd)(x), expected)


@pytest.mark.parametrize("arch,size,img_size", [(a, *case) for a, cases in SWINV2_PADDED.items() for case in cases])
def test_swinv2_pads_before_shifting_where_the_official_model_cannot_run(tiny, arch, size, img_size):
    window, _, reference_size = SWINV2[arch]
    name = tiny(arch, **TINY_SWIN)
    official = official_swinv2_model(reference_size, window, PRETRAINED_WINDOWS[arch])
    sd, _ = convert_state_dict({"model": official.state_dict()}, "official_swinv2", name, img_size=img_size)
    x = image(size)
    with torch.no_grad():
        expected = swinv2_det_padding.stage_outputs(official, x)
    assert_levels_equal(Backbone(name, img_size=img_size, state_dict=sd)(x), expected)


# ---- DINOv2, with and without registers --------------------------------------------------------

# the hub's settings (dinov2/hub/backbones.py) of each released model
DINOV2 = {
    "vit_small_patch14_dinov2": dict(num_register_tokens=0, interpolate_antialias=False, interpolate_offset=0.1),
    "vit_small_patch14_reg4_dinov2": dict(num_register_tokens=4, interpolate_antialias=True, interpolate_offset=0.0),
}
DINOV2_SIZES = [(224, 224), (224, 336), (518, 518), (480, 640), (640, 640), (1024, 1024)]


@pytest.mark.parametrize("size", DINOV2_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("arch", list(DINOV2))
def test_dinov2_computes_the_official_model(tiny, arch, size):
    name = tiny(arch, **TINY_VIT)
    torch.manual_seed(0)
    official = dinov2_vit.DinoVisionTransformer(
        img_size=518, patch_size=14, init_values=1.0, block_chunks=0, **TINY_VIT, **DINOV2[arch]
    )
    official = seed_weights(official)
    sd, report = convert_state_dict(official.state_dict(), "dinov2", name, img_size=size[0])
    assert not report.missing and not report.unexpected and not report.mismatched
    body = Backbone(name, img_size=size[0], state_dict=sd)
    x = image(size)
    with torch.no_grad():
        # the official model takes patch multiples only: the Backbone's zero padding, given to both
        expected = official.get_intermediate_layers(body.pad_input(x), n=[0, 1, 2, 3], reshape=True, norm=True)
    assert_levels_equal(body(x), list(expected))


# ---- MAE: positions as MAE's fine-tuning interpolates them -------------------------------------


@pytest.mark.parametrize("img_size", [512, 640, 1024])
def test_mae_positions_resample_as_mae_finetuning_does(tiny, img_size, tmp_path):
    """MAE's model is timm's ViT (``models_vit.py``); at another input size its fine-tuning builds
    the model for that size and interpolates the checkpoint's positions into it (bicubic, no
    antialiasing: ViTDet's ``get_abs_pos`` is the same), where timm's default antialiases. The
    resampling belongs to the weights: a file converted from the mae layout records it."""
    name = tiny("vit_base_patch16_224", **TINY_VIT)
    torch.manual_seed(0)
    checkpoint = seed_weights(VisionTransformer(img_size=224, patch_size=16, num_classes=0, **TINY_VIT)).state_dict()
    torch.save({"model": checkpoint}, tmp_path / "checkpoint-799.pth")
    report = convert_file(tmp_path / "checkpoint-799.pth", tmp_path / "mae.pth", "mae", name)
    assert not report.missing and not report.unexpected and not report.mismatched
    body = Backbone.from_checkpoint(tmp_path / "mae.pth", img_size=img_size)
    source = VisionTransformer(img_size=img_size, patch_size=16, num_classes=0, **TINY_VIT).eval()
    checkpoint = dict(checkpoint)
    mae_pos_embed.interpolate_pos_embed(source, checkpoint)
    source.load_state_dict(checkpoint)
    x = image((img_size, img_size))
    with torch.no_grad():
        expected = source.forward_intermediates(x, indices=body.out_indices, norm=True, intermediates_only=True)
    assert_levels_equal(body(x), expected)
