"""Evaluators against hand-checked cases and against pycocotools on the generated COCO data."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from frozenbench.evaluation import COCOEvaluator, SemSegEvaluator, TopKEvaluator


def write_gt(path, boxes, size=100, first_id=1):
    images = [{"id": 1, "file_name": "a.jpg", "width": size, "height": size}]
    anns = []
    for i, (x, y, w, h) in enumerate(boxes):
        seg = [[x, y, x + w, y, x + w, y + h, x, y + h]]
        anns.append(
            {
                "id": i + first_id,
                "image_id": 1,
                "category_id": 7,
                "bbox": [x, y, w, h],
                "area": w * h,
                "iscrowd": 0,
                "segmentation": seg,
            }
        )
    path.write_text(
        json.dumps(
            {
                "images": images,
                "annotations": anns,
                "categories": [{"id": 7, "name": "square"}, {"id": 9, "name": "star"}],
            }
        )
    )
    return path


def test_one_detection_at_iou_062_scores_ap_30(tmp_path):
    # GT 40x40 at (10,10); the prediction is shifted right by 10 px: IoU = 1200/2000 = 0.6,
    # widened slightly to 0.62 so it matches at thresholds .50, .55, .60 only: AP = 3/10.
    gt = write_gt(tmp_path / "gt.json", [(10, 10, 40, 40)])
    ev = COCOEvaluator(gt, iou_types=("bbox",))
    x_shift = 40 - 40 * 2 * 0.62 / (1 + 0.62)  # solves IoU(shifted box) = 0.62
    ev.process(1, np.array([[10 + x_shift, 10, 50 + x_shift, 50]]), np.array([0.9]), np.array([0]))
    metrics = ev.evaluate()["bbox"]
    assert metrics["AP"] == pytest.approx(30.0, abs=0.01)
    assert metrics["AP50"] == pytest.approx(100.0) and metrics["AP75"] == pytest.approx(0.0)


def test_labels_map_to_coco_category_ids(tmp_path):
    gt = write_gt(tmp_path / "gt.json", [(10, 10, 40, 40)])
    ev = COCOEvaluator(gt, iou_types=("bbox",))
    ev.process(1, np.array([[10.0, 10, 50, 50]]), np.array([0.9]), np.array([1]))  # label 1 -> category 9: wrong class
    assert ev.results_json()[0]["category_id"] == 9
    assert ev.evaluate()["bbox"]["AP"] == pytest.approx(0.0)


def test_annotation_id_0_ground_truth_scores_100_against_itself(tmp_path):
    # labelme's COCO export numbers annotations from 0; COCOeval took a match with id 0 for none
    boxes = [(10, 10, 40, 40), (55, 50, 30, 30), (5, 60, 20, 30)]
    gt = write_gt(tmp_path / "gt.json", boxes, first_id=0)
    ev = COCOEvaluator(gt, iou_types=("bbox",))
    xyxy = np.array([[x, y, x + w, y + h] for x, y, w, h in boxes], dtype=float)
    ev.process(1, xyxy, np.array([0.9, 0.8, 0.7]), np.zeros(3, int))
    assert ev.evaluate()["bbox"]["AP"] == pytest.approx(100.0)


def test_categories_listed_out_of_id_order_map_by_increasing_id(tmp_path):
    from frozenbench.evaluation.coco import category_ids

    gt = write_gt(tmp_path / "gt.json", [(10, 10, 40, 40)])
    coco = json.loads(gt.read_text())
    coco["categories"].reverse()  # [9 star, 7 square]
    gt.write_text(json.dumps(coco))
    assert category_ids(coco["categories"]) == [7, 9]
    ev = COCOEvaluator(gt, iou_types=("bbox",))
    ev.process(1, np.array([[10.0, 10, 50, 50]]), np.array([0.9]), np.array([0]))
    assert ev.results_json()[0]["category_id"] == 7 and ev.evaluate()["bbox"]["AP"] == pytest.approx(100.0)


@pytest.mark.openmmlab
def test_training_labels_and_evaluation_agree_on_a_json_listing_categories_in_reverse(tmp_path):
    """The labels mmdet trains on (through the project's dataset builder), scored as predictions by
    the project's evaluator, give 100 AP: training and scoring use one class order."""
    from frozenbench.data.synth import synthesize
    from frozenbench.tasks import detection

    from .test_synth import tiny_spec

    root = tmp_path / "coco"
    synthesize(tiny_spec("shapes-coco", num_train=2, num_val=4), root)
    ann = root / "annotations" / "instances_val2017.json"
    coco = json.loads(ann.read_text())
    coco["categories"].reverse()
    ann.write_text(json.dumps(coco))
    size = coco["images"][0]["width"]
    dataset = detection.build_dataset(root, "val", size, train=False)
    ev = COCOEvaluator(ann, iou_types=("bbox",))
    seen = set()
    for index in range(len(dataset)):
        sample = dataset[index]["data_samples"]
        gt = sample.gt_instances  # crowd regions go to ignored_instances, as COCOeval ignores them
        labels = gt.labels.numpy()
        seen |= set(labels.tolist())
        ev.process(sample.img_id, gt.bboxes.tensor.numpy(), np.ones(len(labels)), labels)
    assert len(seen) > 1, "one class only: the order is not tested"
    assert ev.evaluate()["bbox"]["AP"] == pytest.approx(100.0)


def test_no_predictions_give_nan(tmp_path):
    ev = COCOEvaluator(write_gt(tmp_path / "gt.json", [(10, 10, 40, 40)]))
    assert all(math.isnan(v) for v in ev.evaluate()["segm"].values())


def test_ground_truth_as_predictions_scores_100_on_generated_coco(tmp_path):
    from pycocotools.coco import COCO

    from frozenbench.data.synth import synthesize

    from .test_synth import tiny_spec

    synthesize(tiny_spec("shapes-coco"), tmp_path / "coco")
    ann = tmp_path / "coco" / "annotations" / "instances_val2017.json"
    coco = COCO(str(ann))
    ev = COCOEvaluator(ann, output_dir=tmp_path / "out")
    cat_index = {c: i for i, c in enumerate(sorted(coco.getCatIds()))}
    for image_id in coco.getImgIds():
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=[image_id])) if not a["iscrowd"]]
        boxes = np.array(
            [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns]
        ).reshape(-1, 4)
        masks = np.stack([coco.annToMask(a) for a in anns]) if anns else None
        ev.process(image_id, boxes, np.ones(len(anns)), np.array([cat_index[a["category_id"]] for a in anns]), masks)
    metrics = ev.evaluate()
    assert metrics["bbox"]["AP"] == pytest.approx(100.0) and metrics["segm"]["AP"] == pytest.approx(100.0)
    assert (tmp_path / "out" / "coco_instances_results.json").exists()


