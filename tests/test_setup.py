"""scripts/setup.sh and its patches: idempotent, and loud when a patch no longer applies."""

from __future__ import annotations

import subprocess
import sys

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
