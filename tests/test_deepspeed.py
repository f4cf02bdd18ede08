"""Two CPU ranks under DeepSpeed ZeRO-2 (gloo): only head parameters are optimized, the loss falls,
the frozen backbone does not move, and a saved checkpoint loads back."""

from __future__ import annotations

import json
import os

import pytest

from .conftest import REPO, VENV_BIN, run_cmd, two_cpu_ranks


@pytest.mark.slow
def test_two_rank_zero2_trains_the_head_only(tmp_path):
    two_cpu_ranks(REPO / "tests" / "deepspeed_worker.py", str(tmp_path), "2", port_base=29500)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for result in results:
        assert result["world"] == 2
        assert result["backbone_unchanged"] and result["resumed_head_matches"]
        assert result["losses"][-1] < result["losses"][0]
    # ZeRO-2 shards the optimizer state: each rank holds half, together exactly the head's parameters
    # (the frozen backbone's millions never reach the optimizer).
    head = results[0]["head_numel"]
    assert [r["optimized_numel"] for r in results] == [head // 2, head - head // 2]


@pytest.mark.slow
def test_frozenbench_train_on_two_ranks_resumes_exactly_and_on_another_rank_count(tmp_path):
    """`frozenbench train --nproc 2` (what the train rule runs for a 2-GPU job) on CPU ranks under
    ZeRO-2: killed mid-run, it resumes on two ranks to exactly the uninterrupted run's weights;
    the same saved state resumes on three ranks (a requeue onto another node count) and on one."""
    import shutil
    import signal
    import subprocess
    import time

    import torch

    from frozenbench.checkpoint import save_random_backbone
    from frozenbench.data.synth import synthesize

    from .test_synth import tiny_spec
    from .test_train_segmentation import HEAD

    ade = tmp_path / "shapes-ade"
    synthesize(tiny_spec("shapes-ade", image_size=64, num_train=8, num_val=4), ade)
    checkpoint = save_random_backbone(tmp_path / "b.pth", "convstem_swin_tiny", 64)
    spec = json.dumps(
        {
            "type": "segmentation",
            "data": str(ade),
            "img_size": 64,
            "head": HEAD,
            "zero_stage": 2,
            # the global batch: 6 splits over 2, 3 and 1 ranks (3, 2 and 6 images a rank), the same recipe on each
            "train": {"steps": 24, "batch_size": 6, "warmup_steps": 1, "checkpoint_every": 4, "log_every": 1},
        }
    )
    env = {"DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}

    def cmd(run, nproc):  # as the train rule launches a multi-GPU job: frozenbench relaunches itself under torchrun
        return [
            str(VENV_BIN / "frozenbench"),
            "train",
            "--spec",
            spec,
            "--checkpoint",
            str(checkpoint),
            "--mode",
            "frozen",
            "--run-dir",
            str(tmp_path / run),
            "--threads",
            "1",
            "--nproc",
            str(nproc),
        ]

    def steps_logged(run):
        return [json.loads(line)["step"] for line in (tmp_path / run / "log.jsonl").read_text().splitlines()]

    first = run_cmd(cmd("full", 2), env=env, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    done = json.loads((tmp_path / "full" / "done.json").read_text())
    assert done["world_size"] == 2 and done["steps"] == 24
    assert steps_logged("full") == list(range(1, 25))  # rank 0 alone writes the log
    full = torch.load(tmp_path / "full" / "state.pt", weights_only=True)
    assert (
        full["step"] == 24
        and full["world_size"] == 2
        and any(k.startswith("model.decode_head.") for k in full["model"])  # the training wrapper's names
        and not any(k.startswith("model.backbone.body.") for k in full["model"])
    )
    # the moments gathered from both ranks' shards: one entry per trainable tensor, in torch AdamW's layout
    assert len(full["optimizer"]["state"]) == len(full["model"])

    killed = subprocess.Popen(
        cmd("killed", 2),
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    log = tmp_path / "killed" / "log.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 9):
        time.sleep(0.05)
    os.killpg(killed.pid, signal.SIGKILL)  # past the checkpoint at step 8: torchrun and both ranks
    killed.wait()
    assert not (tmp_path / "killed" / "done.json").exists()
    shutil.copytree(tmp_path / "killed", tmp_path / "three")
    shutil.copytree(tmp_path / "killed", tmp_path / "one")

    again = run_cmd(cmd("killed", 2), env=env, timeout=900)
    assert again.returncode == 0 and "resuming from step" in again.stdout + again.stderr
    resumed = torch.load(tmp_path / "killed" / "state.pt", weights_only=True)
    assert all(torch.equal(full["model"][k], resumed["model"][k]) for k in full["model"])
    assert steps_logged("killed") == list(range(1, 25))

    for run, nproc in (("three", 3), ("one", 1)):
        moved = run_cmd(cmd(run, nproc), env=env, timeout=900)
        assert moved.returncode == 0, moved.stdout[-3000:] + moved.stderr[-3000:]
        assert "resuming from step" in moved.stdout + moved.stderr
        assert json.loads((tmp_path / run / "done.json").read_text())["world_size"] == nproc
        assert steps_logged(run) == list(range(1, 25))
