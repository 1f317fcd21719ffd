"""Soft Dice, BCE with logits and BCE + Dice for segmentation.

Dice (Sørensen-Dice coefficient) measures overlap, ``2|A∩B| / (|A| + |B|)``; its soft version
replaces the sets by probabilities, ``(2 Σ p t + s) / (Σ p + Σ t + s)``, which is
differentiable and insensitive to the foreground/background imbalance that makes plain
cross-entropy favour the background (popularised for segmentation by V-Net, arXiv:1606.04797).
``s`` (``smooth``) keeps the ratio defined when a class is absent from both prediction and
target (its Dice is then 1, its loss 0) and softens the gradient of tiny objects.

Shapes: N batch, K classes, H/W spatial (any number of spatial dims works).

- binary: logits ``Tensor[N, 1, H, W]`` or ``Tensor[N, H, W]``, probabilities by sigmoid;
  targets of the same shape (or ``[N, H, W]`` for ``[N, 1, H, W]`` logits) with values 0/1
  (floats in [0, 1] allowed: soft labels) or ``ignore_index``.
- multiclass: logits ``Tensor[N, K, H, W]`` (K >= 2), probabilities by softmax; targets
  ``Tensor[N, H, W]`` of class indices in [0, K) or ``ignore_index``.
- multi-label: logits and targets both ``Tensor[N, C, H, W]``: a sigmoid Dice per channel.

Pixels equal to ``ignore_index`` count in neither the intersection nor the cardinalities.
By default the sums run over the whole batch ("batch Dice": one overlap per class, stable when
an image lacks a class); ``per_image=True`` computes one Dice per image and class and averages.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers.precision import full_precision

__all__ = [
    "soft_dice_loss",
    "bce_with_logits_loss",
    "DiceLoss",
    "BCEWithLogitsLoss",
    "BCEDiceLoss",
]


def _is_binary(logits: Tensor, target: Tensor) -> bool:
    # [N, 1, H, W] logits with [N, H, W] targets, or logits and targets of one shape.
    return logits.shape == target.shape or (
        logits.dim() == target.dim() + 1 and logits.shape[1] == 1
    )


def _binary_inputs(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Logits and targets as Tensor[N, C, H, W] of one shape (C = 1 unless multi-label)."""
    if logits.dim() == target.dim() + 1 and logits.shape[1] == 1:
        target = target.unsqueeze(1)
    elif logits.shape == target.shape and logits.dim() == 3:
        # [N, H, W]: give them the channel dim the multiclass path has.
        logits, target = logits.unsqueeze(1), target.unsqueeze(1)
    if logits.shape != target.shape:
        raise ValueError(
            f"binary logits {tuple(logits.shape)} and targets {tuple(target.shape)} differ in "
            "shape; expected logits [N, 1, H, W] or [N, H, W] and targets [N, H, W] or the "
            "logits' shape"
        )
    return logits, target


def _valid_mask(target: Tensor, ignore_index: int | None) -> Tensor | None:
    return None if ignore_index is None else target != ignore_index


def soft_dice_loss(
    logits: Tensor,
    target: Tensor,
    *,
    smooth: float = 1.0,
    ignore_index: int | None = None,
    per_image: bool = False,
) -> Tensor:
    """``1 - mean over classes of soft Dice``, a scalar (see the module docstring).

    Binary (sigmoid) when ``logits`` has one channel and ``target`` none, or both have one
    shape; multiclass (softmax) when ``target`` holds class indices ``[N, H, W]`` for
    ``[N, K, H, W]`` logits. Multiclass averages the K classes' Dice (a class absent from the
    target scores ``smooth / (Σp + smooth)``: 1 once the model stops predicting it); binary
    uses the foreground's only.
    """
    if smooth < 0:
        raise ValueError(f"smooth must be >= 0, got {smooth}")
    # Sums over every pixel of a batch: accumulate in float32, as autocast does for CE.
    logits = full_precision(logits)
    if _is_binary(logits, target):
        logits, target = _binary_inputs(logits, target)
        valid = _valid_mask(target, ignore_index)
        probs = torch.sigmoid(logits)  # (N, 1, H, W)
        onehot = target.to(probs.dtype)
        if valid is not None:
            onehot = onehot.where(valid, 0.0)
    else:
        if target.shape != (logits.shape[0], *logits.shape[2:]):
            raise ValueError(
                f"multiclass logits {tuple(logits.shape)} need targets [N, H, W] of class "
                f"indices, got {tuple(target.shape)}"
            )
        if target.is_floating_point():
            raise ValueError(f"multiclass targets must be class indices, got {target.dtype}")
        k = logits.shape[1]
        valid = _valid_mask(target, ignore_index)
        probs = logits.softmax(dim=1)  # (N, K, H, W)
        labels = target if valid is None else target.where(valid, 0)
        # (N, H, W) -> (N, H, W, K) -> (N, K, H, W)
        onehot = F.one_hot(labels.long(), k).movedim(-1, 1).to(probs.dtype)
        if valid is not None:
            valid = valid.unsqueeze(1)  # (N, 1, H, W), broadcast over classes
    if valid is not None:
        probs = probs * valid
        onehot = onehot * valid
    dims = tuple(range(2, probs.dim())) if per_image else (0, *range(2, probs.dim()))
    intersection = (probs * onehot).sum(dims)  # (K,) or (N, K)
    cardinality = probs.sum(dims) + onehot.sum(dims)
    dice = (2.0 * intersection + smooth) / (cardinality + smooth).clamp_min(1e-12)
    return 1.0 - dice.mean()


