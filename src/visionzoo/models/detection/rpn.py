"""Region Proposal Network (Faster R-CNN, Ren et al., arXiv:1506.01497, §3.1).

A small network slides over the backbone's feature map(s): a 3x3 convolution (+ ReLU), then two
sibling 1x1 convolutions give, for each of the A anchors of every position, an objectness logit
and four box deltas (§3.1, Fig. 3). Training (§3.1.2-3.1.3): anchors with IoU >= 0.7 with a
ground-truth box — and, for each ground truth, the anchor(s) overlapping it most — are positive,
anchors with IoU < 0.3 negative, the rest ignored; 256 anchors per image are sampled at up to
1:1; the loss is objectness cross-entropy plus a smooth-L1 box loss on the positives.
Proposals (§3.3): decode the deltas, clip to the image, drop tiny boxes, NMS at IoU 0.7, keep
the top-N.

Departures from the paper, each also marked where it happens (all are torchvision's choices,
kept so that a converted torchvision model gives the same proposals and losses):

* one sigmoid logit per anchor (binary cross-entropy) instead of the paper's two-way softmax;
* the box loss is smooth-L1 with beta = 1/9, summed over positives and divided by the number of
  sampled anchors (the paper normalises by the number of anchor locations, with lambda = 10,
  which is about the same scale);
* top-N is taken per feature level before NMS (``pre_nms_top_n``), and NMS runs per level, so
  that the many small-stride anchors of an FPN cannot crowd out the others;
* the paper ignores cross-boundary anchors in training; torchvision does not.
  ``ignore_cross_boundary=True`` restores the paper's rule.

Proposal selection is vectorised over the images of the batch: one top-k per level for the
whole batch, and one batched NMS whose groups are (image, level) pairs. Equal scores keep
torchvision's order (see :func:`select_top_per_image`), so a converted model samples the same
anchors and RoIs as torchvision's under the same seed.

Shape glossary: N images, L levels, A anchors per position, K anchors per image (all levels),
T candidates per image after the per-level top-k, P proposals per image, M ground-truth boxes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...ops import batched_nms, box_iou
from .anchors import AnchorGenerator
from .box_coder import BalancedPositiveNegativeSampler, BoxCoder, Matcher
from .transform import ImageList

__all__ = ["RPNHead", "RegionProposalNetwork", "flatten_predictions", "select_top_per_image"]


class RPNHead(nn.Module):
    """3x3 conv + ReLU shared by all levels, then objectness (A) and box deltas (4A) per position.

    Attribute names are torchvision's (``conv.0.0``, ``cls_logits``, ``bbox_pred``).
    ``forward``: list of Tensor[N, C, H_l, W_l] -> (list of Tensor[N, A, H_l, W_l], list of
    Tensor[N, 4A, H_l, W_l]).
    """

    def __init__(self, in_channels: int, num_anchors: int, conv_channels: int | None = None):
        super().__init__()
        mid = conv_channels or in_channels
        self.conv = nn.Sequential(
            nn.Sequential(nn.Conv2d(in_channels, mid, 3, padding=1), nn.ReLU(inplace=True))
        )
        self.cls_logits = nn.Conv2d(mid, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(mid, num_anchors * 4, 1)
        for layer in self.modules():
            if isinstance(layer, nn.Conv2d):
                # §3.1.3: "zero-mean Gaussian distribution with standard deviation 0.01"
                nn.init.normal_(layer.weight, std=0.01)
                nn.init.zeros_(layer.bias)

    def forward(self, features: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        logits, deltas = [], []
        for f in features:
            t = self.conv(f)
            logits.append(self.cls_logits(t))
            deltas.append(self.bbox_pred(t))
        return logits, deltas


def flatten_predictions(
    logits: Sequence[Tensor], deltas: Sequence[Tensor]
) -> tuple[Tensor, Tensor]:
    """Per-level head outputs -> objectness Tensor[N, K] and deltas Tensor[N, K, 4], in anchor
    order (level, row, column, anchor)."""
    flat_logits, flat_deltas = [], []
    for lg, dl in zip(logits, deltas, strict=True):
        n, a, h, w = lg.shape
        flat_logits.append(lg.permute(0, 2, 3, 1).reshape(n, -1))  # (N, A, H, W) -> (N, HWA)
        # (N, 4A, H, W) -> (N, A, 4, H, W) -> (N, H, W, A, 4) -> (N, HWA, 4)
        flat_deltas.append(dl.view(n, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 4))
    return torch.cat(flat_logits, dim=1), torch.cat(flat_deltas, dim=1)


# torchvision's batched_nms switches to a per-class loop above this many boxes (CPU / other
# devices), and that path orders equal scores by an unstable sort (see select_top_per_image).
_TV_VANILLA_NMS_BOXES = {"cpu": 1000}
_TV_VANILLA_NMS_BOXES_DEFAULT = 5000


def select_top_per_image(
    keep: Tensor,
    image_ids: Tensor,
    num_images: int,
    top_n: int,
    scores: Tensor | None = None,
) -> list[Tensor]:
    """Split kept indices (in decreasing score order) by image, at most ``top_n`` each.

    ``keep`` Tensor[J] indexes candidates whose image is ``image_ids[keep]``; returns, per
    image, its first ``top_n`` entries of ``keep`` in decreasing score order.

    With ``scores`` (Tensor over all candidates), equal scores are ordered as torchvision's
    per-image ``batched_nms`` orders them, so that a converted torchvision model keeps the same
    proposals and samples the same RoIs: lower index first up to 1000 candidates per image
    (CPU; 5000 elsewhere), above that the order of ``torch.sort`` (not stable) applied to the
    kept indices in ascending order. float32 scores tie often (thousands of sigmoids packed
    into a narrow range), and a tie at the top-n cut or in the sampler's order would change
    which boxes are used.
    """
    img = image_ids[keep]
    order = torch.sort(img, stable=True).indices  # group by image, score order inside
    keep, img = keep[order], img[order]
    counts = torch.bincount(img, minlength=num_images)
    if scores is None:
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(keep.numel(), device=keep.device) - starts[img]
        keep = keep[rank < top_n]
        return list(keep.split(counts.clamp(max=top_n).tolist()))
    limit = _TV_VANILLA_NMS_BOXES.get(keep.device.type, _TV_VANILLA_NMS_BOXES_DEFAULT)
    candidates = torch.bincount(image_ids, minlength=num_images).tolist()
    out = []
    for k, n_cand in zip(keep.split(counts.tolist()), candidates, strict=True):
        if n_cand > limit:
            k = torch.sort(k).values
            k = k[torch.sort(scores[k], descending=True).indices]
        out.append(k[:top_n])
    return out


class RegionProposalNetwork(nn.Module):
    """Anchors + head + proposal selection (+ losses in training).

    Args:
        anchor_generator: anchors per level.
        head: :class:`RPNHead` (or a module with the same outputs).
        fg_iou_thresh, bg_iou_thresh: anchors with IoU >= fg are positive, < bg negative.
        batch_size_per_image, positive_fraction: the balanced anchor sample per image.
        pre_nms_top_n, post_nms_top_n: ``{"training": n, "testing": n}``; pre is per level.
        nms_thresh: IoU above which a proposal suppresses a lower-scored one (per level).
        score_thresh: proposals with sigmoid objectness below it are dropped.
        min_size: proposals narrower or shorter than this (pixels) are dropped.
        low_quality_matches: the paper's rule (i): each ground truth's best anchors are positive.
        ignore_cross_boundary: the paper's training rule: anchors crossing the image border are
            ignored (label -1) instead of being matched.

    ``forward(images, features, targets=None)`` -> (proposals: list of Tensor[P, 4] in the
    resized images' pixels, losses: dict, empty in evaluation).
    """

    def __init__(
        self,
        anchor_generator: AnchorGenerator,
        head: nn.Module,
        *,
        fg_iou_thresh: float = 0.7,
        bg_iou_thresh: float = 0.3,
        batch_size_per_image: int = 256,
        positive_fraction: float = 0.5,
        pre_nms_top_n: Mapping[str, int] | None = None,
        post_nms_top_n: Mapping[str, int] | None = None,
        nms_thresh: float = 0.7,
        score_thresh: float = 0.0,
        min_size: float = 1e-3,
        low_quality_matches: bool = True,
        ignore_cross_boundary: bool = False,
    ) -> None:
        super().__init__()
        self.anchor_generator = anchor_generator
        self.head = head
        self.box_coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.proposal_matcher = Matcher(
            fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=low_quality_matches
        )
        self.fg_bg_sampler = BalancedPositiveNegativeSampler(
            batch_size_per_image, positive_fraction
        )
        self._pre_nms_top_n = dict(pre_nms_top_n or {"training": 2000, "testing": 1000})
        self._post_nms_top_n = dict(post_nms_top_n or {"training": 2000, "testing": 1000})
        self.nms_thresh = float(nms_thresh)
        self.score_thresh = float(score_thresh)
        self.min_size = float(min_size)
        self.ignore_cross_boundary = bool(ignore_cross_boundary)

    def extra_repr(self) -> str:
        return (
            f"pre_nms_top_n={self._pre_nms_top_n}, post_nms_top_n={self._post_nms_top_n}, "
            f"nms_thresh={self.nms_thresh}, matcher={self.proposal_matcher}, "
            f"sampler={self.fg_bg_sampler}"
        )

    def pre_nms_top_n(self) -> int:
        return self._pre_nms_top_n["training" if self.training else "testing"]

    def post_nms_top_n(self) -> int:
        return self._post_nms_top_n["training" if self.training else "testing"]

    # --------------------------------------------------------------------- proposals

    def filter_proposals(
        self,
        proposals: Tensor,
        objectness: Tensor,
        image_sizes: Sequence[tuple[int, int]],
        num_anchors_per_level: Sequence[int],
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Decoded ``proposals`` Tensor[N, K, 4] and ``objectness`` logits Tensor[N, K] ->
        per image, proposals Tensor[P, 4] and their sigmoid scores Tensor[P]."""
        n = proposals.shape[0]
        device = proposals.device
        objectness = objectness.detach()  # proposals are not a function of the weights (§3.2)
        # Top-k per level for the whole batch at once: (N, T) indices into K.
        top_idx, levels, offset = [], [], 0
        for lvl, count in enumerate(num_anchors_per_level):
            k = min(self.pre_nms_top_n(), count)
            idx = objectness[:, offset : offset + count].topk(k, dim=1).indices + offset
            top_idx.append(idx)
            levels.append(torch.full((k,), lvl, dtype=torch.int64, device=device))
            offset += count
        top_idx = torch.cat(top_idx, dim=1)
        level = torch.cat(levels)  # (T,)
        t = top_idx.shape[1]
        batch = torch.arange(n, device=device)[:, None]
        scores = torch.sigmoid(objectness[batch, top_idx])  # (N, T)
        boxes = proposals[batch, top_idx]  # (N, T, 4)
        # Clip to each image (its size before padding), vectorised over images.
        sizes = torch.tensor(image_sizes, dtype=boxes.dtype, device=device)  # (N, 2) as (h, w)
        zero = torch.zeros((), dtype=boxes.dtype, device=device)
        x = torch.minimum(torch.maximum(boxes[..., 0::2], zero), sizes[:, None, 1:2])
        y = torch.minimum(torch.maximum(boxes[..., 1::2], zero), sizes[:, None, 0:1])
        boxes = torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)
        ws = boxes[..., 2] - boxes[..., 0]
        hs = boxes[..., 3] - boxes[..., 1]
        valid = (ws >= self.min_size) & (hs >= self.min_size) & (scores >= self.score_thresh)
        flat_boxes, flat_scores = boxes.reshape(-1, 4), scores.reshape(-1)
        image_ids = torch.arange(n, device=device).repeat_interleave(t)  # (N*T,)
        group = image_ids * len(num_anchors_per_level) + level.repeat(n)
        cand = torch.where(valid.reshape(-1))[0]
        # NMS independently per (image, level); indices come back by decreasing score.
        keep = cand[batched_nms(flat_boxes[cand], flat_scores[cand], group[cand], self.nms_thresh)]
        # Positions among the image's candidates order ties (see select_top_per_image).
        pos = torch.full_like(image_ids, -1)
        pos[cand] = torch.arange(cand.numel(), device=device)
        per_image = select_top_per_image(
            pos[keep], image_ids[cand], n, self.post_nms_top_n(), flat_scores[cand]
        )
        per_image = [cand[k] for k in per_image]
        return [flat_boxes[k] for k in per_image], [flat_scores[k] for k in per_image]

    # --------------------------------------------------------------------- training

    def assign_targets_to_anchors(
        self,
        anchors: Tensor,
        targets: Sequence[dict[str, Tensor]],
        image_sizes: Sequence[tuple[int, int]],
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Per image: labels Tensor[K] float (1 positive, 0 negative, -1 ignored) and the
        matched ground-truth box of every anchor Tensor[K, 4]."""
        labels, matched_boxes = [], []
        for target, (h, w) in zip(targets, image_sizes, strict=True):
            gt = target["boxes"]
            if gt.numel() == 0:
                # An image without objects: every anchor is a negative; its regression target
                # is never used, so the anchor itself (zero deltas) stands in for a box.
                lab = torch.zeros(anchors.shape[0], dtype=torch.float32, device=anchors.device)
                matched = anchors
            else:
                matches = self.proposal_matcher(box_iou(gt, anchors))  # (K,)
                matched = gt[matches.clamp(min=0)]
                lab = (matches >= 0).to(torch.float32)
                lab[matches == Matcher.BELOW_LOW_THRESHOLD] = 0.0
                lab[matches == Matcher.BETWEEN_THRESHOLDS] = -1.0
            if self.ignore_cross_boundary:
                # §3.3: "we ignore all cross-boundary anchors so they do not contribute to the
                # loss" (the released code allows 0 px of slack, as here).
                inside = (
                    (anchors[:, 0] >= 0)
                    & (anchors[:, 1] >= 0)
                    & (anchors[:, 2] <= w)
                    & (anchors[:, 3] <= h)
                )
                lab = torch.where(inside, lab, torch.full_like(lab, -1.0))
            labels.append(lab)
            matched_boxes.append(matched)
        return labels, matched_boxes

    def compute_loss(
        self,
        objectness: Tensor,
        pred_deltas: Tensor,
        labels: Sequence[Tensor],
        regression_targets: Sequence[Tensor],
    ) -> tuple[Tensor, Tensor]:
        """Objectness BCE (mean over the sampled anchors) and smooth-L1 box loss (sum over the
        sampled positives / number sampled). ``objectness`` Tensor[N*K], ``pred_deltas``
        Tensor[N*K, 4]."""
        pos_masks, neg_masks = self.fg_bg_sampler(labels)
        pos = torch.where(torch.cat(pos_masks))[0]
        neg = torch.where(torch.cat(neg_masks))[0]
        sampled = torch.cat([pos, neg])
        labels_all = torch.cat(labels)
        targets_all = torch.cat(regression_targets)
        # Departure from the paper (torchvision's loss): beta = 1/9, normalised by the sample size.
        box_loss = F.smooth_l1_loss(
            pred_deltas[pos], targets_all[pos], beta=1 / 9, reduction="sum"
        ) / max(sampled.numel(), 1)
        obj_loss = F.binary_cross_entropy_with_logits(objectness[sampled], labels_all[sampled])
        return obj_loss, box_loss

    def forward(
        self,
        images: ImageList,
        features: Mapping[str, Tensor] | Sequence[Tensor],
        targets: Sequence[dict[str, Tensor]] | None = None,
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        feats = list(features.values()) if isinstance(features, Mapping) else list(features)
        logits, deltas = self.head(feats)
        anchors = self.anchor_generator(images, feats)  # (K, 4), shared by the batch
        n = len(images.image_sizes)
        num_anchors_per_level = [int(lg[0].numel()) for lg in logits]  # A * H_l * W_l
        objectness, pred_deltas = flatten_predictions(logits, deltas)  # (N, K), (N, K, 4)
        # The RoI head does not back-propagate into the proposals' coordinates (§3.2).
        proposals = self.box_coder.decode(
            pred_deltas.detach().reshape(-1, 4), anchors.repeat(n, 1)
        ).view(n, -1, 4)
        boxes, _ = self.filter_proposals(
            proposals, objectness, images.image_sizes, num_anchors_per_level
        )
        losses: dict[str, Tensor] = {}
        if self.training:
            if targets is None:
                raise ValueError("RegionProposalNetwork: targets are required in training mode")
            labels, matched = self.assign_targets_to_anchors(anchors, targets, images.image_sizes)
            regression_targets = [self.box_coder.encode(m, anchors) for m in matched]
            loss_obj, loss_box = self.compute_loss(
                objectness.reshape(-1), pred_deltas.reshape(-1, 4), labels, regression_targets
            )
            losses = {"loss_objectness": loss_obj, "loss_rpn_box_reg": loss_box}
        return boxes, losses
