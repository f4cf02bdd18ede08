"""Task heads built from the official OpenMMLab configs train on the frozen backbone."""

from __future__ import annotations

import pytest
import torch

from .test_backbones import weights_digest

pytestmark = pytest.mark.openmmlab


def square_masks() -> torch.Tensor:
    masks = torch.zeros(2, 64, 64, dtype=torch.uint8)
    masks[0, 8:30, 10:40] = 1
    masks[1, 35:60, 30:55] = 1
    return masks


def train_steps(model, data, steps: int = 2) -> dict:
    """Train ``model`` as the engine does (its training wrapper's named scalars, the loop's total),
    each step checked against mmengine's own reduction of the same forward (the same seeded
    sampling): the same total and the same log, entry by entry and in order, bit for bit."""
    from frozenbench.engine.loop import total_loss
    from frozenbench.openmmlab.training import wrap_for_training

    wrapped = wrap_for_training(model)
    optimizer = torch.optim.SGD([p for p in wrapped.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    wrapped.train()
    for step in range(steps):
        torch.manual_seed(step)  # RoI and point sampling draw alike in both forwards
        total, logged = total_loss(wrapped(data))
        torch.manual_seed(step)
        losses = model(**model.data_preprocessor(data, training=True), mode="loss")
        reference_total, reference_log = model.parse_losses(losses)
        assert torch.isfinite(total) and torch.equal(total, reference_total)
        assert list(logged) == list(reference_log)
        assert all(torch.equal(logged[name], reference_log[name]) for name in logged), (logged, reference_log)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    return losses


@pytest.mark.parametrize("detector", ["mask_rcnn", "cascade_mask_rcnn", "htc"])
def test_detectors_train_their_heads_on_the_frozen_backbone(detector):
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData

    from frozenbench.openmmlab import build_registered_model
    from frozenbench.openmmlab.backbone import input_normalization
    from frozenbench.openmmlab.configs import backbone_cfg, detector_config

    torch.manual_seed(0)
    cfg = detector_config(
        backbone_cfg("convstem_swin_tiny", 64, None, frozen=True),
        [32, 64, 128, 256],
        [4, 8, 16, 32],
        num_classes=3,
        normalization=input_normalization("convstem_swin_tiny"),
        detector=detector,
        width=32,
        rpn_samples=64,
        rcnn_samples=64,
    )
    assert cfg.data_preprocessor.mean == [127.5] * 3  # the mini family's own statistics, not ImageNet's
    model = build_registered_model("mmdet", cfg)
    before = weights_digest(model.backbone)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    sample = DetDataSample(
        metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64), scale_factor=(1.0, 1.0))
    )
    sample.gt_instances = InstanceData(
        bboxes=torch.tensor([[10.0, 8.0, 40.0, 30.0], [30.0, 35.0, 55.0, 60.0]]),
        labels=torch.tensor([0, 2]),
        masks=BitmapMasks(square_masks().numpy(), 64, 64),
    )
    data = {"inputs": [torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)], "data_samples": [sample]}
    losses = train_steps(model, data)
    assert not model.backbone.body.model.training  # the detector's .train() left it in eval mode
    # cascade stages prefix their losses: s0.loss_cls, s1.loss_cls, ...
    kinds = {name.split(".")[-1] for name in losses}
    assert {"loss_rpn_cls", "loss_cls", "loss_bbox", "loss_mask"} <= kinds
    assert weights_digest(model.backbone) == before
    mask_heads = model.roi_head.mask_head
    mask_heads = mask_heads if isinstance(mask_heads, torch.nn.ModuleList) else [mask_heads]
    assert all(head.conv_logits.weight.grad is not None for head in mask_heads)
    if detector != "mask_rcnn":
        assert len(model.roi_head.bbox_head) == 3  # three cascade stages


