"""Semantic-segmentation metrics from a streaming confusion matrix: IoU, mIoU, Dice, mDice,
pixel accuracy.

Shapes: N images, K classes, H/W pixels. Predictions are logits ``Tensor[N, K, H, W]`` (argmax
over K) or class indices ``Tensor[N, H, W]``; targets are ``Tensor[N, H, W]`` class indices in
``[0, K)`` or ``ignore_index`` (255 by default, Pascal VOC's "void"). Ignored pixels count
nowhere.

The K x K confusion matrix (rows: true class, columns: predicted class, as scikit-learn) is
accumulated over the whole dataset with one ``bincount`` per batch, and every metric is read off
it at the end, so mIoU is the dataset-level figure of the Pascal VOC benchmark, not a mean of
per-image IoUs. For class c with TP, FP, FN from the matrix:

    IoU_c  = TP / (TP + FP + FN)          (Jaccard)
    Dice_c = 2 TP / (2 TP + FP + FN)      (F1)

mIoU and mDice average over the classes present in the prediction or the ground truth (TP + FP +
FN > 0); a class in neither has no IoU (None in the lists) rather than a 0 or a 1 that would move
the mean. ``pixel_acc`` is the fraction of non-ignored pixels predicted correctly.

Distributed evaluation: each process updates with its shard, then calls :meth:`sync` (an
``all_reduce`` of the matrix, a sum) before ``compute``, so every rank reports the metrics of
the whole dataset. Without an initialised process group, ``sync`` does nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from ..errors import DataError

__all__ = ["SegmentationMetrics", "confusion_matrix", "merge_confusion_matrices", "scores"]


def _check_range(target: Tensor, pred: Tensor, num_classes: int) -> None:
    """DataError unless every value of both lies in [0, K): two reductions, one host sync."""
    if target.numel() == 0:
        return
    t_lo, t_hi, p_lo, p_hi = torch.stack([*torch.aminmax(target), *torch.aminmax(pred)]).tolist()
    for lo, hi, what in ((t_lo, t_hi, "mask value"), (p_lo, p_hi, "predicted class")):
        if lo < 0 or hi >= num_classes:
            bad = lo if lo < 0 else hi
            extra = " or the ignore index" if what == "mask value" else ""
            raise DataError(
                f"{what} {bad} is out of range for {num_classes} classes (valid: "
                f"0..{num_classes - 1}{extra}); check the masks or num_classes"
            )


def confusion_matrix(
    pred: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = 255
) -> Tensor:
    """Tensor[K, K] int64 of one batch: rows true class, columns predicted class.

    ``pred`` and ``target`` are class indices of one shape; pixels whose target is
    ``ignore_index`` are dropped. Raises DataError for values outside [0, K).
    """
    if pred.shape != target.shape:
        raise ValueError(
            f"predictions {tuple(pred.shape)} and targets {tuple(target.shape)} differ in shape"
        )
    if pred.is_floating_point() or target.is_floating_point():
        raise ValueError("predictions and targets must be integer class indices")
    k = num_classes
    # Count where the predictions are (the model's device): targets are the cheaper to move.
    pred = pred.reshape(-1).long()
    target = target.reshape(-1).to(pred.device).long()
    if ignore_index is None:
        _check_range(target, pred, k)
        index = target * k + pred
    else:
        # Ignored pixels go to an extra bin K*K that is dropped: no boolean indexing, so no
        # host sync beyond the range check.
        keep = target != ignore_index
        target, pred = target.where(keep, 0), pred.where(keep, 0)
        _check_range(target, pred, k)
        index = (target * k + pred).where(keep, k * k)
    # Row-major index true * K + pred: one bincount fills the whole (K, K) matrix.
    return torch.bincount(index, minlength=k * k + 1)[: k * k].view(k, k)


def merge_confusion_matrices(matrices: Iterable[Tensor]) -> Tensor:
    """Sum of confusion matrices (e.g. of the shards of a dataset)."""
    matrices = list(matrices)
    if not matrices:
        raise ValueError("no confusion matrix to merge")
    out = matrices[0].detach().to("cpu", torch.int64, copy=True)
    for m in matrices[1:]:
        if m.shape != out.shape:
            raise ValueError(
                f"confusion matrices differ in shape: {tuple(m.shape)} vs {tuple(out.shape)}"
            )
        out += m.to("cpu", torch.int64)
    return out


def scores(cm: Tensor) -> dict[str, Any]:
    """Metrics of a confusion matrix ``Tensor[K, K]`` (rows true, columns predicted).

    Keys: ``mIoU``, ``IoU`` (list, None for classes in neither prediction nor ground truth),
    ``mDice``, ``Dice``, ``pixel_acc``, ``count`` (pixels). Fractions in [0, 1]; NaN when
    there is nothing to average.
    """
    cm = cm.to(torch.float64)
    tp = cm.diagonal()
    fp = cm.sum(dim=0) - tp  # predicted c, truly another class
    fn = cm.sum(dim=1) - tp  # truly c, predicted another class
    union = tp + fp + fn
    present = union > 0
    iou = tp / union.clamp_min(1)
    dice = 2 * tp / (2 * tp + fp + fn).clamp_min(1)
    total = cm.sum()
    nan = float("nan")

    def mean(v: Tensor) -> float:
        return float(v[present].mean()) if bool(present.any()) else nan

    def per_class(v: Tensor) -> list[float | None]:
        return [float(a) if p else None for a, p in zip(v.tolist(), present.tolist(), strict=True)]

    return {
        "mIoU": mean(iou),
        "IoU": per_class(iou),
        "mDice": mean(dice),
        "Dice": per_class(dice),
        "pixel_acc": float(tp.sum() / total) if total > 0 else nan,
        "count": int(total),
    }


class SegmentationMetrics:
    """Streaming IoU / Dice / pixel accuracy over a dataset (see the module docstring).

    ``update(pred, target)`` per batch, ``sync()`` under DDP, ``compute()`` at the end,
    ``reset()`` before the next evaluation. ``compute()`` returns :func:`scores`' keys plus
    ``confusion_matrix`` (Tensor[K, K] int64 on the CPU).
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        if ignore_index is not None and 0 <= ignore_index < num_classes:
            raise ValueError(
                f"ignore_index {ignore_index} is a valid class of {num_classes}; use a value "
                "outside 0..num_classes-1 (255) or None"
            )
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        self._cm: Tensor | None = None  # (K, K) int64, on the device of the first update
        self._synced = False

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch: ``pred`` logits Tensor[N, K, H, W] or labels Tensor[N, H, W]."""
        if self._synced:
            raise RuntimeError("update() after sync(): call reset() to start a new evaluation")
        if pred.dim() == target.dim() + 1:
            if pred.shape[1] != self.num_classes:
                raise DataError(
                    f"the model predicts {pred.shape[1]} classes but the metric counts "
                    f"{self.num_classes}"
                )
            pred = pred.argmax(dim=1)  # (N, K, H, W) -> (N, H, W)
        elif pred.dim() != target.dim():
            raise ValueError(
                f"expected logits [N, K, H, W] or labels [N, H, W] for targets "
                f"{tuple(target.shape)}, got {tuple(pred.shape)}"
            )
        cm = confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        if self._cm is None:
            self._cm = cm
        else:
            self._cm += cm.to(self._cm.device)

    def merge(self, other: SegmentationMetrics) -> None:
        """Add another metric's counts (same classes) to this one."""
        if other.num_classes != self.num_classes:
            raise ValueError(
                f"cannot merge metrics of {other.num_classes} and {self.num_classes} classes"
            )
        if other._cm is None:
            return
        if self._cm is None:
            self._cm = other._cm.clone()
        else:
            self._cm += other._cm.to(self._cm.device)

    def sync(self, device: torch.device | str | None = None) -> None:
        """Sum the confusion matrices of all processes (``all_reduce``), in place, once.

        No-op without an initialised ``torch.distributed`` process group, or when already
        synced. Call it on every rank (a collective) after the last ``update``. ``device``:
        where the reduction runs when this rank saw no batch (default: CUDA's current device
        for the NCCL backend, else the CPU).
        """
        if self._synced or not (dist.is_available() and dist.is_initialized()):
            return
        if self._cm is None:
            if device is None:
                nccl = dist.get_backend() == "nccl"
                device = torch.device("cuda", torch.cuda.current_device()) if nccl else "cpu"
            k = self.num_classes
            self._cm = torch.zeros(k, k, dtype=torch.int64, device=device)
        dist.all_reduce(self._cm, op=dist.ReduceOp.SUM)
        self._synced = True

    def confusion_matrix(self) -> Tensor:
        """Tensor[K, K] int64 on the CPU: rows true class, columns predicted class."""
        if self._cm is None:
            return torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)
        return self._cm.cpu()

    def compute(self) -> dict[str, Any]:
        """``mIoU``, ``IoU``, ``mDice``, ``Dice``, ``pixel_acc``, ``count``,
        ``confusion_matrix`` (see :func:`scores`)."""
        cm = self.confusion_matrix()
        return {**scores(cm), "confusion_matrix": cm}
