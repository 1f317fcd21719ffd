"""Pixel-wise cross-entropy for semantic segmentation, with ``ignore_index=255``.

Shapes: logits ``Tensor[N, K, H, W]``, targets ``Tensor[N, H, W]`` of class indices in
``[0, K)`` or ``ignore_index`` (255: Pascal VOC's "void" border and difficult pixels).

The loss is the mean over the non-ignored pixels, as ``F.cross_entropy(reduction="mean")``
(with ``weight``: the weighted mean, divided by the summed weights of those pixels'
classes), except that a batch whose every pixel is ignored gives 0 with a zero gradient
instead of NaN: a crop of pure void must not poison a run.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["IGNORE_INDEX", "segmentation_cross_entropy", "SegmentationCrossEntropy"]

IGNORE_INDEX = 255


def segmentation_cross_entropy(
    logits: Tensor,
    target: Tensor,
    *,
    ignore_index: int = IGNORE_INDEX,
    weight: Tensor | None = None,
    label_smoothing: float = 0.0,
) -> Tensor:
    """Mean cross-entropy over the pixels whose target is not ``ignore_index`` (a scalar)."""
    if target.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(
            f"logits {tuple(logits.shape)} need targets [N, H, W] of class indices, got "
            f"{tuple(target.shape)}"
        )
    target = target.long()
    total = F.cross_entropy(
        logits,
        target,
        weight=weight,
        ignore_index=ignore_index,
        reduction="sum",
        label_smoothing=label_smoothing,
    )
    # Divide by the count (or the classes' summed weights) ourselves: the same value as
    # reduction="mean" without its 0/0 when every pixel is ignored, and without a host sync.
    valid = target != ignore_index
    if weight is None:
        denominator = valid.sum().clamp_min(1)
    else:
        denominator = (weight[target.where(valid, 0)] * valid).sum().clamp_min(1e-12)
    return total / denominator


class SegmentationCrossEntropy(nn.Module):
    """Module form of :func:`segmentation_cross_entropy`; ``weight`` is a buffer (it follows
    ``.to(device)``)."""

    def __init__(
        self,
        *,
        ignore_index: int = IGNORE_INDEX,
        weight: Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.register_buffer("weight", weight)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return segmentation_cross_entropy(
            logits,
            target,
            ignore_index=self.ignore_index,
            weight=self.weight,
            label_smoothing=self.label_smoothing,
        )

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}, label_smoothing={self.label_smoothing}"
