"""Box utilities against torchvision.ops (bit-for-bit where the arithmetic is the same)."""

from __future__ import annotations

import itertools

import pytest
import torch
import torchvision.ops as tvops

from visionzoo import ops
from visionzoo.errors import OpArgumentError, VisionZooError

FORMATS = ("xyxy", "xywh", "cxcywh")


@pytest.fixture(autouse=True)
def _one_thread():
    # small ops: OpenMP threads on a busy machine cost more than they save
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _boxes(n: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    """Valid xyxy boxes (x1 < x2, y1 < y2), torchvision's test recipe."""
    g = torch.Generator().manual_seed(seed)
    b = torch.rand(n, 4, generator=g, dtype=torch.float64) * 100
    b[:, 2:] += b[:, :2]
    return b.to(dtype)


def test_public_api():
    assert set(ops.__all__) >= {
        "box_convert", "box_area", "box_iou", "generalized_box_iou", "nms", "batched_nms",
        "roi_pool", "roi_align", "clip_boxes_to_image", "remove_small_boxes",
    }  # fmt: skip


@pytest.mark.parametrize(("in_fmt", "out_fmt"), list(itertools.product(FORMATS, FORMATS)))
def test_box_convert_matches_torchvision(in_fmt, out_fmt):
    boxes = _boxes(50, 0).view(5, 10, 4)  # leading batch dimensions are kept
    ours = ops.box_convert(boxes, in_fmt, out_fmt)
    assert torch.equal(ours, tvops.box_convert(boxes, in_fmt, out_fmt))
    if in_fmt == out_fmt:
        assert ours is not boxes and ours.data_ptr() != boxes.data_ptr()  # a copy


def test_box_convert_round_trip():
    boxes = _boxes(20, 1, torch.float64)
    for fmt in FORMATS:
        back = ops.box_convert(ops.box_convert(boxes, "xyxy", fmt), fmt, "xyxy")
        torch.testing.assert_close(back, boxes, rtol=0, atol=1e-12)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.int64, torch.uint8])
def test_box_area_matches_torchvision(fmt, dtype):
    boxes = (_boxes(30, 2) if dtype.is_floating_point else _boxes(30, 2).round()).to(dtype)
    ours = ops.box_area(boxes, fmt)
    theirs = tvops.box_area(boxes, fmt)
    assert ours.dtype == theirs.dtype
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.int32])
def test_box_iou_matches_torchvision(fmt, dtype):
    a = _boxes(40, 3)
    b = torch.cat([_boxes(29, 4), a[:1]])  # one identical box: IoU exactly 1
    if not dtype.is_floating_point:
        a, b = a.round(), b.round()
    a, b = a.to(dtype), b.to(dtype)
    a, b = ops.box_convert(a, "xyxy", fmt), ops.box_convert(b, "xyxy", fmt)
    ours = ops.box_iou(a, b, fmt)
    theirs = tvops.box_iou(a, b, fmt)
    assert ours.shape == (40, 30) and ours.dtype == theirs.dtype
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0, equal_nan=True)


def test_box_iou_batched_and_degenerate():
    a = _boxes(24, 5).view(2, 3, 4, 4)  # (..., N, 4) with two leading dimensions
    b = _boxes(24, 6).view(2, 3, 4, 4)
    a[0, 0, 0] = torch.tensor([5.0, 5.0, 5.0, 5.0])  # zero-area boxes: 0/0 = NaN
    b[0, 0, 1] = torch.tensor([5.0, 5.0, 5.0, 5.0])
    b[1, 2, 3] = torch.tensor([9.0, 9.0, 3.0, 3.0])  # inverted box: negative area
    ours = ops.box_iou(a, b)
    assert ours.shape == (2, 3, 4, 4)
    assert torch.isnan(ours[0, 0, 0, 1])
    torch.testing.assert_close(ours, tvops.box_iou(a, b), rtol=0, atol=0, equal_nan=True)


def test_generalized_box_iou_matches_torchvision():
    a = torch.cat([_boxes(20, 7), torch.tensor([[3.0, 3.0, 3.0, 3.0], [0.0, 0.0, 1.0, 1.0]])])
    b = torch.cat([_boxes(15, 8), torch.tensor([[3.0, 3.0, 3.0, 3.0], [2.0, 2.0, 4.0, 4.0]])])
    ours = ops.generalized_box_iou(a, b)
    theirs = tvops.generalized_box_iou(a, b)
    assert torch.isnan(ours[20, 15])  # two identical points: 0/0, as in torchvision
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0, equal_nan=True)
    assert ours[21, 16] == pytest.approx(0.0 - (16 - 5) / 16)  # disjoint: IoU 0, C = 4x4


