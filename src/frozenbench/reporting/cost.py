"""What a study costs: every cell of a config priced from a benchmark record (docs/cost.md).

The record (``bench/gpu_smoke.py``'s, or the older ``bench/paper_cells.py`` CPU record) holds
seconds per training step and evaluation seconds per sample for some (cell kind, mode, backbone)
rows. Every cell of ``config["study"]["cells"]`` gets a price:

- **measured**: the record has its cell kind, mode, backbone and input size; the seconds per step
  scale linearly with the per-GPU batch when the cell's differs from the measured one;
- **extrapolated**: from the nearest row of its cell kind by the FLOPs ratio (the rules in
  :data:`RULES`, listed under the table with the ones each row used); backbone FLOPs are counted
  at the cell's input by :mod:`frozenbench.reporting.flops`, head FLOPs come from the record;
- **not priced**: its cell kind has no usable row (absent, or every row failed), with the reason.

A GPU record gives GPU-hours: steps x seconds per step x GPUs per job (``compute.train.gpus`` x
``nodes``), evaluation on one GPU. A CPU record gives CPU-hours of one process on the machine that
ran it (one rank's share of each step), never multiplied by the config's GPU count: a CPU step time
times 8 GPUs is no quantity of anything. The config's in-DAG pretraining (backbones with a
``pretrain`` entry) is priced from the record's ``pretrain_<objective>`` and ``probe`` rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from frozenbench.errors import UserError
from frozenbench.study import cell_type
from frozenbench.tasks.registry import get_task_type

# Nominal validation sizes of the real datasets (COCO val2017, ADE20K validation, the K400 val
# clips still online in 2022); a planning figure, not a count of what was prepared.
VAL_SAMPLES = {"coco": 5000, "ade": 2000, "kinetics": 19881}
# frames per clip when a video task sets no data_options.num_frames: the default of
# frozenbench.tasks.video.build_dataset (not imported: it pulls in OpenMMLab)
VIDEO_DEFAULT_FRAMES = 8

# The rules a price can rest on, by the letter each row lists. Measured rows use M only; a row that
# uses any letter of EXTRAPOLATIONS is "extrapolated".
RULES = {
    "M": "measured: seconds per step of this cell kind, mode, backbone and input size from the record, "
    "scaled linearly by (the cell's per-GPU batch / the measured batch) where they differ",
    "F": "FLOPs ratio: s/step = s/step(source row) x train FLOPs(cell) / train FLOPs(source) x (cell's per-GPU "
    "batch / source batch); train FLOPs per sample: frozen = backbone fwd + 3 x head fwd, fine-tuned = "
    "3 x backbone fwd + 3 x head fwd (backward ~ 2 x forward; a frozen backbone runs no backward); backbone "
    "fwd counted by torch.utils.flop_counter on the meta device at the input (a clip = num_frames frames)",
    "O": "mode not in the record for this cell kind: priced from the other mode's row by rule F",
    "B": "the source row has no head_gflop_per_sample (an older record): the FLOPs ratios use backbone FLOPs only",
    "P": "head FLOPs of the source row scaled by the ratio of input pixels (x frames) to the cell's input size",
    "H": "head variant priced as its base head: this head's config differs from the measured one (e.g. extra "
    "blocks) and its extra cost is not counted",
    "E": "evaluation: eval s/sample(source) x eval FLOPs(cell) / eval FLOPs(source); eval FLOPs per sample = "
    "test views x (backbone fwd + head fwd) at img_size; views: detection 1, segmentation sum of scale^2 "
    "(x 2 with flip, the sliding windows' overlap ignored), video clips x crops",
    "I": "the source row records no num_frames (an older record): taken as the cell's",
    "V": "the source row records no test views: taken as the cell's",
    "X": "no evaluation timing for this cell kind in the record: evaluation not counted",
    "R": "pretraining: s/step = s/step(the objective's row) x (backbone fwd + head fwd)(cell) / (same)(source) x "
    "(batch / source batch); everything trains, so backward scales with forward",
    "Q": "probe: train + val images x seconds per image of the probe row (eval_seconds_per_sample, else "
    "seconds_per_step / batch) x backbone fwd(cell) / backbone fwd(source); the probes' fit is not counted",
}
EXTRAPOLATIONS = frozenset("FOBPHE")
RULE_ORDER = list(RULES)


# -- the record ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measurement:
    """One successful row of a record, in the fields pricing needs."""

    index: int
    cell: str
    mode: str
    arch: str
    img_size: int
    frames: int | None  # None: a video row of an old record, or an image row
    batch: float
    seconds_per_step: float
    eval_seconds_per_sample: float | None
    head_gflop: float | None
    eval_views: Any
    head: Any  # the head name or config the row ran, where the record says

    def describe(self) -> str:
        clip = f"x{self.frames}" if self.frames else ""
        return f"{self.cell} {self.mode} {self.arch} {self.img_size}px{clip} batch {self.batch:g} (row {self.index})"

    def belongs_to(self, kind: str) -> bool:
        """Rows named ``<kind>_<variant>`` (``ade_mask2former_vit``: another backbone) count for ``kind``."""
        return self.cell == kind or self.cell.startswith(kind + "_")


@dataclass
class Record:
    on_gpu: bool
    device_name: str
    unit: str
    archs: list[str]
    ok: list[Measurement]
    failed: list[dict[str, Any]]


def _number(row: dict[str, Any], key: str, where: str, optional: bool = False) -> float | None:
    value = row.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (value == 0 and not optional):
        raise UserError(f"{where}: '{key}' must be a positive number, got {value!r}")
    return float(value)


def read_record(record: dict[str, Any], source: str = "record") -> Record:
    """The record's successful and failed rows. Reads the current format (``schema`` 2: ``arch``,
    ``status`` and FLOPs per row) and the older ones still in ``bench/records`` (no ``schema``,
    one top-level ``arch``, no status: every row ran)."""
    if not isinstance(record, dict) or not isinstance(record.get("cells"), list):
        raise UserError(f"{source}: not a benchmark record with per-cell timings (no 'cells' list)")
    device = str(record.get("device", "cpu"))
    machine = record.get("machine", {}) if isinstance(record.get("machine"), dict) else {}
    on_gpu = device.startswith("cuda")
    if on_gpu:
        device_name = record.get("device_name") or machine.get("gpu") or device
        unit = "GPU-hours"
    else:
        device_name = record.get("device_name") or machine.get("cpu") or device
        if record.get("device_name") in (None, "cpu") and machine.get("threads"):
            device_name = f"{device_name}, {machine['threads']} threads"
        unit = f"CPU-hours of {device_name}, one process"
    ok, failed = [], []
    for index, row in enumerate(record["cells"]):
        where = f"{source}: cells[{index}]"
        if not isinstance(row, dict) or not isinstance(row.get("cell"), str) or not isinstance(row.get("mode"), str):
            raise UserError(f"{where}: a row needs 'cell' and 'mode' strings, got {row!r:.200}")
        arch = row.get("arch") or record.get("arch")
        if row.get("status", "ok") != "ok":
            failed.append({"cell": row["cell"], "mode": row["mode"], "arch": arch, "error": row.get("error")})
            continue
        if not isinstance(arch, str):
            raise UserError(f"{where}: no 'arch' in the row and no top-level 'arch' in the record")
        frames = row.get("num_frames")
        ok.append(
            Measurement(
                index=index,
                cell=row["cell"],
                mode=row["mode"],
                arch=arch,
                img_size=int(_number(row, "img_size", where)),
                frames=int(frames) if isinstance(frames, int) and not isinstance(frames, bool) else None,
                batch=_number(row, "batch", where),
                seconds_per_step=_number(row, "seconds_per_step", where),
                eval_seconds_per_sample=_number(row, "eval_seconds_per_sample", where, optional=True),
                head_gflop=_number(row, "head_gflop_per_sample", where, optional=True),
                eval_views=row.get("eval_views"),
                head=row.get("head"),
            )
        )
    archs = sorted({m.arch for m in ok} | {f["arch"] for f in failed if f["arch"]})
    return Record(on_gpu, str(device_name), unit, archs, ok, failed)


# -- FLOPs -----------------------------------------------------------------------------------------


def _family(arch: str) -> str:
    from frozenbench.models.registry import get_arch

    try:
        return get_arch(arch).family.name
    except KeyError as err:
        raise UserError(f"backbone {arch!r}: {err.args[0]}") from None


def train_gflop(mode: str, backbone: float, head: float) -> float:
    """Training GFLOP per sample (forward + backward): backward ~ 2 x forward for what trains."""
    return (backbone if mode == "frozen" else 3 * backbone) + 3 * head


def _view_count(views: Any) -> float | None:
    """Test views of a record row's ``eval_views`` as image-size view equivalents (None: unknown)."""
    if isinstance(views, (int, float)) and not isinstance(views, bool):
        return float(views)
    if isinstance(views, str) and "single" in views:
        return 1.0
    if isinstance(views, dict):
        if "num_clips" in views or "num_crops" in views:
            return float(views.get("num_clips", 1) * views.get("num_crops", 1))
        if "scales" in views:
            return sum(s * s for s in views["scales"]) * (2 if views.get("flip") else 1)
    return None


