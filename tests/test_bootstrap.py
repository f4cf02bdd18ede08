"""Bootstrap intervals: each evaluator's replicate equals the metric recomputed from scratch on
the resampled samples (a sample drawn twice is scored twice), and the interval arithmetic (issue 29)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from frozenbench.evaluation import COCOEvaluator, SemSegEvaluator, TopKEvaluator, bootstrap


def test_resamples_depend_on_the_split_size_only_so_cells_pair_up():
    a, b = bootstrap.resample_indices(50), bootstrap.resample_indices(50)
    assert np.array_equal(a, b) and a.shape == (bootstrap.REPLICATES, 50)
    assert not np.array_equal(bootstrap.resample_indices(51)[:, :50], a)
    counts = bootstrap.resample_counts(50)
    assert (counts.sum(axis=1) == 50).all() and np.array_equal(np.bincount(a[3], minlength=50), counts[3])


def test_a_miou_replicate_is_miou_of_the_resampled_images():
    rng = np.random.default_rng(0)
    images = [(rng.integers(0, 5, (12, 12)), rng.integers(0, 5, (12, 12))) for _ in range(9)]
    for i, (pred, label) in enumerate(images):  # agreement varies by image, so resamples differ
        label[: i + 2] = pred[: i + 2]
    full = SemSegEvaluator(num_classes=5)
    for pred, label in images:
        full.process(pred, label)
    metrics = full.evaluate()
    entry = metrics["bootstrap"]["mIoU"]
    assert entry["n"] == 9 and len(entry["replicates"]) == bootstrap.REPLICATES
    for b in (0, 17):
        again = SemSegEvaluator(num_classes=5)
        for j in bootstrap.resample_indices(9)[b]:
            again.process(*images[j])
        assert entry["replicates"][b] == pytest.approx(again.evaluate()["mIoU"], abs=1e-4)
    assert len(set(entry["replicates"])) > 10  # the resamples really differ


def test_a_topk_replicate_is_topk_of_the_resampled_videos():
    rng = np.random.default_rng(1)
    videos = [(rng.random((3, 6)), int(rng.integers(0, 6))) for _ in range(20)]
    full = TopKEvaluator(topk=(1, 5))
    for scores, label in videos:
        full.process(scores, label)
    metrics = full.evaluate()
    for name in ("top1", "top5"):
        again = TopKEvaluator(topk=(1, 5))
        for j in bootstrap.resample_indices(20)[5]:
            again.process(*videos[j])
        assert metrics["bootstrap"][name]["replicates"][5] == pytest.approx(again.evaluate()[name], abs=1e-4)


def _noisy_coco(tmp_path, images: int = 8):
    """A COCO val set of ``images`` images with 1-3 boxes each, and predictions: each box jittered
    by a different amount (some miss), plus a false positive per image."""
    rng = np.random.default_rng(2)
    gt_images, anns, predictions = [], [], {}
    for image_id in range(1, images + 1):
        gt_images.append({"id": image_id, "file_name": f"{image_id}.jpg", "width": 200, "height": 200})
        boxes, scores, labels = [], [], []
        for _ in range(int(rng.integers(1, 4))):
            x, y, w, h = (float(v) for v in rng.integers(10, 90, 4))
            category = int(rng.integers(0, 2))
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": [3, 5][category],
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
            shift = float(rng.uniform(0, 0.5)) * w
            boxes.append([x + shift, y, x + w + shift, y + h])
            scores.append(float(rng.uniform(0.3, 1)))
            labels.append(category)
        boxes.append([150.0, 150, 190, 190])
        scores.append(float(rng.uniform(0, 1)))
        labels.append(0)
        predictions[image_id] = (np.array(boxes), np.array(scores), np.array(labels))
    categories = [{"id": 3, "name": "a"}, {"id": 5, "name": "b"}]
    gt = {"images": gt_images, "annotations": anns, "categories": categories}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    return tmp_path / "gt.json", gt, predictions


def _ap_of_duplicated_images(tmp_path, gt, results, draw) -> float:
    """pycocotools' AP on a val set in which image ``j`` appears once per time ``draw`` holds it:
    each copy a new image id with copies of its annotations and detections."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    image_ids = sorted(img["id"] for img in gt["images"])
    images, anns, dets = [], [], []
    for copy_id, j in enumerate(draw, start=1):
        source = image_ids[j]
        images.append({"id": copy_id, "file_name": f"{copy_id}.jpg", "width": 200, "height": 200})
        for ann in gt["annotations"]:
            if ann["image_id"] == source:
                anns.append({**ann, "id": len(anns) + 1, "image_id": copy_id})
        dets += [{**r, "image_id": copy_id} for r in results if r["image_id"] == source]
    path = tmp_path / "duplicated.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": gt["categories"]}))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(path))
        evaluator = COCOeval(coco, coco.loadRes(dets), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[0] * 100)


