"""Convert a published checkpoint into the canonical backbone checkpoint.

Pipeline: safe load -> unwrap (every value a dense tensor, no key hidden by DDP's prefix) ->
source layout to timm names (:mod:`.layouts`) -> value checks (floating point of the model's
dtype, finite) -> the checkpoint filter of the architecture's family record (timm's own
``checkpoint_filter_fn`` where it exists: it adapts key order and resizes tables to the built
model) -> an exact key and shape check against the target architecture. Every source key ends
up in the converted state dict or in the report's dropped list with its reason: a key that a
layout or a filter drops without declaring it, a missing key, a key outside the layout's ignore
list, integer or non-finite values, and a layout the family's weights are not published in all
fail the conversion with a :class:`ConversionError` naming the file and the key. A failed
conversion says which layout or architecture the file's keys and shapes fit (:mod:`.diagnose`).

The converted file also records what the weights take beyond their architecture (:func:`weights_settings`):
their input normalisation, and the build options of a family's weights tag (MAE's position
resampling); :meth:`frozenbench.models.backbone.Backbone.from_checkpoint` reads them back, so a converted
file is built and loaded once, never converted again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from frozenbench.checkpoint.diagnose import arch_hint, close_arch_names, layout_hint
from frozenbench.checkpoint.io import check_normalization, safe_load, save_backbone, sha256_of
from frozenbench.checkpoint.layouts import LAYOUTS, WRITERS, CheckpointProblem, StateDict, unwrap
from frozenbench.errors import UserError
from frozenbench.models.registry import (
    FILTER_FAILURES,
    ArchSpec,
    BackboneFamily,
    WeightsTag,
    build_arch,
    get_arch,
    list_archs,
    retired,
)
from frozenbench.utils.atomic import atomic_file

# Source dtypes that are the model's own values at another precision: cast explicitly (and
# reported). Integers, booleans, complex numbers and float8 (whose scales live in other tensors)
# are not weights the model can take as they are: refused.
CASTABLE = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class ConversionError(UserError):
    pass


@dataclass
class ConversionReport:
    dropped: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)
    cast: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"dropped {len(self.dropped)} key(s) on the ignore list"]
        lines += [f"  - {k}: {why}" for k, why in self.dropped[:20]]
        if len(self.dropped) > 20:
            lines.append(f"  ... and {len(self.dropped) - 20} more")
        if self.cast:
            sources = sorted({dtype for _, dtype in self.cast})
            lines.append(f"cast {len(self.cast)} key(s) from {', '.join(sources)} to the model's dtype")
        for name in ("resized", "missing", "unexpected", "mismatched"):
            keys = getattr(self, name)
            if keys:
                lines.append(f"{name}: {len(keys)} key(s): {', '.join(keys[:10])}")
        return "\n".join(lines)


def resolve_arch(arch: str, source: str | None = None) -> ArchSpec:
    """The registered architecture ``arch``; an unknown name is one error listing close ones."""
    try:
        return get_arch(arch)
    except KeyError as err:
        if retired(arch):
            raise ConversionError(f"{source + ': ' if source else ''}{err.args[0]}") from None
        close = close_arch_names(arch)
        known = f"close registered names: {', '.join(close)}" if close else f"registered: {', '.join(list_archs())}"
        where = f"{source}: " if source else ""
        raise ConversionError(f"{where}{arch}: not a registered architecture; {known}") from None


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err.args[0] if isinstance(err, KeyError) and err.args else err).split())
    return f"{type(err).__name__}: {text}" if not isinstance(err, KeyError) else text


def _source_names(state: StateDict, renamed: StateDict) -> dict[str, str]:
    """Converted key -> the source key its tensor came from, where the layout renamed it."""
    by_id = {id(v): k for k, v in state.items()}
    by_data = {v.data_ptr(): k for k, v in state.items() if v.numel()}
    names = {}
    for key, value in renamed.items():
        source = by_id.get(id(value)) or (by_data.get(value.data_ptr()) if value.numel() else None)
        if source and source != key:
            names[key] = source
    return names


def _describe(key: str, sources: dict[str, str]) -> str:
    return f"{key} (source key {sources[key]})" if key in sources else key


def _check_values(
    renamed: StateDict, expected: StateDict, dtype: torch.dtype, sources: dict[str, str], source: str
) -> tuple[StateDict, list[tuple[str, str]]]:
    """``renamed`` with every tensor of the model's dtype and finite; the keys cast on the way."""
    out, cast = {}, []
    for key, value in renamed.items():
        want = expected[key].dtype if key in expected else dtype
        if value.dtype != want:
            if value.dtype not in CASTABLE or not want.is_floating_point:
                raise ConversionError(
                    f"{source}: {_describe(key, sources)} holds {str(value.dtype).removeprefix('torch.')} values; "
                    f"the model's weights are {str(want).removeprefix('torch.')} (a weight file holds floating point)"
                )
            cast.append((key, str(value.dtype).removeprefix("torch.")))
        # after the cast: a float64 value beyond float32's range becomes infinite there
        out[key] = value.to(want)
        _check_finite(key, out[key], source, sources, after_cast=value.dtype != want)
    return out, cast


