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


@dataclass
class TrainOptions:
    steps: int = schedule_defaults.TRAIN_STEPS
    batch_size: int = 8
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
