"""Checkpoint conversion from every published layout, safe loading, and the fetch path."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re

import pytest
import torch

from frozenbench.checkpoint import (
    ConversionError,
    UnsafeCheckpoint,
    convert_state_dict,
    load_backbone,
    safe_load,
    save_backbone,
)
from frozenbench.checkpoint.convert import convert_file
from frozenbench.errors import UserError
from frozenbench.models.backbone import Backbone
from frozenbench.models.registry import build_arch

from .conftest import run_cmd
from .fault_server import FaultServer

# -- the published layouts, built from a timm model (key names and shapes as the projects publish them) --


def official_from_timm(model: torch.nn.Module, v2: bool = False) -> dict[str, torch.Tensor]:
    """microsoft/Swin-Transformer layout: downsample at the end of a stage, `head.`, index/mask buffers."""
    out = {}
    for key, value in model.state_dict().items():
        key = re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", key)
        out[key.replace("head.fc.", "head.")] = value
    for name, module in model.named_modules():
        if hasattr(module, "relative_position_index"):
            out[f"{name}.relative_position_index"] = module.relative_position_index.clone()
        if v2 and hasattr(module, "relative_coords_table"):
            out[f"{name}.relative_coords_table"] = module.relative_coords_table.clone()
        # the official files carry each shifted block's mask; a model taking any input size builds
        # its masks per forward instead of keeping them
        mask = getattr(module, "attn_mask", None)
        if mask is None and hasattr(module, "get_attn_mask"):
            mask = module.get_attn_mask(device=torch.device("cpu"), dtype=torch.float32)
        if mask is not None:
            out[f"{name}.attn_mask"] = mask.clone()
    out["head.weight"], out["head.bias"] = torch.randn(1000, model.num_features), torch.randn(1000)
    return out


@pytest.fixture(scope="module")
def swin_tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_arch("swin_tiny").eval()


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(1, 3, 224, 224)


def assert_same_features(state_dict, arch, source_model, x, img_size=None):
    backbone = Backbone(arch, img_size=img_size, state_dict=state_dict)
    with torch.no_grad():
        expected = source_model.forward_intermediates(x, intermediates_only=True)
    for a, b in zip(expected, backbone(x)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def assert_checkpoint_features(path, source_model, x, img_size=None):
    """The converted file, built as a job builds it, computes the source model's features."""
    backbone = Backbone.from_checkpoint(path, img_size=img_size)
    with torch.no_grad():
        expected = source_model.forward_intermediates(x, intermediates_only=True)
    for a, b in zip(expected, backbone(x)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_official_swin(swin_tiny, image):
    sd, report = convert_state_dict({"model": official_from_timm(swin_tiny)}, "official_swin", "swin_tiny")
    dropped = {k for k, _ in report.dropped}
    assert {
        "head.weight",
        "head.bias",
        "layers.0.blocks.0.attn.relative_position_index",
        "layers.0.blocks.1.attn_mask",
    } <= dropped
    assert_same_features(sd, "swin_tiny", swin_tiny, image)


def test_official_swinv2():
    torch.manual_seed(0)
    model = build_arch("swinv2_tiny").eval()
    raw = {"model": official_from_timm(model, v2=True)}
    assert any(k.endswith("cpb_mlp.0.weight") for k in raw["model"])
    sd, report = convert_state_dict(raw, "official_swinv2", "swinv2_tiny")
    assert any(k.endswith("relative_coords_table") for k, _ in report.dropped)
    assert_same_features(sd, "swinv2_tiny", model, torch.randn(1, 3, 256, 256))


def test_simmim_keeps_encoder_only(swin_tiny, image):
    official = official_from_timm(swin_tiny)
    raw = {
        "model": {
            **{f"encoder.{k}": v for k, v in official.items() if not k.startswith("head.")},
            "encoder.mask_token": torch.zeros(1, 1, 96),
            "decoder.0.weight": torch.randn(32 * 32 * 3, 768, 1, 1),
            "decoder.0.bias": torch.zeros(3072),
        },
        "config": "SimMIM config dump",
    }
    sd, report = convert_state_dict(raw, "simmim", "swin_tiny")
    reasons = dict(report.dropped)
    assert reasons["decoder.0.weight"] == "SimMIM pixel decoder"
    assert reasons["encoder.mask_token"] == "SimMIM mask token"
    assert_same_features(sd, "swin_tiny", swin_tiny, image)


def test_moby_keeps_the_query_encoder(swin_tiny, image):
    official = {k: v for k, v in official_from_timm(swin_tiny).items() if not k.startswith("head.")}
    key_encoder = {f"encoder_k.{k}": torch.randn_like(v.float()).to(v.dtype) for k, v in official.items()}
    raw = {
        "model": {
            **{f"module.encoder.{k}": v for k, v in official.items()},
            **{f"module.{k}": v for k, v in key_encoder.items()},
            "module.projector.linear1.weight": torch.randn(4096, 768),
            "module.projector_k.linear1.weight": torch.randn(4096, 768),
            "module.predictor.linear1.weight": torch.randn(4096, 256),
            "module.queue1": torch.randn(256, 4096),
            "module.queue2": torch.randn(256, 4096),
            "module.queue_ptr": torch.zeros(1, dtype=torch.long),
        }
    }
    sd, report = convert_state_dict(raw, "moby", "swin_tiny")
    assert any(k.startswith("encoder_k.") for k, _ in report.dropped)
    assert_same_features(sd, "swin_tiny", swin_tiny, image)


def test_mmdet_detector_checkpoint_matches_mmdet_swin(swin_tiny):
    """The mm layout comes from mmdet itself: its own converter and its own SwinTransformer.

    At 448 px every stage is larger than the 7x7 window: mmdet shifts windows even when a
    stage is no larger than the window (official Swin and timm do not), so at 224 px their
    last stages differ by design.
    """
    torch.manual_seed(2)
    image = torch.randn(1, 3, 448, 448)
    from mmdet.models.backbones import SwinTransformer
    from mmdet.models.backbones.swin import swin_converter

    mm_swin = SwinTransformer(
        embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7, drop_path_rate=0.0
    )
    mm_swin.eval()  # mmdet's Swin.train() returns None, so no chaining
    official = {k: v for k, v in official_from_timm(swin_tiny).items() if not re.search(r"index$|mask$", k)}
    mm_sd = {k.removeprefix("backbone."): v for k, v in swin_converter(official).items()}
    missing, unexpected = mm_swin.load_state_dict(mm_sd, strict=False)
    assert [k for k in missing if not re.search(r"^norm\d\.(weight|bias)$|relative_position_index$", k)] == []
    detector = {f"backbone.{k}": v for k, v in mm_swin.state_dict().items()}
    detector["neck.lateral_convs.0.conv.weight"] = torch.randn(256, 96, 1, 1)
    detector["rpn_head.rpn_conv.weight"] = torch.randn(256, 256, 3, 3)
    sd, report = convert_state_dict({"state_dict": detector, "meta": {"epoch": 12}}, "mm", "swin_tiny")
    assert ("neck.lateral_convs.0.conv.weight", "detector/segmentor head (not the backbone)") in report.dropped

    # mmdet's Swin applies per-level norms to its outputs; compare the stage outputs before them.
    stage_outputs = []
    hooks = [stage.register_forward_hook(lambda m, i, o: stage_outputs.append(o[2])) for stage in mm_swin.stages]
    with torch.no_grad():
        mm_swin(image)
    for h in hooks:
        h.remove()
    ours = Backbone("swin_tiny", img_size=448, state_dict=sd)(image)
    for (mm_out), our in zip(stage_outputs, ours):
        n, c, hh, ww = our.shape
        torch.testing.assert_close(mm_out.view(n, hh, ww, c).permute(0, 3, 1, 2), our, atol=1e-4, rtol=1e-4)


def test_relative_position_bias_is_interpolated_for_another_input_size(tmp_path):
    torch.manual_seed(0)
    small = build_arch("convstem_swin_tiny", 64)  # the last stage (2x2) uses a 2x2 window at 64 px
    save_backbone(tmp_path / "b.pth", "convstem_swin_tiny", small.state_dict(), {"pretrain_objective": "random"})
    body = Backbone.from_checkpoint(tmp_path / "b.pth", img_size=128)  # 4x4 window at 128 px
    sd = body.model.state_dict()
    assert sd["layers.3.blocks.0.attn.relative_position_bias_table"].shape == (49, 8)
    body(torch.randn(1, 3, 128, 128))
    # resized as microsoft/Swin-Transformer's load_pretrained does (its own code, its names)
    key = "layers.3.blocks.0.attn.relative_position_bias_table"
    relative_position_bias_table_pretrained = small.state_dict()[key]
    L1, nH1 = relative_position_bias_table_pretrained.size()
    L2, nH2 = 49, 8
    S1 = int(L1**0.5)
    S2 = int(L2**0.5)
    relative_position_bias_table_pretrained_resized = torch.nn.functional.interpolate(
        relative_position_bias_table_pretrained.permute(1, 0).view(1, nH1, S1, S1), size=(S2, S2), mode="bicubic"
    )
    official = relative_position_bias_table_pretrained_resized.view(nH2, L2).permute(1, 0)
    torch.testing.assert_close(sd[key], official, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda sd: sd.__setitem__("layers.0.blocks.0.attn.extra", torch.zeros(3)), "unexpected 1 key(s)"),
        (lambda sd: sd.pop("layers.0.blocks.0.mlp.fc1.weight"), "missing 1 key(s): layers.0.blocks.0.mlp.fc1.weight"),
        (lambda sd: sd.__setitem__("norm.weight", torch.zeros(7)), "shape mismatch: norm.weight (7,) vs (768,)"),
    ],
)
def test_conversion_fails_on_keys_off_the_ignore_list(swin_tiny, mutate, message):
    official = official_from_timm(swin_tiny)
    mutate(official)
    with pytest.raises(ConversionError) as info:
        convert_state_dict({"model": official}, "official_swin", "swin_tiny", source="x.pth")
    assert str(info.value).startswith("x.pth: cannot convert to swin_tiny") and message in str(info.value)


class RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_that_needs_unpickling_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "payload": RunsCode(str(marker))}, path)
    with pytest.raises(UnsafeCheckpoint) as info:
        safe_load(path)
    assert str(path) in str(info.value) and "arbitrary unpickling" in str(info.value)
    assert not marker.exists()


def test_fetch_and_convert_through_the_cli(swin_tiny, tmp_path):
    buf = io.BytesIO()
    torch.save({"model": official_from_timm(swin_tiny)}, buf)
    body = buf.getvalue()
    with FaultServer() as server:
        url = server.add("/v1.0.0/swin_tiny_patch4_window7_224.pth", body, ["drop:100000", "status:503"])
        spec = {
            "url": url,
            "filename": "swin_tiny_patch4_window7_224.pth",
            "checksum": {"sha256": hashlib.sha256(body).hexdigest()},
            "layout": "official_swin",
            "objective": "supervised",
            "data": "in1k",
        }
        checks = ["--checksums", str(tmp_path / "ckpt.sha256"), "--verified", str(tmp_path / "dl.verified.json")]
        run_cmd(
            [
                "frozenbench",
                "fetch-checkpoint",
                "--spec",
                json.dumps(spec),
                "--out-dir",
                str(tmp_path / "dl"),
                "--backoff",
                "0.01",
                *checks,
            ],
            check=True,
            timeout=120,
        )
    out = tmp_path / "checkpoints" / "swin_tiny_in1k.pth"
    convert = [
        "frozenbench",
        "convert-checkpoint",
        "--src",
        str(tmp_path / "dl" / spec["filename"]),
        "--layout",
        "official_swin",
        "--arch",
        "swin_tiny",
        "--meta",
        json.dumps({"pretrain_objective": "supervised"}),
        "--download-spec",
        json.dumps(spec),
        *checks,
        "--out",
        str(out),
    ]
    proc = run_cmd(convert, check=True, timeout=300)
    assert "head.weight: classification head" in proc.stdout
    payload = load_backbone(out)
    assert payload["arch"] == "swin_tiny" and payload["meta"]["source_sha256"] == hashlib.sha256(body).hexdigest()
    sd = Backbone.from_checkpoint(out).model.state_dict()
    assert torch.equal(
        sd["layers.1.downsample.reduction.weight"], swin_tiny.state_dict()["layers.1.downsample.reduction.weight"]
    )
    # a checkpoint changed after its download (same size) is never converted
    src = tmp_path / "dl" / spec["filename"]
    data = bytearray(src.read_bytes())
    data[len(data) // 2] ^= 0xFF
    src.write_bytes(bytes(data))
    out.unlink()
    refused = run_cmd(convert, timeout=300)
    assert refused.returncode == 1 and f"{src}: sha256 mismatch" in refused.stderr and not out.exists()


def test_wrong_checksum_never_reaches_conversion(tmp_path):
    with FaultServer() as server:
        url = server.add("/w.pth", b"not the published file")
        spec = {"url": url, "filename": "w.pth", "checksum": {"sha256": "0" * 64}}
        proc = run_cmd(
            [
                "frozenbench",
                "fetch-checkpoint",
                "--spec",
                json.dumps(spec),
                "--out-dir",
                str(tmp_path),
                "--checksums",
                str(tmp_path / "ckpt.sha256"),
                "--backoff",
                "0.01",
            ],
            timeout=60,
        )
    assert proc.returncode == 1
    assert url in proc.stderr and "expected " + "0" * 64 in proc.stderr
    assert not (tmp_path / "w.pth").exists()


def test_a_family_must_bring_its_checkpoint_filter_and_layouts(swin_tiny):
    """An identity default would load a layout nobody checked: a family record has none, and a
    layout outside the family's list is refused before any key is read."""
    from frozenbench.models.registry import BackboneFamily

    with pytest.raises(TypeError):
        BackboneFamily("newfamily")  # no checkpoint filter, no layouts
    with pytest.raises(ConversionError, match="swin backbone, whose weights come in the official_swin"):
        convert_state_dict({"model": official_from_timm(swin_tiny)}, "dinov2", "swin_tiny")


def official_detection_file(model: torch.nn.Module) -> dict:
    """A microsoft/Swin-Transformer-Object-Detection checkpoint: the official Swin under ``backbone.``
    (official patch-merging order, downsample at the end of a stage), a per-level output norm
    ``norm0``-``norm3`` instead of the final norm, the detector's neck and heads, mmdet 2's meta."""
    official = {
        k: v
        for k, v in official_from_timm(model).items()
        if not k.startswith("head.") and not k.endswith("attn_mask") and not k.startswith("norm.")
    }
    detector = {f"backbone.{k}": v for k, v in official.items()}
    for i, channels in enumerate((96, 192, 384, 768)):
        detector[f"backbone.norm{i}.weight"] = model.norm.weight.clone() if i == 3 else torch.ones(channels)
        detector[f"backbone.norm{i}.bias"] = model.norm.bias.clone() if i == 3 else torch.zeros(channels)
    detector["neck.lateral_convs.0.conv.weight"] = torch.randn(256, 96, 1, 1)
    return {"state_dict": detector, "meta": {"epoch": 36, "mmdet_version": "2.11.0"}}


def test_official_swin_detection_files_convert_exactly_and_are_refused_by_the_mm_layout(swin_tiny, image):
    raw = official_detection_file(swin_tiny)
    # read as mmdet's own Swin, its patch merging would be "un-reordered": a load that computes
    # something else, so the mm layout refuses these keys and names the right one
    with pytest.raises(ConversionError, match="--layout swin_det"):
        convert_state_dict(raw, "mm", "swin_tiny")
    sd, report = convert_state_dict(raw, "swin_det", "swin_tiny")
    assert ("backbone.norm0.weight", "per-level output norm (frozenbench heads bring their own)") in report.dropped
    assert_same_features(sd, "swin_tiny", swin_tiny, image)


def test_an_official_swin_training_checkpoint_with_its_yacs_config_converts_without_yacs(
    swin_tiny, image, tmp_path, monkeypatch
):
    """``ckpt_epoch_N.pth`` of microsoft/Swin-Transformer: model, optimizer, scheduler and the yacs
    config object. Pickled here with a stand-in ``yacs.config.CfgNode`` module that is removed before
    loading: the loader reads the config as data and never needs (or runs) yacs."""
    import sys
    import types

    class CfgNode(dict):  # yacs' CfgNode: a dict subclass with bookkeeping attributes
        def __init__(self, init=None):
            super().__init__(init or {})
            self.__dict__.update(
                {"__immutable__": True, "__deprecated_keys__": set(), "__renamed_keys__": {}, "__new_allowed__": False}
            )

    CfgNode.__module__, CfgNode.__qualname__ = "yacs.config", "CfgNode"
    yacs, yacs_config = types.ModuleType("yacs"), types.ModuleType("yacs.config")
    yacs_config.CfgNode, yacs.config = CfgNode, yacs_config
    monkeypatch.setitem(sys.modules, "yacs", yacs)
    monkeypatch.setitem(sys.modules, "yacs.config", yacs_config)
    official = official_from_timm(swin_tiny)
    checkpoint = {
        "model": official,
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3, "params": [0]}]},
        "lr_scheduler": {"t_initial": 300},
        "max_accuracy": 81.2,
        "epoch": 299,
        "config": CfgNode({"MODEL": CfgNode({"TYPE": "swin", "SWIN": CfgNode({"DEPTHS": [2, 2, 6, 2]})})}),
    }
    torch.save(checkpoint, tmp_path / "ckpt_epoch_299.pth")
    monkeypatch.delitem(sys.modules, "yacs.config")
    monkeypatch.delitem(sys.modules, "yacs")
    convert_file(tmp_path / "ckpt_epoch_299.pth", tmp_path / "swin.pth", "official_swin", "swin_tiny")
    assert_checkpoint_features(tmp_path / "swin.pth", swin_tiny, image)


