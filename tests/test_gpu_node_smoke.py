"""The one command of a bare GPU node (scripts/gpu-node-smoke.sh; docs/gpu-node.md), rehearsed on
the CPU as a node would run it: no network at all, a Python that has only torch, a copy of the
repository and a node wheelhouse.

The full wheelhouse comes from the session fixture that tests/test_install.py uses too (one
download per test session); `scripts/wheelhouse.sh --node --from` cuts the node subset from it.
Inside `unshare -m -n` the base interpreter plays the node's Python with torch, as in
test_install.py (an overlay adds a `.pth` naming torch and torchvision), and the script runs
with DEVICE=cpu and one cell kind of bench/gpu_smoke.py. mmcv's wheel must be cached for that
torch (FROZENBENCH_NO_MMCV_BUILD=1): without it the test skips rather than compile ~12 minutes.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from .conftest import REPO
from .test_install import BASE_PYTHON, _base_site_packages, _container_torch, _local_mirrors, _namespaces_work

pytestmark = pytest.mark.slow

# The cheapest row of bench/gpu_smoke.py on the CPU: the frozen temporal head on short clips.
CELL, MODE = "k400_temporal", "frozen"
# What a node never imports, so a node wheelhouse must not carry it (requirements/node.txt).
NOT_ON_A_NODE = ("snakemake", "dvc", "pytest", "ruff", "snakefmt", "pulp", "pandas")
# The node's own torch build (setup.sh --system-torch), which the node wheelhouse leaves out.
FROM_THE_NODE = ("torch", "torchvision", "triton", "nvidia-", "cuda-")


def _wheel_names(folder: Path) -> set[str]:
    return {name.split("-", 1)[0].lower().replace("_", "-") for name in os.listdir(folder) if name.endswith(".whl")}


def _repository_copy(dest: Path) -> int:
    """What would be copied to a node: every file git tracks or would commit (not ignored), as
    they are in the working tree; returns its size in bytes."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    archive = dest.parent / "repository.tar"
    with tarfile.open(archive, "w") as tar:
        for name in sorted(set(filter(None, listed.split("\0")))):
            if (REPO / name).is_file():
                tar.add(REPO / name, arcname=name)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="tar")
    size = archive.stat().st_size
    archive.unlink()
    return size


