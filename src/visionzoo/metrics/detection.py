"""Object-detection metrics: COCO mAP (through pycocotools) and Pascal VOC AP (written here).

Shapes: per image, D detections ``boxes`` float ``[D, 4]`` xyxy, ``scores`` ``[D]``, ``labels``
int ``[D]``; G ground-truth ``boxes`` ``[G, 4]``, ``labels`` ``[G]``, optional ``ignore`` and
``iscrowd`` bool ``[G]``. Labels are ``1..C`` (0 is the background and never a class here).
Boxes are continuous pixel coordinates, so IoU has no ``+1`` (the VOC loader converts VOC's
1-based inclusive boxes, see :mod:`visionzoo.data.formats.voc`).

**COCO** (Lin et al., arXiv:1405.0312; ``pycocotools.cocoeval.COCOeval``, bbox): the ground
truth and the detections are built in memory as COCO objects (no files; pycocotools' prints are
captured, ``summary`` keeps its table). ``mAP`` is AP averaged over IoU 0.50:0.05:0.95 and the
classes, each AP a 101-point interpolated precision/recall area; ``mAP50``, ``mAP75`` at one
IoU; ``mAP_small/medium/large`` over objects of area < 32², 32²..96², > 96²; ``AR1/AR10/AR100``
recall at that many detections per image. At most 100 detections per image and class are
scored (COCO's ``maxDets``). Departures from the official evaluation, marked where they happen:

- object areas (the size ranges) are box areas ``w * h``: the official ground truth uses the
  segmentation's area, which detection annotations here do not carry;
- ``ignore`` boxes that are not crowds (VOC ``difficult``) are ignored as COCO ignores crowds,
  but matched by plain IoU; crowds (``iscrowd``) keep COCO's intersection-over-detection-area
  rule. pycocotools alone ignores crowds only.

**VOC** (Everingham et al., IJCV 2010; the devkit's ``VOCevaldet``), IoU >= 0.5, per class:
detections of the class over all images are sorted by score (stable: ties keep the input
order); each one's best ground truth of that class in its image (highest IoU, ``difficult``
ones included) decides: IoU < 0.5 -> false positive; the best one is ``ignore`` -> the detection
is dropped (neither true nor false); else the first detection to claim it is a true positive and
later ones are duplicates (false positives). Recall divides by the non-ignored ground truths of
the class. Two APs from the same precision/recall points:

- ``voc_AP50`` (VOC2010+): the area under the precision envelope (precision made monotone
  from the right), summed where recall changes;
- ``voc07_AP50`` (VOC2007's 11-point): the mean over recall r = 0, 0.1, ..., 1 of the highest
  precision at recall >= r (0 when r is not reached).

The matching is vectorised: a detection's best ground truth does not depend on the order (only
whether it was claimed first does), so all IoUs are computed at once against each detection's
(image, class) group of ground truths padded to one size, and "claimed first" is the first
occurrence in score order (``np.unique``). Only the precision/recall curve is a loop, over the
classes.

Classes without (non-ignored) ground truth have no AP (NaN, per class) and are left out of the
means, as both COCO and the VOC devkit do; their detections are then not counted anywhere. A
class with ground truth and no detections has AP 0.

Distributed evaluation: each process updates with its shard; :meth:`DetectionMetrics.sync`
gathers every image of every rank (``all_gather_object``) before ``compute``; images with the
same ``image_id`` (the padding of a distributed sampler) are counted once.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from ..errors import DataError

__all__ = [
    "DetectionMetrics",
    "average_precision",
    "box_iou_aligned",
    "coco_evaluate",
    "format_per_class_table",
    "voc_evaluate",
]

# COCO's summary order (COCOeval.stats) under our key names.
COCO_KEYS = (
    "mAP",
    "mAP50",
    "mAP75",
    "mAP_small",
    "mAP_medium",
    "mAP_large",
    "AR1",
    "AR10",
    "AR100",
    "AR_small",
    "AR_medium",
    "AR_large",
)
_NAN = float("nan")
# Detections whose IoUs with their group's ground truths are computed at once (memory bound).
_CHUNK_ELEMS = 1 << 22


# ---------------------------------------------------------------------------------------------
# Input normalisation


def _np(x: Any, dtype: Any, shape_tail: tuple[int, ...] = ()) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().to("cpu")
        x = x.float() if x.is_floating_point() else x
        x = x.numpy()
    return np.asarray(x, dtype=dtype).reshape((-1, *shape_tail))


def _image(pred: dict[str, Any], target: dict[str, Any], num_classes: int) -> dict[str, Any]:
    """One image as numpy arrays (boxes float64), checked."""
    d_boxes = _np(pred["boxes"], np.float64, (4,))
    d_scores = _np(pred["scores"], np.float64).reshape(-1)
    d_labels = _np(pred["labels"], np.int64).reshape(-1)
    g_boxes = _np(target["boxes"], np.float64, (4,))
    g_labels = _np(target["labels"], np.int64).reshape(-1)
    g = len(g_boxes)
    ign = target.get("ignore")
    crowd = target.get("iscrowd")
    g_crowd = np.zeros(g, bool) if crowd is None else _np(crowd, bool).reshape(-1)
    g_ignore = np.zeros(g, bool) if ign is None else _np(ign, bool).reshape(-1)
    g_ignore = g_ignore | g_crowd  # a crowd is always ignored
    if not (len(d_boxes) == len(d_scores) == len(d_labels)):
        raise ValueError(
            f"a prediction has {len(d_boxes)} boxes, {len(d_scores)} scores and "
            f"{len(d_labels)} labels; they must match"
        )
    if not (g == len(g_labels) == len(g_ignore) == len(g_crowd)):
        raise ValueError(
            f"a target has {g} boxes, {len(g_labels)} labels, {len(g_ignore)} ignore and "
            f"{len(g_crowd)} iscrowd flags; they must match"
        )
    for what, lab in (("predicted", d_labels), ("ground-truth", g_labels)):
        if lab.size and (lab.min() < 1 or lab.max() > num_classes):
            bad = int(lab.min() if lab.min() < 1 else lab.max())
            raise DataError(
                f"{what} label {bad} is out of range for {num_classes} classes (valid: "
                f"1..{num_classes}; 0 is the background); was the model trained on this data?"
            )
    image_id = target.get("image_id")
    if isinstance(image_id, Tensor):
        image_id = int(image_id.reshape(-1)[0]) if image_id.numel() else None
    return {
        "boxes": d_boxes,
        "scores": d_scores,
        "labels": d_labels,
        "gt_boxes": g_boxes,
        "gt_labels": g_labels,
        "gt_ignore": g_ignore,
        "gt_crowd": g_crowd,
        "image_id": None if image_id is None else int(image_id),
    }


def _images(
    preds: Sequence[dict[str, Any]], targets: Sequence[dict[str, Any]], num_classes: int
) -> list[dict[str, Any]]:
    if len(preds) != len(targets):
        raise ValueError(f"{len(preds)} predictions for {len(targets)} targets")
    return [_image(p, t, num_classes) for p, t in zip(preds, targets, strict=True)]


def _concat(images: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Flat arrays over images, with the image index of every row."""

    def cat(key: str, dtype: Any, tail: tuple[int, ...] = ()) -> np.ndarray:
        parts = [im[key] for im in images]
        return np.concatenate(parts).astype(dtype) if parts else np.zeros((0, *tail), dtype)

    return {
        "d_img": np.repeat(np.arange(len(images)), [len(im["boxes"]) for im in images]),
        "d_boxes": cat("boxes", np.float64, (4,)).reshape(-1, 4),
        "d_scores": cat("scores", np.float64),
        "d_labels": cat("labels", np.int64),
        "g_img": np.repeat(np.arange(len(images)), [len(im["gt_boxes"]) for im in images]),
        "g_boxes": cat("gt_boxes", np.float64, (4,)).reshape(-1, 4),
        "g_labels": cat("gt_labels", np.int64),
        "g_ignore": cat("gt_ignore", bool),
        "g_crowd": cat("gt_crowd", bool),
    }