def _check_finite(key: str, value: torch.Tensor, source: str, sources: dict[str, str], after_cast: bool) -> None:
    if not value.is_floating_point() or not value.numel() or bool(torch.isfinite(value).all()):
        return
    nan, inf = int(torch.isnan(value).sum()), int(torch.isinf(value).sum())
    found = ", ".join(f"{n} {what}" for n, what in ((nan, "NaN"), (inf, "infinite")) if n)
    cast = f" once cast to {str(value.dtype).removeprefix('torch.')}" if after_cast else ""
    raise ConversionError(f"{source}: {_describe(key, sources)} holds {found} value(s){cast}: not usable weights")


def _filtered(
    family: BackboneFamily, before: StateDict, model: torch.nn.Module, source: str, arch: str, layout: str
) -> tuple[StateDict, list[tuple[str, str]]]:
    """The family's checkpoint filter, with its bookkeeping: every key it drops must be on the
    family's declared list (a renamed key keeps its tensor; a resized one keeps its name)."""
    try:
        after = family.checkpoint_filter(dict(before), model)
    except FILTER_FAILURES as err:
        raise ConversionError(f"{source}: cannot convert to {arch} ({layout} layout): {_one_line(err)}") from None
    kept_ids = {id(v) for v in after.values()}
    kept_data = {v.data_ptr() for v in after.values() if v.numel()}
    lost = [
        k
        for k, v in before.items()
        if k not in after and id(v) not in kept_ids and not (v.numel() and v.data_ptr() in kept_data)
    ]
    dropped = [(k, family.filter_drop_reason(k)) for k in lost]
    undeclared = [k for k, why in dropped if why is None]
    if undeclared:
        raise ConversionError(
            f"{source}: cannot convert to {arch} ({layout} layout): the {family.name} checkpoint filter drops "
            f"{len(undeclared)} key(s) that are on no declared drop list: {', '.join(undeclared[:8])}"
        )
    return after, [(k, f"{why} (checkpoint filter)") for k, why in dropped]


def convert_state_dict(
    raw: Any,
    layout: str,
    arch: str,
    img_size: int | None = None,
    source: str = "<checkpoint>",
    arch_options: dict[str, Any] | None = None,
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Turn a raw loaded checkpoint into a state dict that loads into ``arch`` (built with
    ``arch_options``, a weights tag's) with no missing key."""
    if layout not in LAYOUTS:
        raise ConversionError(f"{source}: unknown source layout {layout!r}; known: {', '.join(sorted(LAYOUTS))}")
    spec = resolve_arch(arch, source)
    family = spec.family
    if layout not in family.layouts:
        raise ConversionError(
            f"{source}: {arch} is a {family.name} backbone, whose weights come in the "
            f"{', '.join(family.layouts)} layout(s), not {layout}"
        )
    try:
        state = unwrap(raw)
    except CheckpointProblem as err:
        raise ConversionError(f"{source}: {err}") from None
    renamed: StateDict = {}
    try:
        try:
            renamed, dropped = LAYOUTS[layout](state)
        except (KeyError, RuntimeError, ValueError, IndexError) as err:
            raise ConversionError(f"{source}: not a {layout} checkpoint: {_one_line(err)}") from None
        if len(renamed) + len(dropped) != len(state):
            # each layout maps a key or drops it with a reason: anything else lost a tensor on the way
            raise ConversionError(
                f"{source}: the {layout} layout accounts for {len(renamed) + len(dropped)} of the "
                f"{len(state)} key(s) (renamed or declared dropped)"
            )
        return _to_arch(state, renamed, dropped, spec, layout, img_size, source, arch_options or {})
    except ConversionError as err:
        hints = [hint for hint in (layout_hint(state, layout), arch_hint(renamed, spec.name)) if hint]
        if not hints:
            raise
        raise ConversionError(f"{err}; {'; '.join(hints)}") from None


def _to_arch(
    state: StateDict,
    renamed: StateDict,
    dropped: list[tuple[str, str]],
    spec: ArchSpec,
    layout: str,
    img_size: int | None,
    source: str,
    arch_options: dict[str, Any],
) -> tuple[StateDict, ConversionReport]:
    family, arch = spec.family, spec.name
    report = ConversionReport(dropped=list(dropped))
    model = build_arch(arch, img_size, **arch_options)
    expected = model.state_dict()
    dtype = next(model.parameters()).dtype
    checked, report.cast = _check_values(renamed, expected, dtype, _source_names(state, renamed), source)
    # timm's filter runs non-strict hooks (pos-bias resizing); keys it leaves are checked below.
    converted, filter_dropped = _filtered(family, checked, model, source, arch, layout)
    report.dropped += filter_dropped
    report.resized = sorted(
        k
        for k, v in converted.items()
        if k.endswith("bias_table") and k in checked and tuple(v.shape) != tuple(checked[k].shape)
    )
    persistent = {k for k in expected if family.stored(k)}
    problems = _compare_keys(report, converted, expected, persistent)
    if problems:
        raise ConversionError(f"{source}: cannot convert to {arch} ({layout} layout): " + "; ".join(problems))
    _check_filter_tensors(converted, expected, persistent, checked, family, source)
    report.dropped += [
        (k, "classification head (not part of the backbone)" if k.startswith("head.") else "recomputed buffer")
        for k in sorted(converted.keys() & (set(expected) - persistent))
    ]
    return {k: converted[k] for k in sorted(persistent)}, report


def _compare_keys(
    report: ConversionReport, converted: StateDict, expected: StateDict, persistent: set[str]
) -> list[str]:
    """Record the missing, unexpected and mismatched keys in ``report``; a sentence per kind found."""
    report.missing = sorted(persistent - converted.keys())
    report.unexpected = sorted(converted.keys() - set(expected))
    report.mismatched = sorted(
        k for k in persistent & converted.keys() if tuple(converted[k].shape) != tuple(expected[k].shape)
    )
    problems = []
    if report.missing:
        problems.append(f"missing {len(report.missing)} key(s): {', '.join(report.missing[:8])}")
    if report.unexpected:
        problems.append(
            f"unexpected {len(report.unexpected)} key(s) not on the ignore list: {', '.join(report.unexpected[:8])}"
        )
    if report.mismatched:
        shapes = [f"{k} {tuple(converted[k].shape)} vs {tuple(expected[k].shape)}" for k in report.mismatched[:5]]
        problems.append(f"shape mismatch: {'; '.join(shapes)}")
    return problems


def _check_filter_tensors(
    converted: StateDict,
    expected: StateDict,
    persistent: set[str],
    checked: StateDict,
    family: BackboneFamily,
    source: str,
) -> None:
    """Refuse a kept tensor the checkpoint filter gave another dtype, or computed with a non-finite value."""
    checked_ids = {id(v) for v in checked.values()}
    for key in sorted(persistent):
        value = converted[key]
        if value.dtype != expected[key].dtype:
            raise ConversionError(
                f"{source}: the {family.name} checkpoint filter made {key} {value.dtype}, not {expected[key].dtype}"
            )
        if id(value) not in checked_ids:  # a tensor the filter computed (resized, resampled)
            _check_finite(key, value, source, {}, after_cast=False)


@dataclass(frozen=True)
class WeightsSettings:
    """What converted weights take beyond their architecture: recorded in the converted file."""

    normalization: dict[str, list[float]]
    tag: str | None = None
    arch_options: dict[str, Any] = field(default_factory=dict)


def weights_settings(
    arch: str,
    layout: str,
    tag: str | None = None,
    normalization: dict[str, Any] | None = None,
    source: str = "<checkpoint>",
) -> WeightsSettings:
    """What weights of ``arch`` converted from ``layout`` take: the weights tag named (or the one
    the layout implies: a file in the ``mae`` layout holds MAE's weights), its build options, and
    the normalisation given, else the tag's, else the architecture's default."""
    spec = resolve_arch(arch, source)
    weights: WeightsTag | None
    if tag is None:
        weights = spec.family.layout_tag(layout)
    else:
        try:
            weights = spec.family.weights_tag(tag)
        except KeyError as err:
            raise ConversionError(f"{source}: weights_tag: {err.args[0]}") from None
    if normalization is not None:
        chosen = check_normalization(normalization, f"{source}: normalization")
    else:
        origin = weights if weights is not None else spec
        chosen = {"mean": list(origin.mean), "std": list(origin.std)}
    return WeightsSettings(chosen, weights.name if weights else None, dict(weights.arch_options) if weights else {})


def convert_file(
    src: str | Path,
    dst: str | Path,
    layout: str,
    arch: str,
    meta: dict[str, Any] | None = None,
    img_size: int | None = None,
) -> ConversionReport:
    """Convert ``src`` and write the canonical checkpoint ``dst`` (atomically).

    ``meta`` is what the config says of the weights (``frozenbench convert-checkpoint --meta``),
    recorded in the file; its ``weights_tag`` and ``normalization`` (``{mean, std}`` in [0, 1]
    units), where present, say what the weights take (:func:`weights_settings`) and are recorded
    as the file's own fields instead."""
    from frozenbench.checkpoint.torchscript import activation_problem, is_torchscript_archive

    resolve_arch(arch)  # an unknown name fails before a large file is read
    meta = dict(meta or {})
    settings = weights_settings(
        arch, layout, meta.pop("weights_tag", None), meta.pop("normalization", None), source=str(src)
    )
    if Path(src).is_file() and is_torchscript_archive(src) and (problem := activation_problem(src, arch)):
        raise ConversionError(problem)
    raw = safe_load(src)
    state_dict, report = convert_state_dict(raw, layout, arch, img_size, str(src), settings.arch_options)
    info = {"source_file": Path(src).name, "source_sha256": sha256_of(src), "source_layout": layout, **meta}
    save_backbone(dst, arch, state_dict, info, settings.normalization, settings.tag, settings.arch_options)
    return report


def write_source_checkpoint(path: str | Path, arch: str, layout: str, seed: int) -> Path:
    """``seed``'s random initialisation of ``arch`` written in the published ``layout`` (a file as the
    release would be), for studies and tests that exercise the conversion of a real layout."""
    if layout not in WRITERS:
        raise ConversionError(f"no writer for the {layout} layout; writable: {', '.join(sorted(WRITERS))}")
    family = resolve_arch(arch).family
    if layout not in family.layouts:
        raise ConversionError(
            f"{arch} is a {family.name} backbone, published in the {', '.join(family.layouts)} layout(s), not {layout}"
        )
    torch.manual_seed(seed)
    model = build_arch(arch)
    state = {k: v.detach().clone() for k, v in model.state_dict().items() if not k.endswith(family.recomputed_buffers)}
    with atomic_file(path) as tmp:
        torch.save(WRITERS[layout](state), tmp)
    return Path(path)
