"""nms / batched_nms against torchvision.ops and a plain greedy loop."""

from __future__ import annotations

import pytest
import torch
import torchvision.ops as tvops

from visionzoo import ops
from visionzoo.errors import OpArgumentError
from visionzoo.ops import boxes as boxes_module


@pytest.fixture(autouse=True)
def _one_thread():
    # small ops: OpenMP threads on a busy machine cost more than they save
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _tensors_with_iou(n: int, iou_thresh: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """torchvision's test recipe: random boxes, the last one a copy of the first widened so
    that their IoU is just above ``iou_thresh`` (so it must be suppressed)."""
    torch.manual_seed(seed)
    boxes = torch.rand(n, 4) * 100
    boxes[:, 2:] += boxes[:, :2]
    boxes[-1, :] = boxes[0, :]
    x0, y0, x1, y1 = boxes[-1].tolist()
    iou_thresh += 1e-5
    boxes[-1, 2] += (x1 - x0) * (1 - iou_thresh) / iou_thresh
    scores = torch.rand(n)
    return boxes, scores


def _reference_nms(boxes: torch.Tensor, scores: torch.Tensor, thr: float) -> torch.Tensor:
    """The textbook greedy loop, one box at a time, IoU in float64."""
    order = torch.sort(scores, descending=True, stable=True)[1].tolist()
    b = boxes.double().tolist()
    area = [(x2 - x1) * (y2 - y1) for x1, y1, x2, y2 in b]
    suppressed = [False] * len(order)
    keep = []
    for pos, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        for j in order[pos + 1 :]:
            w = max(0.0, min(b[i][2], b[j][2]) - max(b[i][0], b[j][0]))
            h = max(0.0, min(b[i][3], b[j][3]) - max(b[i][1], b[j][1]))
            inter = w * h
            if inter / (area[i] + area[j] - inter) > thr:
                suppressed[j] = True
    return torch.tensor(keep, dtype=torch.int64)


@pytest.mark.parametrize("iou", [0.2, 0.5, 0.8])
@pytest.mark.parametrize("seed", range(10))
def test_nms_matches_torchvision(iou, seed):
    boxes, scores = _tensors_with_iou(1000, iou, seed)
    keep = ops.nms(boxes, scores, iou)
    assert keep.dtype == torch.int64
    assert torch.equal(keep, tvops.nms(boxes, scores, iou))
    assert 999 not in keep or 0 not in keep  # the engineered pair never survives together


@pytest.mark.parametrize("iou", [0.2, 0.5, 0.8])
@pytest.mark.parametrize("seed", range(10))
def test_batched_nms_matches_torchvision(iou, seed):
    boxes, scores = _tensors_with_iou(1000, iou, seed)
    idxs = torch.randint(0, 4, (1000,))
    keep = ops.batched_nms(boxes, scores, idxs, iou)
    assert torch.equal(keep, tvops.batched_nms(boxes, scores, idxs, iou))


def test_batched_nms_float_and_negative_categories():
    boxes, scores = _tensors_with_iou(400, 0.5, 0)
    labels = torch.randint(-3, 3, (400,))
    want = tvops.batched_nms(boxes, scores, labels, 0.5)
    assert torch.equal(ops.batched_nms(boxes, scores, labels, 0.5), want)
    # float categories 0.25 apart must stay distinct (not truncated to integers)
    assert torch.equal(ops.batched_nms(boxes, scores, labels.float() / 4, 0.5), want)


@pytest.mark.parametrize("seed", range(3))
def test_batched_nms_above_torchvisions_vanilla_switch(seed):
    # torchvision loops over classes above 1000 boxes on CPU: same per-class semantics
    boxes, scores = _tensors_with_iou(2500, 0.5, seed)
    idxs = torch.randint(0, 10, (2500,))
    assert torch.equal(
        ops.batched_nms(boxes, scores, idxs, 0.5), tvops.batched_nms(boxes, scores, idxs, 0.5)
    )


@pytest.mark.parametrize("seed", range(10))
def test_batched_nms_torchvision_implementations_recipe(seed):
    # torchvision's check that its two batched_nms implementations agree, at IoU 0.9
    torch.manual_seed(seed)
    boxes = torch.cat((torch.rand(1000, 2), torch.rand(1000, 2) + 10), dim=1)
    scores = torch.rand(1000)
    idxs = torch.randint(0, 4, size=(1000,))
    keep = ops.batched_nms(boxes, scores, idxs, 0.9)
    # per-class torchvision NMS, merged by decreasing score
    kept = torch.zeros(1000, dtype=torch.bool)
    for c in range(4):
        members = torch.where(idxs == c)[0]
        kept[members[tvops.nms(boxes[members], scores[members], 0.9)]] = True
    expected = torch.where(kept)[0]
    expected = expected[torch.sort(scores[expected], descending=True, stable=True)[1]]
    assert torch.equal(keep, expected)
    assert torch.equal(keep, tvops.batched_nms(boxes, scores, idxs, 0.9))


def test_nms_matches_plain_loop_with_ties_and_many_blocks(monkeypatch):
    # 16-box blocks: most of the suppression crosses block boundaries
    monkeypatch.setitem(boxes_module._NMS_BLOCK, "cpu", 16)
    g = torch.Generator().manual_seed(0)
    boxes = torch.rand(300, 4, generator=g) * 50
    boxes[:, 2:] += boxes[:, :2] + 1
    scores = torch.randint(0, 6, (300,), generator=g).float()  # many equal scores
    for thr in [0.1, 0.3, 0.6]:
        keep = ops.nms(boxes, scores, thr)
        assert torch.equal(keep, _reference_nms(boxes, scores, thr))
        assert torch.equal(keep, tvops.nms(boxes, scores, thr))


def test_nms_bounded_memory_path_matches(monkeypatch):
    # blocks whose suppression test exceeds the memory bound: separate in-block test, then
    # the kept boxes against the rest in column chunks
    monkeypatch.setitem(boxes_module._NMS_MAX_PAIRS, "cpu", 3000)
    boxes, scores = _tensors_with_iou(1000, 0.5, 1)
    idxs = torch.randint(0, 3, (1000,))
    assert torch.equal(ops.nms(boxes, scores, 0.5), tvops.nms(boxes, scores, 0.5))
    assert torch.equal(
        ops.batched_nms(boxes, scores, idxs, 0.5), tvops.batched_nms(boxes, scores, idxs, 0.5)
    )


def test_nms_suppression_chain():
    # each box overlaps only its neighbours (IoU 0.6): greedy keeps every other box, which needs
    # the longest possible chain of decisions inside one block
    n = 101
    x = torch.arange(n, dtype=torch.float32) * 0.25
    boxes = torch.stack([x, torch.zeros(n), x + 1, torch.ones(n)], 1)
    scores = torch.linspace(1, 0, n)
    keep = ops.nms(boxes, scores, 0.5)
    assert torch.equal(keep, tvops.nms(boxes, scores, 0.5))
    assert torch.equal(keep, _reference_nms(boxes, scores, 0.5))


def test_nms_threshold_is_strict_and_compared_like_torchvision():
    # IoU exactly 0.5 is not suppressed at threshold 0.5 (strictly greater)
    boxes = torch.tensor([[0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    scores = torch.tensor([0.9, 0.8])
    assert ops.nms(boxes, scores, 0.5).tolist() == [0, 1]
    assert ops.nms(boxes, scores, 0.49).tolist() == [0]
    # IoU 1/5 in float32 is 0.2000000030 > 0.2 as a double: torchvision's CPU kernel suppresses
    # it, a float32 comparison with float32(0.2) would not
    boxes = torch.tensor([[0.0, 0.0, 5.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    assert ops.nms(boxes, scores, 0.2).tolist() == tvops.nms(boxes, scores, 0.2).tolist() == [0]


def test_nms_float64_and_degenerate_boxes():
    boxes, scores = _tensors_with_iou(500, 0.5, 3)
    boxes[10] = torch.tensor([5.0, 5.0, 5.0, 5.0])  # zero area: IoU 0/0 = NaN, never suppresses
    boxes[11] = torch.tensor([5.0, 5.0, 5.0, 5.0])
    boxes[12] = torch.tensor([60.0, 60.0, 10.0, 10.0])  # inverted
    for dtype in (torch.float32, torch.float64):
        b, s = boxes.to(dtype), scores.to(dtype)
        assert torch.equal(ops.nms(b, s, 0.5), tvops.nms(b, s, 0.5))


def test_empty_inputs():
    keep = ops.nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert keep.shape == (0,) and keep.dtype == torch.int64
    keep = ops.batched_nms(
        torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5
    )
    assert keep.shape == (0,) and keep.dtype == torch.int64
    one = ops.nms(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([0.3]), 0.5)
    assert one.tolist() == [0]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: ops.nms(torch.zeros(3, 5), torch.zeros(3), 0.5), r"nms: boxes must be a Tensor\[N, 4\]"),
        (lambda: ops.nms(torch.zeros(2, 3, 4), torch.zeros(2), 0.5), r"boxes must be a Tensor\[N, 4\]"),
        (lambda: ops.nms(torch.zeros(3, 4, dtype=torch.int64), torch.zeros(3), 0.5), r"floating-point"),
        (lambda: ops.nms(torch.zeros(3, 4), torch.zeros(4), 0.5), r"scores must be a Tensor\[N\] with N = 3"),
        (lambda: ops.nms(torch.zeros(3, 4), torch.zeros(3, dtype=torch.long), 0.5), r"scores must be a floating"),
        (lambda: ops.nms(torch.zeros(3, 4), torch.zeros(3), "0.5"), r"iou_threshold must be a float"),
        (lambda: ops.batched_nms(torch.zeros(3, 4), torch.zeros(3), torch.zeros(2), 0.5), r"idxs must be a Tensor\[N\]"),
    ],
)  # fmt: skip
def test_errors_name_the_argument(call, match):
    with pytest.raises(OpArgumentError, match=match):
        call()
