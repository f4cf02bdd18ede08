from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def run_cmd(
    args: list[str], cwd: Path | None = None, timeout: float = 600, env: dict | None = None, check: bool = False
) -> subprocess.CompletedProcess:
    """Run a command with the venv's bin first on PATH (as the Makefile does)."""
    full_env = dict(os.environ)
    full_env["PATH"] = f"{VENV_BIN}{os.pathsep}{full_env.get('PATH', '')}"
    full_env.update(env or {})
    proc = subprocess.run(args, cwd=cwd or REPO, env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def workflow_copy(tmp_path: Path) -> Path:
    """A copy of the workflow files in a temporary folder, so runs never touch the checkout's outputs."""
    dst = tmp_path / "wf"
    dst.mkdir()
    for name in ["Snakefile", "config.yaml", "rules", "schemas", "configs", "profiles", "envs", "report"]:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dst / name)
        elif src.exists():
            shutil.copy2(src, dst / name)
    return dst


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory) -> Path:
    """scripts/wheelhouse.sh's full wheelhouse for this Python, built once per test session (with
    network): test_install.py installs from it, test_gpu_node_smoke.py cuts its node subset from it."""
    dest = tmp_path_factory.mktemp("session-wheelhouse") / "wheelhouse"
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "wheelhouse.sh"), "--dest", str(dest)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dest


def pytest_configure(config):
    """The per-file digest cache (``data/file_digests.py``) of this test session's datasets lives in a
    folder of its own, so tests never read or fill the user's ``~/.cache`` (subprocesses inherit it)."""
    import tempfile

    if "FROZENBENCH_DIGEST_CACHE" not in os.environ:
        folder = tempfile.mkdtemp(prefix="frozenbench-digests-")
        os.environ["FROZENBENCH_DIGEST_CACHE"] = folder
        config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))


def pytest_terminal_summary(terminalreporter):
    from . import test_bad_inputs

    results = test_bad_inputs.RESULTS
    if results:
        passed = sum(ok for _, ok in results)
        kinds: dict[str, list[bool]] = {}
        for name, ok in results:
            kinds.setdefault(name.split("/", 1)[0], []).append(ok)
        by_kind = ", ".join(f"{kind} {sum(oks)}/{len(oks)}" for kind, oks in sorted(kinds.items()))
        terminalreporter.write_line(f"bad-input corpus: {len(results)} cases tried, {passed} passed ({by_kind})")


def video_cell(tmp_path: Path, steps: int, checkpoint_every: int, feature_cache: bool = False) -> tuple[str, Path]:
    """A tiny shapes-k400 cell: (spec JSON for `frozenbench train`, a random convstem_swin_tiny checkpoint)."""
    import json

    from frozenbench.checkpoint import save_random_backbone
    from frozenbench.data.synth import synthesize

    from .test_synth import tiny_spec

    root = tmp_path / "shapes-k400"
    synthesize(tiny_spec("shapes-k400", num_frames=8), root)
    checkpoint = save_random_backbone(tmp_path / "b.pth", "convstem_swin_tiny", 64)
    spec = json.dumps(
        {
            "type": "video",
            "data": str(root),
            "img_size": 64,
            "data_options": {"num_frames": 4},
            "feature_cache": feature_cache,
            "head": {"num_frames": 4, "num_blocks": 1, "width": 32},
            "train": {
                "steps": steps,
                "batch_size": 4,
                "warmup_steps": 2,
                "checkpoint_every": checkpoint_every,
                "log_every": 1,
            },
        }
    )
    return spec, checkpoint


# The test world of the paper study: the mini datasets in the real datasets' shapes (portrait and
# 1280x960 COCO images, a 2100x1400 ADE image, 10 s Kinetics clips at 25/30 fps, odd sizes).
REAL_SHAPED = {
    "shapes-coco": {
        "source": "synth",
        "format": "coco",
        "synth": {
            "seed": 202,
            "image_size": 128,
            "num_classes": 4,
            "num_train": 4,
            "num_val": 9,
            "num_test_dev": 2,
            "max_instances": 4,
            "texture": 0.2,
            "size_profile": "real",
        },
    },
    "shapes-ade": {
        "source": "synth",
        "format": "ade",
        "synth": {
            "seed": 203,
            "image_size": 128,
            "num_stuff": 3,
            "num_things": 4,
            "num_train": 3,
            "num_val": 7,
            "texture": 0.2,
            "size_profile": "real",
        },
    },
    "shapes-k400": {
        "source": "synth",
        "format": "kinetics",
        "synth": {
            "seed": 204,
            "frame_size": 64,
            "num_frames": 12,
            "num_train_per_class": 1,
            "num_val_per_class": 1,
            "texture": 0.2,
            "size_profile": "real",
        },
    },
}


@pytest.fixture(scope="session")
def real_shaped(tmp_path_factory) -> dict[str, Path]:
    """The three real-shaped mini datasets, built once per test session (~40 s, the clips dominate)."""
    from frozenbench.data.synth import synthesize

    root = tmp_path_factory.mktemp("real-shaped")
    for name, spec in REAL_SHAPED.items():
        synthesize(spec, root / name)
    return {name: root / name for name in REAL_SHAPED}


def clips_tarball(clips: list[Path], cut: Path | None = None) -> bytes:
    """A flat .tar.gz of video clips as the Kinetics (CVDF) mirror ships them; ``cut`` is stored cut
    to a third of its bytes (a transfer that broke off)."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for clip in clips:
            data = clip.read_bytes()
            if clip == cut:
                data = data[: len(data) // 3]
            info = tarfile.TarInfo(clip.name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def two_cpu_ranks(script: Path, *args: str, port_base: int) -> subprocess.CompletedProcess:
    """``script`` run as two ranks by torchrun on the CPU (DeepSpeed's CPU accelerator, gloo), with
    a port of its own per test process; asserts that both ranks exited cleanly."""
    env = {"DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    port = str(port_base + os.getpid() % 1000)
    command = [str(VENV_BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", port, str(script), *args]
    proc = run_cmd(command, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc
