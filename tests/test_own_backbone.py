"""A researcher's own backbone as one config entry: a local file or a Hugging Face hub id, converted by the DAG."""

from __future__ import annotations

import os
import re

import pytest
import torch
import yaml

from frozenbench.errors import UserError

from .conftest import VENV_BIN, run_cmd

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fake_hub_cache(root, repo_id: str, filename: str, tensors: dict[str, torch.Tensor]):
    """The layout huggingface_hub keeps on disk: refs/main names a snapshot holding the file."""
    from safetensors.torch import save_file

    repo = root / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, snapshot / filename)
    return snapshot / filename


def timm_weights(arch: str, seed: int) -> dict[str, torch.Tensor]:
    from frozenbench.models.registry import build_arch

    torch.manual_seed(seed)
    return build_arch(arch).state_dict()


def test_a_hub_file_is_found_in_the_local_cache_and_never_downloaded(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from frozenbench.checkpoint.hub import cached_file

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    path = fake_hub_cache(
        tmp_path / "hub", "timm/convnext_mini.test", "model.safetensors", timm_weights("convnext_mini", 0)
    )
    assert cached_file("timm/convnext_mini.test", "model.safetensors") == path
    with pytest.raises(
        UserError,
        match=r"timm/other/model.safetensors is not in the local Hugging Face cache .*"
        r"hf download timm/other model.safetensors",
    ):
        cached_file("timm/other", "model.safetensors")


@pytest.mark.slow
def test_a_local_file_and_a_hub_id_are_each_one_config_entry_and_convert_in_the_dag(workflow_copy, tmp_path):
    arch = "vit_small_patch14_dinov2"
    weights = workflow_copy / "weights" / "dinov2_vits14_pretrain.pth"
    run_cmd(
        [
            str(VENV_BIN / "frozenbench"),
            "synth-checkpoint",
            "--arch",
            arch,
            "--layout",
            "dinov2",
            "--seed",
            "1",
            "--out",
            str(weights),
        ],
        check=True,
    )
    hub = tmp_path / "hub"
    fake_hub_cache(hub, "timm/vit_small_patch14_dinov2.lvd142m", "model.safetensors", timm_weights(arch, 2))
    config = yaml.safe_load((workflow_copy / "configs" / "ci.yaml").read_text())
    config["backbones"]["my_dinov2"] = {
        "arch": arch,
        "checkpoint": {
            "file": "weights/dinov2_vits14_pretrain.pth",
            "layout": "dinov2",
            "objective": "self-distillation",
            "data": "lvd142m",
        },
    }
    config["backbones"]["my_hub_vit"] = {
        "arch": arch,
        "checkpoint": {
            "hub": "timm/vit_small_patch14_dinov2.lvd142m",
            "filename": "model.safetensors",
            "layout": "timm",
            "objective": "self-distillation",
            "data": "lvd142m",
        },
    }
    (workflow_copy / "own.yaml").write_text(yaml.safe_dump(config))
    env = {"HF_HUB_CACHE": str(hub)}
    targets = ["checkpoints/my_dinov2.pth", "checkpoints/my_hub_vit.pth"]
    snakemake = [str(VENV_BIN / "snakemake"), "--cores", "1", *targets, "--configfile=own.yaml"]
    run_cmd(snakemake, cwd=workflow_copy, env=env, check=True, timeout=600)
    for target, origin in zip(
        targets,
        [str(weights.relative_to(workflow_copy)), "hf://timm/vit_small_patch14_dinov2.lvd142m/model.safetensors"],
    ):
        payload = torch.load(workflow_copy / target, weights_only=True, map_location="cpu")
        assert payload["arch"] == arch and payload["meta"]["url"] == origin
        assert payload["meta"]["pretrain_objective"] == "self-distillation"
    # `check-config` says what each entry builds and where its weights are
    said = run_cmd(
        [str(VENV_BIN / "frozenbench"), "check-config", "own.yaml"], cwd=workflow_copy, env=env, check=True
    ).stdout
    assert "my_dinov2: vit_small_patch14_dinov2 (vit family), levels [2, 5, 8, 11]" in said
    assert f"hub timm/vit_small_patch14_dinov2.lvd142m/model.safetensors (cached: {hub}" in said
    # a changed file is converted again; the hub checkpoint, unchanged, is not
    run_cmd(
        [
            str(VENV_BIN / "frozenbench"),
            "synth-checkpoint",
            "--arch",
            arch,
            "--layout",
            "dinov2",
            "--seed",
            "3",
            "--out",
            str(weights),
        ],
        check=True,
    )
    dry = run_cmd([*snakemake, "-n"], cwd=workflow_copy, env=env, check=True)
    assert "output: checkpoints/my_dinov2.pth" in dry.stdout
    assert "output: checkpoints/my_hub_vit.pth" not in dry.stdout and re.search(r"convert_checkpoint\s+1\n", dry.stdout)
    # without the cache entry, the job that needs it stops with the way to fill it
    os.remove(workflow_copy / targets[1])
    empty = run_cmd([*snakemake, "-n"], cwd=workflow_copy, env={"HF_HUB_CACHE": str(tmp_path / "empty")}, timeout=300)
    said = empty.stdout + empty.stderr
    assert empty.returncode != 0 and "backbones.my_hub_vit.checkpoint: hub checkpoint" in said
    assert "hf download timm/vit_small_patch14_dinov2.lvd142m model.safetensors" in said