def configured_views(task: dict[str, Any]) -> float:
    """View equivalents at ``img_size`` a task's test evaluates per sample (rule E)."""
    return float(get_task_type(task["type"]).test_views(task.get("test", {})))


@dataclass(frozen=True)
class Target:
    """What a cell runs: its cell kind, mode, backbone, input, per-GPU batch and test views."""

    kind: str
    mode: str
    arch: str
    img_size: int
    frames: int  # 1 for images
    batch: float | None  # None: the config sets none, the source row's batch runs
    views: float


def _flops_pair(source: Measurement, target: Target, rules: list[str]) -> tuple[float, float, float, float]:
    """(backbone fwd, head fwd) GFLOP per sample of the source row and of the target cell."""
    from frozenbench.reporting.flops import backbone_gflop

    frames = source.frames if source.frames is not None else target.frames
    bb_source = backbone_gflop(source.arch, source.img_size, frames)
    bb_target = backbone_gflop(target.arch, target.img_size, target.frames)
    if source.head_gflop is None:
        _add(rules, "B")
        return bb_source, 0.0, bb_target, 0.0
    pixels_source, pixels_target = source.img_size**2 * frames, target.img_size**2 * target.frames
    if pixels_source != pixels_target:
        _add(rules, "P")
    return bb_source, source.head_gflop, bb_target, source.head_gflop * pixels_target / pixels_source


