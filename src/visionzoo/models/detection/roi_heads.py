"""The Fast R-CNN detection head of Faster R-CNN (Ren et al., arXiv:1506.01497, §3.2).

Each proposal (region of interest, RoI) is pooled from the shared feature map(s) to a fixed
grid, passed through a per-RoI network (the box head) and two sibling outputs (the predictor):
C + 1 class scores (softmax, class 0 = background) and 4 (C + 1) class-specific box deltas
(Fast R-CNN, arXiv:1504.08083, §2.2; torchvision also predicts deltas for the background
class, which are never used, so its checkpoints load unchanged).

Pieces:

* :class:`RoIPooler` — RoI max pooling (Fast R-CNN §2.1, ``op="pool"``) or RoIAlign (Mask R-CNN,
  arXiv:1703.06870, ``op="align"``) from one map, or from an FPN's levels with the FPN paper's
  level mapping (arXiv:1612.03144, eq. 1): an RoI of width w and height h is pooled from level
  ``k = floor(k0 + log2(sqrt(w h) / 224))``, k0 = 4, clamped to the available levels.
* Box heads: :class:`TwoMLPHead` (fc6, fc7; FPN's 1024-d head, and VGG-16's 4096-d fc6/fc7 with
  dropout), :class:`ResNetC5Head` (ResNet's conv5 stage on 14x14 RoIs, then global average
  pooling: the "C4" design of the ResNet paper, arXiv:1512.03385, App. A).
* :class:`FastRCNNPredictor` — ``cls_score`` and ``bbox_pred``.
* :class:`RoIHeads` — training: append the ground-truth boxes to the proposals, match at IoU
  0.5 (>= 0.5 foreground, < 0.5 background), sample 512 RoIs per image with up to 25%
  foreground, and compute cross-entropy plus smooth-L1 on the true class's deltas (box coder
  weights 10, 10, 5, 5). Evaluation: softmax, decode per class, clip, drop scores <= 0.05 and
  empty boxes, NMS at 0.5 per class, keep the 100 best per image.

Departures from the papers (torchvision's choices, kept for parity), also marked where they
happen: the box loss is smooth-L1 with beta = 1/9 summed over foreground RoIs and divided by
the number of sampled RoIs (Fast R-CNN: beta = 1, averaged); ground-truth boxes join the
proposals in training; background is [0, 0.5) (Fast R-CNN: [0.1, 0.5), ``bg_iou_thresh_lo``
restores it). Post-processing is vectorised over the batch: one batched NMS whose groups are
(image, class) pairs.

Shape glossary: N images, R RoIs (all images), C classes including background, D the box
head's output width, PH x PW the pooled grid, M ground-truth boxes of an image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...ops import batched_nms, box_area, box_iou, roi_align, roi_pool
from .box_coder import BalancedPositiveNegativeSampler, BoxCoder, Matcher
from .rpn import select_top_per_image

__all__ = [
    "RoIPooler",
    "map_levels",
    "TwoMLPHead",
    "ResNetC5Head",
    "FastRCNNPredictor",
    "RoIHeads",
    "fastrcnn_loss",
    "ROI_OPS",
]

ROI_OPS = ("align", "pool")


def map_levels(
    boxes: Tensor,
    k_min: int,
    k_max: int,
    canonical_scale: float = 224.0,
    canonical_level: int = 4,
    eps: float = 1e-6,
) -> Tensor:
    """FPN level index (0 = level ``k_min``) of each xyxy box Tensor[R, 4] -> int64 Tensor[R]."""
    s = torch.sqrt(box_area(boxes))
    lvl = torch.floor(
        canonical_level + torch.log2(s / canonical_scale) + torch.tensor(eps, dtype=s.dtype)
    )
    return (lvl.clamp(min=k_min, max=k_max).to(torch.int64) - k_min).to(torch.int64)


def _infer_scale(feature: Tensor, max_height: int) -> float:
    # The feature map's scale relative to the (unpadded) images, rounded to a power of two, as
    # torchvision infers it (float32 log2).
    approx = float(feature.shape[-2]) / float(max_height)
    return 2 ** float(torch.tensor(approx).log2().round())


class RoIPooler(nn.Module):
    """Pool every RoI to a fixed grid from one feature map or from FPN levels.

    Args:
        featmap_names: the keys of the feature dict to pool from (finest first); with several,
            RoIs are assigned to levels by :func:`map_levels`.
        output_size: int or (PH, PW).
        sampling_ratio: RoIAlign sample points per bin and axis (<= 0: adaptive).
        op: "align" (RoIAlign) or "pool" (RoI max pooling, the paper's).
        aligned: RoIAlign's half-pixel shift (Detectron2); False is torchvision's default.
        canonical_scale, canonical_level: the FPN mapping's 224 and k0 = 4.

    ``forward(features, boxes, image_sizes)``: dict of Tensor[N, C, H_l, W_l], a list with one
    Tensor[R_i, 4] (xyxy, resized-image pixels) per image, the images' (h, w) ->
    Tensor[R, C, PH, PW] in the order of the concatenated boxes.
    """

    def __init__(
        self,
        featmap_names: Sequence[str],
        output_size: int | tuple[int, int],
        sampling_ratio: int = 2,
        *,
        op: str = "align",
        aligned: bool = False,
        canonical_scale: float = 224.0,
        canonical_level: int = 4,
    ) -> None:
        super().__init__()
        if op not in ROI_OPS:
            raise ValueError(f"RoIPooler: op must be one of {ROI_OPS}, got {op!r}")
        self.featmap_names = list(featmap_names)
        self.output_size = (
            (int(output_size), int(output_size))
            if isinstance(output_size, int)
            else tuple(int(s) for s in output_size)
        )
        self.sampling_ratio = int(sampling_ratio)
        self.op = op
        self.aligned = bool(aligned)
        self.canonical_scale = float(canonical_scale)
        self.canonical_level = int(canonical_level)

    def extra_repr(self) -> str:
        return (
            f"featmap_names={self.featmap_names}, output_size={self.output_size}, "
            f"op={self.op!r}, sampling_ratio={self.sampling_ratio}, aligned={self.aligned}"
        )

    def _pool(self, feature: Tensor, rois: Tensor, scale: float) -> Tensor:
        if self.op == "pool":
            return roi_pool(feature, rois, self.output_size, scale)
        return roi_align(feature, rois, self.output_size, scale, self.sampling_ratio, self.aligned)

    def forward(
        self,
        features: Mapping[str, Tensor],
        boxes: Sequence[Tensor],
        image_sizes: Sequence[tuple[int, int]],
    ) -> Tensor:
        feats = [features[name] for name in self.featmap_names]
        concat = torch.cat(list(boxes), dim=0)
        ids = torch.cat(
            [torch.full((len(b), 1), i, dtype=concat.dtype, device=concat.device)
             for i, b in enumerate(boxes)]
        )  # fmt: skip
        rois = torch.cat([ids, concat], dim=1)  # (R, 5): image index, x1, y1, x2, y2
        max_h = max(int(s[0]) for s in image_sizes)
        scales = [_infer_scale(f, max_h) for f in feats]
        if len(feats) == 1:
            return self._pool(feats[0], rois, scales[0])
        k_min = int(-torch.log2(torch.tensor(scales[0], dtype=torch.float32)).item())
        k_max = int(-torch.log2(torch.tensor(scales[-1], dtype=torch.float32)).item())
        levels = map_levels(concat, k_min, k_max, self.canonical_scale, self.canonical_level)
        c = feats[0].shape[1]
        out = feats[0].new_zeros((rois.shape[0], c, *self.output_size))
        for lvl, (feature, scale) in enumerate(zip(feats, scales, strict=True)):
            idx = torch.where(levels == lvl)[0]
            if idx.numel():
                out[idx] = self._pool(feature, rois[idx], scale).to(out.dtype)
        return out


# --------------------------------------------------------------------------------- box heads


class TwoMLPHead(nn.Module):
    """fc6 -> ReLU -> fc7 -> ReLU on flattened RoI features: Tensor[R, C, PH, PW] -> Tensor[R, D].

    ``dropout`` after each ReLU is Fast R-CNN's VGG-16 head (fc6/fc7 of the ImageNet model,
    dropout 0.5); torchvision's FPN head (D = 1024) has none.
    """

    def __init__(self, in_features: int, representation_size: int, dropout: float = 0.0):
        super().__init__()
        self.fc6 = nn.Linear(in_features, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)
        self.drop = nn.Dropout(dropout)
        self.out_features = representation_size

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(start_dim=1)  # (R, C, PH, PW) -> (R, C*PH*PW)
        x = self.drop(F.relu(self.fc6(x)))
        return self.drop(F.relu(self.fc7(x)))


class ResNetC5Head(nn.Module):
    """ResNet's conv5 stage as the per-RoI network (ResNet paper App. A, "C4" detectors).

    ``layer4`` (stride 2 in its first block) turns 14x14 RoIs of the stride-16 map into 7x7,
    then global average pooling: Tensor[R, 1024, 14, 14] -> Tensor[R, 2048].
    """

    def __init__(self, layer4: nn.Module, out_features: int = 2048):
        super().__init__()
        self.layer4 = layer4
        self.out_features = out_features

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer4(x)  # (R, 1024, 14, 14) -> (R, 2048, 7, 7)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # (R, 2048)


class FastRCNNPredictor(nn.Module):
    """Sibling outputs: ``cls_score`` Tensor[R, C] and ``bbox_pred`` Tensor[R, 4C]."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.cls_score = nn.Linear(in_features, num_classes)
        self.bbox_pred = nn.Linear(in_features, num_classes * 4)
        # Fast R-CNN §2.3: "initialized from zero-mean Gaussian distributions with standard
        # deviations 0.01 and 0.001, respectively. Biases are initialized to 0."
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = x.flatten(start_dim=1)
        return self.cls_score(x), self.bbox_pred(x)


