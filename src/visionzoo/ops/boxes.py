"""Box utilities and non-maximum suppression, with torchvision.ops' signatures and semantics.

Intersection-over-union and greedy NMS as used by R-CNN (arXiv:1311.2524), Fast R-CNN
(arXiv:1504.08083) and Faster R-CNN (arXiv:1506.01497); generalized IoU from arXiv:1902.09630.
Everything here is vectorised PyTorch: no loop runs over boxes.

Shape glossary: N, M boxes; B the boxes of one NMS block; R the boxes still undecided after it.
Boxes are ``(x1, y1, x2, y2)`` unless a ``fmt`` says otherwise.

Where these differ from torchvision (0.29), on purpose:

* ``nms`` is a blocked greedy sweep instead of torchvision's per-box C++ loop: boxes are taken
  in score order in blocks of B; the greedy result inside a block is the fixed point of
  "kept = not suppressed by a kept earlier box", found in a few whole-block tensor steps
  (as many as the longest suppression chain in the block, usually 1-4); the block's kept boxes
  then suppress every later box at once (one (B x R) IoU test serves both steps), and
  suppressed boxes are dropped before the next block. The loop runs over blocks, not boxes. The IoU of a pair is computed with the same floating-point operations
  in the same order as torchvision's kernels and compared with the threshold as they do
  (CPU: as a double; CUDA: as a float), so the kept indices are the same, ties in score included
  (stable descending sort, lower index first).
* ``batched_nms`` visits the boxes grouped by category (score order inside each), so that a
  block's suppression test reaches only the later boxes of its own categories.
* ``batched_nms`` masks pairs of different categories out of the suppression test instead of
  shifting each category's boxes by ``idx * (max_coordinate + 1)``. The result is the per-class
  NMS that the offset trick emulates (and that torchvision itself runs above 1000 boxes on CPU),
  without the offset's rounding: with float32 boxes and many categories the shifted coordinates
  lose whole pixels of precision.
* ``box_convert``, ``box_area`` and ``box_iou`` accept the axis-aligned formats only
  (``xyxy``, ``xywh``, ``cxcywh``); torchvision's rotated formats raise OpArgumentError.
* Wrong shapes and dtypes raise :class:`~visionzoo.errors.OpArgumentError` naming the argument,
  where torchvision asserts or fails inside its C++ kernel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ..errors import OpArgumentError

__all__ = [
    "box_convert",
    "box_area",
    "box_iou",
    "generalized_box_iou",
    "clip_boxes_to_image",
    "remove_small_boxes",
    "nms",
    "batched_nms",
]

BOX_FORMATS = ("xyxy", "xywh", "cxcywh")

# NMS block sizes. On CPU a small block keeps the (kept x R) suppression tests in cache and lets
# suppressed boxes drop out early; on a GPU each block costs a few synchronisations, so fewer,
# larger blocks win.
_NMS_BLOCK = {"cpu": 128}
_NMS_BLOCK_DEFAULT = 2048
# Largest (block x R) suppression test evaluated at once (elements); bounds NMS memory.
_NMS_MAX_PAIRS = {"cpu": 1 << 22}
_NMS_MAX_PAIRS_DEFAULT = 1 << 26


# ----------------------------------------------------------------------------- argument checks


def _check_tensor(value: object, name: str, op: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise OpArgumentError(f"{op}: {name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def _check_boxes(
    boxes: object, name: str, op: str, *, batched: bool = True, floating: bool = False
) -> Tensor:
    """``boxes`` must be Tensor[..., 4] (Tensor[N, 4] unless ``batched``)."""
    boxes = _check_tensor(boxes, name, op)
    want = "Tensor[..., N, 4]" if batched else "Tensor[N, 4]"
    if (boxes.dim() < 1 if batched else boxes.dim() != 2) or boxes.shape[-1] != 4:
        raise OpArgumentError(f"{op}: {name} must be a {want}, got shape {tuple(boxes.shape)}")
    if boxes.is_complex() or boxes.dtype == torch.bool:
        raise OpArgumentError(f"{op}: {name} must be real-valued, got {boxes.dtype}")
    if floating and not boxes.is_floating_point():
        raise OpArgumentError(f"{op}: {name} must be a floating-point tensor, got {boxes.dtype}")
    return boxes


def _check_format(fmt: object, name: str, op: str) -> str:
    if fmt not in BOX_FORMATS:
        valid = ", ".join(repr(f) for f in BOX_FORMATS)
        raise OpArgumentError(f"{op}: {name} must be one of {valid}, got {fmt!r}")
    return fmt  # type: ignore[return-value]


def _check_threshold(value: object, op: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise OpArgumentError(f"{op}: iou_threshold must be a float, got {value!r}")
    return float(value)


def _check_scores(scores: object, n: int, boxes: Tensor, op: str) -> Tensor:
    scores = _check_tensor(scores, "scores", op)
    if scores.dim() != 1 or scores.shape[0] != n:
        raise OpArgumentError(
            f"{op}: scores must be a Tensor[N] with N = {n} (one per box), "
            f"got shape {tuple(scores.shape)}"
        )
    if not scores.is_floating_point():
        raise OpArgumentError(f"{op}: scores must be a floating-point tensor, got {scores.dtype}")
    if scores.device != boxes.device:
        raise OpArgumentError(
            f"{op}: scores is on {scores.device} but boxes is on {boxes.device}; "
            "put them on the same device"
        )
    return scores


# ----------------------------------------------------------------------------- formats and areas


def _upcast(t: Tensor) -> Tensor:
    # Same promotion as torchvision: products of half-precision or small-integer coordinates
    # would overflow, so areas and intersections are computed in float32 / int32 at least.
    if t.is_floating_point():
        return t if t.dtype in (torch.float32, torch.float64) else t.float()
    return t if t.dtype in (torch.int32, torch.int64) else t.int()


def _xywh_to_xyxy(boxes: Tensor) -> Tensor:
    x, y, w, h = boxes.unbind(-1)
    return torch.stack([x, y, x + w, y + h], dim=-1)


def _cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def _xyxy_to_xywh(boxes: Tensor) -> Tensor:
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([x1, y1, x2 - x1, y2 - y1], dim=-1)


def _xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dim=-1)


def box_convert(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    """Convert ``Tensor[..., 4]`` boxes between ``'xyxy'``, ``'xywh'`` and ``'cxcywh'``.

    ``xyxy``: corners (x1, y1, x2, y2); ``xywh``: top-left corner, width, height; ``cxcywh``:
    centre, width, height. Conversions between the two non-corner formats go through ``xyxy``
    (as torchvision's do, so results agree to the bit). Same formats: a copy.
    """
    op = "box_convert"
    boxes = _check_boxes(boxes, "boxes", op)
    _check_format(in_fmt, "in_fmt", op)
    _check_format(out_fmt, "out_fmt", op)
    if in_fmt == out_fmt:
        return boxes.clone()
    if in_fmt == "xywh":
        boxes = _xywh_to_xyxy(boxes)
    elif in_fmt == "cxcywh":
        boxes = _cxcywh_to_xyxy(boxes)
    if out_fmt == "xywh":
        boxes = _xyxy_to_xywh(boxes)
    elif out_fmt == "cxcywh":
        boxes = _xyxy_to_cxcywh(boxes)
    return boxes


def box_area(boxes: Tensor, fmt: str = "xyxy") -> Tensor:
    """Areas of ``Tensor[..., 4]`` boxes -> ``Tensor[...]`` (float32/int32 at least).

    Boxes with x2 < x1 or y2 < y1 get a negative area (nothing is clamped), as in torchvision.
    """
    op = "box_area"
    boxes = _check_boxes(boxes, "boxes", op)
    _check_format(fmt, "fmt", op)
    boxes = _upcast(boxes)
    if fmt == "xyxy":
        return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    return boxes[..., 2] * boxes[..., 3]


def clip_boxes_to_image(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Clamp ``Tensor[..., 4]`` xyxy boxes to an image of ``size = (height, width)``."""
    op = "clip_boxes_to_image"
    boxes = _check_boxes(boxes, "boxes", op)
    if not isinstance(size, Sequence) or len(size) != 2:
        raise OpArgumentError(f"{op}: size must be (height, width), got {size!r}")
    height, width = size
    x = boxes[..., 0::2].clamp(min=0, max=width)
    y = boxes[..., 1::2].clamp(min=0, max=height)
    # (..., 2) x and (..., 2) y -> (..., 2, 2) -> (..., 4) as x1, y1, x2, y2
    return torch.stack((x, y), dim=boxes.dim()).reshape(boxes.shape)


def remove_small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    """Indices (int64, ascending) of the xyxy boxes whose width and height are >= ``min_size``."""
    op = "remove_small_boxes"
    boxes = _check_boxes(boxes, "boxes", op)
    ws = boxes[..., 2] - boxes[..., 0]
    hs = boxes[..., 3] - boxes[..., 1]
    keep = (ws >= min_size) & (hs >= min_size)
    return torch.where(keep)[0]


# ----------------------------------------------------------------------------- IoU


def _corners(boxes: Tensor, fmt: str) -> Tensor:
    # lt/rb in the expressions torchvision uses for each format (x + w, cx - w / 2), so that the
    # intersection is bit-identical; w / 2 and 0.5 * w are the same float operation.
    if fmt == "xyxy":
        return boxes
    if fmt == "xywh":
        return _xywh_to_xyxy(boxes)
    return _cxcywh_to_xyxy(boxes)


def _inter_union(boxes1: Tensor, boxes2: Tensor, fmt: str) -> tuple[Tensor, Tensor]:
    """Differentiable intersection and union, Tensor[..., N, M] each."""
    area1 = box_area(boxes1, fmt)
    area2 = box_area(boxes2, fmt)
    c1 = _corners(boxes1, fmt)
    c2 = _corners(boxes2, fmt)
    lt = torch.max(c1[..., :, None, :2], c2[..., None, :, :2])  # (..., N, M, 2)
    rb = torch.min(c1[..., :, None, 2:], c2[..., None, :, 2:])  # (..., N, M, 2)
    wh = _upcast(rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[..., :, None] + area2[..., None, :] - inter
    return inter, union


def _iou_inplace(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """box_iou for float32/float64 xyxy boxes when no gradient is needed.

    The same operations as :func:`_inter_union`, per coordinate into reused buffers: no
    (N, M, 2) temporaries, and 4 large allocations instead of 9 (fresh large allocations cost
    page faults that dominate a memory-bound op).
    """
    area1 = (boxes1[..., 2] - boxes1[..., 0]) * (boxes1[..., 3] - boxes1[..., 1])
    area2 = (boxes2[..., 2] - boxes2[..., 0]) * (boxes2[..., 3] - boxes2[..., 1])
    a = boxes1[..., :, None, :]  # (..., N, 1, 4)
    b = boxes2[..., None, :, :]  # (..., 1, M, 4)
    w = torch.minimum(a[..., 2], b[..., 2])  # (..., N, M)
    tmp = torch.maximum(a[..., 0], b[..., 0])
    w.sub_(tmp).clamp_(min=0)
    h = torch.minimum(a[..., 3], b[..., 3])
    torch.maximum(a[..., 1], b[..., 1], out=tmp)
    h.sub_(tmp).clamp_(min=0)
    inter = w.mul_(h)
    union = torch.add(area1[..., :, None], area2[..., None, :], out=h)
    union.sub_(inter)
    return inter.div_(union)


def box_iou(boxes1: Tensor, boxes2: Tensor, fmt: str = "xyxy") -> Tensor:
    """Pairwise IoU of ``Tensor[..., N, 4]`` and ``Tensor[..., M, 4]`` -> ``Tensor[..., N, M]``.

    Differentiable. Boxes of zero area give 0/0 = NaN against each other, as in torchvision.
    """
    op = "box_iou"
    boxes1 = _check_boxes(boxes1, "boxes1", op)
    boxes2 = _check_boxes(boxes2, "boxes2", op)
    _check_format(fmt, "fmt", op)
    if boxes1.dim() < 2 or boxes2.dim() < 2:
        raise OpArgumentError(
            f"{op}: boxes1 and boxes2 must be Tensor[..., N, 4], got shapes "
            f"{tuple(boxes1.shape)} and {tuple(boxes2.shape)}"
        )
    needs_grad = torch.is_grad_enabled() and (boxes1.requires_grad or boxes2.requires_grad)
    if (
        fmt == "xyxy"
        and not needs_grad
        and boxes1.dtype == boxes2.dtype
        and boxes1.dtype in (torch.float32, torch.float64)
    ):
        return _iou_inplace(boxes1, boxes2)
    inter, union = _inter_union(boxes1, boxes2, fmt)
    return inter / union


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise generalized IoU (arXiv:1902.09630) of xyxy boxes -> ``Tensor[..., N, M]``.

    ``GIoU = IoU - (|C| - |A u B|) / |C|`` with C the smallest enclosing box. Differentiable.
    Degenerate boxes behave as in torchvision: nothing is clamped or checked, so a pair of
    zero-area boxes gives NaN.
    """
    op = "generalized_box_iou"
    boxes1 = _check_boxes(boxes1, "boxes1", op)
    boxes2 = _check_boxes(boxes2, "boxes2", op)
    if boxes1.dim() < 2 or boxes2.dim() < 2:
        raise OpArgumentError(
            f"{op}: boxes1 and boxes2 must be Tensor[..., N, 4], got shapes "
            f"{tuple(boxes1.shape)} and {tuple(boxes2.shape)}"
        )
    inter, union = _inter_union(boxes1, boxes2, "xyxy")
    iou = inter / union
    lti = torch.min(boxes1[..., :, None, :2], boxes2[..., None, :, :2])  # (..., N, M, 2)
    rbi = torch.max(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
    whi = _upcast(rbi - lti).clamp(min=0)
    areai = whi[..., 0] * whi[..., 1]
    return iou - (areai - union) / areai


# ----------------------------------------------------------------------------- NMS


def _threshold_below(threshold: float, dtype: torch.dtype, device: torch.device) -> float:
    """The largest ``dtype`` value t with ``iou > t  <=>  iou > threshold`` for ``dtype`` ious.

    torchvision's CPU kernel compares the IoU with the threshold as a double, its CUDA kernel as
    a float. ``iou > 0.2`` on a float32 tensor would instead round 0.2 to float32 (upwards), and
    an IoU of exactly float32(0.2) would then be kept where torchvision suppresses it.
    """
    if device.type != "cpu":
        threshold = float(torch.tensor(threshold, dtype=torch.float32))
    if math.isnan(threshold):
        return threshold
    t = torch.tensor(threshold, dtype=torch.float64).to(dtype)
    if float(t) > threshold:
        t = torch.nextafter(t, torch.tensor(-math.inf, dtype=dtype))
    return float(t)


def _suppresses(
    a: Tensor, cls_a: Tensor | None, b: Tensor, cls_b: Tensor | None, thr: float
) -> Tensor:
    """(k, R) uint8 0/1: IoU(a_i, b_j) > thr (and same class); a: (5, k), b: (5, R) as x1, y1,
    x2, y2, area rows.

    uint8 rather than bool: PyTorch reduces uint8 over the leading dimension (``amax(0)``)
    some 20x faster than bool (``any(0)``) on CPU, and that reduction is NMS's inner step.

    The IoU is torchvision's NMS expression, ``inter / (area_i + area_j - inter)`` with
    ``w = max(0, min(x2) - max(x1))``, so every comparison sees the same float.
    """
    a = a[:, :, None]  # (5, k, 1)
    b = b[:, None, :]  # (5, 1, R)
    lt = torch.maximum(a[:2], b[:2])  # (2, k, R): max(x1), max(y1)
    wh = torch.minimum(a[2:4], b[2:4]).sub_(lt).clamp_(min=0)  # max(0, min(x2) - max(x1)), ...
    inter = wh[0].mul_(wh[1])
    union = torch.add(a[4], b[4], out=lt[0]).sub_(inter)
    over = inter.div_(union) > thr
    if cls_a is not None:
        over &= cls_a[:, None] == cls_b
    return over.view(torch.uint8)


def _any_suppressed(
    a: Tensor, cls_a: Tensor | None, b: Tensor, cls_b: Tensor | None, thr: float
) -> Tensor:
    """(R,) uint8: is b_j suppressed by any a_i; the (k, R) test in column chunks of bounded size."""
    k, r = a.shape[1], b.shape[1]
    step = max(1, _NMS_MAX_PAIRS.get(a.device.type, _NMS_MAX_PAIRS_DEFAULT) // max(k, 1))
    parts = []
    for s in range(0, r, step):
        cb = None if cls_b is None else cls_b[s : s + step]
        parts.append(_suppresses(a, cls_a, b[:, s : s + step], cb, thr).amax(0))
    if not parts:
        return torch.zeros(0, dtype=torch.uint8, device=b.device)
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def _greedy_in_block(over: Tensor) -> Tensor:
    """Greedy NMS inside one block: (B, B) uint8 "i suppresses j" (i < j) -> (B,) uint8 kept.

    Box j is kept iff no kept box before it suppresses it. That recursion has one solution on
    this acyclic relation, and iterating ``kept = 1 - max(over & kept[:, None], 0)`` from
    "all kept" reaches it after (longest suppression chain + 1) steps; a step that changes
    nothing has found it. No per-box loop: each step is two whole-block tensor ops.
    """
    kept = torch.ones(over.shape[0], dtype=torch.uint8, device=over.device)
    # A GPU pays a synchronisation per convergence check; extra steps past the fixed point
    # change nothing, so it checks every few steps.
    steps = 1 if over.device.type == "cpu" else 4
    for _ in range(0, over.shape[0] + 1, steps):
        prev = kept
        for _ in range(steps):
            kept = 1 - (over & kept[:, None]).amax(0)
        if torch.equal(prev, kept):
            break
    return kept


def _nms_impl(boxes: Tensor, scores: Tensor, thr: float, classes: Tensor | None) -> Tensor:
    n = boxes.shape[0]
    device = boxes.device
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=device)
    thr = _threshold_below(thr, boxes.dtype, device)
    # Stable: among equal scores the lower index comes first, as in torchvision's CPU kernel.
    order = torch.sort(scores, descending=True, stable=True)[1]
    if classes is not None:
        if classes.is_floating_point() or classes.dtype == torch.bool:
            classes = torch.unique(classes, return_inverse=True)[1]  # exact ids, any dtype
        # Group by class, score order inside each class: boxes of different classes never
        # interact, so a block's suppression test only reaches the rest of its own classes.
        by_class = torch.sort(classes.index_select(0, order), stable=True)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(n, device=device)  # position in the global score order
        order = order.index_select(0, by_class.indices)
        cls_sorted = by_class.values
    # The undecided boxes in visit order, packed so that one gather compacts them:
    # geo (5, R) = x1, y1, x2, y2, area; meta (1 or 2, R) = original index (, class).
    xyxy = boxes.index_select(0, order).t()
    geo = torch.cat([xyxy, ((xyxy[2] - xyxy[0]) * (xyxy[3] - xyxy[1]))[None]])
    meta = order[None] if classes is None else torch.stack([order, cls_sorted.to(order.dtype)])
    block = _NMS_BLOCK.get(device.type, _NMS_BLOCK_DEFAULT)
    max_pairs = _NMS_MAX_PAIRS.get(device.type, _NMS_MAX_PAIRS_DEFAULT)
    kept_parts = []
    while geo.shape[1]:
        r = geo.shape[1]
        b = min(block, r)  # the block: the next b undecided boxes
        cls = None if classes is None else meta[1]
        span = r  # boxes the block can suppress: itself and the later boxes of its classes
        if cls is not None and b < r:
            span = b + int(torch.searchsorted(cls[b:], cls[b - 1 : b], right=True))
        if cls is not None and bool(cls[0] == cls[span - 1]):
            cls = None  # one class from the block to its reach: no class mask needed
        if b * span <= max_pairs:
            # one (B, span) test serves the greedy inside the block and the suppression after it
            over = _suppresses(geo[:, :b], None if cls is None else cls[:b], geo[:, :span],
                               None if cls is None else cls[:span], thr)  # fmt: skip
            kept = _greedy_in_block(over[:, :b].triu_(1))
            suppressed = (over[:, b:] & kept[:, None]).amax(0)  # (span - b,)
        else:
            over = _suppresses(geo[:, :b], None if cls is None else cls[:b], geo[:, :b],
                               None if cls is None else cls[:b], thr)  # fmt: skip
            kept = _greedy_in_block(over.triu_(1))
            kept_idx = torch.nonzero(kept).squeeze(1)
            suppressed = _any_suppressed(
                geo[:, :b].index_select(1, kept_idx),
                None if cls is None else cls[:b].index_select(0, kept_idx),
                geo[:, b:span], None if cls is None else cls[b:span], thr,
            )  # fmt: skip
        kept_parts.append(meta[0, :b][kept.bool()])
        live = torch.nonzero(suppressed == 0).squeeze(1)
        if live.numel() == span - b:  # nothing suppressed: just drop the block
            geo, meta = geo[:, b:], meta[:, b:]
            continue
        live += b
        if span < r:
            live = torch.cat([live, torch.arange(span, r, device=device)])
        geo, meta = geo.index_select(1, live), meta.index_select(1, live)
    keep = torch.cat(kept_parts)
    if classes is not None:
        # back to decreasing score (ties: lower index first) across classes
        keep = keep.index_select(0, torch.sort(rank.index_select(0, keep))[1])
    return keep


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression.

    Visits boxes by decreasing score and discards every later box whose IoU with a kept box is
    strictly greater than ``iou_threshold``.

    Args:
        boxes: Tensor[N, 4] xyxy, floating point.
        scores: Tensor[N], floating point.
        iou_threshold: discard boxes with IoU > iou_threshold.

    Returns:
        Tensor[K] int64: indices of the kept boxes, by decreasing score (ties: lower index first).
    """
    op = "nms"
    boxes = _check_boxes(boxes, "boxes", op, batched=False, floating=True)
    scores = _check_scores(scores, boxes.shape[0], boxes, op)
    thr = _check_threshold(iou_threshold, op)
    with torch.no_grad():
        return _nms_impl(boxes.detach(), scores.detach(), thr, None)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS within each category: boxes with different ``idxs`` never suppress each other.

    Args:
        boxes: Tensor[N, 4] xyxy, floating point.
        scores: Tensor[N], floating point.
        idxs: Tensor[N], the category (or image, or level) of each box.
        iou_threshold: discard boxes with IoU > iou_threshold.

    Returns:
        Tensor[K] int64: indices of the kept boxes, by decreasing score (ties: lower index first).
    """
    op = "batched_nms"
    boxes = _check_boxes(boxes, "boxes", op, batched=False, floating=True)
    scores = _check_scores(scores, boxes.shape[0], boxes, op)
    idxs = _check_tensor(idxs, "idxs", op)
    if idxs.dim() != 1 or idxs.shape[0] != boxes.shape[0]:
        raise OpArgumentError(
            f"{op}: idxs must be a Tensor[N] with N = {boxes.shape[0]} (one per box), "
            f"got shape {tuple(idxs.shape)}"
        )
    if idxs.device != boxes.device:
        raise OpArgumentError(
            f"{op}: idxs is on {idxs.device} but boxes is on {boxes.device}; "
            "put them on the same device"
        )
    thr = _check_threshold(iou_threshold, op)
    with torch.no_grad():
        return _nms_impl(boxes.detach(), scores.detach(), thr, idxs.detach())


# ----------------------------------------------------------------------------- RoI inputs


def _as_rois(boxes: object, input: Tensor, op: str) -> Tensor:
    """Validate RoI boxes against ``input`` and return them as Tensor[K, 5] (batch index first).

    ``boxes`` is Tensor[K, 5] or a list of Tensor[L_i, 4] (one per image of the batch).
    """
    if isinstance(boxes, (list, tuple)):
        for i, b in enumerate(boxes):
            if not isinstance(b, Tensor) or b.dim() != 2 or b.shape[1] != 4:
                shape = tuple(b.shape) if isinstance(b, Tensor) else type(b).__name__
                raise OpArgumentError(
                    f"{op}: boxes[{i}] must be a Tensor[L, 4] (xyxy boxes of image {i}), "
                    f"got {shape}"
                )
        if len(boxes) > input.shape[0]:
            raise OpArgumentError(
                f"{op}: boxes is a list of {len(boxes)} tensors but input holds only "
                f"{input.shape[0]} images"
            )
        if not boxes:
            rois = input.new_zeros((0, 5))
        else:
            ids = [torch.full_like(b[:, :1], i) for i, b in enumerate(boxes)]
            rois = torch.cat([torch.cat(ids), torch.cat(list(boxes))], dim=1)
    elif isinstance(boxes, Tensor):
        if boxes.dim() != 2 or boxes.shape[1] != 5:
            raise OpArgumentError(
                f"{op}: boxes must be a Tensor[K, 5] (batch index, x1, y1, x2, y2) or a list "
                f"of Tensor[L, 4], got shape {tuple(boxes.shape)}"
            )
        rois = boxes
    else:
        raise OpArgumentError(
            f"{op}: boxes must be a Tensor[K, 5] or a list of Tensor[L, 4], "
            f"got {type(boxes).__name__}"
        )
    if rois.dtype != input.dtype:
        raise OpArgumentError(
            f"{op}: boxes must have the same dtype as input ({input.dtype}), got {rois.dtype}"
        )
    if rois.device != input.device:
        raise OpArgumentError(
            f"{op}: boxes is on {rois.device} but input is on {input.device}; "
            "put them on the same device"
        )
    if rois.shape[0]:
        batch = rois[:, 0].detach()
        lo, hi = torch.aminmax(batch)
        if float(lo) < 0 or float(hi) >= input.shape[0]:
            raise OpArgumentError(
                f"{op}: boxes[:, 0] (batch index) must lie in [0, {input.shape[0] - 1}] for an "
                f"input of {input.shape[0]} images, got values in [{float(lo)}, {float(hi)}]"
            )
    return rois


def _check_feature_map(input: object, op: str) -> Tensor:
    input = _check_tensor(input, "input", op)
    if input.dim() != 4:
        raise OpArgumentError(
            f"{op}: input must be a Tensor[N, C, H, W], got shape {tuple(input.shape)}"
        )
    if not input.is_floating_point():
        raise OpArgumentError(f"{op}: input must be a floating-point tensor, got {input.dtype}")
    return input


def _pair_output_size(output_size: object, op: str) -> tuple[int, int]:
    size = (output_size, output_size) if isinstance(output_size, int) else output_size
    if (
        not isinstance(size, Sequence)
        or len(size) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)
    ):
        raise OpArgumentError(
            f"{op}: output_size must be a positive int or (height, width) of positive ints, "
            f"got {output_size!r}"
        )
    return int(size[0]), int(size[1])


def _check_spatial_scale(value: object, op: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise OpArgumentError(f"{op}: spatial_scale must be a positive float, got {value!r}")
    return float(value)