def _add(rules: list[str], rule: str) -> None:
    if rule not in rules:
        rules.append(rule)


def _pick(rows: list[Measurement], target: Target) -> Measurement:
    """The nearest row: the same mode first (a mode change is the roughest step), then the same
    backbone, the same family, the same input size, then record order."""
    family = _family(target.arch)
    return min(
        rows,
        key=lambda r: (
            r.mode != target.mode,
            r.arch != target.arch,
            _family(r.arch) != family,
            r.img_size != target.img_size,
            (r.frames or target.frames) != target.frames,
            r.index,
        ),
    )


def price_cell(rows: list[Measurement], target: Target) -> dict[str, Any]:
    """Seconds per step and evaluation seconds per sample of ``target`` from its kind's ``rows``,
    with the rules used and the rows they came from."""
    rules: list[str] = []
    train = [r for r in rows if r.mode in ("frozen", "finetune")]
    source = _pick(train, target)
    seconds_per_step = _seconds_per_step(source, target, rules)
    eval_seconds, eval_source = _eval_seconds_per_sample(train, target, rules)
    return {
        "rules": rules,
        "source": source.describe(),
        "batch": source.batch if target.batch is None else target.batch,
        "eval_source": eval_source.describe() if eval_source else None,
        "seconds_per_step": seconds_per_step,
        "eval_seconds_per_sample": eval_seconds,
    }


def _seconds_per_step(source: Measurement, target: Target, rules: list[str]) -> float:
    """Training seconds per step of ``target`` from its ``source`` row: measured, or scaled by FLOPs."""
    if source.frames is None and target.frames > 1:
        _add(rules, "I")
    same_input = (
        source.arch == target.arch
        and source.img_size == target.img_size
        and (source.frames or target.frames) == target.frames
    )
    batch_scale = 1.0 if target.batch is None else target.batch / source.batch
    if source.mode == target.mode and same_input:
        rules.insert(0, "M")
        return source.seconds_per_step * batch_scale
    _add(rules, "F")
    if source.mode != target.mode:
        _add(rules, "O")
    bb_s, head_s, bb_t, head_t = _flops_pair(source, target, rules)
    ratio = train_gflop(target.mode, bb_t, head_t) / train_gflop(source.mode, bb_s, head_s)
    return source.seconds_per_step * ratio * batch_scale


