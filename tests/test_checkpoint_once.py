"""A converted checkpoint is used as it is: a job reads it once, builds its backbone once, hashes it
once, and the weights' own normalisation and build options come from the file (issue 28)."""

from __future__ import annotations

import dataclasses
import hashlib
import os

import pytest
import torch
from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer

from frozenbench.checkpoint import ConversionError, convert_file, io, load_backbone, save_backbone
from frozenbench.checkpoint.io import save_random_backbone
from frozenbench.errors import UserError
from frozenbench.models import registry
from frozenbench.models.backbone import Backbone
from frozenbench.models.registry import build_arch
from frozenbench.models.registry import IMAGENET_MEAN, IMAGENET_STD, get_arch
from frozenbench.tasks.registry import BackboneRequest, VideoHead

TINY_VIT = dict(embed_dim=32, depth=4, num_heads=2)


@pytest.fixture
def counted(monkeypatch):
    """How many Swin networks are constructed (every Backbone, and any throwaway model a conversion
    would build) and how many times a checkpoint file is read, from now on."""
    counts = {"built": 0, "read": 0}
    construct, read = SwinTransformer.__init__, io.safe_load

    def counting_construct(self, *args, **kwargs):
        counts["built"] += 1
        construct(self, *args, **kwargs)

    def counting_read(path):
        counts["read"] += 1
        return read(path)

    monkeypatch.setattr(SwinTransformer, "__init__", counting_construct)
    monkeypatch.setattr(io, "safe_load", counting_read)
    return counts


@pytest.fixture
def tiny_vit_base(monkeypatch) -> str:
    """``vit_base_patch16_224`` (family, builder, MAE tag, default normalisation) at a tiny width."""
    spec = get_arch("vit_base_patch16_224")
    name = "vit_base_patch16_224_tiny_test"
    monkeypatch.setitem(registry._ARCHS, name, dataclasses.replace(spec, name=name, kwargs={**spec.kwargs, **TINY_VIT}))
    return name


def mae_release(path, seed: int = 0):
    """An MAE checkpoint as facebookresearch/mae publishes it: the encoder in timm names under ``model``."""
    torch.manual_seed(seed)
    encoder = VisionTransformer(img_size=224, patch_size=16, num_classes=0, **TINY_VIT).state_dict()
    torch.save({"model": encoder}, path)
    return path


def stored_weights_in(body: Backbone, path_or_weights) -> bool:
    """Every tensor of the file (or of its state dict) that the (pruned) body keeps is in it unchanged."""
    stored = path_or_weights if isinstance(path_or_weights, dict) else load_backbone(path_or_weights)["state_dict"]
    own = body.model.state_dict()
    shared = [k for k in stored if k in own]
    return bool(shared) and all(torch.equal(own[k], stored[k]) for k in shared)


# -- one build, one read ------------------------------------------------------------------------


@pytest.mark.openmmlab
@pytest.mark.parametrize("arch", ["convstem_swin_tiny", None], ids=["arch from config", "arch from file"])
def test_a_job_builds_its_backbone_once_and_reads_its_checkpoint_once(tmp_path, counted, arch):
    from frozenbench.openmmlab import build_registered_model
    from frozenbench.openmmlab.configs import backbone_part, detector_config, recognizer_config

    path = str(save_random_backbone(tmp_path / "b.pth", "convstem_swin_tiny", 64, seed=3))
    stored = load_backbone(path)["state_dict"]
    counted.update(built=0, read=0)
    torch.manual_seed(0)
    # what a detection job does: the backbone part sizes the head config, the config builds the model
    part = backbone_part(BackboneRequest(path, 64, frozen=True, arch=arch))
    cfg = detector_config(part.cfg, part.channels, part.strides, 3, part.normalization, width=32)
    detector = build_registered_model("mmdet", cfg)
    assert counted == {"built": 1, "read": 1}
    assert detector.backbone.channels == part.channels == [32, 64, 128, 256]
    assert stored_weights_in(detector.backbone.body, stored)

    # a video job (last level only) in the same process: its own single build, its own body
    part = backbone_part(BackboneRequest(path, 64, frozen=True, arch=arch), pyramid=False)
    cfg = recognizer_config(part, 8, 64, VideoHead(num_frames=2, num_blocks=1, width=32))
    recognizer = build_registered_model("mmaction", cfg)
    assert counted == {"built": 2, "read": 2}
    assert recognizer.backbone.body is not detector.backbone.body
    assert recognizer.backbone.body.out_indices == [3] and part.channels == [256]
    assert stored_weights_in(recognizer.backbone.body, stored)


