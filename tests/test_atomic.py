"""Atomic outputs: a writer interrupted by an exception or by SIGKILL leaves no artifact under the
real name (and the previous version, if any, intact); a rerun writes the artifact."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from frozenbench.utils.atomic import TMP_MARKER, atomic_dir, atomic_file, remove_temporaries, remove_tree, write_json

from .conftest import VENV_BIN


def test_exception_inside_a_writer_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_file(tmp_path / "metrics.json") as tmp:
            tmp.write_text('{"half": ')
            raise RuntimeError("killed mid-write")
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "dataset") as tmp:
            (tmp / "train2017").mkdir()
            raise RuntimeError("killed mid-write")
    assert list(tmp_path.iterdir()) == []


def test_failed_rewrite_keeps_the_previous_version(tmp_path):
    write_json(tmp_path / "metrics.json", {"AP": 1.0})
    with pytest.raises(RuntimeError):
        with atomic_file(tmp_path / "metrics.json") as tmp:
            tmp.write_text("{")
            raise RuntimeError
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"AP": 1.0}


WRITER = """
import sys, time
from pathlib import Path
from frozenbench.utils.atomic import atomic_dir, atomic_file
kind, target = sys.argv[1], Path(sys.argv[2])
ctx = atomic_dir(target) if kind == "dir" else atomic_file(target)
with ctx as tmp:
    f = open(tmp / "part.bin" if kind == "dir" else tmp, "wb")
    f.write(b"x" * 1000); f.flush()
    print("writing", flush=True)
    time.sleep(60)
