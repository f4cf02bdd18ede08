"""Backbone families: one record per family, a new family by one module, plain ViTs in DINOv2's layout."""

from __future__ import annotations

import math
import re
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from frozenbench.checkpoint.convert import ConversionError, convert_state_dict
from frozenbench.engine.param_groups import param_groups
from frozenbench.models.backbone import Backbone
from frozenbench.models.registry import build_arch, get_arch, list_archs
from frozenbench.models import registry
from frozenbench.models.vit import dinov2_resample

SRC = Path(__file__).resolve().parents[1] / "src" / "frozenbench"


def test_no_family_is_named_in_the_engine_or_in_conversion():
    names = set(registry.list_families()) | set(list_archs()) | {"swin", "convnext", "vit", "dinov2", "cswin"}
    pattern = re.compile(r"\b(" + "|".join(sorted(map(re.escape, names), key=len, reverse=True)) + r")\b", re.I)
    files = sorted((SRC / "engine").glob("*.py")) + [SRC / "checkpoint" / "convert.py"]
    found = {
        f"{path.relative_to(SRC)}:{n}: {line.strip()}"
        for path in files
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    }
    assert not found, "\n".join(sorted(found))


FAMILY_MODULE = '''
"""A test family: timm's ResNet, declared in one module."""
from timm.models.resnet import BasicBlock, ResNet

from frozenbench.models.registry import ArchSpec, BackboneFamily, register_arch


def build_resnet(img_size, **kwargs):
    del img_size  # fully convolutional
    return ResNet(block=BasicBlock, num_classes=0, **kwargs)


RESNET = BackboneFamily(
    "resnet_test", checkpoint_filter=lambda state_dict, model: state_dict, layouts=("timm",),
    feature_levels=lambda model: [1, 2, 3, 4])  # strides 4-32: the stem's stride-2 level is left out
register_arch(ArchSpec("resnet_test_mini", RESNET, build_resnet, dict(layers=(1, 1, 1, 1)), img_size=64))
'''