def test_miou_hand_checked():
    # 2 classes (after reduce_zero_label: stored 1 -> 0, 2 -> 1, 0 ignored).
    label = np.array([[1, 1, 2, 2], [1, 1, 2, 0]])
    pred = np.array([[0, 0, 0, 1], [0, 1, 1, 1]])
    ev = SemSegEvaluator(num_classes=2, reduce_zero_label=True)
    ev.process(pred, label)
    # class 0: gt 4 px, pred 4 px on gt-0 region 3 hits + 1 pred on gt-1 -> TP 3, FP 1, FN 1 -> IoU 3/5
    # class 1: gt 3 px (one ignored), TP 2, FP 1, FN 1 -> IoU 2/4
    m = ev.evaluate()
    assert m["per_class_IoU"] == pytest.approx([60.0, 50.0])
    assert m["mIoU"] == pytest.approx(55.0)
    assert m["aAcc"] == pytest.approx(5 / 7 * 100)
    assert m["mAcc"] == pytest.approx((3 / 4 + 2 / 3) / 2 * 100)


def test_miou_skips_absent_classes_and_rejects_bad_labels():
    ev = SemSegEvaluator(num_classes=3)
    ev.process(np.zeros((2, 2), int), np.zeros((2, 2), int))
    assert ev.evaluate()["per_class_IoU"] == [100.0, None, None] and ev.evaluate()["mIoU"] == 100.0
    with pytest.raises(ValueError, match="label value 5 outside 0..2"):
        ev.process(np.zeros((1, 1), int), np.full((1, 1), 5))


def test_topk_averages_views_per_video():
    ev = TopKEvaluator(topk=(1, 2))
    ev.process(np.array([[0.1, 0.5, 0.4], [0.1, 0.2, 0.7]]), label=2)  # mean favours class 2
    ev.process(np.array([0.6, 0.3, 0.1]), label=1)  # top-2 hit only
    metrics = ev.evaluate()
    assert {k: v for k, v in metrics.items() if k != "bootstrap"} == {"top1": 50.0, "top2": 100.0}
    assert set(metrics["bootstrap"]) == {"top1", "top2"}
