"""No import circles anywhere in the package: its rooms (models/, checkpoint/, data/, engine/,
openmmlab/, tasks/, cells/, ...) depend on each other in one direction only.

A circle works until someone imports its modules in another order (then a name is missing from a
half-initialised module), and it hides which layer owns what: the engine once imported the
OpenMMLab adapter for its default model kind while the adapter imported the engine's model kinds.
The graph is built from the source, so an import inside a function counts as much as one at the
top of a module: both run, only later."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "frozenbench"


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, src: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports anywhere in its body, with the packages above
    them (importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` first)."""
    name = module_name(path, src)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package, one level up per extra dot
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            targets.add(module)
            # `from package import submodule` imports the submodule
            targets |= {f"{module}.{alias.name}" for alias in node.names if f"{module}.{alias.name}" in modules}
    # the packages around the importing module have started initialising before its first line
    # runs: a submodule's import needs no more of them (a name taken from one still does)
    own_packages = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    found = set()
    for target in targets:
        parts = target.split(".")
        found |= ({".".join(parts[:i]) for i in range(1, len(parts))} - own_packages) | {target}
    return (found & modules) - {name}


def import_graph(src: Path) -> dict[str, set[str]]:
    paths = {module_name(p, src): p for p in sorted((src / PACKAGE).rglob("*.py"))}
    modules = set(paths)
    return {name: imported_modules(path, src, modules) for name, path in paths.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def a_path(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One circle inside ``component``, as the import chain a reader can follow."""
    members = set(component)
    start = component[0]
    trail, seen = [start], {start}
    while True:
        successors = sorted(graph[trail[-1]] & members)
        if start in successors and len(trail) > 1:
            return [*trail, start]
        nxt = next((s for s in successors if s not in seen), None)
        if nxt is None:  # dead end inside the component: back up
            trail.pop()
            if not trail:
                return component
            continue
        trail.append(nxt)
        seen.add(nxt)


def test_the_package_imports_itself_without_circles():
    graph = import_graph(SRC)
    assert "frozenbench.engine.loop" in graph and graph["frozenbench.engine.loop"]  # the scan found the code
    found = circles(graph)
    assert not found, "import circles:\n" + "\n".join(" -> ".join(a_path(graph, c)) for c in found)


def write_package(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / PACKAGE / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_scan_sees_circles_through_function_level_relative_and_package_imports(tmp_path):
    src = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "engine/__init__.py": "",
            "engine/loop.py": "def train():\n    from frozenbench.openmmlab import runtime\n",
            "openmmlab/__init__.py": "from .runtime import collate\n",
            "openmmlab/runtime.py": "from ..engine.loop import train\n",
            "openmmlab/ops.py": "import frozenbench.engine\n",
            "tasks/__init__.py": "",
            "tasks/video.py": "import frozenbench.engine.loop\n",
        },
    )
    graph = import_graph(src)
    assert graph["frozenbench.engine.loop"] == {"frozenbench.openmmlab", "frozenbench.openmmlab.runtime"}
    assert graph["frozenbench.openmmlab.runtime"] == {"frozenbench.engine", "frozenbench.engine.loop"}
    assert graph["frozenbench.openmmlab.ops"] == {"frozenbench.engine"}  # a package's own __init__ counts
    assert circles(graph) == [
        ["frozenbench.engine.loop", "frozenbench.openmmlab", "frozenbench.openmmlab.runtime"],
    ]
    chain = a_path(graph, circles(graph)[0])
    assert chain[0] == chain[-1] and all(b in graph[a] for a, b in zip(chain, chain[1:]))


def test_a_one_way_chain_is_no_circle(tmp_path):
    src = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "engine/__init__.py": "",
            "engine/steppers.py": "import torch\n",
            "engine/loop.py": "from frozenbench.engine.steppers import LocalStepper\n",
            "openmmlab/__init__.py": "",
            "openmmlab/training.py": "def wrap():\n    from frozenbench.engine import device\n",
            "engine/device.py": "",
        },
    )
    assert circles(import_graph(src)) == []
