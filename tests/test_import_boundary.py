"""OpenMMLab lives behind one adapter: no module outside ``frozenbench.openmmlab`` imports it."""

from __future__ import annotations

import ast
from pathlib import Path

OPENMMLAB = ("mmdet", "mmseg", "mmaction", "mmengine", "mmcv")
SRC = Path(__file__).resolve().parents[1] / "src" / "frozenbench"


def imported_packages(path: Path) -> set[tuple[int, str]]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {(node.lineno, alias.name.split(".")[0]) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add((node.lineno, node.module.split(".")[0]))
    return found


def test_only_the_openmmlab_package_imports_openmmlab():
    offenders = [
        f"{path.relative_to(SRC)}:{line}: {package}"
        for path in sorted(SRC.rglob("*.py"))
        if "openmmlab" not in path.relative_to(SRC).parts
        for line, package in sorted(imported_packages(path))
        if package in OPENMMLAB
    ]
    assert not offenders, "\n".join(offenders)


def test_the_check_sees_imports_inside_functions(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from mmengine.dataset import pseudo_collate\n    import mmcv.ops\n")
    assert imported_packages(sample) == {(2, "mmengine"), (3, "mmcv")}