@pytest.fixture
def resnet_family(tmp_path, monkeypatch):
    (tmp_path / "resnet_test_family.py").write_text(textwrap.dedent(FAMILY_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "FAMILY_MODULES", [*registry.FAMILY_MODULES, "resnet_test_family"])
    yield "resnet_test_mini"
    for name in [n for n, s in registry._ARCHS.items() if s.family.name == "resnet_test"]:
        del registry._ARCHS[name]
    registry._FAMILIES.pop("resnet_test", None)
    sys.modules.pop("resnet_test_family", None)


def test_a_new_family_is_one_module_and_every_part_of_frozenbench_reads_its_record(resnet_family):
    arch = resnet_family
    assert get_arch(arch).family.name == "resnet_test"
    torch.manual_seed(0)
    source = build_arch(arch).state_dict()
    converted, report = convert_state_dict(source, "timm", arch)
    assert not report.missing and not report.unexpected
    body = Backbone(arch, state_dict=converted, frozen=False)
    assert body.strides == [4, 8, 16, 32] and body.channels == [64, 128, 256, 512]
    feats = body(torch.randn(1, 3, 70, 90))  # any size: padded to the stem's multiple
    assert [tuple(f.shape[-2:]) for f in feats] == [(18, 23), (9, 12), (5, 6), (3, 3)]
    # layer decay from timm's group_matcher: four stages of one block each
    model = nn.Module()
    model.body, model.head = body, nn.Linear(512, 2)
    groups = param_groups(model, weight_decay=0.05, layer_decay=0.5)
    scales = {round(g["lr_scale"], 6) for g in groups}
    assert scales == {round(0.5**k, 6) for k in range(0, 6)}
    # conversion refuses a layout the family does not publish
    with pytest.raises(ConversionError, match="timm layout"):
        convert_state_dict(source, "official_swin", arch)


# ---- plain ViTs in DINOv2's published layout ---------------------------------------------------


def dinov2_state_dict(arch: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in facebookresearch/dinov2's key layout and shapes (``dinov2_vits14_pretrain.pth``):
    ``cls_token`` (1, 1, C), ``pos_embed`` (1, 1 + 37 * 37, C) with the class token's entry,
    ``register_tokens`` (1, 4, C) for the reg4 models, the iBOT ``mask_token`` (1, C), blocks with
    layer scale ``ls1.gamma`` / ``ls2.gamma``."""
    spec = get_arch(arch)
    dim, depth, regs = spec.kwargs["embed_dim"], spec.kwargs["depth"], spec.kwargs.get("reg_tokens", 0)
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, std=0.02):
        return torch.randn(*shape, generator=gen) * std

    sd = {
        "cls_token": rand(1, 1, dim),
        "pos_embed": rand(1, 1 + 37 * 37, dim),
        "mask_token": rand(1, dim),
        "patch_embed.proj.weight": rand(dim, 3, 14, 14),
        "patch_embed.proj.bias": rand(dim),
        "norm.weight": 1 + rand(dim),
        "norm.bias": rand(dim),
    }
    if regs:
        sd["register_tokens"] = rand(1, regs, dim)
    for i in range(depth):
        p = f"blocks.{i}."
        sd.update(
            {
                p + "norm1.weight": 1 + rand(dim),
                p + "norm1.bias": rand(dim),
                p + "attn.qkv.weight": rand(3 * dim, dim),
                p + "attn.qkv.bias": rand(3 * dim),
                p + "attn.proj.weight": rand(dim, dim),
                p + "attn.proj.bias": rand(dim),
                p + "ls1.gamma": rand(dim, std=0.1),
                p + "norm2.weight": 1 + rand(dim),
                p + "norm2.bias": rand(dim),
                p + "mlp.fc1.weight": rand(4 * dim, dim),
                p + "mlp.fc1.bias": rand(4 * dim),
                p + "mlp.fc2.weight": rand(dim, 4 * dim),
                p + "mlp.fc2.bias": rand(dim),
                p + "ls2.gamma": rand(dim, std=0.1),
            }
        )
    return sd


def official_interpolate_pos_encoding(
    pos_embed, x, w, h, patch_size=14, interpolate_offset=0.1, interpolate_antialias=False
):
    """DINOv2's ``DinoVisionTransformer.interpolate_pos_encoding``, with its own variable names
    (its ``w`` is the input's height, as the official code reads ``B, nc, w, h = x.shape``)."""
    previous_dtype = x.dtype
    npatch = x.shape[1] - 1
    N = pos_embed.shape[1] - 1
    if npatch == N and w == h:
        return pos_embed
    pos_embed = pos_embed.float()
    class_pos_embed = pos_embed[:, 0]
    patch_pos_embed = pos_embed[:, 1:]
    dim = x.shape[-1]
    w0 = w // patch_size
    h0 = h // patch_size
    M = int(math.sqrt(N))
    assert N == M * M
    kwargs = {}
    if interpolate_offset:
        sx = float(w0 + interpolate_offset) / M
        sy = float(h0 + interpolate_offset) / M
        kwargs["scale_factor"] = (sx, sy)
    else:
        kwargs["size"] = (w0, h0)
    patch_pos_embed = F.interpolate(
        patch_pos_embed.reshape(1, M, M, dim).permute(0, 3, 1, 2),
        mode="bicubic",
        antialias=interpolate_antialias,
        **kwargs,
    )
    assert (w0, h0) == patch_pos_embed.shape[-2:]
    patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).view(1, -1, dim)
    return torch.cat((class_pos_embed.unsqueeze(0), patch_pos_embed), dim=1).to(previous_dtype)


def official_tokens(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """DINOv2's ``prepare_tokens_with_masks`` (no masks): class token, position embedding, then registers,
    the position embedding resampled with the hub's settings (dinov2/hub/backbones.py) of the model."""
    B, nc, w, h = x.shape
    t = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=14).flatten(2).transpose(1, 2)
    t = torch.cat((sd["cls_token"].expand(B, -1, -1), t), dim=1)
    hub = dict(interpolate_offset=0.0, interpolate_antialias=True) if "register_tokens" in sd else {}
    t = t + official_interpolate_pos_encoding(sd["pos_embed"], t, w, h, **hub)
    if "register_tokens" in sd:
        t = torch.cat((t[:, :1], sd["register_tokens"].expand(B, -1, -1), t[:, 1:]), dim=1)
    return t


@pytest.mark.parametrize("arch", ["vit_small_patch14_dinov2", "vit_small_patch14_reg4_dinov2"])
def test_dinov2_layout_converts_with_no_missing_key_and_computes_the_official_features(arch):
    sd = dinov2_state_dict(arch)
    converted, report = convert_state_dict(sd, "dinov2", arch, img_size=224)
    assert not report.missing and not report.unexpected and not report.mismatched
    assert ("mask_token", "DINOv2 iBOT mask token (pretraining only)") in report.dropped
    body = Backbone(arch, img_size=224, state_dict=converted, out_indices=(-1,))
    vit = body.model
    x = torch.randn(2, 3, 126, 168)  # 9 x 12 patches: neither the native 37 x 37 nor square
    with torch.no_grad():
        ours = vit.blocks(vit.norm_pre(vit._pos_embed(vit.patch_embed(x))))
        reference = vit.blocks(official_tokens(sd, x))
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)
    # the features the heads get: the last block through the final norm, patch tokens only, NCHW
    (feat,) = body(x)
    prefix = 1 + get_arch(arch).kwargs.get("reg_tokens", 0)
    expected = vit.norm(reference)[:, prefix:].transpose(1, 2).reshape(2, 384, 9, 12)
    torch.testing.assert_close(feat, expected, rtol=0, atol=1e-5)


def test_timm_default_position_interpolation_is_not_dinov2s():
    # why the family resamples the official way: shrinking 37 x 37 to 9 x 9 with antialiasing differs
    from timm.layers import resample_abs_pos_embed

    pos = torch.randn(1, 1 + 37 * 37, 8)
    timm_default = resample_abs_pos_embed(pos, new_size=(9, 9), old_size=(37, 37), num_prefix_tokens=1)
    official = official_interpolate_pos_encoding(pos, torch.zeros(1, 82, 8), 9 * 14, 9 * 14)
    torch.testing.assert_close(dinov2_resample(pos, (9, 9), 1), official, rtol=0, atol=1e-6)
    assert (timm_default - official).abs().max() > 0.1


def test_inputs_of_any_size_are_padded_to_the_patch_multiple():
    body = Backbone("vit_small_patch14_dinov2", img_size=224)
    feats = body(torch.randn(1, 3, 100, 130))
    assert len(feats) == 4 and body.out_indices == [2, 5, 8, 11]
    assert all(tuple(f.shape) == (1, 384, 8, 10) for f in feats)  # ceil(100 / 14), ceil(130 / 14)


def test_wrong_layouts_and_architectures_are_conversion_errors_not_tracebacks():
    arch = "vit_small_patch14_dinov2"
    sd = dinov2_state_dict(arch)
    with pytest.raises(ConversionError, match="dinov2, mae, openai_clip, timm layout"):
        convert_state_dict(sd, "official_swin", arch)
    swin = build_arch("swin_tiny").state_dict()
    with pytest.raises(ConversionError, match="not a dinov2 checkpoint"):
        convert_state_dict(swin, "dinov2", arch)
    # a ViT-B/14 file for a ViT-S/14 architecture, and a patch-16 file: refused, not resampled
    with pytest.raises(ConversionError, match="cannot convert"):
        convert_state_dict(dinov2_state_dict("vit_base_patch14_dinov2"), "dinov2", arch)
    sixteen = dict(sd, **{"patch_embed.proj.weight": torch.zeros(384, 3, 16, 16)})
    with pytest.raises(ConversionError, match="another patch size"):
        convert_state_dict(sixteen, "dinov2", arch)
    # a full MAE pretraining file also holds a mask token: it is not read as DINOv2
    mae = dict(sd, **{"decoder_embed.weight": torch.zeros(512, 384), "decoder_pos_embed": torch.zeros(1, 197, 512)})
    with pytest.raises(ConversionError, match="MAE"):
        convert_state_dict(mae, "dinov2", arch)


# ---- a frozen plain ViT under every task head -----------------------------------------------


@pytest.mark.openmmlab
def test_a_frozen_vit_feeds_every_head_through_a_trainable_simple_feature_pyramid():
    from mmaction.structures import ActionDataSample
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData, PixelData
    from mmseg.structures import SegDataSample

    from frozenbench.tasks import detection, segmentation, video

    from frozenbench.tasks.registry import BackboneRequest, DetectionHead, SegmentationHead, VideoHead

    from .test_backbones import weights_digest
    from .test_openmmlab_adapter import square_masks, train_steps

    arch = "vit_small_patch14_dinov2"
    torch.manual_seed(0)
    request = BackboneRequest(None, 64, frozen=True, arch=arch)
    detector = detection.build_model(DetectionHead(width=32, rpn_samples=64, rcnn_samples=64), request, 3)
    backbone = detector.backbone
    assert backbone.strides == [4, 8, 16, 32] and backbone.channels == [384] * 4
    assert detector.neck.in_channels == [384] * 4
    frozen_before = weights_digest(backbone.body)
    sample = DetDataSample(
        metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64), scale_factor=(1.0, 1.0))
    )
    sample.gt_instances = InstanceData(
        bboxes=torch.tensor([[10.0, 8.0, 40.0, 30.0], [30.0, 35.0, 55.0, 60.0]]),
        labels=torch.tensor([0, 2]),
        masks=BitmapMasks(square_masks().numpy(), 64, 64),
    )
    image = torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        feats = backbone(torch.randn(1, 3, 64, 64))
    # 64 px: a 5 x 5 patch-14 grid resampled to the stride-16 grid 4 x 4, then 16, 8, 4, 2
    assert [tuple(f.shape[-2:]) for f in feats] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    losses = train_steps(detector, {"inputs": [image], "data_samples": [sample]})
    assert "loss_mask" in losses
    assert weights_digest(backbone.body) == frozen_before
    assert all(p.requires_grad and p.grad is not None for p in backbone.pyramid.parameters())

    segmentor = segmentation.build_model(SegmentationHead(width=32, num_queries=8, num_points=256), request, 5)
    assert segmentor.backbone.pyramid is not None and segmentor.backbone.strides == [4, 8, 16, 32]
    label = torch.zeros(1, 64, 64, dtype=torch.long)
    label[0, :, 32:] = 3
    seg_sample = SegDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64)))
    seg_sample.gt_sem_seg = PixelData(data=label)
    losses = train_steps(segmentor, {"inputs": [image], "data_samples": [seg_sample]}, steps=1)
    assert any(k.endswith("loss_dice") for k in losses)

    recognizer = video.build_model(VideoHead(num_frames=4, num_blocks=1, width=32), request, 8)
    assert recognizer.backbone.pyramid is None  # per-frame tokens of the last block
    assert recognizer.backbone.body.out_indices == [11] and len(recognizer.backbone.body.model.blocks) == 12
    assert recognizer.cls_head.space_embed.shape[2] == 25  # ceil(64 / 14) ** 2
    clips = []
    for label_id in (2, 5):
        clip = ActionDataSample()
        clip.set_gt_label(torch.tensor([label_id]))
        clips.append(clip)
    data = {
        "inputs": [torch.randint(0, 255, (1, 3, 4, 64, 64), dtype=torch.uint8) for _ in range(2)],
        "data_samples": clips,
    }
    assert "loss_cls" in train_steps(recognizer, data, steps=1)