def _eval_seconds_per_sample(
    train: list[Measurement], target: Target, rules: list[str]
) -> tuple[float, Measurement | None]:
    """Evaluation seconds per sample of ``target`` and the timed row they come from (0 and None: none timed)."""
    timed = [r for r in train if r.eval_seconds_per_sample is not None]
    if not timed:
        _add(rules, "X")
        return 0.0, None
    eval_source = _pick(timed, target)
    views = _view_count(eval_source.eval_views)
    if views is None:
        _add(rules, "V")
        views = target.views
    if eval_source.frames is None and target.frames > 1:
        _add(rules, "I")
    same = (
        views == target.views
        and eval_source.arch == target.arch
        and eval_source.img_size == target.img_size
        and (eval_source.frames or target.frames) == target.frames
    )
    eval_seconds = eval_source.eval_seconds_per_sample
    if not same:
        _add(rules, "E")
        bb_s, head_s, bb_t, head_t = _flops_pair(eval_source, target, rules)
        eval_seconds *= (target.views * (bb_t + head_t)) / (views * (bb_s + head_s))
    return eval_seconds, eval_source


# -- the study -------------------------------------------------------------------------------------


def validation_samples(config: dict[str, Any], task: dict[str, Any]) -> int:
    """Validation samples of a task's dataset: the generator's count for a synthetic dataset, else the
    nominal size of the real one (:data:`VAL_SAMPLES`)."""
    dataset = config["datasets"][task["dataset"]]
    synth = dataset.get("synth") if dataset.get("source") == "synth" else None
    if synth and "num_val" in synth:
        return int(synth["num_val"])
    if synth and "num_val_per_class" in synth:
        from frozenbench.data.synth.kinetics import MOTIONS

        return int(synth["num_val_per_class"]) * len(MOTIONS)
    return VAL_SAMPLES.get(dataset["format"], 0)


def _gpus_per_job(config: dict[str, Any]) -> int:
    train = config.get("compute", {}).get("train", {})
    return max(1, int(train.get("gpus", 0))) * int(train.get("nodes", 1))


def _base_heads(task: dict[str, Any], task_name: str) -> dict[str, str]:
    """Cell kind -> the task's first head of that kind (config order): the head a smoke measures for the
    kind when its record does not name one; later heads of the kind are its variants."""
    bases: dict[str, str] = {}
    for name, head in task.get("heads", {}).items():
        bases.setdefault(cell_type(task, head, task_name), name)
    return bases


def _is_head_variant(rows: list[Measurement], task: dict[str, Any], head_name: str, base: str) -> bool:
    named = [r.head for r in rows if r.head is not None]
    if named:  # the record says which head it ran: compare with it (a name, or a head config)
        return not any(h == head_name or h == task["heads"][head_name] for h in named)
    return head_name != base


def study_cost(config: dict[str, Any], record: dict[str, Any], source: str = "record") -> dict[str, Any]:
    """Per-cell and total cost of ``config``'s study from the benchmark ``record`` (module docstring)."""
    rec = read_record(record, source)
    gpus = _gpus_per_job(config) if rec.on_gpu else 1
    from frozenbench.study import cell_seeds

    seeds_of, priced = cell_seeds(config), set()
    rows: list[dict[str, Any]] = []
    for cell in config.get("study", {}).get("cells", []):
        task_name = cell["task"]
        task = config["tasks"][task_name]
        bases = _base_heads(task, task_name)
        for head_name in cell["heads"]:
            kind = cell_type(task, task["heads"][head_name], task_name)
            kind_rows = [m for m in rec.ok if m.belongs_to(kind)]
            for mode in cell["modes"]:
                schedule = {**task.get("train", {}), **(task.get("finetune", {}) if mode == "finetune" else {})}
                for backbone in cell["backbones"]:
                    key = (task_name, backbone, mode, head_name)
                    if key in priced:  # listed again in another study entry: its seeds are one union
                        continue
                    priced.add(key)
                    row = {
                        "task": task_name,
                        "head": head_name,
                        "backbone": backbone,
                        "arch": config["backbones"][backbone]["arch"],
                        "mode": mode,
                        "cell_type": kind,
                        "steps": int(schedule.get("steps", 0)),
                        "gpus": gpus,
                        "seeds": len(seeds_of[key]),  # each seed trains and evaluates the cell again
                    }
                    rows.append(row)
                    reason = _not_priced_reason(rec, kind, kind_rows)
                    if reason is None:
                        try:
                            row.update(_price_task_cell(config, task, schedule, row, kind_rows, gpus, rec.on_gpu))
                        except UserError as err:  # e.g. a backbone whose FLOPs cannot be counted
                            reason = str(err)
                        else:
                            if _is_head_variant(kind_rows, task, head_name, bases.get(kind, head_name)):
                                row["rules"].append("H")
                                row["basis"] = "extrapolated"
                            row["rules"].sort(key=RULE_ORDER.index)
                    if reason is not None:
                        row.update({"basis": "not priced", "reason": reason, "rules": []})
    pretraining = pretraining_cost(config, rec)
    return _summary(rec, rows, pretraining, gpus)


