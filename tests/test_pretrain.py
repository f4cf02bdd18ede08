"""Pretraining: every objective trains, writes the canonical checkpoint and a probe; killed runs resume exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from frozenbench.checkpoint import load_backbone
from frozenbench.data.synth import synthesize
from frozenbench.pretrain.train import PretrainOptions, lr_at, pretrain

from .conftest import VENV_BIN
from .test_synth import tiny_spec


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pretrain") / "shapes-pretrain"
    synthesize(tiny_spec("shapes-pretrain", image_size=32, num_classes=4, train_per_class=12, val_per_class=4), root)
    return root


def options(**kw) -> PretrainOptions:
    base = dict(image_size=32, batch_size=16, steps=30, lr=2e-3, warmup_steps=3, checkpoint_every=10, log_every=1)
    base.update(kw)
    return PretrainOptions.from_config(base)


def losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    "objective, objective_options, schedule",
    [
        ("supervised", {}, {}),
        # MoCo v3 style, momentum key encoder: its loss falls slowly (the keys come from a second
        # network that trails the first), so a higher lr; 3 of 3 seeds fall at 30 steps with it
        ("contrastive", {"momentum": 0.99}, {"lr": 5e-3}),
        ("contrastive", {"momentum": 0.0}, {}),  # SimCLR style
        # MoCo v2 / MoBY style queue of negatives: the loss rises while the queue fills with real
        # keys, then falls (3 of 3 seeds by step 60)
        ("contrastive", {"momentum": 0.99, "queue_size": 64}, {"lr": 5e-3, "steps": 60}),
        ("mim", {"mask_patch": 8}, {}),
    ],
)
def test_each_objective_trains_and_writes_checkpoint_and_probe(
    shapes, tmp_path, objective, objective_options, schedule
):
    out = tmp_path / "ckpt.pth"
    opts = options(objective_options=objective_options, **schedule)
    pretrain(
        "convstem_swin_tiny",
        objective,
        shapes,
        out,
        tmp_path / "run",
        opts,
        log=lambda m: None,
    )
    curve = losses(tmp_path / "run")
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, opts.train.steps + 1)) and len(curve) == opts.train.steps  # logged every step
    tail = opts.train.steps // 6
    early, late = sum(curve[:tail]) / tail, sum(curve[-tail:]) / tail
    assert late < early, (objective, early, late)
    payload = load_backbone(out)
    assert payload["arch"] == "convstem_swin_tiny" and payload["meta"]["pretrain_objective"] == objective
    probe = json.loads((tmp_path / "run" / "probe.json").read_text())
    assert probe == payload["meta"]["probe"]
    assert probe["chance"] == 0.25 and probe["num_val"] == 16
    # the probe scores the saved weights on the val split: recomputed from the checkpoint, the same
    from frozenbench.models.registry import build_arch
    from frozenbench.pretrain.data import load_imagefolder
    from frozenbench.pretrain.probe import extract_features, knn_accuracy

    model = build_arch("convstem_swin_tiny", 32)
    model.load_state_dict(payload["state_dict"])
    train_set, val_set = (load_imagefolder(shapes, split, 32) for split in ("train", "val"))
    features = [extract_features(model, images, "convstem_swin_tiny") for images in (train_set, val_set)]
    assert probe["knn_top1"] == knn_accuracy(features[0], train_set.labels, features[1], val_set.labels)


def test_random_backbone_is_seeded_and_untrained(shapes, tmp_path):
    pretrain(
        "convstem_swin_tiny",
        "random",
        shapes,
        tmp_path / "a.pth",
        tmp_path / "a",
        options(),
        seed=3,
        log=lambda m: None,
    )
    pretrain(
        "convstem_swin_tiny",
        "random",
        shapes,
        tmp_path / "b.pth",
        tmp_path / "b",
        options(),
        seed=3,
        log=lambda m: None,
    )
    a, b = load_backbone(tmp_path / "a.pth")["state_dict"], load_backbone(tmp_path / "b.pth")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "a" / "log.jsonl").exists()


def test_schedule_warms_up_then_decays_to_zero():
    opts = options(steps=100, warmup_steps=10, lr=1.0)
    assert lr_at(0, opts.train) == pytest.approx(0.1) and lr_at(9, opts.train) == pytest.approx(1.0)
    assert lr_at(55, opts.train) == pytest.approx(0.5) and lr_at(100, opts.train) == pytest.approx(0.0)


def _cli(shapes: Path, out: Path, run_dir: Path, steps: int) -> list[str]:
    opts = {
        "image_size": 32,
        "batch_size": 16,
        "steps": steps,
        "lr": 2e-3,
        "warmup_steps": 3,
        "checkpoint_every": 5,
        "log_every": 1,
    }
    return [
        str(VENV_BIN / "frozenbench"),
        "pretrain",
        "--arch",
        "convstem_swin_tiny",
        "--objective",
        "supervised",
        "--data",
        str(shapes),
        "--options",
        json.dumps(opts),
        "--threads",
        "1",
        "--seed",
        "7",
        "--out",
        str(out),
        "--run-dir",
        str(run_dir),
    ]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_run_resumes_to_the_same_weights(shapes, tmp_path, signum):
    """Pretraining runs on the training engine: a SIGKILL resumes from the last cadence save, a
    SIGTERM (Slurm's preemption) saves the step it stopped at; both end with the reference's weights."""
    steps = 60
    reference = tmp_path / "reference.pth"
    subprocess.run(_cli(shapes, reference, tmp_path / "ref", steps), check=True, capture_output=True, timeout=600)

    killed_out, killed_dir = tmp_path / "killed.pth", tmp_path / "killed"
    proc = subprocess.Popen(
        _cli(shapes, killed_out, killed_dir, steps),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    while not (killed_dir / "state.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # let it run past the checkpoint
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signum)
    assert proc.wait(timeout=120) != 0
    assert not killed_out.exists()  # no half-written artifact
    saved_step = torch.load(killed_dir / "state.pt", weights_only=True)["step"]
    assert 0 < saved_step < steps
    if signum == signal.SIGTERM:  # saved where it stopped, not only at the cadence's last multiple
        logged = [json.loads(line)["step"] for line in (killed_dir / "log.jsonl").read_text().splitlines()]
        assert logged[-1] == saved_step

    resumed = subprocess.run(
        _cli(shapes, killed_out, killed_dir, steps), check=True, capture_output=True, text=True, timeout=600
    )
    assert f"resuming from step {saved_step}" in resumed.stdout + resumed.stderr
    a, b = load_backbone(reference)["state_dict"], load_backbone(killed_out)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    logged = [json.loads(line)["step"] for line in (killed_dir / "log.jsonl").read_text().splitlines()]
    assert logged == list(range(1, steps + 1))  # no step logged twice


def test_contrastive_views_carry_no_colour_or_luminance():
    """Two images that differ only by a per-channel affine change of intensity (another colour,
    brightness or contrast, inverted or not) give views with the same distribution: the shortcut
    that kept contrastive pretraining at the random floor (docs/research-log.md, "Mini-study pretraining")."""
    from frozenbench.pretrain.data import scramble_intensity

    x = torch.randn(64, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    scale = torch.tensor([2.0, -0.5, 3.0]).view(1, 3, 1, 1)  # channel 1 also inverted
    shift = torch.tensor([1.0, -2.0, 0.3]).view(1, 3, 1, 1)
    a = scramble_intensity(x, torch.Generator().manual_seed(1), std_floor=0.0)
    b = scramble_intensity(x * scale + shift, torch.Generator().manual_seed(1), std_floor=0.0)
    # same draws: equal where the change kept the sign; where it inverted the channel, mirrored
    # about the same random offset
    assert torch.allclose(a[:, [0, 2]], b[:, [0, 2]], atol=1e-5)
    offset = a[:, 1].mean(dim=(1, 2), keepdim=True)
    assert torch.allclose(a[:, 1] - offset, offset - b[:, 1], atol=1e-5)
    # the sign itself is a fair coin per image and channel, so inversion is not a cue either
    corr = (a * x).mean(dim=(2, 3)).sign()
    assert 0.3 < (corr > 0).float().mean() < 0.7


def test_a_state_saved_with_other_options_or_seed_is_not_resumed(shapes, tmp_path):
    """A changed lr or seed must retrain from step 0, never resume the old weights under the new
    options' name; a changed log cadence computes the same weights, so it resumes."""
    from frozenbench.pretrain.train import PretrainOptions, pretrain

    def run(seed=7, **changes):
        messages = []
        opts = PretrainOptions.from_config(
            {
                "image_size": 32,
                "batch_size": 16,
                "steps": 6,
                "lr": 2e-3,
                "warmup_steps": 2,
                "checkpoint_every": 3,
                "log_every": 1,
                **changes,
            }
        )
        pretrain(
            "convstem_swin_tiny",
            "supervised",
            shapes,
            tmp_path / "out.pth",
            tmp_path / "run",
            opts,
            seed=seed,
            log=messages.append,
        )
        return " ".join(messages)

    assert "resuming" not in run()
    assert "resuming from step 6" in run(log_every=2)
    changed = run(lr=1e-3)
    assert "state saved by a run with other inputs; starting afresh" in changed and "resuming" not in changed
    reseeded = run(seed=8, lr=1e-3)
    assert "starting afresh" in reseeded and "resuming" not in reseeded
    logged = [json.loads(line)["step"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert logged == list(range(1, 7))  # the discarded run's lines are gone
