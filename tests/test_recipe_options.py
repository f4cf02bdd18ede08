"""Two recipe choices as options (docs/recipe.md): a trainable LayerNorm on each backbone level before
the neck (``level_norm``, a head setting: a training input) and the ADE20K test mode (``test.mode``:
``slide`` or ``whole``, evaluation only)."""

from __future__ import annotations

import copy

import pytest
import torch
from frozenbench.tasks.registry import BackboneRequest, DetectionHead, SegmentationHead

from frozenbench.errors import UserError

from .conftest import REPO

pytestmark = pytest.mark.openmmlab

TINY = "convstem_swin_tiny"
CHANNELS = [32, 64, 128, 256]
FROZEN_TINY = BackboneRequest(None, 64, frozen=True, arch=TINY)
SEG_HEAD = {"width": 32, "num_queries": 8, "num_points": 256}


# -- level_norm ---------------------------------------------------------------------------------------


def test_level_norms_exist_per_level_and_train_on_a_frozen_body():
    from frozenbench.openmmlab import FrozenbenchBackbone

    torch.manual_seed(0)
    backbone = FrozenbenchBackbone(arch=TINY, img_size=64, level_norm=True)
    norms = backbone.level_norm.norms
    assert [n.normalized_shape for n in norms] == [(c,) for c in CHANNELS]
    for norm in norms:  # LayerNorm's init, as the official Swin detection code starts them
        assert torch.equal(norm.weight, torch.ones_like(norm.weight)) and not norm.bias.any()
    assert not any(p.requires_grad for p in backbone.body.parameters())
    trainable = {n for n, p in backbone.named_parameters() if p.requires_grad}
    assert trainable == {f"level_norm.norms.{i}.{w}" for i in range(4) for w in ("weight", "bias")}
    assert backbone.frozen_parts() == ["body"]  # the norms are saved with the head's state

    feats = backbone(torch.randn(2, 3, 64, 64))
    assert [tuple(f.shape) for f in feats] == [(2, 32, 16, 16), (2, 64, 8, 8), (2, 128, 4, 4), (2, 256, 2, 2)]
    for f in feats:  # each position normalised over its channels
        assert f.requires_grad
        assert torch.allclose(f.mean(1), torch.zeros(()), atol=1e-5)
    sum(f.sum() for f in feats).backward()
    assert all(n.weight.grad is not None for n in norms)
    assert all(p.grad is None for p in backbone.body.parameters())


def test_the_norms_are_absent_when_off():
    from frozenbench.openmmlab import FrozenbenchBackbone

    torch.manual_seed(0)
    plain = FrozenbenchBackbone(arch=TINY, img_size=64)
    assert plain.level_norm is None
    assert not any("level_norm" in k for k in plain.state_dict())
    assert not any(p.requires_grad for p in plain.parameters())
    x = torch.randn(1, 3, 64, 64)
    assert all(torch.equal(a, b) for a, b in zip(plain(x), plain.body(x)))  # the body's levels as they are


def _neck_inputs(model, x: torch.Tensor, neck) -> list[torch.Tensor]:
    seen = []
    handle = neck.register_forward_pre_hook(lambda module, args: seen.append([t.detach().clone() for t in args[0]]))
    try:
        with torch.no_grad():
            model.extract_feat(x)
    finally:
        handle.remove()
    return seen[0]


def test_the_detector_neck_takes_the_normalised_levels_and_their_weights_change_them():
    from frozenbench.tasks import detection

    torch.manual_seed(0)
    model = detection.build_model(DetectionHead(width=16, level_norm=True), FROZEN_TINY, 3)
    x = torch.randn(1, 3, 64, 64)
    before = _neck_inputs(model, x, model.neck)
    body = model.backbone.body(x)
    norms = model.backbone.level_norm.norms
    for f, b, norm in zip(before, body, norms):
        assert torch.allclose(f, norm(b.permute(0, 2, 3, 1)).permute(0, 3, 1, 2), atol=1e-6)
    with torch.no_grad():
        norms[0].weight.mul_(2.0)
        norms[2].bias.add_(0.5)
    after = _neck_inputs(model, x, model.neck)
    assert torch.allclose(after[0], 2 * before[0], atol=1e-6)  # bias 0: the scale alone
    assert torch.allclose(after[2], before[2] + 0.5, atol=1e-6)
    assert torch.equal(after[1], before[1]) and torch.equal(after[3], before[3])

    plain = detection.build_model(DetectionHead(width=16), FROZEN_TINY, 3)
    assert plain.backbone.level_norm is None
    plain.backbone.body.load_state_dict(model.backbone.body.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(_neck_inputs(plain, x, plain.neck), body))