def _not_priced_reason(rec: Record, kind: str, kind_rows: list[Measurement]) -> str | None:
    if any(r.mode in ("frozen", "finetune") for r in kind_rows):
        return None
    failed = [f for f in rec.failed if f["cell"] == kind or f["cell"].startswith(kind + "_")]
    if failed:
        error = str(failed[0].get("error") or "no error recorded").strip().splitlines()
        return f"every {kind} row of the record failed ({failed[0]['mode']}: {error[-1] if error else ''})"
    return f"the record has no {kind} row"


def _price_task_cell(
    config: dict[str, Any],
    task: dict[str, Any],
    schedule: dict[str, Any],
    row: dict[str, Any],
    kind_rows: list[Measurement],
    gpus: int,
    on_gpu: bool,
) -> dict[str, Any]:
    frames = 1
    if get_task_type(task["type"]).clips:
        frames = int(task.get("data_options", {}).get("num_frames", VIDEO_DEFAULT_FRAMES))
    target = Target(
        kind=row["cell_type"],
        mode=row["mode"],
        arch=row["arch"],
        img_size=int(task["img_size"]),
        frames=frames,
        # a GPU's share of a step: the global batch over the job's ranks (all its micro-batches,
        # whose step time adds up linearly); None: the schedule sets no batch size
        batch=float(schedule["batch_size"]) / _gpus_per_job(config) if "batch_size" in schedule else None,
        views=configured_views(task),
    )
    price = price_cell(kind_rows, target)
    samples = validation_samples(config, task)
    train_seconds = row["steps"] * price["seconds_per_step"] * gpus * row["seeds"]
    eval_seconds = samples * price["eval_seconds_per_sample"] * row["seeds"]  # one GPU (or one process)
    basis = "extrapolated" if EXTRAPOLATIONS & set(price["rules"]) else "measured"
    return {
        "basis": basis,
        **price,
        "img_size": target.img_size,
        "frames": frames,
        "eval_samples": samples,
        "train_hours": train_seconds / 3600,
        "eval_hours": eval_seconds / 3600,
        "total_hours": (train_seconds + eval_seconds) / 3600,
    }


# -- pretraining -----------------------------------------------------------------------------------


def _imagefolder_images(config: dict[str, Any], dataset: str | None) -> int | None:
    entry = config.get("datasets", {}).get(dataset or "", {})
    synth = entry.get("synth") if entry.get("source") == "synth" else None
    if not synth:
        return None
    return int(synth["num_classes"]) * (int(synth["train_per_class"]) + int(synth["val_per_class"]))


def pretraining_cost(config: dict[str, Any], rec: Record) -> list[dict[str, Any]]:
    """One row per backbone the config pretrains in the DAG (empty when it pretrains none): the
    objective's training and the probe, each on one device (the pretrain rule runs one process)."""
    pretrained = [name for name, entry in config.get("backbones", {}).items() if "pretrain" in entry]
    if not pretrained:
        return []
    from frozenbench.pretrain.train import PretrainOptions
    from frozenbench.study import pretrain_spec

    out = []
    for name in pretrained:
        spec = pretrain_spec(config, name)
        opts = PretrainOptions.from_config(spec["options"])
        arch = config["backbones"][name]["arch"]
        objective = spec["objective"]
        steps = 0 if objective == "random" else opts.train.steps  # random weights: probed, never trained
        target = Target(
            f"pretrain_{objective}", "pretrain", arch, opts.image_size, 1, float(opts.train.batch_size), 1.0
        )
        row: dict[str, Any] = {"backbone": name, "arch": arch, "objective": objective, "steps": steps, "rules": []}
        out.append(row)
        reasons: list[str] = []
        try:
            train_seconds, train_extrapolated = _pretrain_train_seconds(rec, target, steps, row, reasons)
            probe_seconds, probe_extrapolated = _pretrain_probe_seconds(config, rec, spec, target, row, reasons)
        except UserError as err:
            reasons.append(str(err))
        if reasons:
            row.update({"basis": "not priced", "reason": "; ".join(reasons)})
            continue
        row.update(
            {
                "basis": "extrapolated" if train_extrapolated or probe_extrapolated else "measured",
                "train_hours": train_seconds / 3600,
                "probe_hours": probe_seconds / 3600,
                "total_hours": (train_seconds + probe_seconds) / 3600,
            }
        )
    return out