def test_gpu_node_smoke_on_a_bare_python_without_network(tmp_path, wheelhouse):
    why_not = _namespaces_work(tmp_path)
    if why_not:
        pytest.skip(why_not)

    # 1. The node's wheelhouse, cut from the session's full one (no download).
    node_wheelhouse = tmp_path / "node-wheelhouse"
    started = time.monotonic()
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "wheelhouse.sh"), "--node", "--from", str(wheelhouse)]
        + ["--dest", str(node_wheelhouse)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "nothing downloaded" in proc.stdout
    cut_s = time.monotonic() - started
    info = (node_wheelhouse / "WHEELHOUSE.txt").read_text()
    assert "subset: node" in info
    names = _wheel_names(node_wheelhouse)
    assert {"mmengine", "mmdet", "mmsegmentation", "mmaction2", "timm", "opencv-python", "av"} <= names
    assert (node_wheelhouse / "mmcv-2.1.0.tar.gz").is_file()
    assert not [n for n in names if n.startswith(NOT_ON_A_NODE + FROM_THE_NODE)], sorted(names)
    node_mb = sum(f.stat().st_size for f in node_wheelhouse.iterdir()) / 2**20
    full_mb = sum(f.stat().st_size for f in wheelhouse.iterdir()) / 2**20
    assert node_mb < 0.8 * full_mb, (node_mb, full_mb)

    # 2. The node: a copy of the repository, and a Python whose torch only the namespace shows.
    project = tmp_path / "project"
    repository_mb = _repository_copy(project) / 2**20
    assert repository_mb < 16, f"the repository copy is {repository_mb:.1f} MiB: it no longer copies in a blink"
    assert not (project / "bench" / "records" / "gpu_cpu.json").exists()
    container_torch = tmp_path / "container-torch"
    assert {"torch", "torchvision"} <= set(_container_torch(container_torch))
    overlay = tmp_path / "overlay"
    (overlay / "upper").mkdir(parents=True)
    (overlay / "work").mkdir()
    (overlay / "upper" / "zz-container-torch.pth").write_text(f"{container_torch}\n")
    site = _base_site_packages()
    hide = "\n".join(f"mount -t tmpfs tmpfs {shlex.quote(str(path))}" for path in _local_mirrors())
    script = tmp_path / "node.sh"
    script.write_text(
        f"""set -euo pipefail
mount -t overlay overlay -o lowerdir={site},upperdir={overlay}/upper,workdir={overlay}/work {site}
{hide}
# a node without network still has its loopback (the smoke's ranks meet there); nothing else is up
ip link set lo up
if {BASE_PYTHON} -m pip download -q --retries 0 --timeout 5 --no-deps -d {tmp_path}/probe six 2>/dev/null; then
    echo "NETWORK REACHABLE"; exit 90
fi
echo "network refused: pip could not reach PyPI"
cd {project}
DEVICE=cpu SMOKE_CELLS={CELL}:{MODE} PYTHON={BASE_PYTHON} FROZENBENCH_NO_MMCV_BUILD=1 \\
    bash scripts/gpu-node-smoke.sh {node_wheelhouse}
"""
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "FROZENBENCH_VENV")) and k != "VIRTUAL_ENV"}
    env["PIP_CONFIG_FILE"] = os.devnull
    # the test venv's bin stays off PATH: the node has only its own Python
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if Path(p) != Path(sys.executable).parent)
    started = time.monotonic()
    proc = subprocess.run(
        ["unshare", "-m", "-n", "bash", str(script)], capture_output=True, text=True, timeout=900, env=env
    )
    node_s = time.monotonic() - started
    output = proc.stdout + proc.stderr
    print("\n".join(line for line in output.splitlines() if line.startswith(("gpu-node-smoke:", "setup:", "  "))))
    print(
        f"node wheelhouse {node_mb:.0f} MiB of {full_mb:.0f} cut in {cut_s:.0f}s; repository {repository_mb:.1f} MiB;"
        f" the script in the namespace {node_s:.0f}s"
    )
    assert "NETWORK REACHABLE" not in output and "network refused" in output
    if proc.returncode == 3 and "no cached mmcv wheel for this torch" in output:
        pytest.skip(next(line for line in output.splitlines() if "no cached mmcv wheel" in line))
    assert proc.returncode == 0, output[-6000:]

    # 3. Every step ran, in order, and the record is there to commit.
    steps = [
        line.split(" ", 2)[1] for line in output.splitlines() if line.startswith("gpu-node-smoke: ") and "/4 " in line
    ]
    assert steps == ["1/4", "2/4", "3/4", "4/4"], steps
    # a fresh venv: setup's import check ran the routed ops on the CPU, and step 2 relies on it
    assert "setup: done in" in output and "setup: mmcv ops on cpu: {'nms'" in output
    assert "gpu-node-smoke: checked by setup's import check above" in output
    assert f"--cells {CELL}:{MODE}" in output
    record_path = project / "bench" / "records" / "gpu_cpu.json"
    assert f"gpu-node-smoke: record: {record_path}" in output
    assert "commit it: git add bench/records/gpu_cpu.json && git commit" in output
    record = json.loads(record_path.read_text())
    rows = record["cells"]
    assert [(row["cell"], row["mode"]) for row in rows] == [(CELL, MODE)]
    assert rows[0]["status"] == "ok" and rows[0]["seconds_per_step"] > 0, rows
    assert not record["failures"]
    assert f"{CELL:<24} {MODE:<10} ok" in output  # the script's summary line of that row
    node_run = record["node_run"]
    assert node_run["python"].startswith(f"{sys.version_info[0]}.{sys.version_info[1]}.")
    assert 0 < node_run["install_s"] <= node_run["install_and_check_s"] < node_s
    # the smoke got what the install left of the 10 minutes, less the margin
    assert node_run["smoke_budget_s"] == max(120, 600 - node_run["install_and_check_s"] - 60)
    # the venv's torch is the node's, not one pip installed
    assert not list((project / ".venv" / "lib").glob("python3.*/site-packages/torch"))
