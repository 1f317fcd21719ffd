"""Losses shared by tasks: segmentation (Dice, BCE, BCE + Dice, cross-entropy with ignore)."""

from .dice import BCEDiceLoss, BCEWithLogitsLoss, DiceLoss, bce_with_logits_loss, soft_dice_loss
from .segmentation import IGNORE_INDEX, SegmentationCrossEntropy, segmentation_cross_entropy

__all__ = [
    "IGNORE_INDEX",
    "BCEDiceLoss",
    "BCEWithLogitsLoss",
    "DiceLoss",
    "SegmentationCrossEntropy",
    "bce_with_logits_loss",
    "segmentation_cross_entropy",
    "soft_dice_loss",
]