"""


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_sigkilled_writer_leaves_no_artifact_and_a_rerun_writes_it(tmp_path, kind):
    target = tmp_path / ("checkpoint.pth" if kind == "file" else "shapes-coco")
    proc = subprocess.Popen([sys.executable, "-c", WRITER, kind, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not target.exists()
    # what remains is a hidden temporary sibling, which no rule declares as an output
    assert all(p.name.startswith(f".{target.name}.tmp-") for p in tmp_path.iterdir())


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_killed_synth_leaves_no_dataset_then_completes(tmp_path, signum):
    """SIGKILL skips every cleanup: the temporary folder stays until the next start of the job
    collects it. SIGTERM (Slurm's time limit) runs the cleanup: nothing stays, exit status 143."""
    from .test_synth import tiny_spec

    spec = tiny_spec("shapes-coco", num_train=400, image_size=128)
    out = tmp_path / "shapes-coco"
    cmd = [str(VENV_BIN / "frozenbench"), "synth", "--spec", json.dumps(spec), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def temporaries():
        return [p for p in tmp_path.iterdir() if p.name.startswith(".shapes-coco.tmp-")]

    deadline = time.time() + 60
    while time.time() < deadline and not temporaries():
        time.sleep(0.05)
    time.sleep(0.5)  # mid-way through the images
    os.kill(proc.pid, signum)
    _, stderr = proc.communicate(timeout=60)
    assert not out.exists()
    if signum == signal.SIGTERM:
        assert proc.returncode == 143 and "Traceback" not in stderr and temporaries() == [], stderr
    else:
        assert temporaries()
    subprocess.run(cmd, check=True, capture_output=True)
    assert (out / "annotations" / "instances_val2017.json").exists()
    assert temporaries() == []  # the killed run's leftovers were collected


def test_a_training_run_collects_the_temporaries_a_killed_run_left(tmp_path):
    """A SIGKILL during a checkpoint save leaves `.state.pt.tmp-*`; the next start of the same run
    removes such leftovers and keeps the real files."""
    from frozenbench.engine.steppers import remove_leftovers
    from frozenbench.utils.atomic import TMP_MARKER

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "state.pt").write_bytes(b"kept")
    (run_dir / "log.jsonl").write_text("{}\n")
    (run_dir / f".state.pt{TMP_MARKER}p7a7n104").write_bytes(b"half")  # the name the atomic writer uses
    (run_dir / f".deepspeed{TMP_MARKER}abc").mkdir()
    (run_dir / f".deepspeed{TMP_MARKER}abc" / "shard").write_bytes(b"x")
    remove_leftovers(run_dir)
    assert sorted(p.name for p in run_dir.iterdir()) == ["log.jsonl", "state.pt"]
    assert (run_dir / "state.pt").read_bytes() == b"kept"


# -- removing what a failed or killed writer left -----------------------------------------------


def deep_tree(root: Path, depth: int, outside: Path | None = None, odd: bool = True) -> Path:
    """A tree ``depth`` folders deep (``root/a/a/...``), made one level at a time through folder
    descriptors, so it may go past PATH_MAX; at its bottom a file whose name is not UTF-8 and (with
    ``odd``) what else a hostile archive or a crashed extraction leaves: a fifo, a folder without
    permissions, and (with ``outside``) a link to a folder that must survive the removal."""
    root.mkdir(parents=True)
    fd = os.open(root, os.O_RDONLY)
    try:
        for _ in range(depth):
            os.mkdir("a", dir_fd=fd)
            child = os.open("a", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = child
        os.close(os.open(b"caf\xe9.jpg", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
        if not odd:
            return root
        os.mkfifo("pipe", dir_fd=fd)
        os.mkdir("locked", dir_fd=fd)
        os.close(os.open("locked/x", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
        os.chmod("locked", 0, dir_fd=fd)
        if outside is not None:
            os.symlink(outside, "outside", dir_fd=fd)
    finally:
        os.close(fd)
    return root


@pytest.fixture
def deep_tmp(tmp_path):
    """``tmp_path``, emptied with remove_tree afterwards whatever the test did: pytest removes old
    temporary folders with shutil.rmtree, which a deep tree left by a failed test would crash
    (RecursionError) in every later session."""
    yield tmp_path
    for child in tmp_path.iterdir():
        remove_tree(child, ignore_errors=True)


def outside_folder(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    return outside


def test_remove_tree_removes_a_tree_deeper_than_recursion_and_path_max(deep_tmp):
    """shutil.rmtree (Python 3.11) recurses per level: RecursionError on such a tree."""
    outside = outside_folder(deep_tmp)
    tree = deep_tree(deep_tmp / "tree", 2500, outside)  # 5000 bytes of path: past PATH_MAX too
    remove_tree(tree)
    assert not tree.exists()
    assert (outside / "keep.txt").read_text() == "keep"  # the link was removed, not followed


def test_remove_tree_removes_a_link_not_its_target(tmp_path):
    outside = outside_folder(tmp_path)
    (tmp_path / "link").symlink_to(outside)
    remove_tree(tmp_path / "link")
    remove_tree(tmp_path / "missing")  # nothing to do is no error
    assert not (tmp_path / "link").is_symlink() and (outside / "keep.txt").exists()


def test_the_sweep_removes_a_deep_leftover_of_a_crashed_writer(deep_tmp):
    """A leftover the old sweep could not remove (RecursionError) broke every later run of the job."""
    outside = outside_folder(deep_tmp)
    target = deep_tmp / "data" / "ade20k"
    leftover = deep_tree(target.parent / f".ade20k{TMP_MARKER}crashed", 1200, outside)
    (target.parent / f".ade20k{TMP_MARKER}link").symlink_to(outside)
    remove_temporaries(target)
    assert not leftover.exists() and list(target.parent.iterdir()) == []
    assert (outside / "keep.txt").read_text() == "keep"


def test_a_failed_atomic_dir_removes_a_deep_tree(deep_tmp):
    with pytest.raises(RuntimeError, match="extraction failed"):
        with atomic_dir(deep_tmp / "dataset") as tmp:
            deep_tree(tmp / "member", 1200)
            raise RuntimeError("extraction failed")
    assert list(deep_tmp.iterdir()) == []