def test_iou_gradients_match_torchvision_and_gradcheck():
    a = _boxes(6, 9, torch.float64).requires_grad_()
    b = _boxes(5, 10, torch.float64).requires_grad_()
    for ours_fn, their_fn in [
        (ops.box_iou, tvops.box_iou),
        (ops.generalized_box_iou, tvops.generalized_box_iou),
    ]:
        assert torch.autograd.gradcheck(ours_fn, (a, b))
        w = torch.randn(6, 5, dtype=torch.float64)
        g_ours = torch.autograd.grad((ours_fn(a, b) * w).sum(), (a, b))
        g_theirs = torch.autograd.grad((their_fn(a, b) * w).sum(), (a, b))
        for x, y in zip(g_ours, g_theirs, strict=True):
            torch.testing.assert_close(x, y, rtol=0, atol=1e-12)


def test_box_iou_grad_path_equals_fast_path():
    a, b = _boxes(30, 11), _boxes(20, 12)
    fast = ops.box_iou(a, b)
    slow = ops.box_iou(a.clone().requires_grad_(), b)
    assert slow.requires_grad
    assert torch.equal(fast, slow.detach())


def test_clip_and_remove_small_match_torchvision():
    boxes = _boxes(50, 13) - 30  # partly outside a 100x80 image
    for size in [(80, 100), (1, 1)]:
        assert torch.equal(
            ops.clip_boxes_to_image(boxes, size), tvops.clip_boxes_to_image(boxes, size)
        )
    batched = boxes.view(5, 10, 4)
    assert torch.equal(
        ops.clip_boxes_to_image(batched, (80, 100)), tvops.clip_boxes_to_image(batched, (80, 100))
    )
    for min_size in [0.0, 10.0, 60.0]:
        keep = ops.remove_small_boxes(boxes, min_size)
        assert keep.dtype == torch.int64
        assert torch.equal(keep, tvops.remove_small_boxes(boxes, min_size))


def test_empty_inputs():
    empty = torch.zeros(0, 4)
    some = _boxes(3, 14)
    assert ops.box_iou(empty, some).shape == (0, 3)
    assert ops.box_iou(some, empty).shape == (3, 0)
    assert ops.generalized_box_iou(empty, some).shape == (0, 3)
    assert ops.box_area(empty).shape == (0,)
    assert ops.box_convert(empty, "xyxy", "cxcywh").shape == (0, 4)
    assert ops.clip_boxes_to_image(empty, (10, 10)).shape == (0, 4)
    keep = ops.remove_small_boxes(empty, 1.0)
    assert keep.shape == (0,) and keep.dtype == torch.int64


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: ops.box_iou(torch.zeros(5, 3), torch.zeros(2, 4)), r"box_iou: boxes1 must be"),
        (lambda: ops.box_iou(torch.zeros(2, 4), torch.zeros(4)), r"box_iou: boxes1 and boxes2"),
        (lambda: ops.box_iou([[0, 0, 1, 1]], torch.zeros(2, 4)), r"boxes1 must be a torch.Tensor"),
        (lambda: ops.box_iou(torch.zeros(2, 4), torch.zeros(2, 4), "xywhr"), r"fmt must be one"),
        (lambda: ops.box_area(torch.zeros(2, 4, dtype=torch.bool)), r"real-valued"),
        (lambda: ops.box_convert(torch.zeros(2, 4), "xyxy", "yxyx"), r"out_fmt must be one of"),
        (lambda: ops.box_convert(torch.zeros(2, 5), "xyxy", "xywh"), r"Tensor\[\.\.\., N, 4\]"),
        (lambda: ops.generalized_box_iou(torch.zeros(2, 2), torch.zeros(2, 4)), r"boxes1 must"),
        (lambda: ops.clip_boxes_to_image(torch.zeros(2, 4), 10), r"size must be \(height, width"),
    ],
)
def test_errors_name_the_argument(call, match):
    with pytest.raises(OpArgumentError, match=match) as info:
        call()
    assert isinstance(info.value, VisionZooError) and isinstance(info.value, ValueError)
