"""Engine helpers and probe accuracies on cases with known answers, with tiny fake models."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn as nn

from frozenbench.engine.loop import TrainOptions, total_loss
from frozenbench.engine.steppers import set_lr, trainable_state, truncate_log
from frozenbench.engine.schedule import warmup_cosine
from frozenbench.pretrain.probe import knn_accuracy, linear_probe_accuracy


def test_warmup_is_linear_and_the_cosine_ends_at_zero():
    lrs = [warmup_cosine(step, total_steps=10, warmup_steps=4, base_lr=1.0) for step in range(12)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert lrs[4] == 1.0 and lrs[7] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lrs[10] == pytest.approx(0.0) and lrs[11] == pytest.approx(0.0)  # past the end: stays at zero


def test_set_lr_scales_each_group_by_its_layer_decay():
    params = [nn.Parameter(torch.zeros(1)) for _ in range(3)]
    optimizer = torch.optim.SGD(
        [{"params": [params[0]], "lr_scale": 1.0}, {"params": [params[1]], "lr_scale": 0.25}, {"params": [params[2]]}],
        lr=1.0,
    )
    set_lr(optimizer, 0.4)
    assert [g["lr"] for g in optimizer.param_groups] == [0.4, 0.1, 0.4]


class FakeBackbone(nn.Module):
    """A frozen part with a body (its weights and BatchNorm statistics are the checkpoint's)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).requires_grad_(False)
        self.pyramid = nn.BatchNorm2d(4)  # trainable, outside the body

    def frozen_parts(self) -> list[str]:
        return ["body"]


class FakeModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = FakeBackbone()
        self.head = nn.Linear(4, 2)


def test_the_resumable_state_holds_what_trains_and_nothing_of_the_frozen_body():
    state = trainable_state(FakeModel())
    assert set(state) == {
        "head.weight",
        "head.bias",
        "backbone.pyramid.weight",
        "backbone.pyramid.bias",
        "backbone.pyramid.running_mean",
        "backbone.pyramid.running_var",
        "backbone.pyramid.num_batches_tracked",
    }


def test_truncate_log_keeps_the_lines_up_to_the_resumed_step_and_drops_a_cut_line(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in (1, 2, 3, 4)) + '{"step": 5, "lo')
    truncate_log(log, 2)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2]


def test_train_options_take_only_their_own_keys():
    opts = TrainOptions.from_config({"steps": 7, "lr": 0.5, "feature_cache": True})
    assert (opts.steps, opts.lr, opts.batch_size) == (7, 0.5, TrainOptions().batch_size)


# -- probes: answers known by construction ------------------------------------------------------


def clusters(n_per_class: int, offset: float = 10.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes on opposite sides of the origin along the first axis, tight noise elsewhere."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(2).repeat_interleave(n_per_class)
    x = 0.1 * torch.randn(2 * n_per_class, 8, generator=gen)
    x[:, 0] += torch.where(y == 0, -offset, offset)
    return x, y


def test_knn_is_right_on_separated_clusters_and_wrong_when_the_val_labels_are_swapped():
    train_x, train_y = clusters(20)
    val_x, val_y = clusters(10, seed=1)
    assert knn_accuracy(train_x, train_y, val_x, val_y) == 1.0
    assert knn_accuracy(train_x, train_y, val_x, 1 - val_y) == 0.0


def test_knn_votes_by_similarity_weight_not_by_count():
    # the query's nearest neighbour is class 1; two slightly farther ones are class 0: with k = 3
    # and a low temperature the close one outweighs the two
    train_x = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.8, -0.6]])
    train_y = torch.tensor([1, 0, 0])
    query = torch.tensor([[1.0, 0.01]])
    assert knn_accuracy(train_x, train_y, query, torch.tensor([1]), k=3, temperature=0.01) == 1.0
    # at a high temperature every neighbour weighs about the same: the majority wins
    assert knn_accuracy(train_x, train_y, query, torch.tensor([0]), k=3, temperature=100.0) == 1.0


