"""Deterministic generators of the mini datasets, one module per real format."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from frozenbench.data.manifest import MANIFEST, content_digest
from frozenbench.data.validate import validate
from frozenbench.utils.atomic import atomic_dir, write_json

GENERATORS = {
    "coco": "frozenbench.data.synth.coco",
    "ade": "frozenbench.data.synth.ade",
    "kinetics": "frozenbench.data.synth.kinetics",
    "imagefolder": "frozenbench.data.synth.imagefolder",
}


def synthesize(spec: dict[str, Any], out: str | Path) -> dict[str, int]:
    """Generate the dataset described by ``spec`` (a ``datasets.<name>`` config entry) at ``out``.

    The folder appears only when complete: it is built beside ``out`` and renamed into place.
    """
    if spec.get("source") != "synth":
        raise ValueError(f"dataset spec has source {spec.get('source')!r}, expected 'synth'")
    module = importlib.import_module(GENERATORS[spec["format"]])
    with atomic_dir(out) as tmp:
        counts = module.generate(spec, tmp)
        # The generated folder must pass the same validator a downloaded dataset does.
        report = validate(spec["format"], tmp)
        if not report.ok:
            problems = "; ".join(str(p).replace(str(tmp), str(out)) for p in report.problems[:5])
            raise RuntimeError(f"{out}: generated dataset failed validation: {problems}")
        write_json(
            tmp / MANIFEST,
            {
                "format": spec["format"],
                "source": "synth",
                "spec": spec,
                "counts": counts,
                "files_validated": report.files_checked,
                "content_digest": content_digest(tmp),
            },
        )
    return counts
