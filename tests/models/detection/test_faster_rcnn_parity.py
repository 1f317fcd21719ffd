"""fasterrcnn_resnet50_fpn against torchvision's: converted random weights give the same
anchors, proposals and detections (eval), and the same four losses (training, same seed)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.detection import fasterrcnn_resnet50_fpn

from tests.conftest import TOLERANCES
from visionzoo.interop.torchvision import convert_state_dict, from_torchvision
from visionzoo.models.detection import FasterRCNN

# Small images and few proposals keep the ResNet-50 + 1024-d head cheap on a CPU.
SETTINGS = dict(min_size=160, max_size=200, rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=150)


def perturbed_reference() -> nn.Module:
    """torchvision's model with random weights, BN statistics and biases moved off their
    defaults, and the predictors rescaled so that boxes move and scores pass 0.05."""
    torch.manual_seed(0)
    ref = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, **SETTINGS)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.add_(torch.randn(c, generator=g) * 0.1)
                m.running_var.mul_(torch.empty(c).uniform_(0.8, 1.25, generator=g))
                m.weight.mul_(torch.empty(c).uniform_(0.8, 1.2, generator=g))
                m.bias.add_(torch.randn(c, generator=g) * 0.1)
        ref.rpn.head.bbox_pred.weight.mul_(0.1)
        ref.roi_heads.box_predictor.bbox_pred.weight.mul_(0.3)
        head, pred = ref.rpn.head, ref.roi_heads.box_predictor
        for layer in (
            head.conv[0][0],
            head.cls_logits,
            head.bbox_pred,
            pred.cls_score,
            pred.bbox_pred,
        ):
            layer.bias.normal_(0, 0.05, generator=g)
    return ref.eval()


@pytest.fixture(scope="module")
def models() -> tuple[nn.Module, FasterRCNN]:
    ref = perturbed_reference()
    return ref, from_torchvision("fasterrcnn_resnet50_fpn", ref)


def capture(model: nn.Module) -> dict[str, object]:
    seen: dict[str, object] = {}
    model.rpn.anchor_generator.register_forward_hook(lambda m, i, o: seen.__setitem__("anchors", o))
    model.rpn.register_forward_hook(lambda m, i, o: seen.__setitem__("proposals", o[0]))
    return seen


def test_converted_model_has_the_reference_settings(models):
    ref, ours = models
    assert isinstance(ours, FasterRCNN) and not ours.training
    assert ours.num_classes == 91 and ours.transform.min_size == (160,)
    assert ours.transform.max_size == 200 and ours.rpn.post_nms_top_n() == 150
    assert ours.rpn.anchor_generator.sizes == ((32.0,), (64.0,), (128.0,), (256.0,), (512.0,))
    assert ours.roi_heads.detections_per_img == 100 and ours.roi_heads.score_thresh == 0.05
    # torchvision's random model has trainable BN: ours takes BatchNorm2d too, all layers trainable
    assert isinstance(ours.backbone.body.bn1, nn.BatchNorm2d)
    assert all(p.requires_grad for p in ours.backbone.body.parameters())
    # identity key mapping, and a state dict converts as well as a module
    sd = ref.state_dict()
    assert convert_state_dict("fasterrcnn_resnet50_fpn", sd).keys() == sd.keys()
    again = from_torchvision("fasterrcnn_resnet50_fpn", sd, **SETTINGS)
    assert torch.equal(again.roi_heads.box_head.fc7.weight, ref.roi_heads.box_head.fc7.weight)


def test_eval_detections_anchors_and_proposals_match(models):
    ref, ours = models
    ref.eval(), ours.eval()
    g = torch.Generator().manual_seed(2)
    images = [torch.rand(3, 200, 250, generator=g), torch.rand(3, 180, 220, generator=g)]
    seen_ref, seen_ours = capture(ref), capture(ours)
    with torch.no_grad():
        expected = ref(images)
        got = ours(images)
    anchors_ref = seen_ref["anchors"]
    assert torch.equal(seen_ours["anchors"], anchors_ref[0])
    assert torch.equal(seen_ours["anchors"], anchors_ref[1])
    for a, b in zip(seen_ours["proposals"], seen_ref["proposals"], strict=True):
        assert a.shape == b.shape == (150, 4)
        assert (a - b).abs().max() <= 1e-3
    for det, exp in zip(got, expected, strict=True):
        assert len(exp["boxes"]) == 100  # detections exist: the comparison is not vacuous
        assert det["boxes"].shape == exp["boxes"].shape
        assert (det["boxes"] - exp["boxes"]).abs().max() <= 1e-3
        assert torch.equal(det["labels"], exp["labels"])
        assert (det["scores"] - exp["scores"]).abs().max() <= TOLERANCES["parity_fp32"]


def test_training_losses_match_with_the_same_seed(models):
    ref, ours = models
    ref.train(), ours.train()
    g = torch.Generator().manual_seed(3)
    # Both resize to 160 x 160: no padding, so no tied objectness scores whose order torchvision's
    # unstable sort leaves open.
    images = [torch.rand(3, 128, 128, generator=g), torch.rand(3, 144, 144, generator=g)]
    targets = [
        {"boxes": torch.tensor([[10.0, 20, 100, 120], [60, 30, 120, 110], [5, 5, 30, 25]]),
         "labels": torch.tensor([1, 5, 90])},
        {"boxes": torch.tensor([[30.0, 40, 130, 140]]), "labels": torch.tensor([7])},
    ]  # fmt: skip
    try:
        for seed in (5, 6):
            torch.manual_seed(seed)
            expected = ref(images, [dict(t) for t in targets])
            torch.manual_seed(seed)
            got = ours(images, targets)
            assert got.keys() == expected.keys()
            for name in expected:
                assert abs(got[name].item() - expected[name].item()) <= 1e-5, name
            targets[1] = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    finally:
        ref.eval(), ours.eval()


def test_frozen_bn_checkpoints_like_coco_convert_with_their_eps():
    """torchvision's pretrained detectors use FrozenBatchNorm2d (no num_batches_tracked) and
    COCO_V1 sets its eps to 0: the converted model takes frozen BN with that eps."""
    from torchvision.models.detection import FasterRCNN as TvFasterRCNN
    from torchvision.models.detection._utils import overwrite_eps
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops import FrozenBatchNorm2d as TvFrozenBN

    from visionzoo.models.detection import FrozenBatchNorm2d

    torch.manual_seed(0)
    backbone = resnet_fpn_backbone(backbone_name="resnet50", weights=None, norm_layer=TvFrozenBN)
    ref = TvFasterRCNN(backbone, num_classes=21).eval()
    g = torch.Generator().manual_seed(4)
    for m in ref.modules():
        if isinstance(m, TvFrozenBN):
            c = m.weight.numel()
            m.running_mean.normal_(0, 0.1, generator=g)
            m.running_var.uniform_(0.8, 1.25, generator=g)
            m.weight.uniform_(0.8, 1.2, generator=g)
            m.bias.normal_(0, 0.1, generator=g)
            assert c > 0
    overwrite_eps(ref, 0.0)
    assert not any(k.endswith("num_batches_tracked") for k in ref.state_dict())
    ours = from_torchvision("fasterrcnn_resnet50_fpn", ref)
    assert ours.num_classes == 21
    frozen = [m for m in ours.backbone.body.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert len(frozen) == 53 and all(m.eps == 0.0 for m in frozen)
    # trainable_layers=3 as torchvision's default for pretrained backbones
    trainable = {
        n.split(".")[0] for n, p in ours.backbone.body.named_parameters() if p.requires_grad
    }
    assert trainable == {"layer2", "layer3", "layer4"}
    x = torch.rand(1, 3, 64, 64, generator=g)
    with torch.no_grad():
        expected, got = ref.backbone(x), ours.backbone(x)
    for key in expected:
        assert (got[key] - expected[key]).abs().max() <= TOLERANCES["parity_fp32"], key
