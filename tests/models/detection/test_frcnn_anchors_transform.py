"""Anchor generator and image transform of Faster R-CNN, against torchvision's."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator as TvAnchorGenerator
from torchvision.models.detection.image_list import ImageList as TvImageList
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from visionzoo.models.detection.anchors import AnchorGenerator, cell_anchors
from visionzoo.models.detection.transform import DetectionTransform, ImageList, resize_boxes


def test_cell_anchors_sizes_ratios_and_area():
    base = cell_anchors((128.0, 256.0, 512.0), (0.5, 1.0, 2.0))
    assert base.shape == (9, 4)
    w = base[:, 2] - base[:, 0]
    h = base[:, 3] - base[:, 1]
    # ratio-major order: the first three are h/w = 0.5 at sizes 128, 256, 512
    torch.testing.assert_close(h[:3] / w[:3], torch.full((3,), 0.5), atol=0.01, rtol=0)
    torch.testing.assert_close(h[3:6], w[3:6])
    area = (w * h).sqrt()
    torch.testing.assert_close(area, torch.tensor([128.0, 256, 512] * 3), rtol=0.01, atol=0)
    # zero-centred, integer corners
    assert torch.equal(base, base.round()) and torch.equal(base[:, :2], -base[:, 2:])


def test_anchor_count_shape_and_order():
    gen = AnchorGenerator(((32.0,), (64.0,)), (0.5, 1.0, 2.0))
    assert gen.num_anchors_per_location() == [3, 3]
    images = ImageList(torch.zeros(2, 3, 64, 96), [(64, 96), (60, 90)])
    feats = [torch.zeros(2, 8, 16, 24), torch.zeros(2, 8, 8, 12)]
    anchors = gen(images, feats)
    assert anchors.shape == ((16 * 24 + 8 * 12) * 3, 4)
    base = cell_anchors((32.0,), (0.5, 1.0, 2.0))
    # first cell: the base anchors at (0, 0); the next cell is one stride (4 px) to the right
    assert torch.equal(anchors[:3], base)
    assert torch.equal(anchors[3:6], base + torch.tensor([4.0, 0, 4, 0]))
    # the first anchor of row 1 is one stride down
    assert torch.equal(anchors[24 * 3 : 24 * 3 + 3], base + torch.tensor([0.0, 4, 0, 4]))
    # level 2 starts after level 1, with stride 8
    start = 16 * 24 * 3
    base2 = cell_anchors((64.0,), (0.5, 1.0, 2.0))
    assert torch.equal(anchors[start + 3 : start + 6], base2 + torch.tensor([8.0, 0, 8, 0]))


def test_anchors_match_torchvision():
    sizes = ((32,), (64,), (128,), (256,), (512,))
    ratios = ((0.5, 1.0, 2.0),) * 5
    ours = AnchorGenerator(sizes, ratios)
    ref = TvAnchorGenerator(sizes, ratios)
    tensors = torch.zeros(2, 3, 160, 224)
    feats = [torch.zeros(2, 4, 160 // s, 224 // s) for s in (4, 8, 16, 32)]
    feats.append(torch.zeros(2, 4, 3, 4))  # the pooled level: 5 // 2 + 1 rows, as max_pool2d
    got = ours(ImageList(tensors, [(160, 200), (150, 224)]), feats)
    expected = ref(TvImageList(tensors, [(160, 200), (150, 224)]), feats)
    assert torch.equal(got, expected[0]) and torch.equal(got, expected[1])


def test_anchor_generator_rejects_level_mismatch():
    gen = AnchorGenerator(((32.0,),), (1.0,))
    with pytest.raises(ValueError, match="2 feature maps but anchors for 1 levels"):
        gen(ImageList(torch.zeros(1, 3, 32, 32), [(32, 32)]), [torch.zeros(1, 1, 8, 8)] * 2)


def test_transform_resizes_pads_and_maps_boxes_back():
    t = DetectionTransform(min_size=100, max_size=150).eval()
    images = [torch.rand(3, 50, 60), torch.rand(3, 40, 100)]
    targets = [{"boxes": torch.tensor([[10.0, 5.0, 30.0, 45.0]]), "labels": torch.tensor([1])}] * 2
    batch, new_targets = t(images, targets)
    # 50x60: the short side becomes 100 (x2); 40x100: x2.5 would make the long side 250 > 150,
    # so the long side becomes 150 (x1.5)
    assert batch.image_sizes == [(100, 120), (60, 150)]
    assert batch.tensors.shape == (2, 3, 128, 160)  # padded up to multiples of 32
    assert (
        batch.tensors[1, :, 60:].abs().max() == 0 and batch.tensors[0, :, :, 120:].abs().max() == 0
    )
    torch.testing.assert_close(new_targets[0]["boxes"], torch.tensor([[20.0, 10, 60, 90]]))
    torch.testing.assert_close(new_targets[1]["boxes"], torch.tensor([[15.0, 7.5, 45, 67.5]]))
    assert targets[0]["boxes"][0, 0] == 10.0  # the caller's targets are untouched
    # normalisation: ImageNet mean/std
    flat = DetectionTransform(min_size=50, max_size=60)
    out = flat([torch.full((3, 50, 60), 0.485)])[0].tensors
    assert out[0, 0, :50, :60].abs().max() < 1e-6
    # postprocess maps detections back to the input image
    dets = [
        {"boxes": torch.tensor([[20.0, 10, 60, 90]])},
        {"boxes": torch.tensor([[15.0, 7.5, 45, 67.5]])},
    ]
    back = t.postprocess(dets, batch.image_sizes, [(50, 60), (40, 100)])
    for d in back:
        torch.testing.assert_close(d["boxes"], torch.tensor([[10.0, 5.0, 30.0, 45.0]]))


def test_transform_matches_torchvision():
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    ours = DetectionTransform(160, 200, mean, std).eval()
    ref = GeneralizedRCNNTransform(160, 200, mean, std).eval()
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 200, 250, generator=g), torch.rand(3, 180, 220, generator=g)]
    targets = [{"boxes": torch.tensor([[10.0, 20, 100, 150]]), "labels": torch.tensor([1])}] * 2
    a, ta = ours(images, targets)
    b, tb = ref(images, [dict(t) for t in targets])
    assert torch.equal(a.tensors, b.tensors) and a.image_sizes == b.image_sizes
    for x, y in zip(ta, tb, strict=True):
        assert torch.equal(x["boxes"], y["boxes"])


def test_multiscale_training_draws_sizes_with_torch_rng():
    t = DetectionTransform((64, 96, 128), 1000).train()
    seen = set()
    for seed in range(12):
        torch.manual_seed(seed)
        seen.add(t([torch.rand(3, 32, 32)])[0].image_sizes[0][0])
    assert seen == {64, 96, 128}
    t.eval()
    assert t([torch.rand(3, 32, 32)])[0].image_sizes == [(128, 128)]  # the largest in eval


def test_resize_boxes():
    boxes = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    torch.testing.assert_close(
        resize_boxes(boxes, (10, 20), (20, 10)), torch.tensor([[0.5, 4, 1.5, 8]])
    )
