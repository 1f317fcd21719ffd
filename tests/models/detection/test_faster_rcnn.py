"""Faster R-CNN models: the four builders, the detection convention, input checks, switches,
frozen BN and trainable layers, backbone weight loading."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import visionzoo as vz
from visionzoo.errors import ModelArgumentError
from visionzoo.models.detection import FasterRCNN, FrozenBatchNorm2d, freeze_batchnorm

BUILDERS = (
    "fasterrcnn_vgg16",
    "fasterrcnn_resnet50_c4",
    "fasterrcnn_resnet50_fpn",
    "fasterrcnn_mobilenet_v2",
)
LOSSES = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}


def small_mobilenet(**kw) -> FasterRCNN:
    kw = {"num_classes": 4, "width_mult": 0.35, "fpn_channels": 16, "representation_size": 32,
          "min_size": 64, "max_size": 96, **kw}  # fmt: skip
    return vz.create_model("fasterrcnn_mobilenet_v2", **kw)


def targets_for(n: int = 2) -> list[dict[str, torch.Tensor]]:
    out = [
        {
            "boxes": torch.tensor([[5.0, 6, 30, 40], [20, 10, 60, 50]]),
            "labels": torch.tensor([1, 3]),
        }
    ]
    out.append({"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)})
    return out[:n]


def test_registry_entries():
    assert set(BUILDERS) <= set(vz.list_models(task="detection"))
    for name in BUILDERS:
        entry = vz.get_model_entry(name)
        assert entry.task == "detection" and entry.family == "faster_rcnn"
        assert entry.paper == "arXiv:1506.01497" and entry.model_class is FasterRCNN
        args = entry.arguments()
        for key in ("num_classes", "min_size", "rpn_nms_thresh", "box_score_thresh",
                    "detections_per_img", "rpn_low_quality_matches", "anchor_sizes"):  # fmt: skip
            assert key in args, (name, key)


def test_eval_and_train_convention():
    torch.manual_seed(0)
    model = small_mobilenet().eval()
    images = [torch.rand(3, 60, 80), torch.rand(3, 48, 40)]
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for det, img in zip(out, images, strict=True):
        assert set(det) == {"boxes", "labels", "scores"}
        k = len(det["scores"])
        assert det["boxes"].shape == (k, 4) and det["labels"].dtype == torch.int64
        if k:
            assert (det["labels"] >= 1).all() and (det["labels"] < 4).all()
            assert (det["boxes"][:, 2] <= img.shape[2] + 1e-4).all()  # original image pixels
            assert (det["scores"][:-1] >= det["scores"][1:]).all()
    model.train()
    losses = model(images, targets_for())
    assert set(losses) == LOSSES
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_images_without_objects_train_without_nan():
    torch.manual_seed(1)
    model = small_mobilenet().train()
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    losses = model([torch.rand(3, 50, 50), torch.rand(3, 64, 40)], [empty, dict(empty)])
    for name, value in losses.items():
        assert torch.isfinite(value), name
    assert losses["loss_box_reg"] == 0 and losses["loss_rpn_box_reg"] == 0
    sum(losses.values()).backward()
    for p in model.parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all()


def test_accepts_a_batch_tensor_and_tv_tensors_targets():
    from torchvision import tv_tensors

    torch.manual_seed(2)
    model = small_mobilenet().train()
    boxes = tv_tensors.BoundingBoxes(
        torch.tensor([[5.0, 5, 20, 25]]), format="XYXY", canvas_size=(32, 32)
    )
    losses = model(
        torch.rand(1, 3, 32, 32), [{"boxes": boxes, "labels": torch.tensor([2], dtype=torch.int32)}]
    )
    assert set(losses) == LOSSES


@pytest.mark.parametrize(
    ("targets", "match"),
    [
        (None, "targets are required in training mode"),
        ([{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}], r"one dict per image \(2\)"),
        ([{}, {}], r"targets\[0\] must be a dict with 'boxes' and 'labels'"),
        ([targets_for(1)[0], {"boxes": torch.zeros(3), "labels": torch.zeros(3, dtype=torch.int64)}],
         r"targets\[1\]\['boxes'\] must be a Tensor\[K, 4\]"),
        ([targets_for(1)[0], {"boxes": torch.tensor([[1.0, 1, 5, 5]]), "labels": torch.tensor([1, 2])}],
         r"targets\[1\]\['labels'\] must be an integer Tensor\[1\]"),
        ([targets_for(1)[0], {"boxes": torch.tensor([[1.0, 1, 5, 5]]), "labels": torch.tensor([1.0])}],
         r"targets\[1\]\['labels'\] must be an integer"),
        ([targets_for(1)[0], {"boxes": torch.tensor([[1.0, 1, 5, 5]]), "labels": torch.tensor([4])}],
         r"targets\[1\]\['labels'\]\[0\] = 4 is out of range.*\[1, 3\]"),
        ([{"boxes": torch.tensor([[1.0, 1, 5, 5], [2, 2, 3, 3]]), "labels": torch.tensor([1, 0])}, targets_for(2)[1]],
         r"targets\[0\]\['labels'\]\[1\] = 0 is out of range.*background"),
        ([targets_for(1)[0], {"boxes": torch.tensor([[1.0, 1, 5, 5], [5, 1, 5, 9]]), "labels": torch.tensor([1, 1])}],
         r"targets\[1\]\['boxes'\]\[1\] = \[5.0, 1.0, 5.0, 9.0\] is degenerate"),
        ([targets_for(1)[0], {"boxes": torch.tensor([[1.0, 1, float("nan"), 5]]), "labels": torch.tensor([1])}],
         r"targets\[1\]\['boxes'\]\[0\].*degenerate"),
    ],
)  # fmt: skip
def test_bad_targets_raise_naming_the_image(targets, match):
    model = small_mobilenet().train()
    with pytest.raises(ModelArgumentError, match=match):
        model([torch.rand(3, 32, 32), torch.rand(3, 32, 32)], targets)


@pytest.mark.parametrize(
    ("images", "match"),
    [
        ([], "non-empty list"),
        ([torch.rand(3, 32, 32), torch.rand(32, 32)], r"images\[1\] must be a Tensor\[3, H, W\]"),
        ([torch.zeros(3, 32, 32, dtype=torch.uint8)], r"images\[0\] must be a floating-point.*255"),
        ([torch.rand(1, 32, 32)], r"images\[0\] must be a Tensor\[3, H, W\], got \(1, 32, 32\)"),
    ],
)
def test_bad_images_raise(images, match):
    model = small_mobilenet().eval()
    with pytest.raises(ModelArgumentError, match=match):
        model(images)


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("fasterrcnn_mobilenet_v2", {"num_classes": 1}, "num_classes must be an integer >= 2"),
        ("fasterrcnn_mobilenet_v2", {"rpn_nms_thresh": 1.5}, r"rpn_nms_thresh must be a number in \[0, 1\]"),
        ("fasterrcnn_mobilenet_v2", {"rpn_fg_iou_thresh": 0.2}, r"rpn_bg_iou_thresh \(0.3\) must be <= rpn_fg_iou_thresh"),
        ("fasterrcnn_mobilenet_v2", {"box_positive_fraction": 0}, r"box_positive_fraction must be a number in \(0, 1\]"),
        ("fasterrcnn_mobilenet_v2", {"anchor_sizes": ((16,), (32,))}, "anchor_sizes must give 4 level"),
        ("fasterrcnn_mobilenet_v2", {"anchor_sizes": ((16,), (32, 48), (64,), (128,))}, "same number of anchors"),
        ("fasterrcnn_mobilenet_v2", {"aspect_ratios": (0.5, -1.0)}, "aspect_ratios must be"),
        ("fasterrcnn_mobilenet_v2", {"min_size": 0}, "min_size must be an integer >= 1"),
        ("fasterrcnn_mobilenet_v2", {"bbox_reg_weights": (1, 1, 1)}, "bbox_reg_weights must be 4 positive"),
        ("fasterrcnn_mobilenet_v2", {"rpn_low_quality_matches": "no"}, "rpn_low_quality_matches must be True or False"),
        ("fasterrcnn_mobilenet_v2", {"detections_per_img": 0}, "detections_per_img must be an integer >= 1"),
        ("fasterrcnn_mobilenet_v2", {"pretrained_backbone": True}, "never downloads"),
        ("fasterrcnn_mobilenet_v2", {"roi_op": "warp"}, "roi_op must be one of 'align', 'pool'"),
        ("fasterrcnn_mobilenet_v2", {"rpn_nms": 0.5}, "unexpected keyword argument 'rpn_nms'"),
        ("fasterrcnn_resnet50_fpn", {"trainable_layers": 6}, r"trainable_layers must be an integer in \[0, 5\]"),
        ("fasterrcnn_resnet50_fpn", {"norm_layer": "gn"}, "norm_layer must be one of 'frozen_bn', 'bn'"),
        ("fasterrcnn_vgg16", {"dropout": 1.0}, "dropout must be a probability"),
        ("fasterrcnn_resnet50_c4", {"anchor_sizes": ((32,), (64,))}, "anchor_sizes must give 1 level"),
    ],
)  # fmt: skip
def test_argument_errors(name, kwargs, match):
    with pytest.raises(ModelArgumentError, match=match):
        vz.create_model(name, **kwargs)


def test_frozen_batchnorm_equals_batchnorm_eval_and_loads_its_state():
    bn = nn.BatchNorm2d(6).eval()
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
        bn.weight.normal_()
        bn.bias.normal_()
    frozen = FrozenBatchNorm2d(6)
    frozen.load_state_dict(bn.state_dict())  # num_batches_tracked is dropped
    assert not list(frozen.parameters())
    x = torch.randn(2, 6, 5, 5)
    torch.testing.assert_close(frozen(x), bn(x), rtol=1e-5, atol=1e-6)
    seq = freeze_batchnorm(nn.Sequential(nn.Conv2d(3, 6, 1), bn))
    assert isinstance(seq[1], FrozenBatchNorm2d)
    torch.testing.assert_close(seq[1](x), bn(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("layers", "trainable_prefixes"), [
    (0, set()), (3, {"layer2", "layer3", "layer4"}), (5, {"conv1", "layer1", "layer2", "layer3", "layer4"}),
])  # fmt: skip
def test_trainable_layers_freeze_like_torchvision(layers, trainable_prefixes):
    with torch.device("meta"):
        model = vz.create_model("fasterrcnn_resnet50_fpn", trainable_layers=layers)
    body = model.backbone.body
    trainable = {n.split(".")[0] for n, p in body.named_parameters() if p.requires_grad}
    assert trainable == trainable_prefixes
    assert all(
        isinstance(m, FrozenBatchNorm2d) for m in body.modules() if "BatchNorm" in type(m).__name__
    )
    assert all(p.requires_grad for p in model.backbone.fpn.parameters())


def test_c4_and_vgg_layouts():
    with torch.device("meta"):
        c4 = vz.create_model("fasterrcnn_resnet50_c4", num_classes=5)
        vgg = vz.create_model("fasterrcnn_vgg16", num_classes=5)
    assert not hasattr(c4.backbone.body, "layer4") and hasattr(c4.roi_heads.box_head, "layer4")
    assert c4.roi_heads.box_roi_pool.output_size == (14, 14)
    assert c4.roi_heads.box_predictor.cls_score.in_features == 2048
    assert c4.backbone.out_channels == 1024 and c4.rpn.head.cls_logits.out_channels == 15
    assert vgg.backbone.out_channels == 512 and vgg.roi_heads.box_roi_pool.op == "pool"
    assert vgg.roi_heads.box_head.fc6.weight.shape == (4096, 512 * 7 * 7)
    assert vgg.rpn.head.cls_logits.out_channels == 9 and vgg.transform.min_size == (600,)
    frozen = {
        n.split(".")[0] for n, p in vgg.backbone.body.named_parameters() if not p.requires_grad
    }
    assert frozen == {"0", "2", "5", "7"}  # conv1_x and conv2_x, as the paper


def test_c4_and_vgg_forward_on_small_images():
    torch.manual_seed(3)
    for name, kw in (
        ("fasterrcnn_resnet50_c4", {"rpn_pre_nms_top_n_train": 200, "rpn_post_nms_top_n_train": 50,
                                    "box_batch_size_per_image": 16}),
        ("fasterrcnn_vgg16", {"representation_size": 32, "rpn_pre_nms_top_n_train": 200,
                              "rpn_post_nms_top_n_train": 50, "box_batch_size_per_image": 16}),
    ):  # fmt: skip
        model = vz.create_model(name, num_classes=4, min_size=64, max_size=64, **kw).train()
        losses = model([torch.rand(3, 64, 64)], targets_for(1))
        assert set(losses) == LOSSES and all(torch.isfinite(v) for v in losses.values())


def test_load_backbone_weights_from_the_zoo_classifiers():
    torch.manual_seed(4)
    cls = vz.create_model("mobilenet_v2", width_mult=0.35)
    det = small_mobilenet(width_mult=0.35)
    skipped = det.load_backbone_weights(cls.state_dict())
    assert skipped == ["classifier.1.weight", "classifier.1.bias"]
    assert torch.equal(det.backbone.body[3].conv[0][0].weight, cls.features[3].conv[0][0].weight)
    assert torch.equal(det.backbone.body[18][1].running_var, cls.features[18][1].running_var)
    with torch.device("meta"):
        resnet = vz.create_model("resnet50")  # only its keys and shapes are needed
    sd = {k: torch.randn(v.shape) if v.is_floating_point() else torch.zeros((), dtype=v.dtype)
          for k, v in resnet.state_dict().items()}  # fmt: skip
    c4 = vz.create_model("fasterrcnn_resnet50_c4")
    assert sorted(c4.load_backbone_weights(sd)) == ["fc.bias", "fc.weight"]
    assert torch.equal(c4.roi_heads.box_head.layer4[0].conv1.weight, sd["layer4.0.conv1.weight"])
    assert torch.equal(c4.backbone.body.bn1.running_mean, sd["bn1.running_mean"])
    with pytest.raises(ModelArgumentError, match="do not fit"):
        det.load_backbone_weights({"features.0.0.weight": torch.zeros(1, 1, 1, 1)})


def test_paper_switches_change_behaviour():
    model = small_mobilenet(rpn_ignore_cross_boundary=True, rpn_low_quality_matches=False,
                            box_bg_iou_thresh_lo=0.1, box_add_gt_proposals=False)  # fmt: skip
    assert (
        model.rpn.ignore_cross_boundary and not model.rpn.proposal_matcher.allow_low_quality_matches
    )
    assert model.roi_heads.bg_iou_thresh_lo == 0.1 and not model.roi_heads.add_gt_proposals
    model.train()
    losses = model([torch.rand(3, 64, 64)], targets_for(1))
    assert all(torch.isfinite(v) for v in losses.values())
    assert model.roi_heads.box_roi_pool.op == "align"
    assert small_mobilenet(roi_op="pool").roi_heads.box_roi_pool.op == "pool"