def test_linear_probe_separates_separable_classes_and_is_scored_on_the_val_split():
    train_x, train_y = clusters(20)
    val_x, val_y = clusters(10, seed=1)
    assert linear_probe_accuracy(train_x, train_y, val_x, val_y) == 1.0
    # scored on val, not train: swapped val labels give zero even though train fits perfectly
    assert linear_probe_accuracy(train_x, train_y, val_x, 1 - val_y) == 0.0


def test_hooks_run_log_then_checkpoint_then_preemption(tmp_path):
    from frozenbench.engine.loop import CheckpointHook, LogHook, PreemptionHook, StepState, build_hooks

    saves = []

    class Stepper:
        def save(self, step, fingerprint):
            saves.append(step)

    hooks = build_hooks(
        Stepper(),
        TrainOptions(steps=10, checkpoint_every=4, log_every=1),
        tmp_path,
        "f",
        1,
        torch.device("cpu"),
        log=lambda m: None,
    )
    assert [type(h) for h in hooks] == [LogHook, CheckpointHook, PreemptionHook]

    class Term:
        requested = False

    log = tmp_path / "log.jsonl"
    with open(log, "a") as log_file:
        state = StepState(step=0, started=0.0, log_file=log_file, term=Term())
        for step in (1, 2, 3, 4, 5):
            state.step = step
            state.term.requested = step == 4 or step == 5  # SIGTERM arrives during step 4
            for hook in hooks:
                hook.after_step(state)
            if state.stop:
                break
    # step 4 was saved by the cadence: the preemption hook does not save it twice, and stops there
    assert saves == [4] and state.stop and state.step == 4
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3, 4]


def test_the_inference_driver_resets_feeds_and_scores_every_evaluator():
    from frozenbench.evaluation.driver import inference_on_dataset

    class Doubler(nn.Module):
        def forward(self, x):
            return 2 * x

    class Sum:
        def reset(self):
            self.total, self.seen = 0.0, 0

        def process(self, inputs, outputs):
            self.total += float(sum(outputs))
            self.seen += len(inputs["x"])

        def evaluate(self):
            return {"sum": self.total, "seen": self.seen}

    model = Doubler().train()
    batches = [{"x": torch.tensor([1.0, 2.0])}, {"x": torch.tensor([3.0])}]
    evaluators = {"a": Sum(), "b": Sum()}
    evaluators["b"].reset()
    evaluators["b"].total = 100.0  # left over from an earlier run: reset before use
    result = inference_on_dataset(model, batches, evaluators, lambda m, batch: list(m(batch["x"])))
    assert result == {"a": {"sum": 12.0, "seen": 3}, "b": {"sum": 12.0, "seen": 3}}
    assert not model.training


def test_feature_cache_statistics_are_found_wherever_the_model_keeps_its_cache():
    from frozenbench.cells.run import feature_cache_stats
    from frozenbench.models.feature_cache import FeatureCache

    class Body(nn.Module):
        def __init__(self):
            super().__init__()
            self.feature_cache = FeatureCache()

    model = nn.Sequential(nn.Linear(2, 2), nn.Sequential(Body()))
    cache = model[1][0].feature_cache
    images = torch.zeros(2, 3, 4, 4)
    cache(images, lambda x: [x.mean(dim=1, keepdim=True)])
    cache(images, lambda x: [x.mean(dim=1, keepdim=True)])
    stats = feature_cache_stats(model)
    assert stats["hits"] == 2 and stats["misses"] == 2 and stats["entries"] == 1  # two equal images: one entry
    assert feature_cache_stats(nn.Linear(2, 2)) is None


