"""Source patches that the pinned OpenMMLab stack needs on torch 2.14 (see docs/measurements.md).

Each patch is an exact text substitution that must match once; a patch that no
longer matches fails loudly instead of silently building an unpatched package.
Already-patched files are left alone, so running this twice is harmless.

Usage:
    python scripts/apply_patches.py mmcv-source DIR        # before building the mmcv wheel
    python scripts/apply_patches.py site-packages DIR      # after installing mmaction2
"""

from __future__ import annotations

import sys
from pathlib import Path

# (relative path, original text, replacement, why)
MMCV_SOURCE = [
    (
        "setup.py",
        "extra_compile_args['cxx'] = ['-std=c++17']",
        "extra_compile_args['cxx'] = ['-std=c++20']",
        "torch 2.14 headers refuse to compile below C++20",
    ),
]

SITE_PACKAGES = [
    (
        "mmaction/models/localizers/__init__.py",
        "from .drn.drn import DRN\n",
        "try:  # frozenbench: the 1.2.0 wheel ships without localizers/drn\n"
        "    from .drn.drn import DRN\n"
        "except ImportError:\n"
        "    DRN = None\n",
        "mmaction2 1.2.0 lacks mmaction/models/localizers/drn, so `import mmaction.models` fails",
    ),
]


def apply(root: Path, patches: list[tuple[str, str, str, str]]) -> None:
    for rel, old, new, why in patches:
        path = root / rel
        text = path.read_text()
        if new in text:
            print(f"already patched: {path}")
            continue
        count = text.count(old)
        if count != 1:
            raise SystemExit(f"patch does not apply to {path}: expected 1 match of {old!r}, found {count} ({why})")
        path.write_text(text.replace(old, new))
        print(f"patched: {path} ({why})")


def main(argv: list[str]) -> None:
    if len(argv) != 2 or argv[0] not in {"mmcv-source", "site-packages"}:
        raise SystemExit(__doc__)
    patches = MMCV_SOURCE if argv[0] == "mmcv-source" else SITE_PACKAGES
    apply(Path(argv[1]), patches)


if __name__ == "__main__":
    main(sys.argv[1:])
