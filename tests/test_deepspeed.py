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