@pytest.mark.openmmlab
def test_a_prebuilt_body_goes_to_one_model_with_the_same_arguments_only(tmp_path, counted):
    from frozenbench.openmmlab.backbone import FrozenbenchBackbone
    from frozenbench.openmmlab.configs import backbone_part

    path = str(save_random_backbone(tmp_path / "b.pth", "convstem_swin_tiny", 64, seed=3))
    part = backbone_part(BackboneRequest(path, 64, frozen=True, arch="convstem_swin_tiny"))
    args = {k: v for k, v in part.cfg.items() if k != "type"}
    counted.update(built=0, read=0)
    other = FrozenbenchBackbone(**{**args, "frozen": False})  # another body: built, not taken
    assert counted["built"] == 1 and not other.body.frozen
    first = FrozenbenchBackbone(**args)
    second = FrozenbenchBackbone(**args)  # the same arguments again: a model of its own
    assert counted["built"] == 2 and first.body is not second.body and first.body.frozen


def test_building_from_a_checkpoint_leaves_the_global_rng_as_the_seed_set_it(tmp_path):
    """The random initialisation a checkpoint's weights overwrite draws from a forked generator, so
    the heads built after the backbone start from the seed alone."""
    path = save_random_backbone(tmp_path / "b.pth", "convstem_swin_tiny", 64, seed=3)
    torch.manual_seed(7)
    Backbone.from_checkpoint(path, img_size=64)
    after_build = torch.rand(4)
    torch.manual_seed(7)
    assert torch.equal(torch.rand(4), after_build)


# -- hashed once -------------------------------------------------------------------------------


def test_a_checkpoint_is_hashed_once_per_job_path(tmp_path, monkeypatch):
    """A job names its checkpoint's digest in its run fingerprint and again in its metrics record,
    both through ``checkpoint.io.sha256_of``: the file is read for the first only."""
    hashed = []
    hash_file = io._hash_file
    monkeypatch.setattr(io, "_hash_file", lambda path: hashed.append(path) or hash_file(path))
    monkeypatch.setattr(io, "_DIGESTS", {})
    path = tmp_path / "b.pth"
    path.write_bytes(b"a" * 100)
    assert io.sha256_of(path) == io.sha256_of(str(path)) == hashlib.sha256(b"a" * 100).hexdigest()
    assert len(hashed) == 1
    # replaced atomically by a file of the same size (another inode): hashed again
    (tmp_path / "next").write_bytes(b"b" * 100)
    os.replace(tmp_path / "next", path)
    assert io.sha256_of(path) == hashlib.sha256(b"b" * 100).hexdigest() and len(hashed) == 2
    # rewritten in place, same size, another modification time: hashed again
    path.write_bytes(b"c" * 100)
    os.utime(path, ns=(1, 1))
    assert io.sha256_of(path) == hashlib.sha256(b"c" * 100).hexdigest() and len(hashed) == 3


# -- the weights' normalisation and build options live in the file -------------------------------