# ---- OpenAI CLIP: a TorchScript file, read as data, QuickGELU ----------------------------------


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """openai/CLIP's block (``clip/model.py``) under its names: ln_1, attn (nn.MultiheadAttention), ln_2,
    mlp.c_fc / c_proj."""

    def __init__(self, d_model: int, n_head: int):
        super().__init__()
        from collections import OrderedDict

        self.attn = nn.MultiheadAttention(d_model, n_head)
        self.ln_1 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            OrderedDict(
                [
                    ("c_fc", nn.Linear(d_model, d_model * 4)),
                    ("gelu", QuickGELU()),
                    ("c_proj", nn.Linear(d_model * 4, d_model)),
                ]
            )
        )
        self.ln_2 = nn.LayerNorm(d_model)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x), self.ln_1(x), self.ln_1(x), need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads) for _ in range(layers)])

    def forward(self, x):
        return self.resblocks(x)


class OpenAIVisionTransformer(nn.Module):
    """openai/CLIP's image tower; ``forward`` returns every token after ``ln_post`` (the dense features)."""

    def __init__(self, input_resolution=224, patch_size=16, width=768, layers=12, heads=12, output_dim=512):
        super().__init__()
        scale = width**-0.5
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn((input_resolution // patch_size) ** 2 + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def forward(self, x):
        x = self.conv1(x).flatten(2).permute(0, 2, 1)
        cls = self.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x).permute(1, 0, 2)  # NLD -> LND, as CLIP's transformer takes it
        x = self.transformer(x).permute(1, 0, 2)
        return self.ln_post(x)


class CLIP(nn.Module):
    """The image tower plus (a small stand-in for) the text tower, named as in the released files."""

    def __init__(self):
        super().__init__()
        self.visual = OpenAIVisionTransformer()
        self.transformer = Transformer(64, 1, 2)
        self.token_embedding = nn.Embedding(100, 64)
        self.positional_embedding = nn.Parameter(torch.randn(77, 64))
        self.ln_final = nn.LayerNorm(64)
        self.text_projection = nn.Parameter(torch.randn(64, 512))
        self.logit_scale = nn.Parameter(torch.ones([]))

    def forward(self, image):
        return self.visual(image)


def test_openai_clip_torchscript_file_converts_without_running_its_program_and_needs_quickgelu(tmp_path):
    torch.manual_seed(5)
    clip = CLIP().eval()
    x = torch.randn(1, 3, 224, 224)
    traced = torch.jit.trace(clip, x)  # what clip.load(jit=True) files are: traced TorchScript
    traced.save(str(tmp_path / "ViT-B-16.pt"))
    from frozenbench.checkpoint import load_backbone
    from frozenbench.checkpoint.convert import convert_file

    arch = "vit_base_patch16_clip_quickgelu_224"
    report = convert_file(tmp_path / "ViT-B-16.pt", tmp_path / "clip.pth", "openai_clip", arch)
    reasons = dict(report.dropped)
    assert reasons["visual.proj"] == "CLIP image-text projection (not a backbone feature)"
    assert reasons["token_embedding.weight"] == "CLIP text tower"
    body = Backbone.from_checkpoint(tmp_path / "clip.pth", out_indices=(-1,))
    with torch.no_grad():
        expected = clip.visual(x)[:, 1:].transpose(1, 2).reshape(1, 768, 14, 14)
        (ours,) = body(x)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-4)
    # the same tensors in the GELU CLIP architecture (open_clip's LAION towers) load cleanly and
    # compute something else: why the activation is part of the architecture's name
    sd = load_backbone(tmp_path / "clip.pth")["state_dict"]
    gelu = Backbone("vit_base_patch16_clip_224", state_dict=sd, out_indices=(-1,))
    with torch.no_grad():
        (gelu_out,) = gelu(x)
    assert (gelu_out - expected).abs().max() > 1e-2