def mae_training_checkpoint(encoder: dict[str, torch.Tensor]) -> dict:
    """facebookresearch/mae's ``checkpoint-799.pth``: encoder (timm names) + decoder + mask token,
    optimizer, scaler, epoch and the argparse options."""
    import argparse

    model = {
        **encoder,
        "mask_token": torch.zeros(1, 1, 512),
        "decoder_embed.weight": torch.randn(512, 768),
        "decoder_pos_embed": torch.zeros(1, 197, 512),
        "decoder_blocks.0.norm1.weight": torch.ones(512),
        "decoder_norm.weight": torch.ones(512),
        "decoder_pred.weight": torch.randn(768, 512),
    }
    return {
        "model": model,
        "optimizer": {"state": {}, "param_groups": []},
        "epoch": 799,
        "scaler": {"scale": 65536.0},
        "args": argparse.Namespace(model="mae_vit_base_patch16", mask_ratio=0.75),
    }


def test_an_mae_training_checkpoint_converts_to_its_encoder_and_is_not_read_as_dinov2(tmp_path):
    arch = "vit_base_patch16_224"
    torch.manual_seed(3)
    source = build_arch(arch).eval()
    encoder = {k: v for k, v in source.state_dict().items()}
    # DDP's prefix on every key, as a training script saves it
    torch.save(
        {
            **mae_training_checkpoint(encoder),
            "model": {f"module.{k}": v for k, v in mae_training_checkpoint(encoder)["model"].items()},
        },
        tmp_path / "checkpoint-799.pth",
    )
    report = convert_file(tmp_path / "checkpoint-799.pth", tmp_path / "mae.pth", "mae", arch)
    assert ("decoder_embed.weight", "MAE decoder (pretraining only)") in report.dropped
    x = torch.randn(1, 3, 224, 224)
    body = Backbone.from_checkpoint(tmp_path / "mae.pth", out_indices=(-1,))
    with torch.no_grad():
        (expected,) = source.forward_intermediates(x, indices=[11], norm=True, intermediates_only=True)
    torch.testing.assert_close(body(x)[0], expected, rtol=0, atol=1e-5)
    with pytest.raises(ConversionError, match="MAE"):
        convert_state_dict(mae_training_checkpoint(encoder), "dinov2", "vit_base_patch14_dinov2")


