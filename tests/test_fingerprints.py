"""A run's fingerprint covers its inputs' content: a dataset rebuilt in place with other content
retrains its heads, the same content rebuilt is reused, and evaluation refuses stale or
unfinished states."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from frozenbench.checkpoint import save_random_backbone
from frozenbench.data.manifest import MANIFEST, content_digest, dataset_digest
from frozenbench.data.synth import synthesize
from frozenbench.cells.run import CellRun, evaluate_cell, train_cell
from frozenbench.checkpoint.io import sha256_of
from frozenbench.errors import UserError

from .test_synth import tiny_spec

pytestmark = pytest.mark.openmmlab


def test_digest_is_recorded_at_build_and_follows_content_not_path(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    synthesize(tiny_spec("shapes-ade", seed=1), a)
    synthesize(tiny_spec("shapes-ade", seed=1), b)
    synthesize(tiny_spec("shapes-ade", seed=2), c)
    recorded = json.loads((a / MANIFEST).read_text())["content_digest"]
    assert recorded == content_digest(a) == dataset_digest(b)  # same content, other path: same digest
    assert dataset_digest(c) != recorded
    (a / MANIFEST).unlink()  # a dataset made by hand: computed on the spot, the same value
    assert dataset_digest(a) == recorded
    label = next((b / "annotations" / "training").glob("*.png"))
    label.write_bytes(label.read_bytes()[:-1] + b"\0")  # one annotation byte changes the digest
    assert content_digest(b) != recorded


def test_a_rebuilt_dataset_retrains_its_head_and_the_same_content_is_reused(tmp_path):
    data = tmp_path / "data" / "shapes-ade"
    synthesize(tiny_spec("shapes-ade", seed=1, image_size=64, num_train=4, num_val=2), data)
    checkpoint = save_random_backbone(tmp_path / "b.pth", "convstem_swin_tiny", 64)
    spec = {
        "type": "segmentation",
        "data": str(data),
        "img_size": 64,
        "head": {"width": 32, "num_queries": 8, "num_points": 256},
        "train": {"steps": 2, "batch_size": 2, "warmup_steps": 1, "checkpoint_every": 1, "log_every": 1},
    }
    run_dir, labels = tmp_path / "run", {"task": "ade", "backbone": "b"}
    first = train_cell(CellRun(spec, str(checkpoint), "frozen", run_dir, seed=0))
    assert first["steps_this_run"] == 2

    shutil.rmtree(data)  # rebuilt with the same content: the finished head is reused
    synthesize(tiny_spec("shapes-ade", seed=1, image_size=64, num_train=4, num_val=2), data)
    assert train_cell(CellRun(spec, str(checkpoint), "frozen", run_dir, seed=0))["steps_this_run"] == 0
    evaluate_cell(CellRun(spec, str(checkpoint), "frozen", run_dir, seed=0), tmp_path / "m.json", labels)

    shutil.rmtree(data)  # rebuilt with other content (another seed): never scored with the old head
    synthesize(tiny_spec("shapes-ade", seed=2, image_size=64, num_train=4, num_val=2), data)
    with pytest.raises(UserError, match="trained with other inputs"):
        evaluate_cell(CellRun(spec, str(checkpoint), "frozen", run_dir, seed=0), tmp_path / "m.json", labels)
    assert train_cell(CellRun(spec, str(checkpoint), "frozen", run_dir, seed=0))["steps_this_run"] == 2
    evaluate_cell(CellRun(spec, str(checkpoint), "frozen", run_dir, seed=0), tmp_path / "m.json", labels)


@pytest.fixture
def digest_cache(tmp_path, monkeypatch):
    """The digest cache in the test's folder, and a count of the files hashed."""
    from frozenbench.data import file_digests

    monkeypatch.setenv("FROZENBENCH_DIGEST_CACHE", str(tmp_path / "digest-cache"))
    hashed: list[str] = []
    real = file_digests.hash_file

    def spy(path):
        hashed.append(path.name)
        return real(path)

    monkeypatch.setattr(file_digests, "hash_file", spy)
    return hashed


def small_dataset(root):
    (root / "images").mkdir(parents=True)
    for i in range(3):
        (root / "images" / f"{i}.jpg").write_bytes(bytes([i]) * 1000)
    (root / "classes.txt").write_text("a\nb\n")
    return root


def test_an_image_edited_in_place_with_its_size_and_mtime_kept_changes_the_digest(tmp_path, digest_cache):
    root = small_dataset(tmp_path / "d")
    before = dataset_digest(root)
    image = root / "images" / "1.jpg"
    stat = image.stat()
    image.write_bytes(b"\xff" + image.read_bytes()[1:])  # one pixel byte, same size
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and its mtime put back (cp -p, rsync -t)
    assert image.stat().st_size == stat.st_size and image.stat().st_mtime_ns == stat.st_mtime_ns
    assert dataset_digest(root) != before
    image.write_bytes(b"\x01" + image.read_bytes()[1:])  # the original bytes: the original digest
    assert dataset_digest(root) == before


def test_a_second_digest_of_an_unchanged_dataset_reads_no_file(tmp_path, digest_cache):
    root = small_dataset(tmp_path / "d")
    first = content_digest(root)
    assert sorted(digest_cache) == ["0.jpg", "1.jpg", "2.jpg", "classes.txt"]
    digest_cache.clear()
    moved = root.rename(tmp_path / "moved")  # as prepare's folder is renamed into place
    assert content_digest(moved) == first and digest_cache == []
    (moved / "images" / "2.jpg").write_bytes(b"\x07" * 1000)
    assert content_digest(moved) != first and digest_cache == ["2.jpg"]  # only the edited file again


def test_a_changed_backbone_forward_changes_every_runs_fingerprint(tmp_path, monkeypatch):
    """A head trained on the features of an older forward (timm's shift-then-pad Swin, say) is not
    reused once the forward computes other features from the same weights."""
    from frozenbench.cells.run import as_spec, run_fingerprint
    from frozenbench.models import backbone

    data = tmp_path / "shapes-ade"
    synthesize(tiny_spec("shapes-ade", seed=1), data)
    checkpoint = save_random_backbone(tmp_path / "b.pth", "convstem_swin_tiny", 64)
    spec = as_spec({"type": "segmentation", "data": str(data), "img_size": 64, "head": {}})
    checkpoint_sha256 = sha256_of(checkpoint)
    before = run_fingerprint(spec, checkpoint_sha256, "frozen", 0)
    assert run_fingerprint(spec, checkpoint_sha256, "frozen", 0) == before
    monkeypatch.setattr(backbone, "FEATURES_VERSION", backbone.FEATURES_VERSION + 1)
    assert run_fingerprint(spec, checkpoint_sha256, "frozen", 0) != before