class FakeRegression(nn.Module):
    """A model as the engine steps it: ``forward(batch)`` -> named scalars (a loss, and a statistic
    that is logged, not trained on), plus its own update after each optimizer step (as a momentum
    encoder does)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(2))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        error = batch["x"] @ self.weight - batch["y"]
        return {"loss_mse": (error**2).mean(), "max_error": error.abs().max().detach()}

    def after_optimizer_step(self) -> None:
        self.updates += 1


def _fake_data() -> tuple[torch.utils.data.TensorDataset, callable]:
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(0))
    y = x @ torch.tensor([1.5, -2.0])

    def collate(samples):
        xs, ys = zip(*samples)
        return {"x": torch.stack(xs), "y": torch.stack(ys)}

    return torch.utils.data.TensorDataset(x, y), collate


def test_the_total_is_the_sum_of_the_entries_named_loss_in_their_order():
    # added in another order, these give 1.0: float addition is not associative
    small, big, minus_big, acc = torch.tensor(1.0), torch.tensor(1e8), torch.tensor(-1e8), torch.tensor(75.0)
    total, logged = total_loss({"loss_small": small, "acc": acc, "loss_big": big, "s0.loss_minus_big": minus_big})
    assert total.item() == 0.0  # (1 + 1e8) rounds to 1e8 in float32: the dict's order, as parse_losses adds
    assert list(logged.items()) == [
        ("loss", total),
        ("loss_small", small),
        ("acc", acc),  # logged, not summed
        ("loss_big", big),
        ("s0.loss_minus_big", minus_big),
    ]
    only, logged = total_loss({"loss": small})  # an objective's one loss is its own total
    assert torch.equal(only, small) and list(logged) == ["loss"]
    with pytest.raises(TypeError, match="'loss_cls' must be a scalar tensor, got \\(4,\\)"):
        total_loss({"loss_cls": torch.ones(4)})
    with pytest.raises(ValueError, match="no entry named like a loss"):
        total_loss({"acc": acc})


def test_the_engine_trains_any_model_through_its_named_scalars_and_resumes_it_exactly(tmp_path):
    """The loop knows nothing of OpenMMLab: a fake model that returns named scalars trains on its
    loss, logs its statistic beside it, gets its own update once per step, and a run that crashed
    after its step-6 save, rerun, ends with the uninterrupted run's weights (the pretraining
    objectives rely on this)."""
    from frozenbench.engine.loop import train

    dataset, collate = _fake_data()
    opts = TrainOptions(steps=12, batch_size=8, lr=0.4, warmup_steps=0, checkpoint_every=3, log_every=1, grad_clip=0)

    class CrashesAtStep7(FakeRegression):
        def forward(self, batch):
            if int(self.updates) == 6:
                raise RuntimeError("node lost")
            return super().forward(batch)

    def run(model: FakeRegression, name: str) -> FakeRegression:
        train(model, dataset, collate, tmp_path / name, opts, seed=3, log=lambda m: None, fingerprint="fake")
        return model

    whole = run(FakeRegression(), "whole")
    lines = [json.loads(line) for line in (tmp_path / "whole" / "log.jsonl").read_text().splitlines()]
    assert [list(line)[4:] for line in lines[:1]] == [["loss", "loss_mse", "max_error"]]  # after step, lr, times
    assert all(line["loss"] == line["loss_mse"] for line in lines)  # the statistic is not in the total
    losses = [line["loss"] for line in lines]
    assert losses[-1] < 0.1 * losses[0] and lines[-1]["max_error"] < lines[0]["max_error"]
    assert int(whole.updates) == 12 and torch.allclose(whole.weight, torch.tensor([1.5, -2.0]), atol=0.3)

    with pytest.raises(RuntimeError, match="node lost"):
        run(CrashesAtStep7(), "split")
    assert torch.load(tmp_path / "split" / "state.pt", weights_only=True)["step"] == 6
    resumed = run(FakeRegression(), "split")
    assert int(resumed.updates) == 12 and torch.equal(resumed.weight, whole.weight)
    logged = [json.loads(line)["step"] for line in (tmp_path / "split" / "log.jsonl").read_text().splitlines()]
    assert logged == list(range(1, 13))


def test_both_steppers_implement_the_declared_interface():
    import inspect

    from frozenbench.engine.deepspeed_engine import DeepSpeedStepper
    from frozenbench.engine.steppers import LocalStepper, Stepper

    methods = [n for n, v in vars(Stepper).items() if callable(v) and not n.startswith("_")]
    assert set(methods) == {"forward", "backward", "step", "saved_fingerprint", "discard", "load", "save"}
    for stepper in (LocalStepper, DeepSpeedStepper):
        for name in methods:
            declared = list(inspect.signature(getattr(Stepper, name)).parameters)
            assert list(inspect.signature(getattr(stepper, name)).parameters) == declared, (stepper, name)