def test_safetensors_files_load_without_pickle(tmp_path, swin_tiny, image):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in swin_tiny.state_dict().items()}, tmp_path / "model.safetensors")
    convert_file(tmp_path / "model.safetensors", tmp_path / "swin.pth", "timm", "swin_tiny")
    assert_checkpoint_features(tmp_path / "swin.pth", swin_tiny, image)
    (tmp_path / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(UserError, match="broken.safetensors: not a readable safetensors file"):
        convert_file(tmp_path / "broken.safetensors", tmp_path / "x.pth", "timm", "swin_tiny")


# -- values and keys: every converted tensor is finite floating point, every source key accounted for --


def _nan_at(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[5] = float("nan")
    return t


@pytest.mark.parametrize(
    "key, change, message",
    [
        ("layers.0.blocks.0.mlp.fc1.weight", lambda t: t.long(), "layers.0.blocks.0.mlp.fc1.weight holds int64 values"),
        ("norm.weight", lambda t: t > 0, "norm.weight holds bool values"),
        ("norm.bias", lambda t: t.to(torch.complex64), "norm.bias holds complex64 values"),
        ("norm.bias", lambda t: t.to(torch.float8_e4m3fn), "norm.bias holds float8_e4m3fn values"),
        ("layers.2.blocks.1.attn.qkv.weight", _nan_at, "layers.2.blocks.1.attn.qkv.weight holds 1 NaN value(s)"),
        ("norm.bias", lambda t: t.index_fill(0, torch.tensor([0, 1]), float("-inf")), "norm.bias holds 2 infinite"),
        ("norm.bias", lambda t: (t.double() + 1) * 1e300, "768 infinite value(s) once cast to float32"),
    ],
)
def test_weights_must_be_finite_floating_point_and_the_error_names_the_key(swin_tiny, key, change, message):
    official = official_from_timm(swin_tiny)
    official[key] = change(official[key])
    with pytest.raises(ConversionError) as info:
        convert_state_dict({"model": official}, "official_swin", "swin_tiny", source="x.pth")
    assert str(info.value).startswith("x.pth: ") and message in str(info.value)


def test_a_renamed_key_is_named_with_its_source_key(swin_tiny):
    moby = {f"encoder.{k}": v for k, v in official_from_timm(swin_tiny).items() if not k.startswith("head.")}
    moby["encoder.norm.weight"] = _nan_at(moby["encoder.norm.weight"])
    with pytest.raises(ConversionError, match=r"norm.weight \(source key encoder.norm.weight\) holds 1 NaN"):
        convert_state_dict({"model": moby}, "moby", "swin_tiny")


def test_half_bfloat16_and_double_weights_are_cast_to_the_models_dtype_and_reported(swin_tiny):
    official = official_from_timm(swin_tiny)
    official["norm.weight"] = official["norm.weight"].half()
    official["norm.bias"] = official["norm.bias"].bfloat16()
    official["layers.0.blocks.0.mlp.fc1.weight"] = official["layers.0.blocks.0.mlp.fc1.weight"].double()
    sd, report = convert_state_dict({"model": official}, "official_swin", "swin_tiny")
    assert {k: dtype for k, dtype in report.cast} == {
        "norm.weight": "float16",
        "norm.bias": "bfloat16",
        "layers.0.blocks.0.mlp.fc1.weight": "float64",
    }
    assert all(v.dtype == torch.float32 for v in sd.values())
    assert torch.equal(sd["norm.weight"], official["norm.weight"].float())
    assert "cast 3 key(s) from bfloat16, float16, float64" in report.summary()


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"model": {}, "epoch": 3}, "x.pth: holds an empty state dict"),
        (torch.zeros(3), "x.pth: holds a Tensor, not a state dict"),
        ({"norm.weight": [1.0, 2.0]}, "x.pth: norm.weight holds a list, not a tensor"),
        (
            {"module.norm.weight": torch.ones(3), "norm.weight": torch.ones(3)},
            "module.norm.weight and norm.weight are both norm.weight",
        ),
        ({"norm.weight": torch.zeros(768, device="meta")}, "norm.weight is a meta tensor"),
        (
            {
                "norm.weight": torch.sparse_coo_tensor(
                    torch.zeros(2, 0, dtype=torch.long), [], (10**9, 10**9), check_invariants=False
                )
            },
            "norm.weight is a torch.sparse_coo tensor of size (1000000000, 1000000000)",
        ),
    ],
)
def test_what_is_no_state_dict_of_dense_tensors_is_refused_by_name(raw, message):
    with pytest.raises(ConversionError) as info:
        convert_state_dict(raw, "timm", "swin_tiny", source="x.pth")
    assert message in str(info.value)


