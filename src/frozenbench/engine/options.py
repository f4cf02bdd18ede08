"""The options of a training run, read by the loop (schedule, cadences) and by its steppers
(optimizer, clipping, autocast); a module of their own so that neither imports the other for them,
and torch-free: a cell spec (:mod:`frozenbench.cells.spec`) and the config checks hold them without
importing the engine."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from frozenbench import schedule_defaults
from frozenbench.errors import UserError

# options that change how often a run writes, not what it computes: not training inputs
CADENCE_OPTIONS = ("checkpoint_every", "log_every")
# options that change how the same global batch is split over ranks and micro-batches, not what a
# step trains on: not training inputs either (the rank count is not an option at all)
SPLIT_OPTIONS = ("max_rank_batch",)


@dataclass
class TrainOptions:
    steps: int = schedule_defaults.TRAIN_STEPS
    # The global batch: samples per optimizer step, whatever the number of ranks (split by split_batch).
    batch_size: int = 8
    # Per-rank memory bound: at most this many samples a rank puts through one forward / backward;
    # more per rank are accumulated over micro-batches (None: no bound, no accumulation).
    max_rank_batch: int | None = None
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = schedule_defaults.TRAIN_WARMUP_STEPS
    grad_clip: float = 5.0
    checkpoint_every: int = 50
    log_every: int = 10
    # Layer-wise lr decay for fine-tuning (1.0: none); no effect on a frozen backbone.
    layer_decay: float = 1.0
    # bf16 autocast of the forward (heads and a fine-tuned backbone); DeepSpeed's bf16 mode on ranks
    autocast_bf16: bool = False

    @classmethod
    def from_config(cls, entry: dict[str, Any]) -> "TrainOptions":
        """The loop's options among ``entry``'s keys (a pretraining entry holds others too)."""
        return cls(**{k: v for k, v in entry.items() if k in cls.__dataclass_fields__})

    @classmethod
    def parse(cls, entry: dict[str, Any], where: str = "train") -> "TrainOptions":
        """The options of a schedule entry that holds nothing else; an unknown key names ``where``."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(entry) - known)
        if unknown:
            raise UserError(f"{where}: unknown training option(s) {unknown}; known: {', '.join(sorted(known))}")
        return cls(**entry)


@dataclass(frozen=True)
class BatchSplit:
    """How one optimizer step's global batch is computed: ``ranks`` ranks, each putting
    ``accumulation`` micro-batches of ``micro`` samples through forward and backward
    (``micro x ranks x accumulation == global_batch``, always exactly)."""

    global_batch: int
    ranks: int
    micro: int
    accumulation: int

    @property
    def rank_batch(self) -> int:
        """Samples one rank takes per optimizer step (all its micro-batches)."""
        return self.micro * self.accumulation


def split_batch(
    global_batch: int, ranks: int, max_rank_batch: int | None = None, where: str = "train", bound_where: str = ""
) -> BatchSplit:
    """The split of a global batch of ``global_batch`` samples over ``ranks`` ranks: each rank takes
    ``global_batch / ranks`` samples a step, in ``ceil(that / max_rank_batch)`` micro-batches of
    equal size. A global batch that is not a multiple of the rank count, or a rank's share that
    this many micro-batches cannot split exactly, is an error naming the option (``where`` is the
    config path of the batch size, ``bound_where`` that of the bound, default the same) and values
    that would split."""
    bound_where = bound_where or where
    if global_batch < 1 or ranks < 1:
        raise UserError(f"{where}.batch_size: the global batch ({global_batch}) and ranks ({ranks}) must be >= 1")
    if max_rank_batch is not None and max_rank_batch < 1:
        raise UserError(f"{bound_where}.max_rank_batch: must be >= 1, got {max_rank_batch}")
    if global_batch % ranks:
        below = global_batch - global_batch % ranks
        multiples = " or ".join(str(m) for m in (below, below + ranks) if m)
        raise UserError(
            f"{where}.batch_size: the global batch of {global_batch} samples per optimizer step cannot be "
            f"split over {ranks} ranks (not a multiple of {ranks}); set it to a multiple, e.g. {multiples}"
        )
    per_rank = global_batch // ranks
    if max_rank_batch is None or per_rank <= max_rank_batch:
        return BatchSplit(global_batch, ranks, per_rank, 1)
    accumulation = -(-per_rank // max_rank_batch)
    if per_rank % accumulation:
        fits = [d for d in range(max_rank_batch, 0, -1) if per_rank % d == 0]
        raise UserError(
            f"{bound_where}.max_rank_batch: {max_rank_batch} cannot split the global batch exactly: "
            f"{where}.batch_size {global_batch} over {ranks} ranks is {per_rank} a rank, and "
            f"{accumulation} micro-batches (ceil({per_rank} / {max_rank_batch})) do not divide it; "
            f"set max_rank_batch to {fits[0]} ({per_rank // fits[0]} micro-batches of {fits[0]}) or batch_size "
            f"to {ranks * accumulation * max_rank_batch} ({accumulation} micro-batches of {max_rank_batch} a rank)"
        )
    return BatchSplit(global_batch, ranks, per_rank // accumulation, accumulation)