def _pretrain_train_seconds(
    rec: Record, target: Target, steps: int, row: dict[str, Any], reasons: list[str]
) -> tuple[float, bool]:
    """Seconds of the objective's ``steps`` and whether they are extrapolated; the source and rule go in ``row``."""
    if not steps:
        return 0.0, False
    rows = [m for m in rec.ok if m.cell == target.kind]
    if not rows:
        reasons.append(f"the record has no {target.kind} row")
        return 0.0, False
    source = _pick(rows, target)
    seconds_per_step = source.seconds_per_step * target.batch / source.batch
    extrapolated = (source.arch, source.img_size) != (target.arch, target.img_size)
    if extrapolated:
        row["rules"].append("R")
        bb_s, head_s, bb_t, head_t = _flops_pair(source, target, row["rules"])
        seconds_per_step *= (bb_t + head_t) / (bb_s + head_s)
    else:
        row["rules"].append("M")
    row.update({"source": source.describe(), "seconds_per_step": seconds_per_step})
    return steps * seconds_per_step, extrapolated


def _pretrain_probe_seconds(
    config: dict[str, Any], rec: Record, spec: dict[str, Any], target: Target, row: dict[str, Any], reasons: list[str]
) -> tuple[float, bool]:
    """Seconds of the probe over the pretraining dataset's images and whether they are extrapolated."""
    from frozenbench.reporting.flops import backbone_gflop

    probes = [m for m in rec.ok if m.cell == "probe"]
    images = _imagefolder_images(config, spec["dataset"])
    if not probes:
        reasons.append("the record has no probe row")
        return 0.0, False
    if images is None:
        reasons.append(f"the probe's image count is known only for a synthetic dataset ({spec['dataset']})")
        return 0.0, False
    probe = _pick(probes, target)
    per_image = probe.eval_seconds_per_sample or probe.seconds_per_step / probe.batch
    scale = backbone_gflop(target.arch, target.img_size) / backbone_gflop(probe.arch, probe.img_size)
    row["rules"].append("Q")
    row["probe_source"] = probe.describe()
    return images * per_image * scale, (probe.arch, probe.img_size) != (target.arch, target.img_size)


# -- summary and Markdown --------------------------------------------------------------------------


def _summary(rec: Record, rows: list[dict[str, Any]], pretraining: list[dict[str, Any]], gpus: int) -> dict[str, Any]:
    counts = {basis: sum(r["basis"] == basis for r in rows) for basis in ("measured", "extrapolated", "not priced")}
    priced = [r for r in rows + pretraining if r["basis"] != "not priced"]
    used = sorted({rule for r in rows + pretraining for rule in r["rules"]}, key=RULE_ORDER.index)
    return {
        "unit": rec.unit,
        "on_gpu": rec.on_gpu,
        "measured_on": rec.device_name,
        "measured_archs": rec.archs,
        "gpus_per_job": gpus,
        "rows": rows,
        "pretraining": pretraining,
        "counts": counts,
        "hours_by_basis": {
            basis: sum(r["total_hours"] for r in rows if r["basis"] == basis) for basis in ("measured", "extrapolated")
        },
        "pretraining_hours": sum(r["total_hours"] for r in pretraining if r["basis"] != "not priced"),
        "total_hours": sum(r["total_hours"] for r in priced),
        "rules": {rule: RULES[rule] for rule in used},
    }


def _basis_cell(row: dict[str, Any]) -> str:
    if row["basis"] == "extrapolated":
        return f"extrapolated ({', '.join(r for r in row['rules'] if r != 'M')})"
    if row["basis"] == "not priced" and "objective" in row:  # pretraining: no separate list of reasons
        return f"not priced: {row['reason']}"
    return row["basis"]


