"""A run's fingerprint covers its inputs' content: a dataset rebuilt in place with other content
retrains its heads, the same content rebuilt is reused, and evaluation refuses stale or
unfinished states."""

from __future__ import annotations

import json
import shutil

import pytest

from frozenbench.checkpoint import save_random_backbone
from frozenbench.data.manifest import MANIFEST, content_digest, dataset_digest
from frozenbench.data.synth import synthesize
from frozenbench.engine.run import evaluate_cell, train_cell
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
    first = train_cell(spec, str(checkpoint), "frozen", run_dir, seed=0)
    assert first["steps_this_run"] == 2

    shutil.rmtree(data)  # rebuilt with the same content: the finished head is reused
    synthesize(tiny_spec("shapes-ade", seed=1, image_size=64, num_train=4, num_val=2), data)
    assert train_cell(spec, str(checkpoint), "frozen", run_dir, seed=0)["steps_this_run"] == 0
    evaluate_cell(spec, str(checkpoint), "frozen", run_dir, tmp_path / "m.json", 0, labels)

    shutil.rmtree(data)  # rebuilt with other content (another seed): never scored with the old head
    synthesize(tiny_spec("shapes-ade", seed=2, image_size=64, num_train=4, num_val=2), data)
    with pytest.raises(UserError, match="trained with other inputs"):
        evaluate_cell(spec, str(checkpoint), "frozen", run_dir, tmp_path / "m.json", 0, labels)
    assert train_cell(spec, str(checkpoint), "frozen", run_dir, seed=0)["steps_this_run"] == 2
    evaluate_cell(spec, str(checkpoint), "frozen", run_dir, tmp_path / "m.json", 0, labels)
