"""Convert a published checkpoint into the canonical backbone checkpoint.

Pipeline: safe load -> unwrap -> source layout to timm names (:mod:`.layouts`) -> the
checkpoint filter of the architecture's family record (timm's own ``checkpoint_filter_fn``
where it exists: it adapts key order and resizes tables to the built model) -> an exact key
and shape check against the target architecture. Missing keys, or
keys outside the layout's explicit ignore list, fail the conversion, and so does a layout
that the family's weights are not published in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from frozenbench.checkpoint.io import load_backbone, safe_load, save_backbone, sha256_of
from frozenbench.checkpoint.layouts import LAYOUTS, WRITERS, unwrap
from frozenbench.errors import UserError
from frozenbench.models.registry import build_arch, get_arch
from frozenbench.utils.atomic import atomic_file


class ConversionError(UserError):
    pass


@dataclass
class ConversionReport:
    dropped: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"dropped {len(self.dropped)} key(s) on the ignore list"]
        lines += [f"  - {k}: {why}" for k, why in self.dropped[:20]]
        if len(self.dropped) > 20:
            lines.append(f"  ... and {len(self.dropped) - 20} more")
        for name in ("resized", "missing", "unexpected", "mismatched"):
            keys = getattr(self, name)
            if keys:
                lines.append(f"{name}: {len(keys)} key(s): {', '.join(keys[:10])}")
        return "\n".join(lines)


def convert_state_dict(
    raw: Any, layout: str, arch: str, img_size: int | None = None, source: str = "<checkpoint>"
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Turn a raw loaded checkpoint into a state dict that loads into ``arch`` with no missing key."""
    if layout not in LAYOUTS:
        raise ConversionError(f"{source}: unknown source layout {layout!r}; known: {', '.join(sorted(LAYOUTS))}")
    spec = get_arch(arch)
    family = spec.family
    if layout not in family.layouts:
        raise ConversionError(
            f"{source}: {arch} is a {family.name} backbone, whose weights come in the "
            f"{', '.join(family.layouts)} layout(s), not {layout}"
        )
    report = ConversionReport()
    try:
        renamed, report.dropped = LAYOUTS[layout](unwrap(raw))
    except KeyError as err:
        raise ConversionError(f"{source}: not a {layout} checkpoint: {err.args[0]}") from None
    model = build_arch(arch, img_size)
    # timm's filter runs non-strict hooks (pos-bias resizing); keys it leaves are checked below.
    before = {k: tuple(v.shape) for k, v in renamed.items()}
    try:
        converted = family.checkpoint_filter(renamed, model)
    except (KeyError, RuntimeError, ValueError) as err:
        # a file of another architecture or layout fails inside the filter, on the first tensor it cannot place
        raise ConversionError(f"{source}: cannot convert to {arch} ({layout} layout): {err}") from None
    report.resized = sorted(
        k for k, v in converted.items() if k.endswith("bias_table") and k in before and tuple(v.shape) != before[k]
    )
    expected = model.state_dict()
    persistent = {k for k in expected if not k.endswith(family.recomputed_buffers)}
    # The classifier is not part of the backbone: canonical checkpoints carry no head.
    persistent = {k for k in persistent if not k.startswith("head.")}
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
    if problems:
        raise ConversionError(f"{source}: cannot convert to {arch} ({layout} layout): " + "; ".join(problems))
    return {k: converted[k] for k in sorted(persistent)}, report


def convert_file(
    src: str | Path,
    dst: str | Path,
    layout: str,
    arch: str,
    meta: dict[str, Any] | None = None,
    img_size: int | None = None,
) -> ConversionReport:
    """Convert ``src`` and write the canonical checkpoint ``dst`` (atomically)."""
    raw = safe_load(src)
    state_dict, report = convert_state_dict(raw, layout, arch, img_size, source=str(src))
    info = {"source_file": Path(src).name, "source_sha256": sha256_of(src), "source_layout": layout, **(meta or {})}
    save_backbone(dst, arch, state_dict, info)
    return report


def load_backbone_state(
    path: str | Path, arch: str | None = None, img_size: int | None = None
) -> tuple[str, dict[str, torch.Tensor], dict[str, Any]]:
    """(arch, state dict ready for ``Backbone(arch, img_size)``, meta) from a canonical checkpoint.

    The state dict is re-filtered for ``img_size`` by the family's checkpoint filter, so window
    and input sizes may differ from the checkpoint's.
    """
    payload = load_backbone(path)
    if arch is not None and payload["arch"] != arch:
        raise UserError(f"{path}: holds a {payload['arch']} backbone, not {arch}")
    state_dict, _ = convert_state_dict(payload["state_dict"], "timm", payload["arch"], img_size, source=str(path))
    return payload["arch"], state_dict, payload["meta"]


def write_source_checkpoint(path: str | Path, arch: str, layout: str, seed: int) -> Path:
    """``seed``'s random initialisation of ``arch`` written in the published ``layout`` (a file as the
    release would be), for studies and tests that exercise the conversion of a real layout."""
    if layout not in WRITERS:
        raise ConversionError(f"no writer for the {layout} layout; writable: {', '.join(sorted(WRITERS))}")
    family = get_arch(arch).family
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