def test_mask2former_with_the_papers_light_decoders():
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    from frozenbench.openmmlab import build_registered_model
    from frozenbench.openmmlab.backbone import input_normalization
    from frozenbench.openmmlab.configs import BackbonePart, backbone_cfg, mask2former_config
    from frozenbench.tasks.registry import SegmentationHead

    torch.manual_seed(0)
    part = BackbonePart(
        backbone_cfg("convstem_swin_tiny", 64, None, frozen=True),
        [32, 64, 128, 256],
        [4, 8, 16, 32],
        input_normalization("convstem_swin_tiny"),
    )
    cfg = mask2former_config(part, 5, 64, SegmentationHead(width=32, num_queries=10, num_points=256))
    model = build_registered_model("mmseg", cfg)
    head = model.decode_head
    assert len(head.pixel_decoder.encoder.layers) == 1
    assert len(head.transformer_decoder.layers) == 4
    before = weights_digest(model.backbone)
    label = torch.zeros(1, 64, 64, dtype=torch.long)
    label[0, :, 32:] = 3
    label[0, 10:20, 10:20] = 255  # ignored
    sample = SegDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64)))
    sample.gt_sem_seg = PixelData(data=label)
    data = {"inputs": [torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)], "data_samples": [sample]}
    losses = train_steps(model, data)
    assert any(k.endswith("loss_mask") for k in losses) and any(k.endswith("loss_dice") for k in losses)
    assert weights_digest(model.backbone) == before


def test_backbone_is_registered_in_all_three_registries():
    from frozenbench.openmmlab import build_registered_model

    for scope in ("mmdet", "mmseg", "mmaction"):
        module = build_registered_model(scope, dict(type="FrozenbenchBackbone", arch="convstem_swin_tiny", img_size=64))
        assert module.channels == [32, 64, 128, 256]


def test_video_recognizer_trains_a_temporal_head_over_frozen_frames():
    from mmaction.structures import ActionDataSample

    from frozenbench.openmmlab import build_registered_model
    from frozenbench.openmmlab.backbone import input_normalization
    from frozenbench.openmmlab.configs import BackbonePart, backbone_cfg, recognizer_config
    from frozenbench.tasks.registry import VideoHead

    torch.manual_seed(0)
    part = BackbonePart(
        backbone_cfg("convstem_swin_tiny", 64, None, frozen=True),
        [32, 64, 128, 256],
        [4, 8, 16, 32],
        input_normalization("convstem_swin_tiny"),
    )
    cfg = recognizer_config(part, 8, 64, VideoHead(num_frames=4, num_blocks=2, width=32))
    model = build_registered_model("mmaction", cfg)
    before = weights_digest(model.backbone)
    calls = []
    model.backbone.body.register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    samples = []
    for label in (2, 5):
        sample = ActionDataSample()
        sample.set_gt_label(torch.tensor([label]))
        samples.append(sample)
    data = {
        "inputs": [torch.randint(0, 255, (1, 3, 4, 64, 64), dtype=torch.uint8) for _ in range(2)],
        "data_samples": samples,
    }
    losses = train_steps(model, data, steps=3)
    assert "loss_cls" in losses
    assert calls[0] == (2 * 4, 3, 64, 64)  # all frames of the batch through the backbone in one call
    assert weights_digest(model.backbone) == before
    assert len(model.cls_head.blocks) == 2 and model.cls_head.fc.weight.grad is not None


def test_extra_blocks_are_trainable_on_top_of_the_frozen_body():
    from frozenbench.openmmlab import FrozenbenchBackbone

    torch.manual_seed(0)
    plain = FrozenbenchBackbone(arch="convstem_swin_tiny", img_size=64)
    flexible = FrozenbenchBackbone(arch="convstem_swin_tiny", img_size=64, extra_blocks=2)
    assert not any(p.requires_grad for p in plain.parameters())
    trainable = [n for n, p in flexible.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("extra.") for n in trainable)
    assert len(flexible.extra.blocks) == 2
    feats = flexible(torch.randn(2, 3, 64, 64))
    assert [tuple(f.shape) for f in feats] == [(2, 32, 16, 16), (2, 64, 8, 8), (2, 128, 4, 4), (2, 256, 2, 2)]
    assert feats[-1].requires_grad and not feats[0].requires_grad
    feats[-1].sum().backward()
    assert flexible.extra.blocks[0].linear1.weight.grad is not None
    # another grid (e.g. a padded batch) still works: the position embedding is resized
    assert flexible.extra(torch.randn(1, 256, 3, 3)).shape == (1, 256, 3, 3)


