"""Classification metrics: top-k accuracy and a streaming confusion matrix.

Shapes: N samples, K classes. ``logits`` are ``Tensor[N, K]`` (any float dtype, any device),
``targets`` are integer class indices ``Tensor[N]`` in ``[0, K)``. The confusion matrix follows
scikit-learn's convention: rows are true classes, columns are predicted classes.

Everything is vectorised: one ``topk`` and one ``bincount`` per batch, and the running counts
stay on the inputs' device, so updating costs one host sync (the label range check) per batch.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from ..errors import DataError

__all__ = ["accuracy_topk", "check_labels", "ClassificationMetrics"]


def check_labels(targets: Tensor, num_classes: int, what: str = "label") -> None:
    """Raise DataError unless every label lies in ``[0, num_classes)``.

    One ``aminmax`` reduction and one host sync, whatever the batch size.
    """
    if targets.numel() == 0:
        return
    lo, hi = (int(v) for v in torch.stack(torch.aminmax(targets)).tolist())
    if lo < 0 or hi >= num_classes:
        bad = lo if lo < 0 else hi
        raise DataError(
            f"{what} {bad} is out of range for {num_classes} classes "
            f"(valid labels are 0..{num_classes - 1}); check the dataset's labels or num_classes"
        )


def _check_logits(logits: Tensor, targets: Tensor, num_classes: int | None = None) -> None:
    if logits.dim() != 2:
        raise ValueError(f"logits must be Tensor[N, K], got shape {tuple(logits.shape)}")
    if targets.dim() != 1 or targets.shape[0] != logits.shape[0]:
        raise ValueError(
            f"targets must be Tensor[N] with N={logits.shape[0]} class indices, "
            f"got shape {tuple(targets.shape)}"
        )
    if targets.is_floating_point() or targets.is_complex():
        raise ValueError(f"targets must be integer class indices, got dtype {targets.dtype}")
    if num_classes is not None and logits.shape[1] != num_classes:
        # A model trained for another label set (e.g. a checkpoint evaluated on new data).
        raise DataError(
            f"the model predicts {logits.shape[1]} classes but the data has {num_classes}"
        )


def _topk_hits(logits: Tensor, targets: Tensor, ks: tuple[int, ...]) -> Tensor:
    """Tensor[len(ks)] int64: how many rows have their target among the top-k logits."""
    maxk = max(ks)
    top = logits.topk(maxk, dim=1).indices  # (N, maxk), best first
    hit = top == targets[:, None]  # (N, maxk); at most one True per row
    # hit.cumsum(1)[:, k-1] is 1 iff the target is among the first k.
    cum = hit.cumsum(dim=1)  # (N, maxk)
    idx = torch.tensor([k - 1 for k in ks], device=logits.device)
    return cum.index_select(1, idx).sum(dim=0)  # (len(ks),)


def accuracy_topk(logits: Tensor, targets: Tensor, ks: Iterable[int] = (1, 5)) -> dict[int, float]:
    """Fraction (0..1) of samples whose target is among the ``k`` highest logits, per ``k``.

    ``k`` larger than the number of classes is clipped to it (top-5 of a 3-class problem is
    top-3, i.e. 1.0). Keys are the requested ``k``s. Ties are broken by ``torch.topk``.
    """
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    _check_logits(logits, targets)
    n, num_classes = logits.shape
    check_labels(targets, num_classes)
    if n == 0:
        return {k: float("nan") for k in ks}
    clipped = tuple(min(k, num_classes) for k in ks)
    hits = _topk_hits(logits.detach(), targets, clipped).tolist()
    return {k: h / n for k, h in zip(ks, hits, strict=True)}


class ClassificationMetrics:
    """Streaming accuracy, top-k accuracy, per-class accuracy and confusion matrix.

    ``update`` takes logits ``Tensor[N, K]`` or hard predictions ``Tensor[N]`` with the targets
    ``Tensor[N]``; ``compute`` returns plain Python values plus the confusion matrix tensor.
    Top-k accuracy needs logits: if any update gave predictions only, ``acc5`` is None.
    Classes absent from the targets have per-class accuracy None and are left out of the mean
    (as scikit-learn's ``balanced_accuracy_score`` does).
    """

    def __init__(self, num_classes: int, topk: int = 5):
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        self.num_classes = num_classes
        self.topk = min(topk, num_classes)
        self.reset()

    def reset(self) -> None:
        self._cm: Tensor | None = None  # (K, K) int64, on the device of the first update
        self._topk_hits: Tensor | None = None  # () int64
        self._preds_only = False

    @torch.no_grad()
    def update(self, logits_or_preds: Tensor, targets: Tensor) -> None:
        k = self.num_classes
        targets = targets.to(logits_or_preds.device)
        if logits_or_preds.dim() == 2:
            _check_logits(logits_or_preds, targets, k)
            check_labels(targets, k)
            preds = logits_or_preds.argmax(dim=1)
            hits = _topk_hits(logits_or_preds, targets, (self.topk,))[0]
        elif logits_or_preds.dim() == 1:
            preds = logits_or_preds
            if preds.shape != targets.shape:
                raise ValueError(
                    f"predictions and targets differ in shape: {tuple(preds.shape)} vs "
                    f"{tuple(targets.shape)}"
                )
            if preds.is_floating_point():
                raise ValueError(f"predictions must be class indices, got dtype {preds.dtype}")
            check_labels(targets, k)
            check_labels(
                preds, k, "prediction"
            )  # a prediction out of range would corrupt the matrix
            hits = None
            self._preds_only = True
        else:
            raise ValueError(
                f"expected logits Tensor[N, K] or predictions Tensor[N], "
                f"got shape {tuple(logits_or_preds.shape)}"
            )
        targets = targets.to(torch.int64)
        # Row-major index true * K + pred: one bincount fills the whole (K, K) matrix.
        cm = torch.bincount(targets * k + preds.to(torch.int64), minlength=k * k).view(k, k)
        if self._cm is None:
            self._cm = cm
            self._topk_hits = torch.zeros((), dtype=torch.int64, device=cm.device)
        else:
            self._cm += cm.to(self._cm.device)
        if hits is not None:
            self._topk_hits += hits.to(self._topk_hits.device)

    @property
    def count(self) -> int:
        return 0 if self._cm is None else int(self._cm.sum())

    def confusion_matrix(self) -> Tensor:
        """Tensor[K, K] int64 on the CPU: rows true class, columns predicted class."""
        if self._cm is None:
            return torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)
        return self._cm.cpu()

    def compute(self) -> dict[str, Any]:
        """``acc1``, ``acc5`` (top-``topk``), ``per_class_acc``, ``mean_class_acc``,
        ``confusion_matrix`` and ``count``. Accuracies are fractions 0..1 (NaN when empty)."""
        cm = self.confusion_matrix()
        n = int(cm.sum())
        support = cm.sum(dim=1)  # (K,) samples per true class
        correct = cm.diagonal()  # (K,)
        present = support > 0
        per_class = correct.double() / support.clamp(min=1).double()
        nan = float("nan")
        acc1 = float(correct.sum()) / n if n else nan
        if self._preds_only:
            acc5 = None
        else:
            acc5 = float(self._topk_hits) / n if n else nan
        return {
            "acc1": acc1,
            "acc5": acc5,
            "per_class_acc": [
                float(a) if p else None
                for a, p in zip(per_class.tolist(), present.tolist(), strict=True)
            ],
            "mean_class_acc": float(per_class[present].mean()) if bool(present.any()) else nan,
            "confusion_matrix": cm,
            "count": n,
        }
