"""One shared frozen backbone feeding several heads vs one backbone forward per task (inference).

    PYTHONPATH=src python bench/shared_backbone.py [--device cuda] [--repeats 7]

The paper's "one shared frozen base network": with the backbone frozen, a detector (Mask R-CNN)
and a segmenter (Mask2Former) on the same image can share one backbone forward. Cases, on the
same batch of 128 px images (convstem_swin_tiny, heads as in config.yaml):
- ``per_task``: each model runs its own backbone forward, then its head;
- ``shared``: one backbone forward, its features handed to both heads.
The heads' predictions are checked to be identical in both cases.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from frozenbench.tasks.registry import BackboneRequest, DetectionHead, SegmentationHead

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved, ratio, spread, write_record  # noqa: E402


def main() -> None:
    from mmdet.structures import DetDataSample
    from mmseg.structures import SegDataSample

    from frozenbench.checkpoint import save_backbone
    from frozenbench.models.registry import build_arch
    from frozenbench.tasks import detection, segmentation

    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    device, size = args.device, 128
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    torch.manual_seed(0)
    ckpt = Path(__file__).resolve().parent / "results" / "shared_backbone_convstem_swin_tiny.pth"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    save_backbone(
        ckpt,
        "convstem_swin_tiny",
        build_arch("convstem_swin_tiny", size).state_dict(),
        {"pretrain_objective": "random"},
    )
    request = BackboneRequest(str(ckpt), size, frozen=True)
    det = detection.build_model(DetectionHead(width=64), request, 4).to(device).eval()
    seg = segmentation.build_model(SegmentationHead(width=64, num_queries=20), request, 7).to(device).eval()
    x = torch.randn(args.batch, 3, size, size, device=device)
    meta = dict(img_shape=(size, size), ori_shape=(size, size), pad_shape=(size, size), scale_factor=(1.0, 1.0))
    det_samples = [DetDataSample(metainfo=meta) for _ in range(args.batch)]
    seg_samples = [SegDataSample(metainfo=meta) for _ in range(args.batch)]
    backbone = det.backbone  # identical weights to seg.backbone (same checkpoint)

    def heads(feats, detect=True, segment=True):
        det_out = seg_out = None
        if detect:
            neck = det.neck(feats)
            proposals = det.rpn_head.predict(neck, det_samples, rescale=False)
            det_out = det.roi_head.predict(neck, proposals, det_samples, rescale=False)
        if segment:
            seg_out = seg.decode_head.predict(list(feats), [s.metainfo for s in seg_samples], seg.test_cfg)
        return det_out, seg_out

    @torch.no_grad()
    def per_task_both():
        det_out, _ = heads(det.backbone(x), segment=False)
        _, seg_out = heads(seg.backbone(x), detect=False)
        return det_out, seg_out

    @torch.no_grad()
    def shared():
        return heads(backbone(x))

    @torch.no_grad()
    def backbone_only():
        return backbone(x)

    a, b = per_task_both(), shared()
    same = all(torch.equal(p.bboxes, q.bboxes) for p, q in zip(a[0], b[0])) and torch.equal(a[1], b[1])
    times = interleaved(
        {"per_task": per_task_both, "shared": shared, "backbone_only": backbone_only}, args.repeats, warmup=1, sync=sync
    )
    record = {
        "device": device,
        "batch": args.batch,
        "input": size,
        "repeats": args.repeats,
        "heads": ["mask_rcnn", "mask2former"],
        "identical_predictions": same,
        "seconds": {name: spread(ts) for name, ts in times.items()},
        "speedup_shared": ratio(times["per_task"], times["shared"]),
        "backbone_fraction_of_per_task": ratio(times["backbone_only"], times["per_task"]),
    }
    path = write_record(f"shared_backbone_{device}", record)
    ckpt.unlink()
    print(f"{path}: shared {record['speedup_shared']['median']:.2f}x faster, identical predictions: {same}")


if __name__ == "__main__":
    main()
