"""Memory before the queue (docs/memory.md): activation checkpointing and frame chunks as config
options, the peak-memory estimate of a cell and the refusal of cells that will not fit their GPU."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import torch

from frozenbench.cluster import memory
from frozenbench.config import ConfigError, check_references, load_config, read_yaml, validate_config
from frozenbench.models.backbone import Backbone, apply_memory_options
from frozenbench.study import task_spec

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def memory_cache(tmp_path_factory, monkeypatch):
    """Counts go to a cache of this test session, never the user's."""
    monkeypatch.setenv("FROZENBENCH_MEMORY_CACHE", str(tmp_path_factory.getbasetemp() / "memory_counts.json"))


# -- activation checkpointing --------------------------------------------------------------------------


def _loss_and_grads(body: Backbone, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    body.zero_grad(set_to_none=True)
    loss = sum((f * f).mean() for f in body(x))
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in body.named_parameters()}


@pytest.mark.parametrize(
    "arch,size", [("convstem_swin_tiny", 64), ("swinv2_tiny", 64), ("vit_small_patch14_dinov2", 56)]
)
def test_activation_checkpointing_gives_the_same_loss_and_gradients(arch, size):
    torch.manual_seed(0)
    plain = Backbone(arch, img_size=size, frozen=False)
    checkpointed = copy.deepcopy(plain)
    checkpointed.set_activation_checkpointing(True)
    x = torch.randn(2, 3, size, size)
    loss, grads = _loss_and_grads(plain, x)
    loss_ckpt, grads_ckpt = _loss_and_grads(checkpointed, x)
    torch.testing.assert_close(loss_ckpt, loss)
    assert grads.keys() == grads_ckpt.keys() and len(grads) > 10
    for name in grads:
        torch.testing.assert_close(grads_ckpt[name], grads[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize(
    "arch,size",
    [
        ("convstem_swin_tiny", 64),
        ("swinv2_tiny", 64),
        ("vit_small_patch14_dinov2", 56),
        ("convnext_mini", 64),
        ("eva02_small_patch14_224.mim_in22k", 56),
    ],
)
def test_the_features_path_honours_checkpointing_in_every_family(arch, size):
    # the heads take forward_intermediates' levels: the activations kept there must shrink
    plain = memory.count_backbone(arch, size, 4, True, False)
    checkpointed = memory.count_backbone(arch, size, 4, True, True)
    assert checkpointed.saved < 0.5 * plain.saved
    # backward rebuilds one block at a time: less than everything, more than nothing
    assert 0 < checkpointed.recompute < plain.saved


def test_a_frozen_backbone_never_checkpoints():
    body = Backbone("convstem_swin_tiny", img_size=64, frozen=True, activation_checkpointing=True)
    assert not body.activation_checkpointing
    assert not any(getattr(layer, "grad_checkpointing", False) for layer in body.model.layers)


def test_apply_memory_options_reaches_every_backbone_and_frame_chunk_holder():
    class FrameChunked(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.frame_chunk = 0
            self.body = Backbone("convstem_swin_tiny", img_size=64, frozen=False)

    model = torch.nn.Sequential(FrameChunked(), Backbone("convstem_swin_tiny", img_size=64, frozen=False))
    apply_memory_options(model, {"activation_checkpointing": True, "frame_chunk": 16})
    assert model[0].frame_chunk == 16
    assert model[0].body.activation_checkpointing and model[1].activation_checkpointing
    apply_memory_options(model, {})  # a spec without the keys: off, chunk left as it is
    assert not model[1].activation_checkpointing and model[0].frame_chunk == 16


def test_framewise_backbone_chunks_give_the_same_tokens_in_training_and_at_test_time():
    from frozenbench.openmmlab.video import FramewiseBackbone

    torch.manual_seed(0)
    whole = FramewiseBackbone(arch="convstem_swin_tiny", img_size=64, frozen=True)
    chunked = copy.deepcopy(whole)
    chunked.frame_chunk = 3
    clips = torch.randn(2, 3, 4, 64, 64)  # N, C, T, H, W: 8 frames, chunks of 3, 3, 2
    for train in (True, False):
        whole.train(train), chunked.train(train)
        assert chunked.frames_per_call(8) == 3
        torch.testing.assert_close(chunked(clips), whole(clips))
    whole.eval()
    assert whole.frames_per_call(8) == whole.max_frames_per_call


# -- the spec and the schema ------------------------------------------------------------------------------


def test_the_memory_options_reach_the_spec_and_checkpointing_only_fine_tuned_cells(tmp_path):
    config = load_config(ROOT / "configs" / "ci.yaml")
    for mode in ("frozen", "finetune"):
        spec = task_spec(config, "k400", "temporal_b2", mode, "data/x")
        assert spec["activation_checkpointing"] is False and spec["frame_chunk"] == 0  # the defaults
    config["tasks"]["k400"].update(activation_checkpointing=True, frame_chunk=4)
    frozen = task_spec(config, "k400", "temporal_b2", "frozen", "data/x")
    finetune = task_spec(config, "k400", "temporal_b2", "finetune", "data/x")
    # a frozen backbone keeps no activation: checkpointing is a no-op there and stays off its spec
    assert frozen["activation_checkpointing"] is False and frozen["frame_chunk"] == 4
    assert finetune["activation_checkpointing"] is True and finetune["frame_chunk"] == 4


def test_frame_chunk_on_an_image_task_is_refused_naming_the_key():
    config = validate_config(read_yaml(ROOT / "configs" / "ci.yaml"))
    config["tasks"]["coco"]["frame_chunk"] = 8
    with pytest.raises(ConfigError, match=r"tasks\.coco\.frame_chunk: only video tasks"):
        check_references(config)


# -- counting ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arch,size,checkpointing,bf16",
    [
        ("convstem_swin_tiny", 64, False, False),
        ("convstem_swin_tiny", 64, True, False),
        ("convstem_swin_tiny", 64, False, True),
        ("vit_small_patch14_dinov2", 56, False, False),
        ("vit_small_patch14_dinov2", 56, True, True),
    ],
)
def test_the_fake_count_equals_the_count_on_real_cpu_tensors(arch, size, checkpointing, bf16):
    fake = memory.count_backbone_now(arch, size, 3, True, checkpointing, bf16)
    real = memory.count_backbone_now(arch, size, 3, True, checkpointing, bf16, device="cpu")
    assert fake.saved > 0 and fake.params == real.params
    if bf16:
        # the meta kernels of layer_norm / batch_norm return the per-token mean and rstd they save in
        # the input's bf16 where the CPU kernels keep fp32: 0.2 % of the bytes
        assert fake.saved == pytest.approx(real.saved, rel=0.005) and fake.saved <= real.saved
        assert fake.recompute == pytest.approx(real.recompute, rel=0.005)
    else:
        assert fake == real
    frozen_fake = memory.count_backbone_now(arch, size, 3, False, bf16=bf16, chunk=2, last_level_only=True)
    frozen_real = memory.count_backbone_now(
        arch, size, 3, False, bf16=bf16, chunk=2, last_level_only=True, device="cpu"
    )
    assert frozen_fake.forward_peak == pytest.approx(frozen_real.forward_peak, rel=0.005)
    assert frozen_fake.forward_peak > 0 and (bf16 or frozen_fake == frozen_real)


def test_the_saved_bytes_grow_with_the_frames():
    arch, size, frames = "convstem_swin_tiny", 64, 4
    small = memory.count_backbone_now(arch, size, frames, True)
    large = memory.count_backbone_now(arch, size, 2 * frames, True)
    # activations grow with the batch: twice the frames, about twice the bytes (shared masks aside)
    assert 1.8 * small.saved < large.saved <= 2 * small.saved


def test_the_counts_are_cached_on_disk(tmp_path, monkeypatch):
    cache = tmp_path / "counts.json"
    monkeypatch.setenv("FROZENBENCH_MEMORY_CACHE", str(cache))
    memory.count_backbone.cache_clear()
    first = memory.count_backbone("convstem_swin_tiny", 64, 2, True)
    stored = json.loads(cache.read_text())
    assert stored["code"] == memory._code_key() and len(stored["counts"]) == 1
    memory.count_backbone.cache_clear()
    monkeypatch.setattr(memory, "count_backbone_now", lambda *a, **k: pytest.fail("counted again"))
    assert memory.count_backbone("convstem_swin_tiny", 64, 2, True) == first
    memory.count_backbone.cache_clear()


def test_the_estimate_agrees_with_the_h100_backbone_record():
    # bench/records/gpu_backbone_memory_h100.json: a bare backbone's fine-tuning step (fp32, AdamW)
    record = json.loads((ROOT / "bench" / "records" / "gpu_backbone_memory_h100.json").read_text())
    rows = [row for row in record["rows"] if row["variant"] == "finetune_fp32"]
    assert len(rows) == 4
    for row in rows:
        count = memory.count_backbone(row["arch"], row["img_size"], row["batch"], True)
        assert count.params == pytest.approx(row["params_m"] * 1e6, rel=1e-6)
        estimate_gib = (16 * count.params + count.saved) / 2**30
        # measured: 0.95-0.98 of the peak (what is left: backward's transient working set)
        assert 0.93 * row["peak_gib"] <= estimate_gib <= row["peak_gib"], row


# -- the configured card and the refusal ----------------------------------------------------------------


def _gpu_config(gpu: dict, checkpointing: bool = False) -> dict:
    """configs/ci.yaml with one fine-tuned Swin-L K400 cell at the paper's 8 clips x 16 frames of
    224 px per GPU, trained and evaluated on ``gpu``."""
    raw = read_yaml(ROOT / "configs" / "ci.yaml")
    raw["backbones"]["swin_large_synth"] = {
        "arch": "swin_large",
        "checkpoint": {"synth": {"seed": 1}, "layout": "official_swin", "objective": "random", "data": "none"},
    }
    k400 = raw["tasks"]["k400"]
    k400.update(img_size=224, data_options={"num_frames": 16}, activation_checkpointing=checkpointing)
    k400["train"]["batch_size"] = 8
    k400["heads"]["temporal_b2"]["num_frames"] = 16
    raw["study"]["cells"] = [
        {"task": "k400", "backbones": ["swin_large_synth"], "modes": ["finetune"], "heads": ["temporal_b2"]}
    ]
    raw["compute"] = {"train": {"gpus": 1, "device": "cuda", **gpu}, "evaluate": {"gpus": 1, "device": "cuda", **gpu}}
    config = validate_config(raw)
    check_references(config)
    return config


def test_a_finetuned_large_cell_on_a_16_gb_card_is_refused_naming_the_settings():
    config = _gpu_config({"gpu_model": "t4"})
    with pytest.raises(ConfigError) as refused:
        memory.check_memory(config, source="gpu.yaml")
    message = str(refused.value)
    assert message.startswith("gpu.yaml: cells that will not fit their GPU")
    assert "cell k400/swin_large_synth/finetune/temporal_b2" in message
    assert "t4: 16 GB" in message and "backbone activations kept for backward" in message
    for setting in (
        "tasks.k400.activation_checkpointing: true",
        "a smaller tasks.k400.train.max_rank_batch (now 8 per GPU: tasks.k400.train.batch_size 8 over 1 rank(s)",
        "tasks.k400.frame_chunk",
        "compute.train.gpu_memory_gb",
    ):
        assert setting in message


def test_activation_checkpointing_shrinks_the_estimate_below_the_card():
    cell = ("k400", "swin_large_synth", "finetune", "temporal_b2")
    plain = memory.estimate_cell_memory(_gpu_config({"gpu_model": "t4"}), cell)
    checkpointed_config = _gpu_config({"gpu_model": "t4"}, checkpointing=True)
    checkpointed = memory.estimate_cell_memory(checkpointed_config, cell)
    assert checkpointed.train_mib < plain.train_mib / 3
    assert "recomputed block (checkpointing)" in checkpointed.train_parts
    assert memory.check_memory(checkpointed_config) == [
        "memory estimates without a GPU record cover the backbone only (docs/memory.md)"
    ]
    # the refusal's suggestion quotes the same estimate
    with pytest.raises(ConfigError, match=f"estimate then {checkpointed.train_mib:,.0f} MiB"):
        memory.check_memory(_gpu_config({"gpu_model": "t4"}))


@pytest.mark.parametrize("path", ["config.yaml", "configs/ci.yaml", "configs/paper-smoke.yaml"])
def test_cpu_configs_are_never_counted_or_refused(path, monkeypatch):
    monkeypatch.setattr(memory, "count_backbone", lambda *a, **k: pytest.fail("a CPU config was counted"))
    config = load_config(ROOT / path)
    if memory.on_gpu(config):
        pytest.skip(f"{path} trains on a GPU")
    assert memory.check_memory(config) == []


def test_every_config_the_tests_write_trains_on_the_cpu():
    # the suites' generated configs start from config.yaml / configs/ci.yaml; none names a GPU
    for path in [ROOT / "config.yaml", ROOT / "configs" / "ci.yaml"]:
        assert not memory.on_gpu(load_config(path)) and not memory.on_gpu(load_config(path), "evaluate")


def test_an_unknown_card_is_a_note_not_a_refusal(monkeypatch):
    monkeypatch.setattr(memory, "count_backbone", lambda *a, **k: pytest.fail("nothing to compare with"))
    notes = memory.check_memory(_gpu_config({"gpu_model": "mystery9000"}))
    assert any("'mystery9000' is not a card of known memory" in note and "gpu_memory_gb" in note for note in notes)


def test_the_card_memory_comes_from_gpu_memory_gb_or_the_table():
    assert memory.gpu_memory({"compute": {"train": {"gpu_model": "h100"}}})[0] == 80 * 1024
    mib, how = memory.gpu_memory({"compute": {"train": {"gpu_model": "a100"}}})
    assert mib == 40 * 1024 and "gpu_memory_gb: 80" in how
    assert memory.gpu_memory({"compute": {"train": {"gpu_model": "a100", "gpu_memory_gb": 80}}})[0] == 80 * 1024
    assert memory.gpu_memory({"compute": {"train": {"gpus": 8}}})[0] is None


def test_a_gpu_record_gives_the_heads_share_scaled_by_batch():
    config = _gpu_config({"gpu_memory_gb": 80})
    cell = ("k400", "swin_large_synth", "finetune", "temporal_b2")
    backbone_only = memory.estimate_cell_memory(config, cell)
    assert not backbone_only.heads_known and "lower bound" in backbone_only.describe()
    # a record row of the same kind and mode at half the batch, 1,000 MiB above its own backbone part
    own = memory._backbone_parts("swin_large", 224, 4 * 16, 0, True, False, False, True)
    row = {
        "cell": "k400_temporal", "mode": "finetune", "status": "ok", "arch": "swin_large", "img_size": 224,
        "num_frames": 16, "batch": 4, "train_gpu_peak_mb": sum(own.values()) + 1000.0, "eval_gpu_peak_mb": None,
    }  # fmt: skip
    record = {"schema": 2, "device": "cuda", "cells": [row]}
    with_heads = memory.estimate_cell_memory(config, cell, record)
    assert with_heads.heads_known
    assert with_heads.train_parts["heads (GPU record)"] == pytest.approx(2000.0)
    assert with_heads.train_mib == pytest.approx(backbone_only.train_mib + 2000.0)


def test_the_default_record_is_the_newest_with_schema_2_gpu_rows(tmp_path):
    good = {"schema": 2, "device": "cuda", "cells": [{"cell": "k400_temporal", "status": "ok"}]}
    (tmp_path / "gpu_old.json").write_text(json.dumps(good))
    (tmp_path / "gpu_cpu.json").write_text(json.dumps({**good, "device": "cpu"}))
    (tmp_path / "gpu_v1.json").write_text(json.dumps({"device": "cuda", "rows": []}))
    os.utime(tmp_path / "gpu_old.json", (1, 1))
    assert memory.default_record_path(tmp_path) == tmp_path / "gpu_old.json"
    assert memory.default_record_path(tmp_path / "none") is None


def test_a_named_record_that_is_not_one_is_refused(tmp_path):
    config = {"compute": {"memory_record": str(tmp_path / "missing.json")}}
    with pytest.raises(ConfigError, match="compute.memory_record"):
        memory.load_record(config)
