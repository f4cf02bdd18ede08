"""Atomic outputs: a writer interrupted by an exception or by SIGKILL leaves no artifact under the
real name (and the previous version, if any, intact); a rerun writes the artifact."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from frozenbench.utils.atomic import atomic_dir, atomic_file, write_json

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
    from frozenbench.engine.loop import remove_leftovers
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