def test_a_torchscript_archive_asking_for_other_globals_is_refused(tmp_path):
    import io
    import pickle
    import zipfile

    from frozenbench.checkpoint.io import safe_load
    from frozenbench.errors import UserError

    class Evil:
        def __reduce__(self):
            return (print, ("this ran",))

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("m/data.pkl", pickle.dumps(Evil(), protocol=2))
        archive.writestr("m/constants.pkl", pickle.dumps((), protocol=2))
        archive.writestr("m/code/__torch__.py", "")
    (tmp_path / "evil.pt").write_bytes(buffer.getvalue())
    with pytest.raises(UserError, match=r"evil.pt: refused: refused global (__builtin__|builtins).print"):
        safe_load(tmp_path / "evil.pt")


@pytest.mark.parametrize(
    "arch", ["eva02_small_patch14_224.mim_in22k", "vit_base_patch16_siglip_224", "vit_small_patch14_reg4_dinov2"]
)
def test_timm_weights_of_every_plain_vit_family_convert_and_match_the_source_model(arch):
    torch.manual_seed(4)
    source = build_arch(arch).eval()
    converted, report = convert_state_dict({"state_dict": source.state_dict()}, "timm", arch)
    assert not report.missing and not report.unexpected
    body = Backbone(arch, state_dict=converted)
    x = torch.randn(1, 3, 100, 130)  # padded to the patch multiple, position embeddings resampled
    padded = body.pad_input(x)
    with torch.no_grad():
        expected = source.forward_intermediates(padded, indices=body.out_indices, norm=True, intermediates_only=True)
    for ours, theirs in zip(body(x), expected):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
