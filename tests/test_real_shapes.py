"""The users' world: data in the real datasets' shapes through every stage.

Portrait and 1280x960 COCO images, a 2100x1400 ADE20K image, 10 s Kinetics clips at 25 and 30 fps
(340x256, portrait, odd-sized 341x255, one cut to 2 s), trained with the paper's random resize +
square crop and evaluated in batches of mixed sizes.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from frozenbench.tasks.registry import BackboneRequest, DetectionHead, SegmentationHead, VideoHead
from PIL import Image

from frozenbench.data.download import ChecksumRecords
from frozenbench.data.synth import sizes
from frozenbench.data.validate import check_video, validate

from .conftest import REAL_SHAPED, VENV_BIN, clips_tarball
from .test_synth import tree_digest


def random_checkpoint(path: Path, arch: str = "convstem_swin_tiny", img_size: int = 64) -> Path:
    from frozenbench.checkpoint import save_random_backbone

    return save_random_backbone(path, arch, img_size)


# -- generators ------------------------------------------------------------------------------------


def test_real_profile_draws_the_real_shapes_and_validates(real_shaped):
    coco = json.loads((real_shaped["shapes-coco"] / "annotations" / "instances_val2017.json").read_text())
    assert [(i["width"], i["height"]) for i in coco["images"]] == list(sizes.COCO_REAL_SIZES)
    ade_val = sorted((real_shaped["shapes-ade"] / "images" / "validation").glob("*.jpg"))
    assert [Image.open(p).size for p in ade_val] == list(sizes.ADE_REAL_SIZES)
    import av

    shapes_seen = set()
    for clip in sorted((real_shaped["shapes-k400"] / "videos").rglob("*.mp4")):
        with av.open(str(clip)) as container:
            stream = container.streams.video[0]
            frames, _ = check_video(clip)
            shapes_seen.add(
                (
                    stream.codec_context.width,
                    stream.codec_context.height,
                    int(round(float(stream.average_rate))),
                    frames,
                )
            )
    assert shapes_seen == {(w, h, fps, fps * s) for w, h, fps, s in sizes.KINETICS_REAL_CLIPS}
    for name, fmt in (("shapes-coco", "coco"), ("shapes-ade", "ade"), ("shapes-k400", "kinetics")):
        report = validate(fmt, real_shaped[name])
        assert report.ok, [str(p) for p in report.problems]


def test_real_profile_annotations_are_exact(real_shaped):
    from pycocotools.coco import COCO

    root = real_shaped["shapes-coco"]
    coco = COCO(str(root / "annotations" / "instances_val2017.json"))
    for ann in coco.loadAnns(coco.getAnnIds()):
        image = coco.imgs[ann["image_id"]]
        mask = coco.annToMask(ann)
        assert mask.shape == (image["height"], image["width"])
        assert mask.sum() == ann["area"] > 0
        ys, xs = np.nonzero(mask)
        assert ann["bbox"] == [
            float(xs.min()),
            float(ys.min()),
            float(xs.max() - xs.min() + 1),
            float(ys.max() - ys.min() + 1),
        ]
    for label_path in (root.parent / "shapes-ade" / "annotations" / "validation").glob("*.png"):
        image = Image.open(str(label_path).replace("annotations", "images").replace(".png", ".jpg"))
        assert Image.open(label_path).size == image.size


@pytest.mark.parametrize("name", ["shapes-coco", "shapes-ade"])
def test_real_profile_same_seed_same_bytes(real_shaped, tmp_path, name):
    from frozenbench.data.synth import synthesize

    synthesize(REAL_SHAPED[name], tmp_path / name)
    assert tree_digest(tmp_path / name) == tree_digest(real_shaped[name])


# -- backbone ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch,size", [("swin_tiny", 224), ("swinv2_tiny", 256), ("convstem_swin_tiny", 64)])
def test_any_input_size_matches_the_fixed_size_model_at_its_size(arch, size):
    """Accepting any size changes nothing at the built size: same outputs as timm's strict model."""
    from frozenbench.models.backbone import Backbone
    from frozenbench.models.registry import build_arch

    torch.manual_seed(0)
    flexible = Backbone(arch, img_size=size)
    strict = build_arch(arch, size, strict_img_size=True).eval()
    strict.load_state_dict(flexible.model.state_dict(), strict=False)
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        expected = strict.forward_intermediates(x, indices=[0, 1, 2, 3], intermediates_only=True)
    for got, want in zip(flexible(x), expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    # a portrait input whose sides are multiples of neither the patch nor the window
    feats = flexible(torch.randn(1, 3, size + 31, size // 2 + 5))
    assert [tuple(f.shape[-2:]) for f in feats][0] == (-(-(size + 31) // 4), -(-(size // 2 + 5) // 4))


def test_a_2100_px_image_goes_through_a_swin_built_for_224():
    from frozenbench.models.backbone import Backbone

    feats = Backbone("swin_tiny", img_size=224)(torch.randn(1, 3, 1400, 2100))
    assert [tuple(f.shape[-2:]) for f in feats] == [(350, 525), (175, 263), (88, 132), (44, 66)]


# -- the three tasks on real-shaped data ----------------------------------------------------------


@pytest.mark.openmmlab
@pytest.mark.slow
def test_detection_trains_with_random_resize_crop_and_evaluates_portrait_images(real_shaped, tmp_path):
    from mmengine.dataset import pseudo_collate

    from frozenbench.engine.loop import TrainOptions, train
    from frozenbench.openmmlab.training import wrap_for_training
    from frozenbench.tasks import detection

    root = real_shaped["shapes-coco"]
    num_classes = len(detection.class_names(root))
    ckpt = random_checkpoint(tmp_path / "b.pth")
    augment = {"scale_range": [0.1, 2.0], "crop_size": 160}
    train_set = detection.build_dataset(root, "train", 160, train=True, augment=augment)
    for index in range(len(train_set)):
        sample = train_set[index]
        h, w = sample["inputs"].shape[-2:]
        assert max(h, w) <= 160  # the square crop
        gt = sample["data_samples"].gt_instances
        if len(gt):  # boxes recomputed from the cropped masks: tight around them, inside the crop
            masks = gt.masks.to_ndarray()
            assert masks.shape[1:] == (h, w) and all(m.any() for m in masks)
            for box, mask in zip(gt.bboxes.numpy(), masks):
                ys, xs = np.nonzero(mask)
                np.testing.assert_allclose(box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], atol=1.0)
    head = {"width": 32, "rpn_samples": 64, "rcnn_samples": 64}
    torch.manual_seed(0)
    model = detection.build_model(DetectionHead(**head), BackboneRequest(str(ckpt), 160, frozen=True), num_classes)
    train(
        wrap_for_training(model),
        train_set,
        pseudo_collate,
        tmp_path / "run",
        TrainOptions(steps=2, batch_size=2, warmup_steps=1, checkpoint_every=2, log_every=1),
        log=lambda m: None,
    )
    val = detection.build_dataset(root, "val", 160, train=False)
    images = {i["id"]: i for i in json.loads(Path(val.ann_file).read_text())["images"]}
    results = detection.predict_test_dev(model, val, batch_size=3)  # mixed sizes per batch
    assert results
    for result in results:
        width, height = images[result["image_id"]]["width"], images[result["image_id"]]["height"]
        assert result["segmentation"]["size"] == [height, width]  # masks at the image's own size
        x, y, w, h = result["bbox"]
        # clipped to the image, never to the padded canvas
        assert x + w <= width + 1e-3 and y + h <= height + 1e-3
    metrics = detection.evaluate(model, val, num_classes)
    assert set(metrics) >= {"bbox", "segm"}


@pytest.mark.openmmlab
@pytest.mark.slow
def test_segmentation_trains_on_2100_px_images_and_evaluates_mixed_sizes(real_shaped, tmp_path):
    from mmengine.dataset import pseudo_collate

    from frozenbench.engine.loop import TrainOptions, train
    from frozenbench.openmmlab.training import wrap_for_training
    from frozenbench.tasks import segmentation

    root = real_shaped["shapes-ade"]
    num_classes = len(segmentation.class_names(root))
    ckpt = random_checkpoint(tmp_path / "b.pth")
    augment = {"scale_range": [0.5, 2.0], "crop_size": 128}
    train_set = segmentation.build_dataset(root, "train", 128, train=True, augment=augment)
    crop = train_set[2]
    assert crop["data_samples"].ori_shape == (1400, 2100)
    assert max(crop["inputs"].shape[-2:]) <= 128  # a crop of it (smaller when the scale drawn was < 1)
    torch.manual_seed(0)
    head = {"width": 32, "num_queries": 8, "num_points": 256}
    model = segmentation.build_model(
        SegmentationHead(**head), BackboneRequest(str(ckpt), 128, frozen=True), num_classes
    )
    train(
        wrap_for_training(model),
        train_set,
        pseudo_collate,
        tmp_path / "run",
        TrainOptions(steps=2, batch_size=3, warmup_steps=1, checkpoint_every=2, log_every=1),
        log=lambda m: None,
    )
    val = segmentation.build_dataset(root, "val", 128, train=False)
    # the test pipeline resizes the short side to img_size; labels stay at the original size
    assert min(val[2]["data_samples"].img_shape) == 128
    assert val[2]["data_samples"].gt_sem_seg.data.shape[-2:] == (1400, 2100)
    metrics = segmentation.evaluate(model, val, num_classes)
    assert len(metrics["per_class_IoU"]) == num_classes
    flipped = segmentation.evaluate(model, val, num_classes, test={"scales": [0.75, 1.0], "flip": True})
    assert len(flipped["per_class_IoU"]) == num_classes


@pytest.mark.openmmlab
@pytest.mark.slow
def test_video_trains_on_10_s_30_fps_clips_and_tests_twelve_views_in_chunks(real_shaped, tmp_path):
    from mmengine.dataset import pseudo_collate

    from frozenbench.engine.loop import TrainOptions, train
    from frozenbench.openmmlab.training import wrap_for_training
    from frozenbench.tasks import video

    root = real_shaped["shapes-k400"]
    num_classes = len(video.class_names(root))
    ckpt = random_checkpoint(tmp_path / "b.pth")
    options = {"num_frames": 16, "frame_interval": 4}
    train_set = video.build_dataset(root, "train", 112, train=True, augment={"area_range": [0.3, 1.0]}, **options)
    assert tuple(train_set[0]["inputs"].shape) == (1, 3, 16, 112, 112)
    names = [type(t).__name__ for t in train_set.pipeline.transforms]
    assert "RandomResizedCrop" in names and "Flip" not in names  # direction classes: no flip unless asked
    flipped = video.build_dataset(root, "train", 112, train=True, augment={"flip": True}, **options)
    assert "Flip" in [type(t).__name__ for t in flipped.pipeline.transforms]
    torch.manual_seed(0)
    # 112 is no multiple of 32: the token grid rounds up, the head's space embedding follows it
    model = video.build_model(
        VideoHead(num_frames=16, num_blocks=1, width=32), BackboneRequest(str(ckpt), 112, frozen=True), num_classes
    )
    train(
        wrap_for_training(model),
        train_set,
        pseudo_collate,
        tmp_path / "run",
        TrainOptions(steps=2, batch_size=2, warmup_steps=1, checkpoint_every=2, log_every=1),
        log=lambda m: None,
    )
    test = {"num_clips": 4, "num_crops": 3}
    val = video.build_dataset(root, "val", 112, train=False, test=test, **options)
    assert tuple(val[0]["inputs"].shape) == (12, 3, 16, 112, 112)
    calls = []
    model.backbone.max_frames_per_call = 32
    handle = model.backbone.body.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    metrics = video.evaluate(model, val, num_classes, test=test)
    handle.remove()
    assert max(calls) <= 32 and sum(calls) == len(val) * 12 * 16  # every frame of every view, in chunks
    assert "top1" in metrics


# -- Kinetics preparation ---------------------------------------------------------------------------


def _kinetics_downloads(clips_root: Path, downloads: Path, parts: int) -> dict:
    """The layout `frozenbench download` leaves for Kinetics: csvs, url lists and their tarballs."""
    files = []
    downloads.mkdir(parents=True)
    for split in ("train", "val"):
        (downloads / f"{split}.csv").write_bytes((clips_root / "annotations" / f"{split}.csv").read_bytes())
        files.append(
            {
                "url": f"http://127.0.0.1/{split}.csv",
                "filename": f"{split}.csv",
                "checksum": {"unpublished": "test"},
                "extract": False,
            }
        )
        listed = downloads / f"k400_{split}_path"
        listed.mkdir(parents=True)
        clips = sorted((clips_root / "videos" / split).glob("*.mp4"))
        if split == "train":  # as on the real mirror: one clip lost, one cut short
            lost, cut = clips[0], clips[1]
            clips = clips[1:]
        for part in range(parts):
            (listed / f"part_{part}.tar.gz").write_bytes(clips_tarball(clips[part::parts], cut=cut))
        (downloads / f"k400_{split}_path.txt").write_text(
            "".join(f"http://127.0.0.1/k400_{split}_path/part_{part}.tar.gz\n" for part in range(parts))
        )
        files.append(
            {
                "url": f"http://127.0.0.1/k400_{split}_path.txt",
                "filename": f"k400_{split}_path.txt",
                "checksum": {"unpublished": "test"},
                "url_list": True,
            }
        )
    # the digests `frozenbench download` would have recorded on first use (prepare checks them)
    records = ChecksumRecords(downloads.parent / "checksums.sha256")
    for path in sorted(p for p in downloads.rglob("*") if p.is_file()):
        records.add(path.relative_to(downloads).as_posix(), hashlib.sha256(path.read_bytes()).hexdigest())
    return {
        "source": "download",
        "format": "kinetics",
        "download": {"files": files},
        "prepare": {"short_side": 96},
        "lost": lost.name,
        "cut": cut.name,
    }


@pytest.mark.slow
def test_kinetics_prepare_killed_midway_resumes_without_redoing_clips(real_shaped, tmp_path):
    downloads, out = tmp_path / "downloads", tmp_path / "data" / "k400"
    spec = _kinetics_downloads(real_shaped["shapes-k400"], downloads, parts=4)
    lost, cut = spec.pop("lost"), spec.pop("cut")
    spec = json.dumps(spec)
    command = [
        str(VENV_BIN / "frozenbench"),
        "prepare",
        "--spec",
        spec,
        "--downloads",
        str(downloads),
        "--checksums",
        str(tmp_path / "checksums.sha256"),
        "--out",
        str(out),
        "--workers",
        "2",
    ]
    done = tmp_path / "data" / ".k400.work" / "done"
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 300
    while not (done.is_dir() and len(list(done.glob("*.json"))) >= 2) and time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read().decode()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole job: the prepare process and its pool
    proc.wait()
    assert not out.exists()
    marked = {p.name for p in done.glob("*.json")}
    finished = {p.name: p.stat().st_ino for p in (done.parent / "videos").rglob("*.mp4")}
    assert finished and len(marked) < 8
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600, check=True)
    # marked tarballs are not extracted again
    assert sum(line.startswith("extracting ") for line in rerun.stdout.splitlines()) == 8 - len(marked)
    videos = {p.name: p for p in (out / "videos").rglob("*.mp4")}
    assert len(videos) == 16 - 2 and lost not in videos and cut not in videos
    for name, inode in finished.items():  # clips finished before the kill are the same files
        assert videos[name].stat().st_ino == inode
    assert validate("kinetics", out).ok
    assert not (tmp_path / "data" / ".k400.work").exists()
    report = json.loads((out / "prepare_report.json").read_text())
    assert [e["clip"] for e in report["missing"]] == [lost]
    assert [e["clip"] for e in report["corrupt"]] == [cut]
    import av

    with av.open(str(next(iter(videos.values())))) as container:
        stream = container.streams.video[0]
        assert min(stream.codec_context.width, stream.codec_context.height) == 96
        keyframes = sum(packet.is_keyframe for packet in container.demux(stream) if packet.size)
    assert keyframes >= 2  # a keyframe every second, not one per 250 frames


def test_kinetics_prepare_never_reuses_clips_encoded_with_other_settings(real_shaped, tmp_path):
    from frozenbench.data.download import RemoteFile
    from frozenbench.data.prepare import prepare_kinetics_clips

    spec = _kinetics_downloads(real_shaped["shapes-k400"], tmp_path / "downloads", parts=1)
    files = [RemoteFile.from_config(entry) for entry in spec["download"]["files"]]
    work, logs = tmp_path / "work", []
    val_clip = next((real_shaped["shapes-k400"] / "videos" / "val").glob("*.mp4")).name
    prepare_kinetics_clips(files, tmp_path / "downloads", work, 64, 2, logs.append)
    import av

    def short_side(path):
        with av.open(str(path)) as container:
            ctx = container.streams.video[0].codec_context
            return min(ctx.width, ctx.height)

    assert short_side(work / "videos" / "val" / val_clip) == 64
    (work / "done" / "k400_val_path--part_0.tar.gz.json").unlink()  # as if killed before the marker
    prepare_kinetics_clips(files, tmp_path / "downloads", work, 48, 2, logs.append)
    assert any("other settings" in line for line in logs)
    assert short_side(work / "videos" / "val" / val_clip) == 48


def _encode_or_segfault(job):
    """A pool worker whose decoder segfaults on one clip, as libav can on a broken download."""
    from frozenbench.data.prepare import _prepare_one

    if "crash" in Path(job[0]).name:
        os.kill(os.getpid(), signal.SIGSEGV)
    return _prepare_one(job)


@pytest.mark.slow  # ~14 s: decodes real-shaped clips through prepare
def test_a_decoder_crash_lists_its_clip_and_spares_the_others(real_shaped, tmp_path):
    import shutil

    from frozenbench.data.prepare import CRASH_ERROR, encode_clips

    sources = sorted((real_shaped["shapes-k400"] / "videos" / "train").glob("*.mp4"))[:5]
    jobs = []
    for index, source in enumerate(sources):
        name = f"crash_{source.name}" if index == 1 else source.name
        shutil.copy(source, tmp_path / name)
        jobs.append((str(tmp_path / name), str(tmp_path / "out" / name), 48))
    (tmp_path / "out").mkdir()
    failed = encode_clips(jobs, workers=2, run_one=_encode_or_segfault)
    assert failed == {f"crash_{sources[1].name}": CRASH_ERROR}
    # every clip but the culprit, and no temporary of a writer the broken pool killed mid-clip
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == sorted(Path(dst).name for _, dst, _ in jobs if not Path(dst).name.startswith("crash_"))
    for path in (tmp_path / "out").iterdir():
        frames, problem = check_video(path)
        assert problem is None and frames > 0, path


def test_resize_crop_options_refuse_bad_values_by_name():
    from frozenbench.errors import UserError
    from frozenbench.tasks.recipe import resize_crop_options

    assert resize_crop_options(None, 640, "segmentation", (0.5, 2.0)) is None
    assert resize_crop_options({"scale_range": [0.5, 2]}, 640, "segmentation", (0.5, 2.0)) == {
        "scale_range": (0.5, 2.0),
        "crop_size": 640,
    }
    with pytest.raises(UserError, match="segmentation augment options \\['crop'\\] unknown"):
        resize_crop_options({"crop": 3}, 640, "segmentation", (0.5, 2.0))
    with pytest.raises(UserError, match="scale_range must be 0 < low <= high, got \\[2.0, 0.5\\]"):
        resize_crop_options({"scale_range": [2.0, 0.5]}, 640, "detection", (0.1, 2.0))
    with pytest.raises(UserError, match="crop_size 800 exceeds img_size 640"):
        resize_crop_options({"crop_size": 800}, 640, "segmentation", (0.5, 2.0), max_crop=640)