def test_a_converted_mae_checkpoint_carries_maes_normalisation_and_resampling(tmp_path, tiny_vit_base):
    release = mae_release(tmp_path / "checkpoint-799.pth")
    convert_file(release, tmp_path / "mae.pth", "mae", tiny_vit_base, meta={"pretrain_objective": "mim"})
    payload = load_backbone(tmp_path / "mae.pth")
    assert payload["normalization"] == {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    assert payload["weights_tag"] == "mae" and payload["arch_options"] == {"pos_interpolation": "mae"}
    body = Backbone.from_checkpoint(tmp_path / "mae.pth", img_size=512)
    assert (body.mean, body.std) == (IMAGENET_MEAN, IMAGENET_STD)
    assert body.pixel_normalization() == {
        "mean": [255 * m for m in IMAGENET_MEAN],
        "std": [255 * s for s in IMAGENET_STD],
    }
    assert body.model.pos_interpolation == "mae"

    # the same tensors as plain timm weights: the architecture's defaults, and other features
    convert_file(release, tmp_path / "plain.pth", "timm", tiny_vit_base)
    plain = Backbone.from_checkpoint(tmp_path / "plain.pth", img_size=512)
    assert "weights_tag" not in load_backbone(tmp_path / "plain.pth")
    assert (plain.mean, plain.std) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)) and plain.model.pos_interpolation == "timm"
    x = torch.randn(1, 3, 512, 512)
    assert (body(x)[-1] - plain(x)[-1]).abs().max() > 1e-3

    # timm's own `.mae` files come in the timm layout: the tag, named in the config's meta, applies
    convert_file(release, tmp_path / "timm_mae.pth", "timm", tiny_vit_base, meta={"weights_tag": "mae"})
    tagged = load_backbone(tmp_path / "timm_mae.pth")
    assert tagged["arch_options"] == payload["arch_options"] and tagged["normalization"] == payload["normalization"]
    assert "weights_tag" not in tagged["meta"]
    torch.testing.assert_close(Backbone.from_checkpoint(tmp_path / "timm_mae.pth", img_size=512)(x), body(x))


def test_a_normalisation_given_for_the_weights_is_recorded_and_checked(tmp_path, tiny_vit_base):
    release = mae_release(tmp_path / "checkpoint-799.pth")
    own = {"mean": [0.4, 0.4, 0.4], "std": [0.2, 0.3, 0.2]}
    convert_file(release, tmp_path / "own.pth", "mae", tiny_vit_base, meta={"normalization": own})
    assert load_backbone(tmp_path / "own.pth")["normalization"] == own
    assert Backbone.from_checkpoint(tmp_path / "own.pth").mean == (0.4, 0.4, 0.4)
    with pytest.raises(UserError, match=r"checkpoint-799.pth: normalization.std: every channel's std must be positive"):
        convert_file(
            release, tmp_path / "x.pth", "mae", tiny_vit_base, meta={"normalization": {**own, "std": [0, 1, 1]}}
        )
    with pytest.raises(UserError, match=r"normalization.mean: \[123.7, 116.3, 103.5\] looks like pixel units"):
        convert_file(
            release,
            tmp_path / "x.pth",
            "mae",
            tiny_vit_base,
            meta={"normalization": {**own, "mean": [123.7, 116.3, 103.5]}},
        )
    with pytest.raises(
        ConversionError, match=r"weights_tag: the vit family has no weights tag 'beit' \(its tags: mae\)"
    ):
        convert_file(release, tmp_path / "x.pth", "timm", tiny_vit_base, meta={"weights_tag": "beit"})
    assert not (tmp_path / "x.pth").exists()


@pytest.mark.openmmlab
def test_the_head_config_takes_the_normalisation_the_checkpoint_records(tmp_path, tiny_vit_base):
    from frozenbench.openmmlab import backbone as mm_backbone
    from frozenbench.openmmlab.configs import backbone_part

    convert_file(mae_release(tmp_path / "checkpoint-799.pth"), tmp_path / "mae.pth", "mae", tiny_vit_base)
    part = backbone_part(BackboneRequest(str(tmp_path / "mae.pth"), 224, frozen=True, arch=tiny_vit_base))
    mm_backbone._PREBUILT.clear()  # no model is built from it here
    assert part.normalization == {"mean": [255 * m for m in IMAGENET_MEAN], "std": [255 * s for s in IMAGENET_STD]}
    assert part.channels == [32] * 4 and part.strides == [4, 8, 16, 32]


