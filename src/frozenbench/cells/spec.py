"""A cell's spec, typed: everything `frozenbench train` / `evaluate` need of a cell besides its
backbone checkpoint, mode, seed and folders.

Built from a validated config by :func:`frozenbench.study.task_spec`, it travels as JSON on the
DAG's command lines (:meth:`CellSpec.to_json`, every field written, defaults included) and is read
back by :meth:`CellSpec.from_json`, which names any key it does not know. Defaults live once, in
the dataclasses: this one, :class:`~frozenbench.engine.options.TrainOptions` and the task type's
head dataclass (:mod:`frozenbench.tasks.registry`).

Its identity as a training run is :meth:`CellSpec.training_inputs`: an explicit list of the fields
that change what a head trains to, plus :data:`SPEC_VERSION`. Test-time options, the dataset's path
(its content enters by digest) and the checkpoint / log cadence are not training inputs, nor is how a
step's global batch (``train.batch_size``, an input) is split: the rank count, gradient accumulation
and ``train.max_rank_batch`` change only which process computes which samples of the same step.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from frozenbench.engine.options import CADENCE_OPTIONS, SPLIT_OPTIONS, TrainOptions
from frozenbench.errors import UserError
from frozenbench.tasks.registry import TaskType, get_task_type

# 1: the untyped spec dict, whose JSON shape was its identity (a key emitted only when set, so that
#    older cells kept their fingerprint). 2: CellSpec's explicit training inputs. Bumped when what
#    identifies a run changes; every cell trained under an older version retrains once.
SPEC_VERSION = 2

# Head knobs added after spec version 2, each at the value that reproduces the code from before it
# existed: at that value a knob is no training input (a head that does not use it keeps its
# fingerprint, and its trained state), at any other value it is. A knob added later joins this map
# with its neutral value; the values here never change (another default would be a new knob).
NEUTRAL_HEAD_KNOBS: dict[str, Any] = {"level_norm": False}

# The fields that change what a cell trains to (with the dataset's digest, the task's pipeline
# version and the backbone's features version, added by the runner): the fingerprint's inputs.
TRAINING_INPUTS = (
    "type",
    "arch",
    "img_size",
    "head",
    "train",
    "data_options",
    "augment",
    "bf16",
    "feature_cache",
    "compile_backbone",
    "autocast_bf16",
    "tf32",
    "activation_checkpointing",
    "frame_chunk",
    "zero_stage",
)


@dataclass(frozen=True)
class CellSpec:
    type: str  # the task type (a registered TaskType's name)
    data: str  # the dataset folder
    img_size: int
    head: Any  # the task type's head dataclass
    train: TrainOptions = field(default_factory=TrainOptions)
    arch: str | None = None  # the backbone's architecture (None: the one the checkpoint file names)
    data_options: dict[str, Any] = field(default_factory=dict)  # e.g. video num_frames, frame_interval
    augment: dict[str, Any] = field(default_factory=dict)  # the training augmentation ({}: none)
    test: dict[str, Any] = field(default_factory=dict)  # test-time options (evaluation only)
    bf16: bool = False  # the frozen backbone's forward under bf16 autocast
    feature_cache: bool = False  # frozen cells: each distinct input's features computed once
    compile_backbone: bool = False
    autocast_bf16: bool = False  # heads (and a fine-tuned backbone) under bf16 autocast
    tf32: bool = False
    activation_checkpointing: bool = False  # fine-tuned backbones only (a frozen one keeps nothing)
    frame_chunk: int = 0  # video: frames per backbone call (0: all)
    zero_stage: int = 2  # DeepSpeed ZeRO stage on several ranks

    @property
    def task_type(self) -> TaskType:
        return get_task_type(self.type)

    def train_options(self) -> TrainOptions:
        """The loop's options: the schedule, with the cell's autocast."""
        return dataclasses.replace(self.train, autocast_bf16=self.autocast_bf16)

    def memory_options(self) -> dict[str, Any]:
        """What :func:`frozenbench.models.backbone.apply_memory_options` reads."""
        return {"activation_checkpointing": self.activation_checkpointing, "frame_chunk": self.frame_chunk}

    def to_json(self, evaluation: bool = True) -> dict[str, Any]:
        """Every field as plain JSON (``test`` only with ``evaluation``: a training job's command
        line never changes with test-time options)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["head"] = dataclasses.asdict(self.head)
        out["train"] = {k: v for k, v in dataclasses.asdict(self.train).items() if k != "autocast_bf16"}
        if not evaluation:
            del out["test"]
        return out

    @classmethod
    def from_json(cls, entry: dict[str, Any] | str, where: str = "--spec") -> "CellSpec":
        """The spec of ``entry`` (a dict or its JSON text); a missing or unknown key, or a head
        setting the task type does not have, is an error naming ``where``."""
        if isinstance(entry, str):
            try:
                entry = json.loads(entry)
            except json.JSONDecodeError as err:
                raise UserError(f"{where}: not JSON ({err})") from None
        if not isinstance(entry, dict):
            raise UserError(f"{where}: expected a JSON object, got {type(entry).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(entry) - known)
        if unknown:
            raise UserError(f"{where}: unknown key(s) {unknown}; a cell spec has {', '.join(sorted(known))}")
        missing = [k for k in ("type", "data", "img_size", "head") if k not in entry]
        if missing:
            raise UserError(f"{where}: missing {', '.join(missing)}")
        task_type = get_task_type(entry["type"])
        values = dict(entry)
        values["head"] = task_type.make_head(entry["head"], where=f"{where} head")
        values["train"] = TrainOptions.parse(entry.get("train", {}), where=f"{where} train")
        values["augment"] = dict(entry.get("augment") or {})
        values["frame_chunk"] = int(entry.get("frame_chunk") or 0)
        return cls(**values)

    def training_inputs(self) -> dict[str, Any]:
        """The explicit fields that identify what this cell trains to, with the spec version."""
        full = self.to_json()
        inputs = {name: full[name] for name in TRAINING_INPUTS}
        inputs["train"] = {k: v for k, v in inputs["train"].items() if k not in CADENCE_OPTIONS + SPLIT_OPTIONS}
        inputs["head"] = {
            k: v for k, v in inputs["head"].items() if not (k in NEUTRAL_HEAD_KNOBS and v == NEUTRAL_HEAD_KNOBS[k])
        }
        inputs["spec_version"] = SPEC_VERSION
        return inputs

    def fingerprint(self, **environment: Any) -> str:
        """A digest of :meth:`training_inputs` and ``environment`` (the runner's dataset digest,
        pipeline and features versions)."""
        inputs = {**self.training_inputs(), **environment}
        return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]

    def digest(self) -> str:
        """A digest of the whole spec (recorded with a run's results, test options included)."""
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:16]
