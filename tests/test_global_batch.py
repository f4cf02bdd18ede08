"""The recipe is a global batch: ``train.batch_size`` is the samples of one optimizer step whatever
the rank count; ranks and gradient accumulation only split it (docs/reliability.md, "The recipe is a
global batch").

The model is a tiny MLP whose loss is a per-sample mean (MSE), so the gradient of a step equals the
gradient of the global batch's mean loss on any split, up to float rounding; weights are compared
after 8 AdamW steps with gradient clipping (clipping acts on the accumulated gradient).

Run as a script under torchrun, this file is one rank of the two-rank check (test (b)).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from frozenbench.engine.options import TrainOptions, split_batch

GLOBAL = 8
OPTS = dict(steps=8, batch_size=GLOBAL, lr=0.05, warmup_steps=2, grad_clip=0.5, checkpoint_every=4, log_every=1)
SEED = 3
TOLERANCE = dict(rtol=1e-5, atol=1e-6)  # float rounding: the global mean summed in another order


class TinyRegression(nn.Module):
    """``forward(batch)`` -> {"loss_mse": the batch's per-sample mean squared error}."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)  # the same initial weights in every process
        self.net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
        with torch.no_grad():
            for p in self.net.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        error = self.net(batch["x"]).squeeze(-1) - batch["y"]
        return {"loss_mse": (error**2).mean()}


class CrashesAfter(TinyRegression):
    """Dies in the forward of step ``step`` (a node lost after the checkpoint before it)."""

    def __init__(self, step: int) -> None:
        super().__init__()
        self.crash_at, self.forwards = step, 0

    def forward(self, batch):
        self.forwards += 1
        if self.forwards > self.crash_at:
            raise RuntimeError("node lost")
        return super().forward(batch)


def data() -> tuple[torch.utils.data.TensorDataset, callable]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(24, 3, generator=gen)
    y = torch.sin(x.sum(dim=1)) + 0.1 * torch.randn(24, generator=gen)

    def collate(samples):
        xs, ys = zip(*samples)
        return {"x": torch.stack(xs), "y": torch.stack(ys)}

    return torch.utils.data.TensorDataset(x, y), collate


def run(run_dir: Path, model: nn.Module | None = None, fingerprint: str = "gb", **options) -> dict:
    """Train (or resume) the tiny model in this process's rank setting; its final weights."""
    from frozenbench.engine.loop import train

    model = model or TinyRegression()
    dataset, collate = data()
    opts = TrainOptions(**{**OPTS, **options})
    summary = train(model, dataset, collate, run_dir, opts, seed=SEED, log=print, fingerprint=fingerprint)
    return {"summary": summary, "weights": {k: v.detach().clone() for k, v in model.state_dict().items()}}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], exact: bool = False) -> None:
    assert a.keys() == b.keys()
    for name in a:
        if exact:
            assert torch.equal(a[name], b[name]), name
        else:
            torch.testing.assert_close(a[name], b[name], **TOLERANCE, msg=name)