def test_the_mae_architecture_names_are_retired_with_what_to_use_instead(tmp_path):
    with pytest.raises(KeyError, match="MAE weights are vit_large_patch16_224 converted from the mae layout"):
        get_arch("vit_large_patch16_224.mae")
    with pytest.raises(ConversionError, match="MAE weights are vit_base_patch16_224 converted from the mae layout"):
        convert_file(tmp_path / "absent.pth", tmp_path / "x.pth", "mae", "vit_base_patch16_224.mae")


# -- the strict load is the key check ----------------------------------------------------------


def test_a_checkpoint_that_does_not_load_exactly_names_the_file_and_the_keys(tmp_path):
    torch.manual_seed(0)
    weights = build_arch("convstem_swin_tiny", 64).state_dict()
    missing = {k: v for k, v in weights.items() if k != "layers.0.blocks.0.mlp.fc1.weight"}
    save_backbone(tmp_path / "missing.pth", "convstem_swin_tiny", missing, {})
    with pytest.raises(
        UserError,
        match=r"missing.pth: does not load into convstem_swin_tiny: missing 1 key\(s\): "
        r"layers.0.blocks.0.mlp.fc1.weight$",
    ):
        Backbone.from_checkpoint(tmp_path / "missing.pth", img_size=64)
    extra = {**weights, "layers.0.blocks.0.attn.extra": torch.zeros(3)}
    save_backbone(tmp_path / "extra.pth", "convstem_swin_tiny", extra, {})
    with pytest.raises(
        UserError, match=r"extra.pth: does not load into .*unexpected 1 key\(s\): layers.0.blocks.0.attn.extra"
    ):
        Backbone.from_checkpoint(tmp_path / "extra.pth", img_size=64)
    wide = {**weights, "norm.weight": torch.zeros(7)}
    save_backbone(tmp_path / "wide.pth", "convstem_swin_tiny", wide, {})
    with pytest.raises(UserError, match=r"wide.pth: its weights do not fit convstem_swin_tiny: .*norm.weight"):
        Backbone.from_checkpoint(tmp_path / "wide.pth", img_size=64)
    save_backbone(tmp_path / "ok.pth", "convstem_swin_tiny", weights, {})
    with pytest.raises(UserError, match=r"ok.pth: holds a convstem_swin_tiny backbone, not swin_tiny"):
        Backbone.from_checkpoint(tmp_path / "ok.pth", "swin_tiny")
    save_backbone(tmp_path / "opts.pth", "convstem_swin_tiny", weights, {}, arch_options={"depths": [1, 1, 1, 1]})
    with pytest.raises(UserError, match=r"opts.pth: arch_options depths: not an option convstem_swin weights set"):
        Backbone.from_checkpoint(tmp_path / "opts.pth", img_size=64)
    save_backbone(
        tmp_path / "norm.pth", "convstem_swin_tiny", weights, {}, normalization={"mean": [1, 2], "std": [1, 1, 1]}
    )
    with pytest.raises(UserError, match=r"norm.pth: normalization.mean: expected three finite numbers"):
        Backbone.from_checkpoint(tmp_path / "norm.pth", img_size=64)


def test_what_a_canonical_file_never_holds_is_not_asked_for(tmp_path):
    """ConvNeXt's classifier norm (``head.norm``) is part of the classifier, which no canonical
    checkpoint carries: the file still loads, and the body is the file's."""
    torch.manual_seed(2)
    torch.save(build_arch("convnext_mini", 64).state_dict(), tmp_path / "release.pth")
    path = tmp_path / "c.pth"
    report = convert_file(tmp_path / "release.pth", path, "timm", "convnext_mini")
    assert ("head.norm.weight", "classification head (not part of the backbone)") in report.dropped
    assert not any(k.startswith("head.") for k in load_backbone(path)["state_dict"])
    body = Backbone.from_checkpoint(path, img_size=64)
    assert stored_weights_in(body, path)
