"""Two CPU ranks under DeepSpeed ZeRO-2 (gloo): only head parameters are optimized, the loss falls,
the frozen backbone does not move, and a saved checkpoint loads back."""

from __future__ import annotations

import json
import os

import pytest

from .conftest import REPO, VENV_BIN, run_cmd


@pytest.mark.slow
def test_two_rank_zero2_trains_the_head_only(tmp_path):
    env = {"DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = run_cmd([str(VENV_BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", str(29500 + os.getpid() % 1000),
                    str(REPO / "tests" / "deepspeed_worker.py"), str(tmp_path), "2"], env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
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
def test_frozenbench_train_runs_on_two_ranks_and_resumes(tmp_path):
    """`frozenbench train --nproc 2` (what the train rule runs for a 2-GPU job) on CPU ranks."""
    import torch

    from frozenbench.checkpoint import save_backbone
    from frozenbench.data.synth import synthesize
    from frozenbench.models import build_model

    from .test_synth import tiny_spec
    from .test_train_segmentation import HEAD

    ade = tmp_path / "shapes-ade"
    synthesize(tiny_spec("shapes-ade", image_size=64, num_train=8, num_val=4), ade)
    torch.manual_seed(0)
    checkpoint = tmp_path / "b.pth"
    save_backbone(checkpoint, "cswin_tiny", build_model("cswin_tiny", 64).state_dict(), {"pretrain_task": "random"})
    spec = json.dumps({"type": "segmentation", "data": str(ade), "img_size": 64, "head": HEAD, "zero_stage": 2,
                       "train": {"steps": 4, "batch_size": 2, "warmup_steps": 1, "checkpoint_every": 2, "log_every": 1}})
    # as the train rule launches a multi-GPU job: frozenbench relaunches itself under torchrun
    cmd = [str(VENV_BIN / "frozenbench"), "train", "--spec", spec, "--checkpoint", str(checkpoint), "--mode", "frozen",
           "--run-dir", str(tmp_path / "run"), "--threads", "1", "--nproc", "2"]
    env = {"DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    first = run_cmd(cmd, env=env, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    done = json.loads((tmp_path / "run" / "done.json").read_text())
    assert done["world_size"] == 2 and done["steps"] == 4
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # rank 0 alone writes the log
    saved = tmp_path / "run" / "deepspeed"
    assert (saved / "latest").read_text().strip() == "step4"
    assert [p.name for p in saved.glob("step*")] == ["step4"]  # older tags removed once step4 was complete
    # the single-process state that `frozenbench evaluate` loads, exported by rank 0
    state = torch.load(tmp_path / "run" / "state.pt", weights_only=True)
    assert state["step"] == 4 and state["fingerprint"] and not any(k.startswith("backbone.body.") for k in state["model"])
    again = run_cmd(cmd, env=env, timeout=900)
    assert again.returncode == 0 and "resuming from step 4" in again.stdout + again.stderr