def bce_with_logits_loss(
    logits: Tensor,
    target: Tensor,
    *,
    ignore_index: int | None = None,
    pos_weight: Tensor | float | None = None,
) -> Tensor:
    """Binary cross-entropy with logits, averaged over the non-ignored pixels (a scalar).

    Shapes as the binary case of :func:`soft_dice_loss`. With every pixel ignored the loss is
    0 (with a zero gradient), not NaN.
    """
    logits, target = _binary_inputs(logits, target)
    valid = _valid_mask(target, ignore_index)
    t = target.to(logits.dtype)
    if valid is not None:
        t = t.where(valid, 0.0)  # any value in [0, 1]: the pixel is masked out below
    if pos_weight is not None and not isinstance(pos_weight, Tensor):
        pos_weight = torch.tensor(float(pos_weight), dtype=logits.dtype, device=logits.device)
    loss = F.binary_cross_entropy_with_logits(logits, t, reduction="none", pos_weight=pos_weight)
    if valid is None:
        return loss.mean()
    # Sum / count instead of a boolean index: no host sync, and 0 (not NaN) when all ignored.
    return (loss * valid).sum() / valid.sum().clamp_min(1)


class DiceLoss(nn.Module):
    """Module form of :func:`soft_dice_loss`."""

    def __init__(
        self, *, smooth: float = 1.0, ignore_index: int | None = None, per_image: bool = False
    ) -> None:
        super().__init__()
        if smooth < 0:
            raise ValueError(f"smooth must be >= 0, got {smooth}")
        self.smooth = smooth
        self.ignore_index = ignore_index
        self.per_image = per_image

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return soft_dice_loss(
            logits,
            target,
            smooth=self.smooth,
            ignore_index=self.ignore_index,
            per_image=self.per_image,
        )

    def extra_repr(self) -> str:
        return f"smooth={self.smooth}, ignore_index={self.ignore_index}, per_image={self.per_image}"


class BCEWithLogitsLoss(nn.Module):
    """Module form of :func:`bce_with_logits_loss` (``ignore_index`` aware)."""

    def __init__(
        self, *, ignore_index: int | None = None, pos_weight: Tensor | float | None = None
    ) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.pos_weight = pos_weight

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return bce_with_logits_loss(
            logits, target, ignore_index=self.ignore_index, pos_weight=self.pos_weight
        )


class BCEDiceLoss(nn.Module):
    """``bce_weight * BCE + dice_weight * (1 - Dice)`` for binary segmentation.

    BCE gives well-behaved per-pixel gradients from the first step; Dice counters class
    imbalance. ``forward`` returns the weighted sum; ``parts`` returns the two terms too.
    """

    def __init__(
        self,
        *,
        bce_weight: float = 1.0,
        dice_weight: float = 1.0,
        smooth: float = 1.0,
        ignore_index: int | None = None,
        pos_weight: Tensor | float | None = None,
    ) -> None:
        super().__init__()
        if bce_weight < 0 or dice_weight < 0 or bce_weight + dice_weight == 0:
            raise ValueError(
                f"bce_weight and dice_weight must be >= 0 and not both 0, got {bce_weight} and "
                f"{dice_weight}"
            )
        self.bce_weight = bce_weight
        self.dice_weight = dice_weight
        self.smooth = smooth
        self.ignore_index = ignore_index
        self.pos_weight = pos_weight

    def parts(self, logits: Tensor, target: Tensor) -> dict[str, Tensor]:
        """``{"loss": weighted sum, "bce": ..., "dice": ...}`` (unweighted terms)."""
        if not _is_binary(logits, target):
            raise ValueError(
                f"BCEDiceLoss is binary: logits must have 1 channel, got {tuple(logits.shape)}"
            )
        bce = bce_with_logits_loss(
            logits, target, ignore_index=self.ignore_index, pos_weight=self.pos_weight
        )
        dice = soft_dice_loss(logits, target, smooth=self.smooth, ignore_index=self.ignore_index)
        return {"loss": self.bce_weight * bce + self.dice_weight * dice, "bce": bce, "dice": dice}

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return self.parts(logits, target)["loss"]

    def extra_repr(self) -> str:
        return (
            f"bce_weight={self.bce_weight}, dice_weight={self.dice_weight}, "
            f"smooth={self.smooth}, ignore_index={self.ignore_index}"
        )