def test_video_backbone_applies_the_extra_blocks():
    from frozenbench.openmmlab.video import FramewiseBackbone

    torch.manual_seed(0)
    plain = FramewiseBackbone(arch="convstem_swin_tiny", img_size=64)
    flexible = FramewiseBackbone(arch="convstem_swin_tiny", img_size=64, extra_blocks=1)
    flexible.body.load_state_dict(plain.body.state_dict())
    clips = torch.randn(1, 3, 2, 64, 64)
    tokens = flexible(clips)
    assert tokens.shape == plain(clips).shape == (1, 2, 4, 256)
    assert tokens.requires_grad and not torch.allclose(tokens, plain(clips))


def test_the_training_wrapper_keeps_the_task_models_layers_frozen_parts_and_copies():
    """Wrapped, a model's weights gain the prefix ``model.``: layer decay still finds the backbone's
    blocks (the same groups, the same scales), the saved state still leaves out the frozen body, and
    the engine's request for non-blocking copies reaches the data preprocessor."""
    from frozenbench.engine.device import place_model
    from frozenbench.engine.param_groups import param_groups
    from frozenbench.engine.steppers import trainable_state
    from frozenbench.openmmlab import build_registered_model
    from frozenbench.openmmlab.backbone import input_normalization
    from frozenbench.openmmlab.configs import BackbonePart, backbone_cfg, recognizer_config
    from frozenbench.openmmlab.training import wrap_for_training
    from frozenbench.tasks.registry import VideoHead

    def recognizer(frozen: bool):
        torch.manual_seed(0)
        part = BackbonePart(
            backbone_cfg("convstem_swin_tiny", 64, None, frozen=frozen),
            [32, 64, 128, 256],
            [4, 8, 16, 32],
            input_normalization("convstem_swin_tiny"),
        )
        cfg = recognizer_config(part, 8, 64, VideoHead(num_frames=4, num_blocks=1, width=32))
        return build_registered_model("mmaction", cfg)

    finetuned = recognizer(frozen=False)
    plain_groups = param_groups(finetuned, 0.05, layer_decay=0.75)
    wrapped_groups = param_groups(wrap_for_training(finetuned), 0.05, layer_decay=0.75)
    assert len({g["lr_scale"] for g in plain_groups}) > 3  # stem, stages and head: decay found the layers
    assert [(g["lr_scale"], g["weight_decay"], [id(p) for p in g["params"]]) for g in wrapped_groups] == [
        (g["lr_scale"], g["weight_decay"], [id(p) for p in g["params"]]) for g in plain_groups
    ]

    frozen = recognizer(frozen=True)
    inner_state = trainable_state(frozen)
    assert inner_state and not any(k.startswith("backbone.body.") for k in inner_state)
    wrapped = wrap_for_training(frozen)
    assert set(trainable_state(wrapped)) == {f"model.{k}" for k in inner_state}

    assert place_model(wrapped, torch.device("cpu")) is wrapped and frozen.data_preprocessor._non_blocking is False
    wrapped.set_non_blocking_copies(True)
    assert frozen.data_preprocessor._non_blocking is True


def test_the_training_wrapper_reduces_each_entry_as_mmengine_does():
    from frozenbench.openmmlab.training import reduce_loss

    assert torch.equal(reduce_loss("loss_cls", torch.tensor([1.0, 3.0])), torch.tensor(2.0))
    per_level = [torch.tensor([1.0, 2.0]), torch.tensor([4.0])]  # e.g. an RPN's loss per pyramid level
    assert torch.equal(reduce_loss("loss_rpn_cls", per_level), torch.tensor(5.5))
    with pytest.raises(TypeError, match="loss_x is not a tensor or list of tensors"):
        reduce_loss("loss_x", 1.0)