def logged(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


@pytest.fixture(autouse=True)
def _one_rank(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)


# -- (a) one rank, with and without accumulation ---------------------------------------------------


def test_accumulation_on_one_rank_ends_with_the_weights_of_the_whole_batch(tmp_path):
    whole = run(tmp_path / "whole")
    halves = run(tmp_path / "halves", max_rank_batch=GLOBAL // 2)
    quarters = run(tmp_path / "quarters", max_rank_batch=GLOBAL // 4)
    assert (whole["summary"]["accumulation"], halves["summary"]["accumulation"]) == (1, 2)
    assert quarters["summary"]["accumulation"] == 4 and quarters["summary"]["rank_micro_batch"] == 2
    assert all(r["summary"]["global_batch"] == GLOBAL for r in (whole, halves, quarters))
    initial = TinyRegression().state_dict()
    assert not torch.allclose(whole["weights"]["net.0.weight"], initial["net.0.weight"])  # it trained
    assert_same_weights(whole["weights"], halves["weights"])
    assert_same_weights(whole["weights"], quarters["weights"])
    # one log line per optimizer step, its loss the mean of the micro-batches' (= the global batch's)
    for name in ("whole", "halves", "quarters"):
        assert [line["step"] for line in logged(tmp_path / name)] == list(range(1, 9))
    first = [logged(tmp_path / name)[0]["loss"] for name in ("whole", "halves", "quarters")]
    assert first[1] == pytest.approx(first[0], rel=1e-5) and first[2] == pytest.approx(first[0], rel=1e-5)


def test_a_step_takes_the_same_samples_on_any_split():
    from frozenbench.engine.data import StepBatches, batch_indices
    from frozenbench.engine.options import BatchSplit

    indices = list(range(20))
    for step in (0, 1, 2, 7):
        expected = sorted(batch_indices(step, GLOBAL, 20, SEED))
        for ranks, accumulation in ((1, 1), (1, 2), (1, 8), (2, 1), (2, 2), (4, 2), (8, 1)):
            taken = []
            for rank in range(ranks):
                split = BatchSplit(GLOBAL, ranks, GLOBAL // ranks // accumulation, accumulation)
                micro = StepBatches(indices, list, split, SEED, rank)[step]
                assert len(micro) == accumulation and all(len(m) == GLOBAL // ranks // accumulation for m in micro)
                taken += [i for m in micro for i in m]
            assert sorted(taken) == expected, (ranks, accumulation)


# -- (c) what the fingerprint holds ------------------------------------------------------------------


def _spec(**train):
    from frozenbench.cells.spec import CellSpec

    from .test_train_segmentation import HEAD

    return CellSpec.from_json(
        {"type": "segmentation", "data": "data/ade", "img_size": 64, "head": HEAD, "train": {"batch_size": 8, **train}}
    )


def test_the_global_batch_is_a_training_input_and_its_split_is_not():
    from frozenbench.cells.spec import SPEC_VERSION, TRAINING_INPUTS

    base = _spec().fingerprint()
    assert _spec(batch_size=16).fingerprint() != base  # another recipe: retrains
    assert _spec(max_rank_batch=2).fingerprint() == base  # the same global batch, split finer: resumes
    assert _spec(max_rank_batch=8).fingerprint() == base
    # the rank count is no field of a cell, nor of its training inputs (the runner adds data and code
    # versions only); a spec written before max_rank_batch existed keeps its fingerprint
    inputs = _spec(max_rank_batch=2).training_inputs()
    assert "max_rank_batch" not in inputs["train"] and inputs["train"]["batch_size"] == 8
    assert not {"world_size", "ranks", "accumulation", "nproc"} & set(TRAINING_INPUTS)
    assert SPEC_VERSION == 2  # unchanged: on one rank batch_size meant the global batch already


def test_a_pretraining_state_resumes_under_another_split():
    from frozenbench.pretrain.train import PretrainOptions, state_fingerprint

    images, labels = torch.zeros(4, 3, 8, 8), torch.zeros(4, dtype=torch.long)

    def fingerprint(**options):
        return state_fingerprint("a", "supervised", PretrainOptions.from_config(options), 0, images, labels)

    assert fingerprint(max_rank_batch=32) == fingerprint() != fingerprint(batch_size=64)
    assert "max_rank_batch" not in PretrainOptions.from_config({}).flat()  # the flat shape as before


def test_a_run_saved_at_one_split_resumes_at_another_to_the_same_weights(tmp_path):
    whole = run(tmp_path / "whole")
    with pytest.raises(RuntimeError, match="node lost"):
        run(tmp_path / "split", model=CrashesAfter(5))  # saved at step 4, died in step 6
    assert torch.load(tmp_path / "split" / "state.pt", weights_only=True)["step"] == 4
    resumed = run(tmp_path / "split", max_rank_batch=GLOBAL // 4)  # same fingerprint: resumes from step 4
    assert resumed["summary"]["steps_this_run"] == 4 and resumed["summary"]["accumulation"] == 4
    assert_same_weights(whole["weights"], resumed["weights"])
    assert [line["step"] for line in logged(tmp_path / "split")] == list(range(1, 9))


# -- (d) a global batch that cannot be split ----------------------------------------------------------


def test_a_batch_that_cannot_be_split_is_an_error_naming_the_key(tmp_path):
    from frozenbench.config import batch_problems
    from frozenbench.errors import UserError

    with pytest.raises(UserError, match=r"train\.batch_size: the global batch of 10 .* over 4 ranks.* 8 or 12"):
        split_batch(10, 4)
    with pytest.raises(UserError, match=r"train\.max_rank_batch: 5 cannot split .* set max_rank_batch to 2"):
        split_batch(14, 1, 5)
    assert split_batch(16, 4, 2) == split_batch(16, 4, 3) and split_batch(16, 4, 2).accumulation == 2
    # the loop refuses it before training a step
    with pytest.raises(UserError, match="max_rank_batch"):
        run(tmp_path / "odd", batch_size=14, max_rank_batch=5)
    assert not (tmp_path / "odd" / "state.pt").exists()
    # and the config check before any job is queued, by the key that set each value
    config = {
        "compute": {"train": {"gpus": 4, "nodes": 2}},
        "tasks": {
            "coco": {"train": {"batch_size": 12}},
            "ade": {"train": {"batch_size": 56, "max_rank_batch": 8}, "finetune": {"max_rank_batch": 3}},
            "k400": {"train": {"batch_size": 64, "max_rank_batch": 8}},
        },
    }
    problems = batch_problems(config)
    assert len(problems) == 2
    assert problems[0].startswith("tasks.coco.train.batch_size: the global batch of 12") and "8 ranks" in problems[0]
    assert problems[1].startswith("tasks.ade.finetune.max_rank_batch: 3 cannot split") and "56 over 8" in problems[1]


def test_the_paper_recipe_is_its_global_batches_and_its_reference_split():
    import yaml

    from frozenbench.config import batch_problems, train_ranks

    root = Path(__file__).resolve().parents[1]
    paper = yaml.safe_load((root / "configs" / "paper.yaml").read_text())
    assert train_ranks(paper) == 8 and batch_problems(paper) == []
    per_gpu = {"coco": 2, "ade": 2, "k400": 8}  # the per-GPU batches of the paper's 8-GPU node
    for task, micro in per_gpu.items():
        train = paper["tasks"][task]["train"]
        assert train["batch_size"] == 8 * micro
        assert split_batch(train["batch_size"], 8, train["max_rank_batch"]) == split_batch(8 * micro, 8)
        # on half the GPUs the same recipe: the same global batch, each GPU still at its reference batch
        half = split_batch(train["batch_size"], 4, train["max_rank_batch"])
        assert (half.micro, half.accumulation) == (micro, 2)


# -- (b) two ranks against one rank with accumulation -------------------------------------------------


@pytest.mark.slow  # ~40 s: torchrun, two DeepSpeed ranks over gloo, three runs
def test_two_ranks_end_with_the_weights_of_one_rank_accumulating(tmp_path):
    from .conftest import two_cpu_ranks

    reference = run(tmp_path / "one_rank_acc2", max_rank_batch=GLOBAL // 2)
    assert reference["summary"]["accumulation"] == 2
    with pytest.raises(RuntimeError, match="node lost"):
        run(tmp_path / "moved", model=CrashesAfter(5))  # one rank saved step 4; two ranks resume it
    two_cpu_ranks(Path(__file__), str(tmp_path), port_base=29700)
    result = torch.load(tmp_path / "ranks.pt", weights_only=True)
    assert result["two"]["summary"]["world_size"] == 2 and result["two"]["summary"]["accumulation"] == 1
    assert result["two_acc2"]["summary"]["accumulation"] == 2 and result["two_acc2"]["summary"]["rank_micro_batch"] == 2
    assert_same_weights(reference["weights"], result["two"]["weights"])  # 2 ranks x 4 == 1 rank x 2 x 4
    assert_same_weights(reference["weights"], result["two_acc2"]["weights"])  # DeepSpeed's accumulation
    assert result["moved"]["summary"]["steps_this_run"] == 4  # resumed the one-rank state
    assert_same_weights(reference["weights"], result["moved"]["weights"])
    # the saved states are the same format whichever rank count wrote them
    saved = torch.load(tmp_path / "two" / "state.pt", weights_only=True)
    assert saved["world_size"] == 2 and saved["step"] == OPTS["steps"]
    assert [line["step"] for line in logged(tmp_path / "two_acc2")] == list(range(1, 9))


def _rank_main(out: Path) -> None:
    """One rank of test (b): the same cell on two ranks, without and with accumulation, and a
    one-rank state resumed on two."""
    import torch.distributed as dist

    results = {
        "two": run(out / "two"),
        "two_acc2": run(out / "two_acc2", max_rank_batch=GLOBAL // 4),
        "moved": run(out / "moved", max_rank_batch=GLOBAL // 2),
    }
    if dist.get_rank() == 0:
        torch.save(results, out / "ranks.pt")
    dist.barrier()
    dist.destroy_process_group()  # before exit: gloo ranks can abort on teardown otherwise


if __name__ == "__main__":
    _rank_main(Path(sys.argv[1]))
