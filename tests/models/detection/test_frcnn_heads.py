"""RPN and RoI head pieces of Faster R-CNN on small inputs, against torchvision's pieces."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torchvision.models.detection import roi_heads as tv_roi_heads
from torchvision.models.detection import rpn as tv_rpn
from torchvision.models.detection._utils import BoxCoder as TvBoxCoder
from torchvision.ops import MultiScaleRoIAlign

from tests.conftest import TOLERANCES
from visionzoo import ops
from visionzoo.models.detection.anchors import AnchorGenerator
from visionzoo.models.detection.roi_heads import (
    FastRCNNPredictor,
    RoIHeads,
    RoIPooler,
    TwoMLPHead,
    fastrcnn_loss,
    map_levels,
)
from visionzoo.models.detection.rpn import (
    RegionProposalNetwork,
    RPNHead,
    flatten_predictions,
    select_top_per_image,
)
from visionzoo.models.detection.transform import ImageList


def boxes_in(n: int, size: float, g: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g) * size * 0.7
    wh = torch.rand(n, 2, generator=g) * size * 0.3 + 2
    return torch.cat([xy, xy + wh], 1)


def test_map_levels_follows_fpn_eq1():
    # sqrt(area) = 224 -> level 4; 112 -> 3; 448 -> 5; tiny -> clamped to 2; huge -> 5
    boxes = torch.tensor(
        [[0, 0, 224, 224], [0, 0, 112, 112], [0, 0, 448, 448], [0, 0, 4, 4], [0, 0, 2000, 2000]],
        dtype=torch.float32,
    )
    assert map_levels(boxes, 2, 5).tolist() == [2, 1, 3, 0, 3]


def test_multiscale_roi_align_matches_torchvision():
    g = torch.Generator().manual_seed(0)
    feats = OrderedDict(
        (str(i), torch.randn(2, 4, 128 // 2**i, 160 // 2**i, generator=g)) for i in range(4)
    )
    feats["pool"] = torch.randn(2, 4, 8, 10, generator=g)
    sizes = [(512, 600), (480, 640)]
    boxes = [boxes_in(30, 480, g) * torch.tensor([1.0, 1, 1.5, 1.5]), boxes_in(20, 480, g)]
    ours = RoIPooler(["0", "1", "2", "3"], 7, 2)(feats, boxes, sizes)
    ref = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)(feats, boxes, sizes)
    assert ours.shape == (50, 4, 7, 7)
    assert (ours - ref).abs().max() <= TOLERANCES["ops_fp32"]
    # levels are really mixed in this sample
    assert len(set(map_levels(torch.cat(boxes), 2, 5).tolist())) >= 3


def test_single_level_roi_pool_and_align():
    g = torch.Generator().manual_seed(1)
    feats = {"0": torch.randn(2, 3, 16, 20, generator=g)}
    boxes = [boxes_in(5, 200, g), boxes_in(3, 200, g)]
    sizes = [(256, 320), (250, 300)]
    rois = torch.cat([torch.cat([torch.full((5, 1), 0.0), boxes[0]], 1),
                      torch.cat([torch.full((3, 1), 1.0), boxes[1]], 1)])  # fmt: skip
    pooled = RoIPooler(["0"], 7, op="pool")(feats, boxes, sizes)
    assert torch.equal(pooled, ops.roi_pool(feats["0"], rois, 7, 1 / 16))
    aligned = RoIPooler(["0"], 14, 0, aligned=True)(feats, boxes, sizes)
    assert torch.equal(aligned, ops.roi_align(feats["0"], rois, 14, 1 / 16, 0, True))


def test_rpn_head_and_flatten_order_match_torchvision():
    head = RPNHead(8, 3)
    feats = [torch.randn(2, 8, 6, 5), torch.randn(2, 8, 3, 3)]
    logits, deltas = head(feats)
    assert [tuple(t.shape) for t in logits] == [(2, 3, 6, 5), (2, 3, 3, 3)]
    obj, dl = flatten_predictions(logits, deltas)
    ref_obj, ref_dl = tv_rpn.concat_box_prediction_layers(logits, deltas)
    assert torch.equal(obj.reshape(-1, 1), ref_obj) and torch.equal(dl.reshape(-1, 4), ref_dl)


def make_rpn(**kw) -> RegionProposalNetwork:
    gen = AnchorGenerator(((16.0,), (32.0,)), (0.5, 1.0, 2.0))
    return RegionProposalNetwork(gen, RPNHead(8, 3), **kw)


def test_filter_proposals_matches_torchvision():
    g = torch.Generator().manual_seed(2)
    n, counts = 2, [600, 150]
    proposals = boxes_in(n * sum(counts), 64, g).view(n, -1, 4)
    objectness = torch.randn(n, sum(counts), generator=g)
    sizes = [(64, 64), (56, 60)]
    ours = make_rpn(pre_nms_top_n={"training": 100, "testing": 100},
                    post_nms_top_n={"training": 40, "testing": 40}).eval()  # fmt: skip
    ref = tv_rpn.RegionProposalNetwork(
        None, None, 0.7, 0.3, 256, 0.5, {"training": 100, "testing": 100},
        {"training": 40, "testing": 40}, 0.7,
    ).eval()  # fmt: skip
    b1, s1 = ours.filter_proposals(proposals, objectness, sizes, counts)
    b2, s2 = ref.filter_proposals(proposals, objectness, sizes, counts)
    for x, y in zip(b1 + s1, b2 + s2, strict=True):
        assert torch.equal(x, y)
    assert [len(b) for b in b1] == [40, 40]


def test_select_top_per_image():
    keep = torch.tensor([5, 0, 7, 2, 6, 1])  # decreasing score; images: 0-3 -> 0, 4-7 -> 1
    ids = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    out = select_top_per_image(keep, ids, 3, 2)
    assert [o.tolist() for o in out] == [[0, 2], [5, 7], []]


def test_rpn_losses_finite_with_empty_targets_and_cross_boundary_rule():
    rpn = make_rpn().train()
    images = ImageList(torch.zeros(2, 3, 64, 64), [(64, 64), (64, 64)])
    feats = [torch.randn(2, 8, 16, 16, requires_grad=True), torch.randn(2, 8, 8, 8)]
    targets = [
        {"boxes": torch.tensor([[10.0, 10, 30, 40]]), "labels": torch.tensor([1])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    _, losses = rpn(images, feats, targets)
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg"}
    total = sum(losses.values())
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(feats[0].grad).all()
    anchors = rpn.anchor_generator(images, feats)
    labels, _ = rpn.assign_targets_to_anchors(anchors, targets, images.image_sizes)
    assert (labels[1] == 0).all()  # no objects: every anchor is a negative
    assert (labels[0] == 1).any()
    crossing = (anchors[:, :2] < 0).any(1) | (anchors[:, 2:] > 64).any(1)
    assert crossing.any()
    rpn.ignore_cross_boundary = True
    labels, _ = rpn.assign_targets_to_anchors(anchors, targets, images.image_sizes)
    assert (labels[0][crossing] == -1).all() and (labels[1][crossing] == -1).all()
    assert (labels[1][~crossing] == 0).all()


def make_heads(num_classes: int = 5, **kw) -> RoIHeads:
    pool = RoIPooler(["0"], 7, 2)
    head = TwoMLPHead(4 * 49, 32)
    return RoIHeads(pool, head, FastRCNNPredictor(32, num_classes), **kw)


def test_postprocess_matches_torchvision():
    g = torch.Generator().manual_seed(3)
    heads = make_heads(score_thresh=0.05, nms_thresh=0.5, detections_per_img=20).eval()
    ref = tv_roi_heads.RoIHeads(None, None, None, 0.5, 0.5, 512, 0.25, None, 0.05, 0.5, 20)
    proposals = [boxes_in(60, 100, g), boxes_in(40, 100, g)]
    logits = torch.randn(100, 5, generator=g) * 3
    deltas = torch.randn(100, 20, generator=g)
    sizes = [(100, 90), (80, 100)]
    ours = heads.postprocess_detections(logits, deltas, proposals, sizes)
    boxes, scores, labels = ref.postprocess_detections(logits, deltas, proposals, sizes)
    for o, b, s, lab in zip(ours, boxes, scores, labels, strict=True):
        assert torch.equal(o["boxes"], b) and torch.equal(o["scores"], s)
        assert torch.equal(o["labels"], lab)
    assert len(ours[0]["boxes"]) == 20  # capped at detections_per_img


def test_fastrcnn_loss_matches_torchvision():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(30, 4, generator=g, requires_grad=True)
    deltas = torch.randn(30, 16, generator=g, requires_grad=True)
    labels = torch.randint(0, 4, (30,), generator=g)
    targets = torch.randn(30, 4, generator=g)
    ours = fastrcnn_loss(logits, deltas, labels, targets)
    ref = tv_roi_heads.fastrcnn_loss(logits, deltas, [labels[:10], labels[10:]],
                                     [targets[:10], targets[10:]])  # fmt: skip
    for a, b in zip(ours, ref, strict=True):
        assert torch.equal(a, b)


def test_roi_heads_training_samples_and_background_rules():
    heads = make_heads(batch_size_per_image=16, positive_fraction=0.25).train()
    g = torch.Generator().manual_seed(5)
    proposals = [boxes_in(50, 100, g), boxes_in(50, 100, g)]
    targets = [
        {"boxes": torch.tensor([[10.0, 10, 50, 60]]), "labels": torch.tensor([3])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    props, labels, reg = heads.select_training_samples(proposals, targets)
    assert [len(p) for p in props] == [16, 16] and labels.shape == (32,) and reg.shape == (32, 4)
    assert set(labels[:16].tolist()) <= {0, 3} and (labels[:16] == 3).sum() <= 4
    assert (labels[16:] == 0).all() and torch.isfinite(reg).all()
    # the ground truth joins the proposals, so the image with an object has a positive
    assert (labels[:16] == 3).any()
    # Fast R-CNN's [0.1, 0.5) background: proposals overlapping nothing are not sampled
    far = torch.tensor([[80.0, 80, 95, 95]] * 40 + [[12.0, 12, 48, 58]] * 10)
    heads_lo = make_heads(batch_size_per_image=64, bg_iou_thresh_lo=0.1).train()
    _, lab, _ = heads_lo.select_training_samples([far], targets[:1])
    assert (lab == 0).sum() == 0 and (lab == 3).sum() == 11  # 10 near copies + the ground truth
    heads_all = make_heads(batch_size_per_image=64).train()
    _, lab, _ = heads_all.select_training_samples([far], targets[:1])
    assert (lab == 0).sum() > 0


def test_roi_heads_box_coder_uses_10_10_5_5():
    heads = make_heads()
    assert heads.box_coder.weights == (10.0, 10.0, 5.0, 5.0)
    ref = TvBoxCoder((10.0, 10.0, 5.0, 5.0))
    a = torch.tensor([[1.0, 2, 30, 40]])
    b = torch.tensor([[3.0, 1, 33, 37]])
    assert torch.equal(heads.box_coder.encode(a, b), ref.encode_single(a, b))
