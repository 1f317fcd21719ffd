"""Box coder, matcher and balanced sampler of Faster R-CNN (Ren et al., arXiv:1506.01497).

* :class:`BoxCoder` — the parametrisation of §3.1.2 (from R-CNN, arXiv:1311.2524, App. C)::

      t_x = w_x (x - x_a) / w_a     t_y = w_y (y - y_a) / h_a
      t_w = w_w log(w / w_a)        t_h = w_h log(h / h_a)

  with (x, y, w, h) the centre and size of a box and ``_a`` the reference (anchor or proposal).
  The weights (w_x, w_y, w_w, w_h) are (1, 1, 1, 1) for the RPN and (10, 10, 5, 5) for the RoI
  head. The weights are not in the paper: they come from the released code, where they play the
  role of the paper's normalisation of the regression targets to unit variance. ``decode``
  clamps t_w, t_h at log(1000 / 16) so that ``exp`` cannot overflow (also the released code).
* :class:`Matcher` — assigns each prediction (anchor or proposal) its best ground-truth box when
  the IoU is >= ``high``, background when < ``low``, "ignore" in between; optionally the
  paper's extra rule (§3.1.2): the anchor(s) with the highest IoU for a ground-truth box are
  positive even below ``high``.
* :class:`BalancedPositiveNegativeSampler` — up to ``batch_size_per_image`` examples per image
  with at most ``positive_fraction`` positives, padded with negatives (§3.1.3: 256 anchors at up
  to 1:1 for the RPN; 512 RoIs at 25% positives for the RoI head in torchvision/Detectron).

The arithmetic follows torchvision's (operation for operation) so that a converted torchvision
model gives the same proposals and losses. Departure, marked where it happens: the matcher's
low-quality rule ignores a ground-truth box that overlaps no prediction at all (torchvision
would then promote every prediction whose IoU with it is 0).

Shape glossary: K predictions (anchors or proposals), M ground-truth boxes, C classes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["BoxCoder", "Matcher", "BalancedPositiveNegativeSampler", "DEFAULT_BBOX_XFORM_CLIP"]

# exp() of a larger log-scale would blow a box up more than 1000/16 times: the released code's
# guard against exp overflow early in training.
DEFAULT_BBOX_XFORM_CLIP = math.log(1000.0 / 16)


class BoxCoder:
    """Encode boxes as deltas relative to reference boxes, and decode them back.

    Args:
        weights: (w_x, w_y, w_w, w_h) multiplying the deltas (see the module docstring).
        bbox_xform_clip: upper clamp of the decoded log-scales t_w / w_w and t_h / w_h.
    """

    def __init__(
        self,
        weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
        bbox_xform_clip: float = DEFAULT_BBOX_XFORM_CLIP,
    ) -> None:
        self.weights = tuple(float(w) for w in weights)
        self.bbox_xform_clip = float(bbox_xform_clip)

    def __repr__(self) -> str:
        return f"BoxCoder(weights={self.weights}, bbox_xform_clip={self.bbox_xform_clip:.4f})"

    def encode(self, boxes: Tensor, reference: Tensor) -> Tensor:
        """Deltas of ``boxes`` Tensor[K, 4] relative to ``reference`` Tensor[K, 4] -> Tensor[K, 4].

        Both xyxy. Reference boxes must have positive width and height.
        """
        wx, wy, ww, wh = (
            torch.tensor(w, dtype=boxes.dtype, device=boxes.device) for w in self.weights
        )
        ref_w = reference[:, 2:3] - reference[:, 0:1]  # (K, 1)
        ref_h = reference[:, 3:4] - reference[:, 1:2]
        ref_cx = reference[:, 0:1] + 0.5 * ref_w
        ref_cy = reference[:, 1:2] + 0.5 * ref_h
        gt_w = boxes[:, 2:3] - boxes[:, 0:1]
        gt_h = boxes[:, 3:4] - boxes[:, 1:2]
        gt_cx = boxes[:, 0:1] + 0.5 * gt_w
        gt_cy = boxes[:, 1:2] + 0.5 * gt_h
        dx = wx * (gt_cx - ref_cx) / ref_w
        dy = wy * (gt_cy - ref_cy) / ref_h
        dw = ww * torch.log(gt_w / ref_w)
        dh = wh * torch.log(gt_h / ref_h)
        return torch.cat((dx, dy, dw, dh), dim=1)

    def decode(self, deltas: Tensor, reference: Tensor) -> Tensor:
        """Boxes from ``deltas`` Tensor[K, 4C] (C boxes per reference, e.g. one per class) and
        ``reference`` Tensor[K, 4] -> xyxy Tensor[K, 4C]."""
        reference = reference.to(deltas.dtype)
        widths = reference[:, 2] - reference[:, 0]  # (K,)
        heights = reference[:, 3] - reference[:, 1]
        ctr_x = reference[:, 0] + 0.5 * widths
        ctr_y = reference[:, 1] + 0.5 * heights
        wx, wy, ww, wh = self.weights
        dx = deltas[:, 0::4] / wx  # (K, C)
        dy = deltas[:, 1::4] / wy
        dw = (deltas[:, 2::4] / ww).clamp(max=self.bbox_xform_clip)
        dh = (deltas[:, 3::4] / wh).clamp(max=self.bbox_xform_clip)
        pred_cx = dx * widths[:, None] + ctr_x[:, None]
        pred_cy = dy * heights[:, None] + ctr_y[:, None]
        half = torch.tensor(0.5, dtype=deltas.dtype, device=deltas.device)
        half_w = half * (torch.exp(dw) * widths[:, None])
        half_h = half * (torch.exp(dh) * heights[:, None])
        boxes = torch.stack(  # (K, C, 4) -> (K, 4C)
            (pred_cx - half_w, pred_cy - half_h, pred_cx + half_w, pred_cy + half_h), dim=2
        )
        return boxes.flatten(1)


class Matcher:
    """Assign each of K predictions a ground-truth index from an (M, K) quality (IoU) matrix.

    Returns int64 Tensor[K]: the matched ground-truth index where the best IoU is >= ``high``,
    :attr:`BELOW_LOW_THRESHOLD` (-1, background) where it is < ``low``, and
    :attr:`BETWEEN_THRESHOLDS` (-2, ignored) in between. With ``allow_low_quality_matches``
    (the paper's RPN rule, §3.1.2), for every ground-truth box the predictions of highest IoU
    with it (ties included) are matched too, even below ``high``. No ground truth (M = 0): every
    prediction is background.
    """

    BELOW_LOW_THRESHOLD = -1
    BETWEEN_THRESHOLDS = -2

    def __init__(
        self, high_threshold: float, low_threshold: float, allow_low_quality_matches: bool = False
    ) -> None:
        if low_threshold > high_threshold:
            raise ValueError(
                f"Matcher: low_threshold ({low_threshold}) must be <= high_threshold "
                f"({high_threshold})"
            )
        self.high_threshold = float(high_threshold)
        self.low_threshold = float(low_threshold)
        self.allow_low_quality_matches = bool(allow_low_quality_matches)

    def __repr__(self) -> str:
        return (
            f"Matcher(high={self.high_threshold}, low={self.low_threshold}, "
            f"low_quality={self.allow_low_quality_matches})"
        )

    def __call__(self, quality: Tensor) -> Tensor:
        m, k = quality.shape
        if m == 0:
            return torch.full(
                (k,), self.BELOW_LOW_THRESHOLD, dtype=torch.int64, device=quality.device
            )
        if k == 0:
            return torch.empty(0, dtype=torch.int64, device=quality.device)
        best, matches = quality.max(dim=0)  # (K,), best ground truth per prediction
        best_any = matches.clone() if self.allow_low_quality_matches else None
        matches[best < self.low_threshold] = self.BELOW_LOW_THRESHOLD
        matches[(best >= self.low_threshold) & (best < self.high_threshold)] = (
            self.BETWEEN_THRESHOLDS
        )
        if best_any is not None:
            # For each ground truth, the predictions that overlap it most (ties included) keep
            # their best ground truth, whatever the IoU (paper §3.1.2, condition (i)).
            highest = quality.max(dim=1).values  # (M,)
            # Departure from torchvision: a ground truth that overlaps nothing (highest = 0)
            # promotes nobody, instead of every prediction with IoU 0 to it.
            ties = (quality == highest[:, None]) & (highest[:, None] > 0)  # (M, K)
            promote = ties.any(dim=0)
            matches = torch.where(promote, best_any, matches)
        return matches


class BalancedPositiveNegativeSampler:
    """Sample up to ``batch_size_per_image`` examples per image, at most ``positive_fraction``
    of them positive, the rest negative (fewer when an image lacks either).

    Called with one label Tensor[K_i] per image (>= 1 positive, 0 negative, -1 ignored); returns
    two lists of bool masks Tensor[K_i]: the sampled positives and the sampled negatives.
    Each image draws ``torch.randperm`` for its positives, then for its negatives: the same
    random stream as torchvision, so a seeded run samples the same examples.
    """

    def __init__(self, batch_size_per_image: int, positive_fraction: float) -> None:
        self.batch_size_per_image = int(batch_size_per_image)
        self.positive_fraction = float(positive_fraction)

    def __repr__(self) -> str:
        return (
            f"BalancedPositiveNegativeSampler({self.batch_size_per_image}, "
            f"positive_fraction={self.positive_fraction})"
        )

    def __call__(self, labels: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        pos_masks, neg_masks = [], []
        for lab in labels:
            positive = torch.where(lab >= 1)[0]
            negative = torch.where(lab == 0)[0]
            num_pos = min(positive.numel(), int(self.batch_size_per_image * self.positive_fraction))
            num_neg = min(negative.numel(), self.batch_size_per_image - num_pos)
            pos = positive[torch.randperm(positive.numel(), device=lab.device)[:num_pos]]
            neg = negative[torch.randperm(negative.numel(), device=lab.device)[:num_neg]]
            pos_mask = torch.zeros_like(lab, dtype=torch.bool)
            neg_mask = torch.zeros_like(lab, dtype=torch.bool)
            pos_mask[pos] = True
            neg_mask[neg] = True
            pos_masks.append(pos_mask)
            neg_masks.append(neg_mask)
        return pos_masks, neg_masks