def test_two_source_keys_that_a_layout_maps_to_one_name_are_refused():
    mm_file = {
        "backbone.stages.0.blocks.0.attn.w_msa.qkv.weight": torch.zeros(288, 96),
        "backbone.stages.0.blocks.0.attn.qkv.weight": torch.zeros(288, 96),
    }
    with pytest.raises(ConversionError, match="two tensors map to layers.0.blocks.0.attn.qkv.weight"):
        convert_state_dict(mm_file, "mm", "swin_tiny")


def test_a_key_a_checkpoint_filter_drops_must_be_declared():
    """timm's ConvNeXt filter reads an open_clip model's ``visual.trunk.*`` and drops everything else
    (the text tower) without a word: refused. A ViT's ``pre_logits`` is on the declared list: dropped
    and reported."""
    torch.manual_seed(0)
    trunk = build_arch("convnext_mini").state_dict()
    open_clip = {f"visual.trunk.{k}": v for k, v in trunk.items()}
    open_clip["text.token_embedding.weight"] = torch.zeros(10, 4)
    with pytest.raises(ConversionError, match="drops 1 key.* on no declared drop list: text.token_embedding.weight"):
        convert_state_dict(open_clip, "timm", "convnext_mini")
    vit = dict(build_arch("vit_small_patch14_dinov2").state_dict())
    vit["pre_logits.fc.weight"] = torch.zeros(384, 384)
    _, report = convert_state_dict(vit, "timm", "vit_small_patch14_dinov2")
    assert dict(report.dropped)["pre_logits.fc.weight"].startswith("representation layer")