def test_a_coco_ap_replicate_is_pycocotools_ap_on_the_resampled_images(tmp_path):
    path, gt, predictions = _noisy_coco(tmp_path)
    evaluator = COCOEvaluator(path, iou_types=("bbox",))
    for image_id, (boxes, scores, labels) in predictions.items():
        evaluator.process(image_id, boxes, scores, labels)
    metrics = evaluator.evaluate()["bbox"]
    replicates = metrics["bootstrap"]["AP"]["replicates"]
    assert metrics["bootstrap"]["AP"]["n"] == 8
    draws = bootstrap.resample_indices(8)
    for b in (0, 9):
        reference = _ap_of_duplicated_images(tmp_path, gt, evaluator.results_json(), draws[b])
        assert replicates[b] == pytest.approx(reference, abs=1e-3)
    # the identity resample gives the point value: the re-laid-out accumulation is pycocotools' own
    identity = _ap_of_duplicated_images(tmp_path, gt, evaluator.results_json(), range(8))
    assert identity == pytest.approx(metrics["AP"], abs=1e-6)
    assert len(set(replicates)) > 10


def entry(values, n=40):
    return {"n": n, "seed": bootstrap.SEED, "replicates": list(values)}


def test_one_seed_gives_the_percentile_interval_of_its_replicates():
    replicates = np.random.default_rng(3).normal(50, 2, bootstrap.REPLICATES)
    result = bootstrap.interval([50.3], [entry(replicates)])
    low, high = np.percentile(replicates, [2.5, 97.5])
    assert (result.mean, result.seeds, result.n) == (50.3, 1, 40)
    assert result.low == pytest.approx(low) and result.high == pytest.approx(high)
    assert result.describe() == f"50.3 [{low:.1f}, {high:.1f}]"


def test_seeds_that_disagree_widen_the_interval():
    rng = np.random.default_rng(4)
    base = rng.normal(0, 1, bootstrap.REPLICATES)
    agree = bootstrap.interval([50, 50, 50], [entry(50 + base)] * 3)
    disagree = bootstrap.interval([46, 50, 54], [entry(v + base) for v in (46, 50, 54)])
    assert agree.high - agree.low == pytest.approx(np.subtract(*np.percentile(base, [97.5, 2.5])))
    assert disagree.high - disagree.low > 1.5 * (agree.high - agree.low)
    assert disagree.mean == 50 and disagree.seeds == 3


def test_a_paired_difference_sees_through_noise_both_cells_share():
    rng = np.random.default_rng(5)
    shared = rng.normal(0, 3, bootstrap.REPLICATES)  # hard / easy resamples move both cells alike
    a = bootstrap.interval([51], [entry(51 + shared)])
    b = bootstrap.interval([50], [entry(50 + shared)])
    assert a.low < b.high  # the two intervals overlap...
    diff = bootstrap.difference([51], [entry(51 + shared)], [50], [entry(50 + shared)])
    assert diff.mean == 1 and diff.low == pytest.approx(1) and diff.excludes_zero()  # ...the difference does not
    same = bootstrap.difference([50], [entry(50 + shared)], [50], [entry(50 + shared)])
    assert not same.excludes_zero()


def test_replicates_of_different_splits_do_not_combine():
    with pytest.raises(ValueError, match="different splits"):
        bootstrap.interval([1, 2], [entry([1] * bootstrap.REPLICATES, n=40), entry([1] * bootstrap.REPLICATES, n=41)])
    with pytest.raises(ValueError, match="same split"):
        bootstrap.difference(
            [1], [entry([1] * bootstrap.REPLICATES, n=40)], [1], [entry([1] * bootstrap.REPLICATES, n=41)]
        )
