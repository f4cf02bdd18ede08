"""The offline install of docs/install.md, as a GPU node without network would run it.

A wheelhouse is built here (scripts/wheelhouse.sh, with network), then everything else runs in a
network namespace with no network at all (`unshare -m -n`): `scripts/setup.sh --offline
<wheelhouse> --system-torch` into a fresh venv, `frozenbench --help` and a tiny frozen training
cell in it. The base interpreter plays a container that ships torch: inside the namespace an
overlay on its site-packages adds one `.pth` naming a folder that holds torch, torchvision and
their dependencies (links into this venv's copies), so nothing is installed into it for good.
The local package mirrors of this machine are hidden in the namespace and pip reads no config,
so only the wheelhouse can serve a package. mmcv's wheel comes from the cache
(~/.cache/frozenbench/wheels) under the key of that same torch; without it the test skips,
as compiling it here takes ~12 minutes.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest

from .conftest import REPO, video_cell

pytestmark = pytest.mark.slow

# The interpreter this venv was made from (pyenv's 3.11 here): the rehearsed container's python.
BASE_PYTHON = Path(sys._base_executable)
# What `pip install -e` needs besides the sources, and what setup.sh reads.
PROJECT_FILES = ["scripts", "requirements", "src", "pyproject.toml", "README.md"]


def _base_site_packages() -> Path:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return Path(subprocess.run([BASE_PYTHON, "-c", code], capture_output=True, text=True, check=True).stdout.strip())


def _base_distributions() -> set[str]:
    code = "from importlib import metadata; print('\\n'.join(d.metadata['Name'] for d in metadata.distributions()))"
    out = subprocess.run([BASE_PYTHON, "-I", "-c", code], capture_output=True, text=True, check=True).stdout
    return {_canonical(name) for name in out.split()}


def _canonical(name: str) -> str:
    from packaging.utils import canonicalize_name

    return canonicalize_name(name)


def _torch_closure() -> list[metadata.Distribution]:
    """torch, torchvision and what they need (extras followed), as installed in this venv."""
    from packaging.requirements import Requirement

    found: dict[str, metadata.Distribution] = {}
    seen: set[tuple[str, tuple[str, ...]]] = set()
    todo: list[tuple[str, tuple[str, ...]]] = [("torch", ()), ("torchvision", ())]
    while todo:
        name, extras = todo.pop()
        if (_canonical(name), extras) in seen:
            continue
        seen.add((_canonical(name), extras))
        dist = metadata.distribution(name)
        found[_canonical(name)] = dist
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in ("", *extras)):
                todo.append((req.name, tuple(sorted(req.extras))))
    return list(found.values())


def _container_torch(folder: Path) -> list[str]:
    """A folder holding torch, torchvision and those of their dependencies the base interpreter
    lacks (as a container has each package once), as links into this venv; returns their names."""
    folder.mkdir()
    in_base = _base_distributions()
    added = []
    for dist in _torch_closure():
        name = _canonical(dist.metadata["Name"])
        if name in in_base:
            continue
        added.append(name)
        site = Path(dist.locate_file(""))
        tops = {f.parts[0] for f in dist.files or [] if f.parts[0] not in ("..", "__pycache__")}
        for top in tops:
            link = folder / top
            if not link.exists() and (site / top).exists():
                link.symlink_to(site / top)
    return sorted(added)


def _local_mirrors() -> list[Path]:
    """Folders this machine's pip config and PIP_* variables point at (find-links, file:// indexes)."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    ).stdout
    values = [line.split("=", 1)[1].strip("'\" ") for line in out.splitlines() if "=" in line]
    values += [os.environ.get(key, "") for key in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL")]
    folders = []
    for value in values:
        for item in value.split():
            path = Path(item.removeprefix("file://"))
            if path.is_absolute() and path.is_dir() and path not in folders:
                folders.append(path)
    return folders


def _namespaces_work(tmp_path: Path) -> str | None:
    """None when an unshared mount + network namespace with an overlay mount works here, else why not."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return "needs root and unshare(1) for a network namespace and an overlay mount"
    for sub in ("lower", "upper", "work", "merged"):
        (tmp_path / "probe" / sub).mkdir(parents=True)
    probe = tmp_path / "probe"
    mount = f"mount -t overlay overlay -o lowerdir={probe}/lower,upperdir={probe}/upper,workdir={probe}/work"
    proc = subprocess.run(
        ["unshare", "-m", "-n", "sh", "-c", f"{mount} {probe}/merged"], capture_output=True, text=True
    )
    shutil.rmtree(probe)
    return None if proc.returncode == 0 else f"unshare -m -n with an overlay mount fails here: {proc.stderr.strip()}"


def test_offline_system_torch_install_trains_a_frozen_cell(tmp_path, wheelhouse):
    why_not = _namespaces_work(tmp_path)
    if why_not:
        pytest.skip(why_not)

    # 1. The wheelhouse, with network (conftest's session fixture; pip's wheel cache serves the
    # sdists built before).
    names = os.listdir(wheelhouse)
    assert "mmcv-2.1.0.tar.gz" in names and "SHA256SUMS" in names
    assert not [n for n in names if n.startswith(("torch-", "torchvision-", "nvidia_", "triton-"))], names
    assert not [n for n in names if n.endswith((".tar.gz", ".zip")) and not n.startswith("mmcv-")], names

    # 2. The rehearsed container: the project copied (its editable install must not touch the
    # checkout), torch visible to the base interpreter only inside the namespace.
    project = tmp_path / "project"
    project.mkdir()
    for name in PROJECT_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, project / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, project / name)
    container_torch = tmp_path / "container-torch"
    added = _container_torch(container_torch)
    assert "torch" in added and "torchvision" in added
    overlay = tmp_path / "overlay"
    (overlay / "upper").mkdir(parents=True)
    (overlay / "work").mkdir()
    (overlay / "upper" / "zz-container-torch.pth").write_text(f"{container_torch}\n")
    site = _base_site_packages()

    spec, checkpoint = video_cell(tmp_path, steps=3, checkpoint_every=3)
    venv = tmp_path / "venv"
    run_dir = tmp_path / "run"
    hide = "\n".join(f"mount -t tmpfs tmpfs {shlex.quote(str(path))}" for path in _local_mirrors())
    script = tmp_path / "offline.sh"
    script.write_text(
        f"""set -euo pipefail
mount -t overlay overlay -o lowerdir={site},upperdir={overlay}/upper,workdir={overlay}/work {site}
{hide}
# no network at all: not even the loopback is up, and PyPI is out of reach
if {BASE_PYTHON} -m pip download -q --retries 0 --timeout 5 --no-deps -d {tmp_path}/probe six 2>/dev/null; then
    echo "NETWORK REACHABLE"; exit 90
fi
{BASE_PYTHON} -c 'import torch; print("container torch:", torch.__version__, torch.__file__)'
start=$SECONDS
FROZENBENCH_VENV={venv} PYTHON={BASE_PYTHON} bash {project}/scripts/setup.sh \\
    --offline {wheelhouse} --system-torch --no-mmcv-build
echo "offline setup took $((SECONDS - start))s"
{venv}/bin/frozenbench --help
{venv}/bin/python -c 'import torch, mmcv.ops; print("venv torch:", torch.__file__)'
OMP_NUM_THREADS=1 {venv}/bin/frozenbench train --spec {shlex.quote(spec)} --checkpoint {checkpoint} \\
    --mode frozen --run-dir {run_dir} --threads 1
"""
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k != "VIRTUAL_ENV"}
    env["PIP_CONFIG_FILE"] = os.devnull
    # the test venv's bin stays off PATH: the new venv must stand on its own
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if Path(p) != Path(sys.executable).parent)
    started = time.monotonic()
    proc = subprocess.run(
        ["unshare", "-m", "-n", "bash", str(script)], capture_output=True, text=True, timeout=900, env=env
    )
    output = proc.stdout + proc.stderr
    setup_lines = [line for line in output.splitlines() if line.startswith(("setup:", "offline setup took"))]
    print("\n".join(setup_lines), f"\nnamespace part (setup, --help, 3-step cell): {time.monotonic() - started:.0f}s")
    assert "NETWORK REACHABLE" not in output
    if proc.returncode == 3 and "no cached mmcv wheel for this torch" in output:
        pytest.skip(next(line for line in output.splitlines() if "no cached mmcv wheel" in line))
    assert proc.returncode == 0, output[-6000:]

    assert "setup: done in" in output
    assert "usage: frozenbench" in output
    venv_torch = next(line for line in output.splitlines() if line.startswith("venv torch:"))
    assert str(container_torch) in venv_torch  # the container's torch, not one pip installed
    assert not list((venv / "lib").glob("python3.*/site-packages/torch"))
    assert (run_dir / "done.json").exists()
    steps = [json.loads(line)["step"] for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