def test_mask2former_takes_the_normalised_levels_and_the_head_state_keeps_them():
    from frozenbench.engine.param_groups import param_groups
    from frozenbench.engine.steppers import trainable_state
    from frozenbench.tasks import segmentation

    torch.manual_seed(0)
    model = segmentation.build_model(SegmentationHead(**SEG_HEAD, level_norm=True), FROZEN_TINY, 5)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = model.extract_feat(x)  # what the decode head (its pixel decoder) takes
        model.backbone.level_norm.norms[1].weight.mul_(3.0)
        scaled = model.extract_feat(x)
    assert len(feats) == 4 and torch.allclose(scaled[1], 3 * feats[1], atol=1e-5)
    assert torch.equal(scaled[0], feats[0])
    state = trainable_state(model)
    assert "backbone.level_norm.norms.0.weight" in state and not any(k.startswith("backbone.body.") for k in state)
    # norms take no weight decay (as the reference configs' paramwise 'norm': decay_mult 0)
    names = {id(p): n for n, p in model.named_parameters()}
    for group in param_groups(model, 0.05):
        for p in group["params"]:
            if "level_norm" in names[id(p)]:
                assert group["weight_decay"] == 0.0


def test_on_a_plain_vit_the_norms_follow_the_simple_feature_pyramid():
    from frozenbench.openmmlab import FrozenbenchBackbone

    torch.manual_seed(0)
    backbone = FrozenbenchBackbone(arch="vit_small_patch14_dinov2", img_size=56, level_norm=True)
    assert backbone.pyramid is not None and len(backbone.level_norm.norms) == 4
    feats = backbone(torch.randn(1, 3, 56, 56))
    assert [f.shape[1] for f in feats] == [384] * 4 and [f.shape[-1] for f in feats] == [16, 8, 4, 2]
    assert all(torch.allclose(f.mean(1), torch.zeros(()), atol=1e-5) for f in feats)


def test_level_norm_is_a_training_input_and_the_test_mode_is_not():
    from frozenbench.cells.spec import CellSpec

    def spec(head=None, test=None):
        return CellSpec.from_json(
            {
                "type": "segmentation",
                "data": "d",
                "img_size": 64,
                "head": {**SEG_HEAD, **(head or {})},
                "test": test or {},
            }
        )

    base = spec()
    assert spec(head={"level_norm": True}).fingerprint() != base.fingerprint()  # retrains
    assert spec(test={"mode": "whole"}).fingerprint() == base.fingerprint()  # re-evaluates only
    assert spec(test={"mode": "whole"}).digest() != base.digest()  # recorded with the results
    # off, the knob is no input: cells trained before it existed keep their fingerprint (and state)
    assert "level_norm" not in base.training_inputs()["head"]
    assert spec(head={"level_norm": True}).training_inputs()["head"]["level_norm"] is True


# -- the ADE20K test mode -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ade(tmp_path_factory):
    from frozenbench.data.synth import synthesize

    from .test_synth import tiny_spec

    root = tmp_path_factory.mktemp("ade") / "shapes-ade"
    synthesize(tiny_spec("shapes-ade", image_size=64, num_train=2, num_val=3), root)
    return root


def _count_backbone_forwards(model) -> list[int]:
    calls = []
    model.backbone.register_forward_hook(lambda module, args, out: calls.append(tuple(args[0].shape)))
    return calls