def fastrcnn_loss(
    class_logits: Tensor, box_regression: Tensor, labels: Tensor, regression_targets: Tensor
) -> tuple[Tensor, Tensor]:
    """Cross-entropy over the sampled RoIs, and smooth-L1 of the true class's deltas on the
    foreground ones (Fast R-CNN eq. 1), for ``class_logits`` Tensor[R, C], ``box_regression``
    Tensor[R, 4C], ``labels`` int64 Tensor[R] and ``regression_targets`` Tensor[R, 4]."""
    cls_loss = F.cross_entropy(class_logits, labels)
    pos = torch.where(labels > 0)[0]
    r = class_logits.shape[0]
    deltas = box_regression.reshape(r, -1, 4)[pos, labels[pos]]  # (R_fg, 4)
    # Departure (torchvision): beta = 1/9 and division by all sampled RoIs, not beta = 1 / mean.
    box_loss = F.smooth_l1_loss(deltas, regression_targets[pos], beta=1 / 9, reduction="sum")
    return cls_loss, box_loss / max(labels.numel(), 1)


class RoIHeads(nn.Module):
    """Pooler + box head + predictor, with sampling and losses in training and
    post-processing in evaluation.

    Args:
        box_roi_pool, box_head, box_predictor: the three stages (attribute names are
            torchvision's).
        fg_iou_thresh, bg_iou_thresh: RoIs with IoU >= fg are foreground, < bg background.
        bg_iou_thresh_lo: RoIs whose best IoU is below this are ignored (Fast R-CNN's 0.1
            "hard example" heuristic; 0 keeps them all as background).
        batch_size_per_image, positive_fraction: the balanced RoI sample per image.
        bbox_reg_weights: the box coder's (w_x, w_y, w_w, w_h).
        score_thresh: detections with a class probability <= this are dropped.
        nms_thresh: per-class NMS IoU threshold.
        detections_per_img: the best this many detections per image are returned.
        add_gt_proposals: append the ground-truth boxes to the proposals in training.
    """

    def __init__(
        self,
        box_roi_pool: nn.Module,
        box_head: nn.Module,
        box_predictor: nn.Module,
        *,
        fg_iou_thresh: float = 0.5,
        bg_iou_thresh: float = 0.5,
        bg_iou_thresh_lo: float = 0.0,
        batch_size_per_image: int = 512,
        positive_fraction: float = 0.25,
        bbox_reg_weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
        add_gt_proposals: bool = True,
    ) -> None:
        super().__init__()
        self.box_roi_pool = box_roi_pool
        self.box_head = box_head
        self.box_predictor = box_predictor
        self.proposal_matcher = Matcher(
            fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=False
        )
        self.fg_bg_sampler = BalancedPositiveNegativeSampler(
            batch_size_per_image, positive_fraction
        )
        self.box_coder = BoxCoder(bbox_reg_weights)
        self.bg_iou_thresh_lo = float(bg_iou_thresh_lo)
        self.score_thresh = float(score_thresh)
        self.nms_thresh = float(nms_thresh)
        self.detections_per_img = int(detections_per_img)
        self.add_gt_proposals = bool(add_gt_proposals)

    def extra_repr(self) -> str:
        return (
            f"matcher={self.proposal_matcher}, sampler={self.fg_bg_sampler}, "
            f"box_coder={self.box_coder}, score_thresh={self.score_thresh}, "
            f"nms_thresh={self.nms_thresh}, detections_per_img={self.detections_per_img}"
        )

    def select_training_samples(
        self, proposals: Sequence[Tensor], targets: Sequence[dict[str, Tensor]]
    ) -> tuple[list[Tensor], Tensor, Tensor]:
        """Sampled RoIs per image, and their labels Tensor[R] and regression targets
        Tensor[R, 4] over the batch."""
        labels_all, props_all, gts_all = [], [], []
        for props, target in zip(proposals, targets, strict=True):
            gt = target["boxes"].to(props.dtype)
            gt_labels = target["labels"]
            if self.add_gt_proposals:
                props = torch.cat((props, gt))
            if gt.numel() == 0:
                # No objects: all background; the proposal stands in as its own (unused) target.
                labels = torch.zeros(props.shape[0], dtype=torch.int64, device=props.device)
                matched = props
            else:
                iou = box_iou(gt, props)  # (M, P)
                matches = self.proposal_matcher(iou)
                matched = gt[matches.clamp(min=0)]
                labels = gt_labels[matches.clamp(min=0)].to(torch.int64)
                labels[matches == Matcher.BELOW_LOW_THRESHOLD] = 0
                labels[matches == Matcher.BETWEEN_THRESHOLDS] = -1
                if self.bg_iou_thresh_lo > 0:
                    labels[iou.max(dim=0).values < self.bg_iou_thresh_lo] = -1
            labels_all.append(labels)
            props_all.append(props)
            gts_all.append(matched)
        pos_masks, neg_masks = self.fg_bg_sampler(labels_all)
        sampled_props, sampled_labels, targets_out = [], [], []
        for props, labels, matched, pos, neg in zip(
            props_all, labels_all, gts_all, pos_masks, neg_masks, strict=True
        ):
            idx = torch.where(pos | neg)[0]
            sampled_props.append(props[idx])
            sampled_labels.append(labels[idx])
            targets_out.append(self.box_coder.encode(matched[idx], props[idx]))
        return sampled_props, torch.cat(sampled_labels), torch.cat(targets_out)

    def postprocess_detections(
        self,
        class_logits: Tensor,
        box_regression: Tensor,
        proposals: Sequence[Tensor],
        image_sizes: Sequence[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        """Scores, class-specific boxes, thresholds and per-class NMS for the whole batch."""
        device = class_logits.device
        n = len(proposals)
        r, c = class_logits.shape
        counts = torch.tensor([len(p) for p in proposals], device=device)
        roi_image = torch.repeat_interleave(torch.arange(n, device=device), counts)  # (R,)
        boxes = self.box_coder.decode(box_regression, torch.cat(list(proposals))).view(r, c, 4)
        scores = F.softmax(class_logits, -1)  # (R, C)
        sizes = torch.tensor(image_sizes, dtype=boxes.dtype, device=device).view(-1, 2)[roi_image]
        zero = torch.zeros((), dtype=boxes.dtype, device=device)
        x = torch.minimum(torch.maximum(boxes[..., 0::2], zero), sizes[:, None, 1:2])
        y = torch.minimum(torch.maximum(boxes[..., 1::2], zero), sizes[:, None, 0:1])
        boxes = torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)  # (R, C, 4)
        # Every (RoI, foreground class) pair is a candidate detection: (R, C-1) -> (R*(C-1),)
        boxes = boxes[:, 1:].reshape(-1, 4)
        scores = scores[:, 1:].reshape(-1)
        labels = torch.arange(1, c, device=device).repeat(r)
        image_ids = roi_image.repeat_interleave(c - 1)
        ws = boxes[:, 2] - boxes[:, 0]
        hs = boxes[:, 3] - boxes[:, 1]
        cand = torch.where((scores > self.score_thresh) & (ws >= 1e-2) & (hs >= 1e-2))[0]
        group = image_ids[cand] * c + labels[cand]
        keep = batched_nms(boxes[cand], scores[cand], group, self.nms_thresh)  # into cand
        per_image = select_top_per_image(
            keep, image_ids[cand], n, self.detections_per_img, scores[cand]
        )
        per_image = [cand[k] for k in per_image]
        return [{"boxes": boxes[k], "labels": labels[k], "scores": scores[k]} for k in per_image]

    def forward(
        self,
        features: Mapping[str, Tensor],
        proposals: Sequence[Tensor],
        image_sizes: Sequence[tuple[int, int]],
        targets: Sequence[dict[str, Tensor]] | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        if self.training:
            if targets is None:
                raise ValueError("RoIHeads: targets are required in training mode")
            proposals, labels, regression_targets = self.select_training_samples(proposals, targets)
        x = self.box_roi_pool(features, proposals, image_sizes)  # (R, C, PH, PW)
        x = self.box_head(x)  # (R, D)
        class_logits, box_regression = self.box_predictor(x)  # (R, C), (R, 4C)
        if self.training:
            loss_cls, loss_box = fastrcnn_loss(
                class_logits, box_regression, labels, regression_targets
            )
            return [], {"loss_classifier": loss_cls, "loss_box_reg": loss_box}
        return self.postprocess_detections(class_logits, box_regression, proposals, image_sizes), {}
