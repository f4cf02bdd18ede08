"""scripts/setup.sh and its patches: idempotent, and loud when a patch no longer applies."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import apply_patches  # noqa: E402


def test_second_setup_is_a_stamp_check():
    proc = subprocess.run(["bash", str(REPO / "scripts" / "setup.sh")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("setup: up to date")


def test_patches_apply_once_and_are_idempotent(tmp_path):
    (tmp_path / "setup.py").write_text("x = 1\nextra_compile_args['cxx'] = ['-std=c++17']\n")
    apply_patches.apply(tmp_path, apply_patches.MMCV_SOURCE)
    patched = (tmp_path / "setup.py").read_text()
    assert "-std=c++20" in patched and "-std=c++17" not in patched
    apply_patches.apply(tmp_path, apply_patches.MMCV_SOURCE)
    assert (tmp_path / "setup.py").read_text() == patched


def test_patch_that_no_longer_matches_fails_loudly(tmp_path):
    (tmp_path / "setup.py").write_text("extra_compile_args['cxx'] = ['-std=c++14']\n")
    with pytest.raises(SystemExit, match="patch does not apply"):
        apply_patches.apply(tmp_path, apply_patches.MMCV_SOURCE)


def test_installed_mmaction_carries_the_drn_patch():
    import mmaction.models.localizers as localizers

    assert "frozenbench: the 1.2.0 wheel ships without localizers/drn" in open(localizers.__file__).read()


SETUP = REPO / "scripts" / "setup.sh"


def run_setup(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "CUDA"}
    full_env.update(env or {})
    return subprocess.run(["bash", str(SETUP), *args], capture_output=True, text=True, timeout=60, env=full_env)


def test_the_stamp_names_the_options():
    stamps = {
        options: run_setup("--print-stamp", *options.split()).stdout.strip()
        for options in ["", "--cuda 12", "--system-torch", f"--offline {REPO}"]
    }
    assert stamps[""].endswith("options: torch=lock cuda13 packages=index")
    assert stamps["--cuda 12"].endswith("options: torch=lock cuda12 packages=index")
    assert "torch=system 2.14.1" in stamps["--system-torch"]  # the found torch's version, CUDA and commit
    assert stamps[f"--offline {REPO}"].endswith("packages=wheelhouse")
    assert len({stamp.split()[0] for stamp in stamps.values()}) == 1  # one inputs hash, four option sets
    assert run_setup("--print-stamp", env={"CUDA": "12"}).stdout == run_setup("--print-stamp", "--cuda", "12").stdout


def test_a_stamp_written_for_other_options_sets_up_again(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    env = {"FROZENBENCH_VENV": str(venv)}
    (venv / ".frozenbench-setup").write_text(run_setup("--print-stamp", env=env).stdout)
    assert run_setup(env=env).stdout.startswith("setup: up to date")
    # other options: past the stamp, into the work (which stops at once on the empty wheelhouse)
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_setup("--cuda", "12", "--offline", str(empty), env=env)
    assert "up to date" not in proc.stdout
    assert proc.returncode == 1 and f"--offline {empty} lacks SHA256SUMS" in proc.stderr


def fake_wheelhouse(folder: Path, python_version: str = "3.11", torch_stack: str = "none") -> Path:
    folder.mkdir()
    (folder / "WHEELHOUSE.txt").write_text(
        f"python-version: {python_version}\ntorch-stack: {torch_stack}\nfiles: 2\nsize-mb: 0\n"
    )
    (folder / "mmcv-2.1.0.tar.gz").write_bytes(b"not the sdist")
    (folder / "six-1.17.0-py2.py3-none-any.whl").write_bytes(b"wheel")
    subprocess.run("sha256sum -- * > SHA256SUMS", shell=True, cwd=folder, check=True)
    return folder


@pytest.mark.parametrize(
    "python_version, torch_stack, options, message",
    [
        ("3.11", "none", [], "holds torch stack 'none', this setup installs the CUDA 13 one: use --system-torch"),
        ("3.11", "cuda13", ["--cuda", "12"], "holds torch stack 'cuda13', this setup installs the CUDA 12 one"),
        ("3.9", "none", ["--system-torch"], "is for Python 3.9, python3.11 is 3.11"),
    ],
)
def test_offline_refuses_a_wheelhouse_made_for_something_else(tmp_path, python_version, torch_stack, options, message):
    wheelhouse = fake_wheelhouse(tmp_path / "wh", python_version, torch_stack)
    proc = run_setup("--offline", str(wheelhouse), *options, env={"FROZENBENCH_VENV": str(tmp_path / "venv")})
    assert proc.returncode == 1 and message in proc.stderr, proc.stderr
    assert not (tmp_path / "venv").exists()  # refused before anything was created


def test_offline_refuses_a_wheelhouse_whose_files_do_not_match_its_sums(tmp_path):
    wheelhouse = fake_wheelhouse(tmp_path / "wh")
    (wheelhouse / "six-1.17.0-py2.py3-none-any.whl").write_bytes(b"truncated")
    proc = run_setup("--offline", str(wheelhouse), "--system-torch", env={"FROZENBENCH_VENV": str(tmp_path / "venv")})
    assert proc.returncode == 1
    assert "SHA256SUMS does not match the files" in proc.stderr and "six-1.17.0" in proc.stderr


@pytest.mark.parametrize(
    "driver, options, returncode, says",
    [
        ("535.104.05", [], 1, "WARNING: NVIDIA driver 535.104.05 is older than 580.65.06"),
        ("535.104.05", ["--cuda", "12"], 0, "NVIDIA driver 535.104.05 >= 525.60.13"),
        ("580.65.06", [], 0, "NVIDIA driver 580.65.06 >= 580.65.06"),
        ("470.57.02", ["--cuda", "12"], 1, "older than 525.60.13, which the CUDA 12 torch build needs"),
    ],
)
def test_driver_check_compares_nvidia_smi_with_the_builds_minimum(tmp_path, driver, options, returncode, says):
    nvidia_smi = tmp_path / "nvidia-smi"
    nvidia_smi.write_text(f"#!/bin/sh\necho {driver}\necho {driver}\n")  # one line per GPU
    nvidia_smi.chmod(0o755)
    proc = run_setup("--check-driver", *options, env={"PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"})
    assert proc.returncode == returncode
    assert says in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "args, env, message",
    [
        (["--cuda", "11"], {}, "--cuda must be 13 or 12, got '11'"),
        ([], {"CUDA": "cu130"}, "CUDA must be 13 or 12, got 'cu130'"),
        (["--system-torch", "--cuda", "12"], {}, "--cuda and --system-torch exclude each other"),
        (["--offline"], {}, "--offline needs the wheelhouse folder"),
        (["--offline", "/nonexistent/wheels"], {}, "--offline /nonexistent/wheels: no such folder"),
        (["--wheelhouse"], {}, "unknown option '--wheelhouse'"),
    ],
)
def test_bad_options_fail_naming_the_option(args, env, message):
    proc = run_setup(*args, env=env)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_wheelhouse_refuses_to_replace_a_folder_that_is_not_one(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "wheelhouse.sh"), "--dest", str(tmp_path)], capture_output=True, text=True
    )
    assert proc.returncode == 1 and "not empty and holds no WHEELHOUSE.txt" in proc.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_system_torch_refuses_a_venv_made_without_system_site_packages(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    (venv / "pyvenv.cfg").write_text("include-system-site-packages = false\n")
    wheelhouse = fake_wheelhouse(tmp_path / "wh")
    proc = run_setup("--offline", str(wheelhouse), "--system-torch", env={"FROZENBENCH_VENV": str(venv)})
    assert proc.returncode == 1
    assert f"{venv} was created without --system-site-packages, so it cannot see the system's torch" in proc.stderr


def test_system_torch_names_the_python_that_has_no_torch(tmp_path):
    """The base interpreter of this venv has no torch: setup says so instead of installing one."""
    probe = [sys._base_executable, "-c", "import importlib.util as u; raise SystemExit(u.find_spec('torch') is None)"]
    if subprocess.run(probe).returncode == 0:
        pytest.skip(f"{sys._base_executable} has a torch of its own")
    wheelhouse = fake_wheelhouse(tmp_path / "wh")
    env = {"FROZENBENCH_VENV": str(tmp_path / "venv"), "PYTHON": sys._base_executable}
    proc = run_setup("--offline", str(wheelhouse), "--system-torch", env=env)
    assert proc.returncode == 1
    assert "setup: --system-torch: No module named 'torch'" in proc.stderr
    assert "load the site's torch module" in proc.stderr
