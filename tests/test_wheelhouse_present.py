"""`scripts/wheelhouse.sh --node --present FILE` (docs/gpu-node.md): the packages a node already has
are left out of its wheelhouse, with whatever only they need, and each one the walk reached gets a
from-node line in WHEELHOUSE.txt. No network and no real wheel: the script runs from a copy of the
repository's scripts on a fake project (its own lock, node.txt, openmmlab.txt) and cuts the node
subset with --from out of a fake full wheelhouse of metadata-only wheels.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .conftest import REPO

PYTHON_VERSION = f"{sys.version_info[0]}.{sys.version_info[1]}"
PLATFORM = "manylinux_2_28_x86_64"
# The fake project's dependency graph: name -> (version, what its wheel declares).
WHEELS = {
    "alpha": ("1.0", ["gamma>=1", "six"]),
    "beta": ("3.1", ["zeta"]),
    "gamma": ("2.0", ["epsilon"]),  # on the node: epsilon is reached only through it
    "epsilon": ("0.5", []),
    "zeta": ("1.2", []),
    "six": ("1.17.0", []),
    "mmengine": ("0.10.7", ["opencv-python>=3", "numpy"]),
    "opencv-python": ("5.0.0.93", ["numpy>=2"]),
    "numpy": ("1.26.4", []),
    "mmdet": ("3.3.0", ["mmcv<2.2.0,>=2.0.0rc4"]),
    "snakemake": ("9.0.0", ["alpha"]),  # the workflow: never on a node
    "setuptools": ("80.0.0", []),
    "wheel": ("0.45.0", []),
}
NODE_TXT = "alpha\nbeta\nmmengine==0.10.7\nsetuptools<81\n"
OPENMMLAB_TXT = "# installed with --no-deps\nmmdet==3.3.0\n"
# What the node reports, in every form the option reads: pip freeze, pip list (with its two
# header lines), a bare name, a comment.
PRESENT_TXT = """# pip list of the fake node
Package                 Version
----------------------- ---------
opencv-python-headless  4.9.0.80
gamma==1.0
numpy
mmengine==0.9.0
unrelated==1.0
torch==2.11.0
"""


def _sha256_record(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _fake_wheel(folder: Path, name: str, version: str, requires: list[str]) -> None:
    """A valid, empty wheel: dist-info only, whose METADATA declares `requires`."""
    stem = f"{name.replace('-', '_')}-{version}"
    files = {
        f"{stem}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
            + "".join(f"Requires-Dist: {req}\n" for req in requires)
            + "\n"
        ).encode(),
        f"{stem}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{path},{_sha256_record(data)},{len(data)}\n" for path, data in files.items())
    files[f"{stem}.dist-info/RECORD"] = (record + f"{stem}.dist-info/RECORD,,\n").encode()
    with zipfile.ZipFile(folder / f"{stem}-py3-none-any.whl", "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)


@pytest.fixture
def fake_project(tmp_path: Path) -> Path:
    """A project root holding the real scripts and fake requirements, and a full wheelhouse of
    fake wheels beside it (`full/`) that --from accepts for that project."""
    root = tmp_path / "project"
    (root / "scripts").mkdir(parents=True)
    (root / "requirements").mkdir()
    (root / "scripts" / "wheelhouse.sh").write_text((REPO / "scripts" / "wheelhouse.sh").read_text())
    pinned = {name: version for name, (version, _) in WHEELS.items() if name not in ("setuptools", "wheel")}
    lock = "".join(f"{name}=={version}\n" for name, version in pinned.items())
    (root / "requirements" / "lock.txt").write_text(lock)
    (root / "requirements" / "node.txt").write_text(NODE_TXT)
    (root / "requirements" / "openmmlab.txt").write_text(OPENMMLAB_TXT)
    full = tmp_path / "full"
    full.mkdir()
    for name, (version, requires) in WHEELS.items():
        _fake_wheel(full, name, version, requires)
    # mmcv's sdist stands in as any file: the copied setup.sh pins its checksum (wheelhouse.sh reads it)
    sdist = full / "mmcv-2.1.0.tar.gz"
    sdist.write_bytes(b"not mmcv, a stand-in for its sdist\n")
    setup = (REPO / "scripts" / "setup.sh").read_text().splitlines()
    setup = [
        f"MMCV_SDIST_SHA256={hashlib.sha256(sdist.read_bytes()).hexdigest()}"
        if line.startswith("MMCV_SDIST_SHA256=")
        else line
        for line in setup
    ]
    (root / "scripts" / "setup.sh").write_text("\n".join(setup) + "\n")
    lock_sha = hashlib.sha256(lock.encode()).hexdigest()
    (full / "WHEELHOUSE.txt").write_text(
        f"python-version: {PYTHON_VERSION}\nplatform: {PLATFORM}\ntorch-stack: none\nlock-sha256: {lock_sha}\n"
        "subset: full\n"
    )
    sums = "".join(f"{hashlib.sha256(f.read_bytes()).hexdigest()}  {f.name}\n" for f in sorted(full.iterdir()))
    (full / "SHA256SUMS").write_text(sums)
    return root


def _cut(root: Path, dest: Path, *extra: str) -> subprocess.CompletedProcess:
    command = ["bash", str(root / "scripts" / "wheelhouse.sh"), "--node", "--from", str(root.parent / "full")]
    command += ["--dest", str(dest), "--python-version", PYTHON_VERSION, "--platform", PLATFORM, *extra]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(root.parent), "PYTHON": sys.executable, "PIP_CONFIG_FILE": "/dev/null"}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


def _wheel_names(folder: Path) -> set[str]:
    return {f.name.split("-", 1)[0].replace("_", "-") for f in folder.glob("*.whl")}


def test_present_packages_and_what_only_they_need_are_left_out(fake_project: Path, tmp_path: Path):
    present = tmp_path / "node-present.txt"
    present.write_text(PRESENT_TXT)
    plain = _cut(fake_project, tmp_path / "node")
    assert plain.returncode == 0, plain.stdout + plain.stderr
    lean = _cut(fake_project, tmp_path / "lean", "--present", str(present))
    assert lean.returncode == 0, lean.stdout + lean.stderr

    full_node = _wheel_names(tmp_path / "node")
    assert "snakemake" not in full_node and "gamma" in full_node  # the --node cut itself
    # gamma and numpy are listed, opencv-python is provided by the node's headless build, and
    # epsilon is reached only through gamma; mmengine is listed too but always shipped (patched).
    assert full_node - _wheel_names(tmp_path / "lean") == {"gamma", "epsilon", "numpy", "opencv-python"}
    shipped = {"alpha", "beta", "zeta", "six", "mmengine", "mmdet", "setuptools", "wheel"}
    assert _wheel_names(tmp_path / "lean") == shipped
    assert (tmp_path / "lean" / "mmcv-2.1.0.tar.gz").is_file()

    info = (tmp_path / "lean" / "WHEELHOUSE.txt").read_text().splitlines()
    from_node = sorted(line for line in info if line.startswith("from-node: "))
    assert from_node == [
        "from-node: gamma: kept from the node at 1.0, pinned 2.0"
        " (another version: setup.sh reports the requirements it leaves unmet)",
        "from-node: numpy: kept from the node at a version the list does not give, pinned 1.26.4",
        "from-node: opencv-python: kept from the node as opencv-python-headless at 4.9.0.80, pinned 5.0.0.93"
        " (another version: setup.sh reports the requirements it leaves unmet)",
    ]
    present_sha = hashlib.sha256(present.read_bytes()).hexdigest()
    assert f"present-list: node-present.txt (sha256 {present_sha}): 3 packages from the node" in info
    assert "subset: node" in info
    assert not [line for line in (tmp_path / "node" / "WHEELHOUSE.txt").read_text().splitlines() if "from-node" in line]
    assert "shipped all the same (pinned and patched here): mmengine" in lean.stdout
    # the files listed are the files there, checksums and all
    check = subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=tmp_path / "lean", capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert {line.split()[1] for line in (tmp_path / "lean" / "SHA256SUMS").read_text().splitlines()} == {
        f.name for f in (tmp_path / "lean").iterdir() if f.name != "SHA256SUMS"
    }


def test_an_unreadable_present_line_is_named_with_its_file_and_line(fake_project: Path, tmp_path: Path):
    present = tmp_path / "freeze.txt"
    present.write_text("numpy==2.5.2\nscipy == not-a-version\n")
    proc = _cut(fake_project, tmp_path / "lean", "--present", str(present))
    assert proc.returncode != 0
    assert f"--present {present}, line 2: cannot read 'scipy == not-a-version'" in proc.stderr
    assert not (tmp_path / "lean").exists() and not (tmp_path / "lean.partial").exists()


def test_present_needs_node_and_an_existing_file(fake_project: Path, tmp_path: Path):
    script = str(fake_project / "scripts" / "wheelhouse.sh")
    proc = subprocess.run(["bash", script, "--present", str(tmp_path / "x")], capture_output=True, text=True)
    assert proc.returncode == 2 and "add --node" in proc.stderr
    proc = subprocess.run(["bash", script, "--node", "--present", str(tmp_path / "x")], capture_output=True, text=True)
    assert proc.returncode == 2 and f"--present {tmp_path / 'x'}: no such file" in proc.stderr