def test_a_file_of_another_layout_or_architecture_names_the_one_that_fits(swin_tiny):
    official = official_from_timm(swin_tiny)
    encoder = {f"encoder.{k}": v for k, v in official.items() if not k.startswith("head.")}
    simmim = {"model": {**encoder, "encoder.mask_token": torch.zeros(1, 1, 96), "decoder.0.bias": torch.zeros(3)}}
    with pytest.raises(ConversionError, match="x.pth: cannot convert .* use --layout simmim$"):
        convert_state_dict(simmim, "official_swin", "swin_tiny", source="x.pth")
    moby = {"model": {**encoder, **{f"encoder_k.{k[8:]}": v for k, v in encoder.items()}, "queue1": torch.zeros(2)}}
    with pytest.raises(ConversionError, match="use --layout moby$"):
        convert_state_dict(moby, "official_swin", "swin_tiny")
    with pytest.raises(ConversionError, match="use --layout swin_det$"):
        convert_state_dict(official_detection_file(swin_tiny), "timm", "swin_tiny")
    torch.manual_seed(0)
    base = official_from_timm(build_arch("swin_base"))
    with pytest.raises(ConversionError) as info:
        convert_state_dict({"model": base}, "official_swin", "swin_tiny")
    assert "embed dim 128, patch size 4, depths (2, 2, 18, 2), window size 7, which fit swin_base" in str(info.value)
    assert str(info.value).endswith("use --arch swin_base")


def test_an_unregistered_arch_is_one_error_listing_close_names(tmp_path):
    with pytest.raises(ConversionError) as info:
        convert_file(tmp_path / "never_read.pth", tmp_path / "x.pth", "official_swin", "swin_tny")
    assert str(info.value).startswith("swin_tny: not a registered architecture; close registered names: swin_tiny")


def test_a_torchscript_archive_needs_the_quickgelu_arch(tmp_path):
    """A TorchScript archive is one of OpenAI's CLIP files, trained with QuickGELU: the GELU tower
    would load its tensors and compute other features. Refused before the archive is read."""
    torch.jit.script(torch.nn.Sequential(torch.nn.Linear(2, 2))).save(str(tmp_path / "ViT-B-16.pt"))
    with pytest.raises(ConversionError) as info:
        convert_file(tmp_path / "ViT-B-16.pt", tmp_path / "x.pth", "openai_clip", "vit_base_patch16_clip_224")
    assert str(info.value).startswith(f"{tmp_path / 'ViT-B-16.pt'}: a TorchScript archive is an OpenAI CLIP file")
    assert str(info.value).endswith("use --arch vit_base_patch16_clip_quickgelu_224")
    assert not (tmp_path / "x.pth").exists()
