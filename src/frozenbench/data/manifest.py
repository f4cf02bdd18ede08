"""A dataset's content digest: what a training run's fingerprint holds instead of the dataset's path.

Computed once when the dataset is built (synthesized or prepared) and stored in its
``frozenbench_dataset.json``; a rebuilt dataset with other content gets another digest, so
the heads trained on the old content are never reloaded as if they were trained on the new.
The digest covers every file's relative path and size, and the full bytes of the annotation
files (json / csv / txt, and everything under an ``annotations`` folder, e.g. ADE's label maps).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

MANIFEST = "frozenbench_dataset.json"
ANNOTATION_SUFFIXES = {".json", ".csv", ".txt"}


def _is_annotation(rel: Path) -> bool:
    return rel.suffix.lower() in ANNOTATION_SUFFIXES or "annotations" in rel.parts[:-1]


def content_digest(root: str | Path) -> str:
    """sha256 over the sorted file list (path, size) and the annotation files' bytes of ``root``."""
    root = Path(root)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        rel = path.relative_to(root)
        if rel.as_posix() == MANIFEST or any(part.startswith(".") for part in rel.parts):
            continue
        digest.update(f"{rel.as_posix()}\0{path.stat().st_size}\0".encode())
        if _is_annotation(rel):
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
    return digest.hexdigest()


def dataset_digest(root: str | Path) -> str:
    """The digest recorded when ``root`` was built; computed now for a dataset that has none
    (one made by hand)."""
    root = Path(root)
    try:
        recorded = json.loads((root / MANIFEST).read_text()).get("content_digest")
    except (OSError, json.JSONDecodeError, AttributeError):
        recorded = None
    return recorded or content_digest(root)
