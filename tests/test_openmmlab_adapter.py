"""The frozen backbone inside mmdet's Mask R-CNN + FPN: one training step moves the head only."""

from __future__ import annotations

import pytest
import torch

from .test_backbones import weights_digest

pytestmark = pytest.mark.openmmlab


def mask_rcnn_cfg(channels: list[int], num_classes: int = 3, width: int = 32) -> dict:
    roi = lambda size: dict(type="SingleRoIExtractor", roi_layer=dict(type="RoIAlign", output_size=size, sampling_ratio=0),
                            out_channels=width, featmap_strides=[4, 8, 16, 32])
    assigner = lambda pos, neg: dict(type="MaxIoUAssigner", pos_iou_thr=pos, neg_iou_thr=neg, min_pos_iou=neg,
                                     match_low_quality=True, ignore_iof_thr=-1)
    return dict(
        type="MaskRCNN",
        data_preprocessor=dict(type="DetDataPreprocessor", mean=[127.5] * 3, std=[64.0] * 3, bgr_to_rgb=False,
                               pad_mask=True, pad_size_divisor=32),
        backbone=dict(type="FrozenbenchBackbone", arch="cswin_tiny", img_size=64),
        neck=dict(type="FPN", in_channels=channels, out_channels=width, num_outs=5),
        rpn_head=dict(type="RPNHead", in_channels=width, feat_channels=width,
                      anchor_generator=dict(type="AnchorGenerator", scales=[4], ratios=[0.5, 1.0, 2.0],
                                            strides=[4, 8, 16, 32, 64]),
                      bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[1.0] * 4),
                      loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0),
                      loss_bbox=dict(type="L1Loss", loss_weight=1.0)),
        roi_head=dict(type="StandardRoIHead", bbox_roi_extractor=roi(7),
                      bbox_head=dict(type="Shared2FCBBoxHead", in_channels=width, fc_out_channels=64, roi_feat_size=7,
                                     num_classes=num_classes,
                                     bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4,
                                                     target_stds=[0.1, 0.1, 0.2, 0.2]),
                                     loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
                                     loss_bbox=dict(type="L1Loss", loss_weight=1.0)),
                      mask_roi_extractor=roi(14),
                      mask_head=dict(type="FCNMaskHead", num_convs=1, in_channels=width, conv_out_channels=width,
                                     num_classes=num_classes,
                                     loss_mask=dict(type="CrossEntropyLoss", use_mask=True, loss_weight=1.0))),
        train_cfg=dict(
            rpn=dict(assigner=assigner(0.7, 0.3), sampler=dict(type="RandomSampler", num=64, pos_fraction=0.5,
                                                                 neg_pos_ub=-1, add_gt_as_proposals=False),
                     allowed_border=-1, pos_weight=-1, debug=False),
            rpn_proposal=dict(nms_pre=200, max_per_img=100, nms=dict(type="nms", iou_threshold=0.7), min_bbox_size=0),
            rcnn=dict(assigner=assigner(0.5, 0.5), sampler=dict(type="RandomSampler", num=64, pos_fraction=0.25,
                                                                  neg_pos_ub=-1, add_gt_as_proposals=True),
                      mask_size=28, pos_weight=-1, debug=False)),
        test_cfg=dict(rpn=dict(nms_pre=200, max_per_img=100, nms=dict(type="nms", iou_threshold=0.7), min_bbox_size=0),
                      rcnn=dict(score_thr=0.05, nms=dict(type="nms", iou_threshold=0.5), max_per_img=20,
                                mask_thr_binary=0.5)),
    )


def test_mask_rcnn_trains_its_head_on_the_frozen_backbone():
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmdet.utils import register_all_modules
    from mmengine.structures import InstanceData

    from frozenbench import openmmlab

    register_all_modules()
    openmmlab.register()
    torch.manual_seed(0)
    from mmengine.config import ConfigDict

    model = MODELS.build(ConfigDict(mask_rcnn_cfg([32, 64, 128, 256])))
    backbone_before = weights_digest(model.backbone)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    assert not any(p.requires_grad for p in model.backbone.parameters())

    masks = torch.zeros(2, 64, 64, dtype=torch.uint8)
    masks[0, 8:30, 10:40] = 1
    masks[1, 35:60, 30:55] = 1
    sample = DetDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64),
                                         scale_factor=(1.0, 1.0)))
    sample.gt_instances = InstanceData(bboxes=torch.tensor([[10.0, 8.0, 40.0, 30.0], [30.0, 35.0, 55.0, 60.0]]),
                                       labels=torch.tensor([0, 2]), masks=BitmapMasks(masks.numpy(), 64, 64))
    data = {"inputs": [torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)], "data_samples": [sample]}
    model.train()
    assert not model.backbone.body.model.training  # the detector's .train() leaves it in eval mode
    for _ in range(2):
        batch = model.data_preprocessor(data, training=True)
        losses = model(**batch, mode="loss")
        total, _ = model.parse_losses(losses)
        assert torch.isfinite(total)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    assert {"loss_rpn_cls", "loss_cls", "loss_bbox", "loss_mask"} <= set(losses)
    assert weights_digest(model.backbone) == backbone_before
    assert model.roi_head.mask_head.conv_logits.weight.grad is not None


def test_backbone_is_registered_in_all_three_registries():
    from mmaction.registry import MODELS as ACTION
    from mmdet.registry import MODELS as DET
    from mmseg.registry import MODELS as SEG

    from frozenbench import openmmlab

    openmmlab.register()
    for registry in (DET, SEG, ACTION):
        module = registry.build(dict(type="FrozenbenchBackbone", arch="cswin_tiny", img_size=64))
        assert module.channels == [32, 64, 128, 256]