def _seconds(row: dict[str, Any]) -> str:
    value = row.get("seconds_per_step") if row["basis"] != "not priced" else None
    return "-" if value is None else f"{value:.3g}"


def _hours(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2g}" if 0 < value < 0.05 else f"{value:,.1f}"  # a mini-study's minutes, not 0.0


def cost_markdown(cost: dict[str, Any]) -> str:
    """The cost as Markdown: its unit in the heading and every total, one row per cell, the rules used."""
    unit = cost["unit"]
    counts = cost["counts"]
    lines = [
        f"# Study cost in {unit}",
        "",
        _scope(cost) + f" Backbones measured: {', '.join(cost['measured_archs']) or 'none'}.",
        "",
        f"{sum(counts.values())} cells: {counts['measured']} measured, {counts['extrapolated']} extrapolated, "
        f"{counts['not priced']} not priced.",
        "",
        "| task | head | backbone | mode | basis | steps | seeds | GPUs | s/step | train h | eval h | total h |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in cost["rows"]:
        lines.append(
            f"| {r['task']} | {r['head']} | {r['backbone']} | {r['mode']} | {_basis_cell(r)} | {r['steps']} | "
            f"{r['seeds']} | {r['gpus'] if cost['on_gpu'] else '-'} | {_seconds(r)} | "
            f"{_hours(r.get('train_hours'))} | {_hours(r.get('eval_hours'))} | {_hours(r.get('total_hours'))} |"
        )
    by_basis = cost["hours_by_basis"]
    lines += [
        "",
        f"**Total: {cost['total_hours']:,.1f} {unit}** (measured cells {by_basis['measured']:,.1f}, extrapolated "
        f"cells {by_basis['extrapolated']:,.1f}, pretraining {cost['pretraining_hours']:,.1f}; "
        f"{counts['not priced']} cells not priced, not included)",
    ]
    lines += _not_priced_lines(cost["rows"])
    if cost["pretraining"]:
        lines += _pretraining_lines(cost["pretraining"], unit)
    if cost["rules"]:
        lines += ["", "Rules (the letters in the basis column; docs/cost.md):", ""]
        lines += [f"- {rule}: {text}" for rule, text in cost["rules"].items()]
    return "\n".join(lines) + "\n"


def _scope(cost: dict[str, Any]) -> str:
    """The sentence saying what the numbers are: GPU-hours of the config's GPUs, or one CPU process's time."""
    if cost["on_gpu"]:
        return (
            f"Measured on {cost['measured_on']}. GPU-hours = steps x s/step x {cost['gpus_per_job']} GPUs per "
            "training job (compute.train.gpus x nodes); evaluation on one GPU."
        )
    return (
        f"**A CPU record: CPU time, not GPU-hours.** Measured on {cost['measured_on']}; each cell is the time of "
        "one process running one rank's share (the per-GPU batch) of every step, then the evaluation; the "
        "config's GPU count is not multiplied in."
    )


def _not_priced_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The cells not priced, grouped by reason (no lines when every cell is priced)."""
    missing = [r for r in rows if r["basis"] == "not priced"]
    if not missing:
        return []
    reasons: dict[str, list[str]] = {}
    for r in missing:
        reasons.setdefault(r["reason"], []).append(f"{r['task']}/{r['head']}/{r['backbone']}/{r['mode']}")
    lines = ["", "Not priced:"]
    lines += [f"- {reason}: {len(cells)} cells ({', '.join(cells)})" for reason, cells in reasons.items()]
    return lines


def _pretraining_lines(pretraining: list[dict[str, Any]], unit: str) -> list[str]:
    """The in-DAG pretraining section: one table row per pretrained backbone."""
    lines = [
        "",
        f"## In-DAG pretraining ({unit}, one device per backbone)",
        "",
        "| backbone | arch | objective | basis | steps | s/step | train h | probe h | total h |",
        "|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in pretraining:
        lines.append(
            f"| {r['backbone']} | {r['arch']} | {r['objective']} | {_basis_cell(r)} | {r['steps']} | "
            f"{_seconds(r)} | "
            f"{_hours(r.get('train_hours'))} | {_hours(r.get('probe_hours'))} | {_hours(r.get('total_hours'))} |"
        )
    return lines
