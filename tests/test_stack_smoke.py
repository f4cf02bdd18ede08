"""The patched OpenMMLab stack imports and its compiled ops run on CPU."""

from __future__ import annotations

import torch


def test_mmcv_ops_run_on_cpu():
    from mmcv.ops import RoIAlign, nms

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [50.0, 50.0, 60.0, 60.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    dets, keep = nms(boxes, scores, iou_threshold=0.5)
    # box 1 overlaps box 0 with IoU 0.68 and is suppressed; box 2 is disjoint.
    assert keep.tolist() == [0, 2]
    assert torch.allclose(dets[:, 4], torch.tensor([0.9, 0.7]))

    feat = torch.arange(16.0).reshape(1, 1, 4, 4)
    roi = torch.tensor([[0.0, 0.0, 0.0, 4.0, 4.0]])
    out = RoIAlign(output_size=(2, 2), spatial_scale=1.0, sampling_ratio=2, aligned=False)(feat, roi)
    assert out.shape == (1, 1, 2, 2)
    # RoI covers the whole map: each output bin averages its quadrant's bilinear samples.
    assert out[0, 0, 0, 0] < out[0, 0, 0, 1] < out[0, 0, 1, 0] < out[0, 0, 1, 1]


def test_openmmlab_packages_import():
    import mmaction.models  # noqa: F401  (needs the drn patch from scripts/apply_patches.py)
    import mmdet
    import mmseg

    assert mmdet.__version__ == "3.3.0"
    assert mmseg.__version__ == "1.2.2"
    import mmaction

    assert mmaction.__version__ == "1.2.0"


def test_timm_swin_features_only_forward():
    import timm

    model = timm.create_model(
        "swin_tiny_patch4_window7_224",
        pretrained=False,
        features_only=True,
        out_indices=(0, 1, 2, 3),
        img_size=64,
        window_size=4,
        embed_dim=32,
        depths=(1, 1, 1, 1),
        num_heads=(1, 2, 4, 8),
    )
    feats = model(torch.randn(2, 3, 64, 64))
    assert [tuple(f.shape) for f in feats] == [(2, 16, 16, 32), (2, 8, 8, 64), (2, 4, 4, 128), (2, 2, 2, 256)]
    assert model.feature_info.reduction() == [4, 8, 16, 32]