def test_whole_and_slide_give_the_same_prediction_shape_and_whole_runs_one_forward_per_view(ade):
    from mmengine.dataset import pseudo_collate

    from frozenbench.tasks import segmentation

    num_classes = len(segmentation.class_names(ade))
    val = segmentation.build_dataset(ade, "val", 64, train=False)
    torch.manual_seed(0)
    model = segmentation.build_model(SegmentationHead(**SEG_HEAD), FROZEN_TINY, num_classes)
    model.eval()
    calls = _count_backbone_forwards(model)
    data = pseudo_collate([val[0]])
    ori = tuple(data["data_samples"][0].ori_shape)
    with torch.no_grad():
        # at 1.5x a 64 px image is a 96 px view: 2 x 2 windows of 64 at stride 42, or one forward
        (slide,) = segmentation._tta_scores(model, data, [1.5], False, "slide")
        slide_calls, calls[:] = list(calls), []
        (whole,) = segmentation._tta_scores(model, data, [1.5], False, "whole")
        whole_calls = list(calls)
    assert slide.shape == whole.shape == (num_classes, *ori)
    assert len(slide_calls) == 4 and all(c[-2:] == (64, 64) for c in slide_calls)
    assert whole_calls == [(1, 3, 96, 96)]  # 96 is a multiple of 32: no padding
    assert torch.allclose(whole.sum(0), torch.ones(ori), atol=1e-4)  # mean of softmaxed scores

    # through evaluate(): one forward per image and view (here: 2 scales x flip)
    calls[:] = []
    metrics = segmentation.evaluate(
        model, val, num_classes, test={"mode": "whole", "scales": [1.0, 0.75], "flip": True}
    )
    assert len(calls) == len(val) * 2 * 2 and "mIoU" in metrics
    assert calls[1][-2:] == calls[0][-2:] and calls[2][-2:] == (64, 64)  # 48 px padded up to 64 (32-multiple)


def test_a_typod_option_value_is_an_error_naming_the_key(ade):
    from frozenbench.tasks import segmentation
    from frozenbench.tasks.registry import get_task_type

    with pytest.raises(UserError, match=r"segmentation test\.mode must be one of slide, whole, got 'wole'"):
        segmentation.evaluate(torch.nn.Module(), [], 3, test={"mode": "wole"})
    with pytest.raises(UserError, match=r"segmentation test options \['mdoe'\] unknown"):
        segmentation.evaluate(torch.nn.Module(), [], 3, test={"mdoe": "whole"})
    detection = get_task_type("detection")
    with pytest.raises(UserError, match=r"tasks\.coco\.heads\.h\.level_norm: must be true or false, got 'yes'"):
        detection.make_head({"level_norm": "yes"}, where="tasks.coco.heads.h")
    with pytest.raises(UserError, match="unknown video head setting"):
        get_task_type("video").make_head({"level_norm": True})  # the temporal head has no FPN levels


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c["tasks"]["ade"].update(test={"mode": "wole"}), "tasks.ade.test.mode: 'wole' is not one of"),
        (lambda c: c["tasks"]["ade"].update(test={"mdoe": "whole"}), "tasks.ade.test"),
        (lambda c: c["tasks"]["coco"].update(test={"mode": "whole"}), "tasks.coco.test.mode: not a detection test"),
        (
            lambda c: c["tasks"]["coco"]["heads"]["mrcnn_fpn"].update(level_norm="ture"),
            "tasks.coco.heads.mrcnn_fpn.level_norm: 'ture' is not of type 'boolean'",
        ),
    ],
)
def test_a_config_with_a_typod_option_names_the_key(change, message):
    from frozenbench.config import check_references, read_yaml, validate_config

    config = copy.deepcopy(read_yaml(REPO / "configs" / "paper.yaml"))
    change(config)
    with pytest.raises(UserError, match=message.replace(".", r"\.").replace("[", r"\[")):
        check_references(validate_config(config, "paper.yaml"), "paper.yaml")


def test_the_paper_config_states_both_choices():
    from frozenbench.config import load_config

    paper = load_config(REPO / "configs" / "paper.yaml")
    assert paper["tasks"]["ade"]["test"]["mode"] == "whole"
    for task in ("coco", "ade"):
        assert all(head["level_norm"] is True for head in paper["tasks"][task]["heads"].values())
    mini = load_config(REPO / "config.yaml")  # the mini-study keeps its recorded behaviour
    assert not any(head.get("level_norm") for task in ("coco", "ade") for head in mini["tasks"][task]["heads"].values())
    assert "mode" not in mini["tasks"]["ade"].get("test", {})