# ---------------------------------------------------------------------------------------------
# VOC AP


def box_iou_aligned(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes that broadcast against each other: ``[..., 4]`` x ``[..., 4]`` -> ``[...]``
    (continuous xyxy; 0 when the union is empty)."""
    iw = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
    ih = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def average_precision(recall: np.ndarray, precision: np.ndarray, method: str = "area") -> float:
    """AP of one class from its precision/recall points in score order.

    ``method="area"``: VOC2010+ (area under the monotone precision envelope);
    ``"11point"``: VOC2007 (mean of the highest precision at recall >= 0, 0.1, ..., 1).
    """
    rec = np.asarray(recall, dtype=np.float64)
    prec = np.asarray(precision, dtype=np.float64)
    if method == "11point":
        if rec.size == 0:
            return 0.0
        # k / 10 exactly (linspace would give 0.30000000000000004, missing a recall of 3/10).
        thresholds = np.arange(11) / 10.0  # (11,)
        # Highest precision at recall >= r: a suffix maximum, read at the first index >= r.
        suffix_max = np.maximum.accumulate(prec[::-1])[::-1]
        first = np.searchsorted(np.maximum.accumulate(rec), thresholds, side="left")
        reached = first < rec.size
        p = np.where(reached, suffix_max[first.clip(max=rec.size - 1)], 0.0)
        return float(p.mean())
    if method != "area":
        raise ValueError(f"method must be 'area' or '11point', got {method!r}")
    mrec = np.concatenate([[0.0], rec, [1.0]])
    mpre = np.concatenate([[0.0], prec, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # the envelope, from the right
    change = np.flatnonzero(mrec[1:] != mrec[:-1])  # where recall steps
    return float(np.sum((mrec[change + 1] - mrec[change]) * mpre[change + 1]))


def _match_voc(flat: dict[str, np.ndarray], num_classes: int, iou_threshold: float) -> np.ndarray:
    """Per detection: 1 true positive, 0 false positive, -1 dropped (matched an ignored box)."""
    d, g = len(flat["d_boxes"]), len(flat["g_boxes"])
    status = np.zeros(d, dtype=np.int64)
    if d == 0 or g == 0:
        return status
    k1 = num_classes + 1
    # Ground truths grouped by (image, class), each group padded to gmax columns.
    g_key = flat["g_img"] * k1 + flat["g_labels"]
    g_order = np.argsort(g_key, kind="stable")  # keeps each image's order within a group
    keys, starts, counts = np.unique(g_key[g_order], return_index=True, return_counts=True)
    gmax = int(counts.max())
    rank = np.arange(g) - np.repeat(starts, counts)  # position inside the group
    table = np.full((len(keys), gmax), -1, dtype=np.int64)  # (U, gmax) ground-truth rows
    table[np.repeat(np.arange(len(keys)), counts), rank] = g_order

    d_key = flat["d_img"] * k1 + flat["d_labels"]
    pos = np.searchsorted(keys, d_key).clip(max=len(keys) - 1)
    has_gt = keys[pos] == d_key
    best = np.full(d, -1, dtype=np.int64)
    best_iou = np.full(d, -1.0)
    cand_rows = np.flatnonzero(has_gt)
    step = max(1, _CHUNK_ELEMS // gmax)
    for lo in range(0, len(cand_rows), step):  # chunks bound memory, not a loop over boxes
        rows = cand_rows[lo : lo + step]
        cand = table[pos[rows]]  # (n, gmax)
        iou = box_iou_aligned(flat["d_boxes"][rows, None, :], flat["g_boxes"][cand.clip(min=0)])
        iou = np.where(cand >= 0, iou, -1.0)  # (n, gmax); padding never wins
        j = iou.argmax(axis=1)  # first maximum, like the devkit's max()
        best[rows] = cand[np.arange(len(rows)), j]
        best_iou[rows] = iou[np.arange(len(rows)), j]
    matched = best_iou >= iou_threshold
    ignored = matched & flat["g_ignore"][best.clip(min=0)]
    status[ignored] = -1
    claim = matched & ~ignored
    # Score order (stable) within each class; the first claim of a ground truth is a TP.
    order = np.lexsort((-flat["d_scores"], flat["d_labels"]))
    claims_in_order = order[claim[order]]
    _, first = np.unique(best[claims_in_order], return_index=True)
    status[claims_in_order[first]] = 1
    return status


def voc_evaluate(
    preds: Sequence[dict[str, Any]] | None,
    targets: Sequence[dict[str, Any]] | None,
    num_classes: int,
    iou_threshold: float = 0.5,
    *,
    images: Sequence[dict[str, Any]] | None = None,
) -> dict[str, np.ndarray]:
    """Pascal VOC AP per class (module docstring).

    Returns ``ap`` (area, VOC2010+) and ``ap07`` (11-point), float64 ``[C]`` with NaN for
    classes without non-ignored ground truth, and ``num_gt`` int64 ``[C]``.
    """
    if images is None:
        images = _images(preds or [], targets or [], num_classes)
    flat = _concat(images)
    status = _match_voc(flat, num_classes, iou_threshold)
    ap = np.full(num_classes, _NAN)
    ap07 = np.full(num_classes, _NAN)
    counted = ~flat["g_ignore"]
    num_gt = np.bincount(flat["g_labels"][counted], minlength=num_classes + 1)[1:]
    order = np.lexsort((-flat["d_scores"], flat["d_labels"]))
    labels_sorted = flat["d_labels"][order]
    status_sorted = status[order]
    bounds = np.searchsorted(labels_sorted, np.arange(1, num_classes + 2))
    for c in range(num_classes):  # the PR curve per class; everything else is vectorised
        if num_gt[c] == 0:
            continue
        s = status_sorted[bounds[c] : bounds[c + 1]]
        s = s[s >= 0]  # detections on ignored boxes count nowhere
        tp = np.cumsum(s == 1)
        fp = np.cumsum(s == 0)
        recall = tp / num_gt[c]
        precision = tp / np.maximum(tp + fp, 1)
        ap[c] = average_precision(recall, precision, "area")
        ap07[c] = average_precision(recall, precision, "11point")
    return {"ap": ap, "ap07": ap07, "num_gt": num_gt.astype(np.int64)}


# ---------------------------------------------------------------------------------------------
# COCO AP (pycocotools)


def _coco_eval_class():
    from pycocotools.cocoeval import COCOeval

    class _COCOeval(COCOeval):
        def _prepare(self) -> None:
            super()._prepare()
            # Departure from pycocotools (module docstring): its _prepare sets
            # ignore = iscrowd, so a non-crowd ignored box (VOC "difficult") is flagged here,
            # after it; the crowd IoU rule still applies only to iscrowd boxes.
            for gts in self._gts.values():
                for gt in gts:
                    if gt.get("vz_ignore"):
                        gt["ignore"] = 1

    return _COCOeval


def _xywh(boxes: np.ndarray) -> np.ndarray:
    out = boxes.copy()
    out[:, 2:] -= out[:, :2]
    return out


def coco_evaluate(
    preds: Sequence[dict[str, Any]] | None,
    targets: Sequence[dict[str, Any]] | None,
    num_classes: int,
    class_names: Sequence[str] | None = None,
    *,
    images: Sequence[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """COCO box AP with pycocotools, from in-memory predictions and targets.

    Returns ``stats`` (dict of :data:`COCO_KEYS` -> float, NaN where COCO gives -1), per-class
    float64 ``[C]`` arrays ``ap`` (0.50:0.95), ``ap50``, ``ap75`` (NaN without ground truth),
    and ``summary`` (pycocotools' printed table).
    """
    from pycocotools.coco import COCO

    if images is None:
        images = _images(preds or [], targets or [], num_classes)
    names = (
        list(class_names) if class_names is not None else [str(c + 1) for c in range(num_classes)]
    )
    nan_class = np.full(num_classes, _NAN)
    empty = {
        "stats": dict.fromkeys(COCO_KEYS, _NAN),
        "ap": nan_class.copy(),
        "ap50": nan_class.copy(),
        "ap75": nan_class.copy(),
        "summary": "",
    }
    if not images:
        return empty
    flat = _concat(images)
    # Ids start at 1: pycocotools marks "unmatched" with id 0.
    g_xywh = _xywh(flat["g_boxes"])
    gt_anns = [
        {
            "id": j + 1,
            "image_id": int(i) + 1,
            "category_id": int(c),
            "bbox": [float(v) for v in b],
            # Departure (module docstring): box area, not segmentation area.
            "area": float(b[2] * b[3]),
            "iscrowd": int(crowd),
            "vz_ignore": int(ign),
        }
        for j, (i, c, b, crowd, ign) in enumerate(
            zip(
                flat["g_img"].tolist(),
                flat["g_labels"].tolist(),
                g_xywh.tolist(),
                flat["g_crowd"].tolist(),
                flat["g_ignore"].tolist(),
                strict=True,
            )
        )
    ]
    d_xywh = _xywh(flat["d_boxes"])
    dt_anns = [
        {
            "id": j + 1,
            "image_id": int(i) + 1,
            "category_id": int(c),
            "bbox": [float(v) for v in b],
            "area": float(b[2] * b[3]),
            "score": float(s),
            "iscrowd": 0,
        }
        for j, (i, c, b, s) in enumerate(
            zip(
                flat["d_img"].tolist(),
                flat["d_labels"].tolist(),
                d_xywh.tolist(),
                flat["d_scores"].tolist(),
                strict=True,
            )
        )
    ]
    image_entries = [{"id": i + 1} for i in range(len(images))]
    categories = [{"id": c + 1, "name": names[c]} for c in range(num_classes)]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):  # pycocotools prints progress and the table
        gt = COCO()
        gt.dataset = {"images": image_entries, "annotations": gt_anns, "categories": categories}
        gt.createIndex()
        dt = COCO()
        dt.dataset = {"images": image_entries, "annotations": dt_anns, "categories": categories}
        dt.createIndex()
        ev = _coco_eval_class()(gt, dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        start = out.tell()
        ev.summarize()
    summary = out.getvalue()[start:].strip()
    stats = {k: (float(v) if v > -1 else _NAN) for k, v in zip(COCO_KEYS, ev.stats, strict=True)}
    precision = ev.eval["precision"]  # (T IoUs, R recalls, K classes, A areas, M maxDets)
    thr = ev.params.iouThrs
    i50 = int(np.argmin(np.abs(thr - 0.5)))
    i75 = int(np.argmin(np.abs(thr - 0.75)))

    def per_class(p: np.ndarray) -> np.ndarray:
        # p: (..., R, K) at area "all" and the largest maxDets; -1 marks "no ground truth".
        p = p.reshape(-1, p.shape[-1])
        valid = p > -1
        sums = np.where(valid, p, 0.0).sum(axis=0)
        counts = valid.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(counts > 0, sums / np.maximum(counts, 1), _NAN)

    # params.catIds are our sorted ids 1..C, so column k of precision is class k + 1.
    return {
        "stats": stats,
        "ap": per_class(precision[:, :, :, 0, -1]),
        "ap50": per_class(precision[i50, :, :, 0, -1]),
        "ap75": per_class(precision[i75, :, :, 0, -1]),
        "summary": summary,
    }


# ---------------------------------------------------------------------------------------------
# Accumulator


def format_per_class_table(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of :attr:`DetectionMetrics.per_class` rows: one line per class with its
    non-ignored ground-truth boxes and APs as fractions ("-" where undefined or not computed)."""
    cols = [
        ("AP", "AP"),
        ("AP50", "AP50"),
        ("AP75", "AP75"),
        ("voc_AP50", "VOC AP50"),
        ("voc07_AP50", "VOC07 AP50"),
    ]

    def fmt(v: Any) -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"

    lines = [
        "| class | boxes (ground truth) | " + " | ".join(t for _, t in cols) + " |",
        "|---|---:|" + "---:|" * len(cols),
    ]
    for r in rows:
        values = " | ".join(fmt(r.get(k)) for k, _ in cols)
        lines.append(f"| {r['class']} | {int(r['num_gt']):,} | {values} |")
    return "\n".join(lines)


class DetectionMetrics:
    """COCO and VOC detection metrics over a dataset (module docstring).

    ``update(preds, targets)`` per batch (lists of dicts in the torchvision convention, on
    any device), ``sync()`` under DDP, ``compute()`` at the end, ``reset()`` before the next
    evaluation.

    Args:
        num_classes: C object classes (labels ``1..C``; the background is not counted).
        class_names: C names for the per-class keys (default ``"1".."C"``).
        coco: compute the pycocotools metrics (the slower part) besides VOC AP.

    ``compute()`` returns floats: :data:`COCO_KEYS` (when ``coco``), ``voc_AP50``,
    ``voc07_AP50`` (means over classes with ground truth), and per class ``AP/<name>``,
    ``AP50/<name>``, ``AP75/<name>`` (when ``coco``), ``voc_AP50/<name>``,
    ``voc07_AP50/<name>``. After it, ``per_class`` holds one row per class (``class``,
    ``num_gt`` and the APs) and ``summary`` pycocotools' table.
    """

    def __init__(
        self, num_classes: int, class_names: Sequence[str] | None = None, coco: bool = True
    ) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes = num_classes
        self.class_names = (
            [str(n) for n in class_names]
            if class_names is not None
            else [str(c + 1) for c in range(num_classes)]
        )
        self.coco = coco
        self.per_class: list[dict[str, Any]] = []
        self.summary = ""
        self.reset()

    def reset(self) -> None:
        self._images: list[dict[str, Any]] = []
        self._synced = False

    @property
    def count(self) -> int:
        """Images seen."""
        return len(self._images)

    @torch.no_grad()
    def update(
        self, preds: Sequence[dict[str, Tensor]], targets: Sequence[dict[str, Tensor]]
    ) -> None:
        """Add a batch: one prediction dict (``boxes``, ``scores``, ``labels``) and one target
        dict (``boxes``, ``labels``, optional ``ignore``, ``iscrowd``, ``image_id``) per image."""
        if self._synced:
            raise RuntimeError("update() after sync(): call reset() to start a new evaluation")
        self._images.extend(_images(preds, targets, self.num_classes))

    def sync(self) -> None:
        """Gather the images of all processes (a collective: call it on every rank), once.

        No-op without an initialised process group. Images sharing an ``image_id`` are kept
        once (the first seen, in rank order).
        """
        if self._synced or not (dist.is_available() and dist.is_initialized()):
            return
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, self._images)
        images: list[dict[str, Any]] = []
        seen: set[int] = set()
        for part in gathered:
            for im in part:
                iid = im["image_id"]
                if iid is not None:
                    if iid in seen:
                        continue
                    seen.add(iid)
                images.append(im)
        self._images = images
        self._synced = True

    def compute(self) -> dict[str, float]:
        """The metrics of everything seen (class docstring)."""
        voc = voc_evaluate(None, None, self.num_classes, images=self._images)
        out: dict[str, float] = {}
        coco = None
        if self.coco:
            coco = coco_evaluate(
                None, None, self.num_classes, self.class_names, images=self._images
            )
            out.update(coco["stats"])
            self.summary = coco["summary"]

        def mean(v: np.ndarray) -> float:
            ok = ~np.isnan(v)
            return float(v[ok].mean()) if ok.any() else _NAN

        out["voc_AP50"] = mean(voc["ap"])
        out["voc07_AP50"] = mean(voc["ap07"])
        rows = []
        for c, name in enumerate(self.class_names):
            row: dict[str, Any] = {"class": name, "num_gt": int(voc["num_gt"][c])}
            if coco is not None:
                for key, arr in (
                    ("AP", coco["ap"]),
                    ("AP50", coco["ap50"]),
                    ("AP75", coco["ap75"]),
                ):
                    row[key] = float(arr[c])
                    out[f"{key}/{name}"] = float(arr[c])
            row["voc_AP50"] = float(voc["ap"][c])
            row["voc07_AP50"] = float(voc["ap07"][c])
            out[f"voc_AP50/{name}"] = row["voc_AP50"]
            out[f"voc07_AP50/{name}"] = row["voc07_AP50"]
            rows.append(row)
        self.per_class = rows
        return out

    def table(self) -> str:
        """The per-class table of the last :meth:`compute`."""
        return format_per_class_table(self.per_class)
