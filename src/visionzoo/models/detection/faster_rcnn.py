"""Faster R-CNN: Towards Real-Time Object Detection with Region Proposal Networks
(Ren, He, Girshick, Sun, 2015, arXiv:1506.01497).

One network proposes and detects: a backbone computes shared feature maps; the Region Proposal
Network (:mod:`.rpn`) scores k anchors (:mod:`.anchors`) at every position and regresses them
into proposals; the Fast R-CNN head (:mod:`.roi_heads`) pools each proposal, classifies it into
C + 1 classes and refines its box per class. Both are trained jointly ("approximate joint
training", §3.2): the four losses are summed, and no gradient flows through the proposals'
coordinates. Images pass through :class:`~.transform.DetectionTransform` first (normalise,
resize, pad) and detections are mapped back to the input size.

Model convention (DESIGN.md §3, torchvision's): ``model(images, targets=None)`` with
``images`` a list of float Tensor[3, H, W] in [0, 1] (sizes may differ) and, in training,
``targets`` a list of ``{"boxes": Tensor[K, 4] xyxy pixels, "labels": int64 Tensor[K]}``; label
0 is background, so ``num_classes`` counts it. Training returns ``{"loss_classifier",
"loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}``; evaluation returns one
``{"boxes", "labels", "scores"}`` per image, boxes in the input image's pixels.

Builders (backbones in :mod:`.backbones`):

========================== ============================================= =====================
builder                    backbone / RoI head                           from
========================== ============================================= =====================
fasterrcnn_vgg16           VGG-16 conv5 (stride 16), RoI max pool 7x7,   the paper (§4.1)
                           fc6/fc7 4096 with dropout
fasterrcnn_resnet50_c4     ResNet-50 to layer3 (stride 16), RoIAlign     ResNet paper App. A,
                           14x14, layer4 + average pool                  Detectron
fasterrcnn_resnet50_fpn    ResNet-50-FPN P2-P6, multi-level RoIAlign     FPN paper,
                           7x7, fc6/fc7 1024                             torchvision (parity)
fasterrcnn_mobilenet_v2    MobileNet v2 + small FPN (strides 8-64),      this zoo, for CPU
                           RoIAlign 7x7, fc6/fc7 256
========================== ============================================= =====================

Departures from the paper, each also marked where it happens: torchvision's losses (sigmoid
objectness; smooth-L1 beta 1/9 normalised by the sampled count), per-level top-k and NMS of
proposals, ground truth appended to the RoI head's proposals, ImageNet mean/std normalisation,
RoIAlign instead of RoI pooling outside the VGG model, and the paper's cross-boundary anchor
rule off by default (``rpn_ignore_cross_boundary``).

Why fasterrcnn_mobilenet_v2 looks as it does: the built-in ``shapes`` images are 64-128 px with
objects of roughly 12-60 px, and the model must train from scratch on two CPU cores. A single
stride-32 map (torchvision's mobilenet_v3 "320" model) is 2-4 cells across at that size, too
coarse for the smallest objects, so a small FPN (64 channels) reads the stride-8/16/32 maps;
anchors 16-128 px match the objects; the RoI head is narrow (256-d) and samples 128 RoIs per
image; proposals are few (600/300 before/after NMS in training, 300/100 in evaluation); batch
norm is trainable (from-scratch training needs it).

Shape glossary: N images, K boxes of an image, C classes including background.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ...errors import ModelArgumentError
from ...registry import register_model
from .._checks import check_bool, check_choice
from .anchors import AnchorGenerator
from .backbones import (
    mobilenet_v2_fpn_backbone,
    resnet50_c4_backbone,
    resnet50_fpn_backbone,
    vgg16_conv5_backbone,
)
from .roi_heads import ROI_OPS, FastRCNNPredictor, ResNetC5Head, RoIHeads, RoIPooler, TwoMLPHead
from .rpn import RegionProposalNetwork, RPNHead
from .transform import IMAGENET_MEAN, IMAGENET_STD, DetectionTransform

__all__ = [
    "FasterRCNN",
    "fasterrcnn_vgg16",
    "fasterrcnn_resnet50_c4",
    "fasterrcnn_resnet50_fpn",
    "fasterrcnn_mobilenet_v2",
]

_PAPER = "arXiv:1506.01497"
_MODEL = "FasterRCNN"


# ------------------------------------------------------------------------------ argument checks


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def _check_int(name: str, value: object, lo: int = 1, model: str = _MODEL) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ModelArgumentError(f"{model}: {name} must be an integer >= {lo}, got {value!r}")
    return value


def _check_unit(name: str, value: object, *, open_low: bool = False, open_high: bool = False,
                model: str = _MODEL) -> float:  # fmt: skip
    ok = _is_number(value)
    if ok:
        v = float(value)  # type: ignore[arg-type]
        ok = (v > 0 if open_low else v >= 0) and (v < 1 if open_high else v <= 1)
    if not ok:
        lo, hi = "(" if open_low else "[", ")" if open_high else "]"
        raise ModelArgumentError(f"{model}: {name} must be a number in {lo}0, 1{hi}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def _check_positive_numbers(name: str, value: object, length: int | None = None,
                            model: str = _MODEL) -> tuple[float, ...]:  # fmt: skip
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, Sequence)
        or not value
        or (length is not None and len(value) != length)
        or not all(_is_number(v) and float(v) > 0 for v in value)
    ):
        what = (
            f"{length} positive numbers" if length else "a non-empty sequence of positive numbers"
        )
        raise ModelArgumentError(f"{model}: {name} must be {what}, got {value!r}")
    return tuple(float(v) for v in value)


def _check_anchors(
    sizes: object, ratios: object, model: str = _MODEL
) -> tuple[tuple[tuple[float, ...], ...], tuple[tuple[float, ...], ...]]:
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence) or not sizes:
        raise ModelArgumentError(
            f"{model}: anchor_sizes must be a sequence with one sequence of sizes per feature "
            f"level, e.g. ((32,), (64,), (128,)), got {sizes!r}"
        )
    levels = tuple(_check_positive_numbers("anchor_sizes[i]", s, model=model) for s in sizes)
    if isinstance(ratios, Sequence) and ratios and isinstance(ratios[0], Sequence):
        per_level = tuple(
            _check_positive_numbers("aspect_ratios[i]", r, model=model) for r in ratios
        )
        if len(per_level) != len(levels):
            raise ModelArgumentError(
                f"{model}: aspect_ratios has {len(per_level)} levels but anchor_sizes has "
                f"{len(levels)}"
            )
    else:
        per_level = (_check_positive_numbers("aspect_ratios", ratios, model=model),) * len(levels)
    counts = {len(s) * len(r) for s, r in zip(levels, per_level, strict=True)}
    if len(counts) != 1:
        raise ModelArgumentError(
            f"{model}: every level needs the same number of anchors per position (one RPN head "
            f"serves all levels), got sizes {levels} and aspect ratios {per_level}"
        )
    return levels, per_level


def _check_levels(anchor_sizes: object, expected: int, model: str) -> None:
    if isinstance(anchor_sizes, Sequence) and len(anchor_sizes) != expected:
        raise ModelArgumentError(
            f"{model}: anchor_sizes must give {expected} level(s) of sizes (one per feature map "
            f"of this backbone), got {len(anchor_sizes)}: {anchor_sizes!r}"
        )


def _no_download(pretrained_backbone: object, model: str, source: str) -> None:
    if pretrained_backbone is not False:
        raise ModelArgumentError(
            f"{model}: pretrained_backbone must be False: visionzoo never downloads weights. "
            f"Convert ImageNet weights you have ({source}) and load them with "
            "model.load_backbone_weights(state_dict)"
        )


# ------------------------------------------------------------------------------ model


def check_detection_targets(
    targets: object, images: Sequence[Tensor], num_classes: int, model: str = _MODEL
) -> list[dict[str, Tensor]]:
    """Training targets checked and made plain: one ``{"boxes": Tensor[K, 4] xyxy in the image's
    dtype and device, "labels": int64 Tensor[K] in [1, num_classes - 1]}`` per image. Errors name
    ``model``, the image index and the bad box or label (shared by every detector here)."""
    if targets is None:
        raise ModelArgumentError(
            f"{model}: targets are required in training mode: one dict with 'boxes' "
            "Tensor[K, 4] and 'labels' Tensor[K] per image (or call model.eval())"
        )
    if not isinstance(targets, (list, tuple)) or len(targets) != len(images):
        n = len(targets) if isinstance(targets, (list, tuple)) else type(targets).__name__
        raise ModelArgumentError(
            f"{model}: targets must be a list with one dict per image ({len(images)}), got {n}"
        )
    out = []
    for i, (target, image) in enumerate(zip(targets, images, strict=True)):
        if not isinstance(target, Mapping) or "boxes" not in target or "labels" not in target:
            raise ModelArgumentError(
                f"{model}: targets[{i}] must be a dict with 'boxes' and 'labels'"
            )
        boxes, labels = target["boxes"], target["labels"]
        if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4:
            shape = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
            raise ModelArgumentError(
                f"{model}: targets[{i}]['boxes'] must be a Tensor[K, 4] of xyxy boxes, got {shape}"
            )
        k = boxes.shape[0]
        if (
            not isinstance(labels, Tensor)
            or labels.shape != (k,)
            or labels.is_floating_point()
            or labels.is_complex()
            or labels.dtype == torch.bool
        ):
            shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
            dtype = f" {labels.dtype}" if isinstance(labels, Tensor) else ""
            raise ModelArgumentError(
                f"{model}: targets[{i}]['labels'] must be an integer Tensor[{k}] (one label "
                f"per box), got{dtype} {shape}"
            )
        # tv_tensors.BoundingBoxes and friends: plain tensors from here on.
        boxes = boxes.as_subclass(Tensor).to(device=image.device, dtype=image.dtype)
        labels = labels.as_subclass(Tensor).to(device=image.device, dtype=torch.int64)
        if k:
            bad = (labels < 1) | (labels >= num_classes)
            if bool(bad.any()):
                j = int(torch.where(bad)[0][0])
                raise ModelArgumentError(
                    f"{model}: targets[{i}]['labels'][{j}] = {int(labels[j])} is out of "
                    f"range: object labels must be in [1, {num_classes - 1}] "
                    f"(num_classes = {num_classes} includes background 0)"
                )
            finite = torch.isfinite(boxes).all(dim=1)
            bad = ~finite | (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
            if bool(bad.any()):
                j = int(torch.where(bad)[0][0])
                raise ModelArgumentError(
                    f"{model}: targets[{i}]['boxes'][{j}] = {boxes[j].tolist()} is "
                    "degenerate: boxes must be finite xyxy with x2 > x1 and y2 > y1"
                )
        out.append({"boxes": boxes, "labels": labels})
    return out


class FasterRCNN(nn.Module):
    """Faster R-CNN over any backbone returning an ordered dict of feature maps.

    Args:
        backbone: ``Tensor[N, 3, H, W] -> dict[str, Tensor[N, out_channels, h, w]]`` (or one
            tensor), with an ``out_channels`` attribute.
        num_classes: classes including the background (label 0).
        box_roi_pool: RoI feature extractor (default: RoIAlign 7x7 on the map "0").
        box_head: per-RoI network with an ``out_features`` attribute (default: fc6/fc7 of 1024).
        trunk_prefixes: how a classifier's state-dict keys map into this model, for
            :meth:`load_backbone_weights`: (source prefix, target prefix or None to skip).
        min_size, max_size: the resize (see :class:`~.transform.DetectionTransform`); a sequence
            of min sizes draws one per image in training.
        image_mean, image_std, size_divisible: normalisation and batch padding.
        anchor_sizes: per feature level, the anchor sizes in pixels.
        aspect_ratios: the ratios h / w (one sequence for all levels, or one per level).
        rpn_pre_nms_top_n_train/test: proposals kept per level before NMS.
        rpn_post_nms_top_n_train/test: proposals kept per image after NMS.
        rpn_nms_thresh, rpn_fg_iou_thresh, rpn_bg_iou_thresh, rpn_batch_size_per_image,
        rpn_positive_fraction, rpn_score_thresh, rpn_min_size: the RPN's settings (§3.1).
        rpn_low_quality_matches: the anchor(s) of highest IoU with a ground truth are positive
            even below ``rpn_fg_iou_thresh`` (§3.1.2, rule (i)).
        rpn_ignore_cross_boundary: the paper's rule of ignoring anchors that cross the image
            border in training (§3.3); off in torchvision.
        box_fg_iou_thresh, box_bg_iou_thresh, box_bg_iou_thresh_lo, box_batch_size_per_image,
        box_positive_fraction, bbox_reg_weights: the RoI head's training settings.
        box_add_gt_proposals: add the ground-truth boxes to the proposals in training.
        box_score_thresh, box_nms_thresh, detections_per_img: post-processing.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int = 91,
        *,
        box_roi_pool: nn.Module | None = None,
        box_head: nn.Module | None = None,
        trunk_prefixes: Sequence[tuple[str, str | None]] = (),
        min_size: int | Sequence[int] = 800,
        max_size: int = 1333,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        size_divisible: int = 32,
        anchor_sizes: Sequence[Sequence[float]] = ((32,), (64,), (128,), (256,), (512,)),
        aspect_ratios: Sequence[float] | Sequence[Sequence[float]] = (0.5, 1.0, 2.0),
        rpn_pre_nms_top_n_train: int = 2000,
        rpn_pre_nms_top_n_test: int = 1000,
        rpn_post_nms_top_n_train: int = 2000,
        rpn_post_nms_top_n_test: int = 1000,
        rpn_nms_thresh: float = 0.7,
        rpn_fg_iou_thresh: float = 0.7,
        rpn_bg_iou_thresh: float = 0.3,
        rpn_batch_size_per_image: int = 256,
        rpn_positive_fraction: float = 0.5,
        rpn_score_thresh: float = 0.0,
        rpn_min_size: float = 1e-3,
        rpn_low_quality_matches: bool = True,
        rpn_ignore_cross_boundary: bool = False,
        box_fg_iou_thresh: float = 0.5,
        box_bg_iou_thresh: float = 0.5,
        box_bg_iou_thresh_lo: float = 0.0,
        box_batch_size_per_image: int = 512,
        box_positive_fraction: float = 0.25,
        bbox_reg_weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
        box_add_gt_proposals: bool = True,
        box_score_thresh: float = 0.05,
        box_nms_thresh: float = 0.5,
        detections_per_img: int = 100,
    ) -> None:
        super().__init__()
        _check_int("num_classes", num_classes, lo=2)
        if not hasattr(backbone, "out_channels"):
            raise ModelArgumentError(
                f"{_MODEL}: backbone must have an out_channels attribute (channels of its maps)"
            )
        sizes = (
            (min_size,)
            if isinstance(min_size, int) and not isinstance(min_size, bool)
            else min_size
        )
        if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence) or not sizes:
            raise ModelArgumentError(
                f"{_MODEL}: min_size must be a positive integer or a sequence of them, got "
                f"{min_size!r}"
            )
        for s in sizes:
            _check_int("min_size", s)
        _check_int("max_size", max_size)
        _check_positive_numbers("image_std", image_std, length=len(tuple(image_mean)))
        if not all(_is_number(m) for m in image_mean):
            raise ModelArgumentError(f"{_MODEL}: image_mean must be numbers, got {image_mean!r}")
        _check_int("size_divisible", size_divisible)
        sizes_per_level, ratios_per_level = _check_anchors(anchor_sizes, aspect_ratios)
        for name, value in (
            ("rpn_pre_nms_top_n_train", rpn_pre_nms_top_n_train),
            ("rpn_pre_nms_top_n_test", rpn_pre_nms_top_n_test),
            ("rpn_post_nms_top_n_train", rpn_post_nms_top_n_train),
            ("rpn_post_nms_top_n_test", rpn_post_nms_top_n_test),
            ("rpn_batch_size_per_image", rpn_batch_size_per_image),
            ("box_batch_size_per_image", box_batch_size_per_image),
            ("detections_per_img", detections_per_img),
        ):
            _check_int(name, value)
        for name, value in (
            ("rpn_nms_thresh", rpn_nms_thresh),
            ("rpn_fg_iou_thresh", rpn_fg_iou_thresh),
            ("rpn_bg_iou_thresh", rpn_bg_iou_thresh),
            ("box_fg_iou_thresh", box_fg_iou_thresh),
            ("box_bg_iou_thresh", box_bg_iou_thresh),
            ("box_bg_iou_thresh_lo", box_bg_iou_thresh_lo),
            ("box_nms_thresh", box_nms_thresh),
        ):
            _check_unit(name, value)
        _check_unit("rpn_positive_fraction", rpn_positive_fraction, open_low=True)
        _check_unit("box_positive_fraction", box_positive_fraction, open_low=True)
        _check_unit("rpn_score_thresh", rpn_score_thresh, open_high=True)
        _check_unit("box_score_thresh", box_score_thresh, open_high=True)
        if not _is_number(rpn_min_size) or rpn_min_size < 0:
            raise ModelArgumentError(
                f"{_MODEL}: rpn_min_size must be a number >= 0 (pixels), got {rpn_min_size!r}"
            )
        for fg_name, fg, bg_name, bg in (
            ("rpn_fg_iou_thresh", rpn_fg_iou_thresh, "rpn_bg_iou_thresh", rpn_bg_iou_thresh),
            ("box_fg_iou_thresh", box_fg_iou_thresh, "box_bg_iou_thresh", box_bg_iou_thresh),
            ("box_bg_iou_thresh", box_bg_iou_thresh, "box_bg_iou_thresh_lo", box_bg_iou_thresh_lo),
        ):
            if bg > fg:
                raise ModelArgumentError(f"{_MODEL}: {bg_name} ({bg}) must be <= {fg_name} ({fg})")
        weights = _check_positive_numbers("bbox_reg_weights", bbox_reg_weights, length=4)
        for name, value in (
            ("rpn_low_quality_matches", rpn_low_quality_matches),
            ("rpn_ignore_cross_boundary", rpn_ignore_cross_boundary),
            ("box_add_gt_proposals", box_add_gt_proposals),
        ):
            check_bool(name, value, model=_MODEL)

        self.num_classes = num_classes
        self.trunk_prefixes = tuple(trunk_prefixes)
        self.transform = DetectionTransform(
            min_size, max_size, image_mean, image_std, size_divisible
        )
        self.backbone = backbone
        out_channels = int(backbone.out_channels)
        anchor_generator = AnchorGenerator(sizes_per_level, ratios_per_level)
        rpn_head = RPNHead(out_channels, anchor_generator.num_anchors_per_location()[0])
        self.rpn = RegionProposalNetwork(
            anchor_generator,
            rpn_head,
            fg_iou_thresh=rpn_fg_iou_thresh,
            bg_iou_thresh=rpn_bg_iou_thresh,
            batch_size_per_image=rpn_batch_size_per_image,
            positive_fraction=rpn_positive_fraction,
            pre_nms_top_n={"training": rpn_pre_nms_top_n_train, "testing": rpn_pre_nms_top_n_test},
            post_nms_top_n={
                "training": rpn_post_nms_top_n_train,
                "testing": rpn_post_nms_top_n_test,
            },
            nms_thresh=rpn_nms_thresh,
            score_thresh=rpn_score_thresh,
            min_size=rpn_min_size,
            low_quality_matches=rpn_low_quality_matches,
            ignore_cross_boundary=rpn_ignore_cross_boundary,
        )
        if box_roi_pool is None:
            box_roi_pool = RoIPooler(["0"], 7, 2)
        if box_head is None:
            ph, pw = getattr(box_roi_pool, "output_size", (7, 7))
            box_head = TwoMLPHead(out_channels * ph * pw, 1024)
        if not hasattr(box_head, "out_features"):
            raise ModelArgumentError(
                f"{_MODEL}: box_head must have an out_features attribute (its output width)"
            )
        self.roi_heads = RoIHeads(
            box_roi_pool,
            box_head,
            FastRCNNPredictor(int(box_head.out_features), num_classes),
            fg_iou_thresh=box_fg_iou_thresh,
            bg_iou_thresh=box_bg_iou_thresh,
            bg_iou_thresh_lo=box_bg_iou_thresh_lo,
            batch_size_per_image=box_batch_size_per_image,
            positive_fraction=box_positive_fraction,
            bbox_reg_weights=weights,
            score_thresh=box_score_thresh,
            nms_thresh=box_nms_thresh,
            detections_per_img=detections_per_img,
            add_gt_proposals=box_add_gt_proposals,
        )

    # --------------------------------------------------------------------- inputs

    def _check_images(self, images: object) -> list[Tensor]:
        if isinstance(images, Tensor) and images.dim() == 4:
            images = list(images.unbind(0))  # a padded batch is accepted as N images
        if not isinstance(images, (list, tuple)) or not images:
            raise ModelArgumentError(
                f"{_MODEL}: images must be a non-empty list of Tensor[3, H, W] (float, 0-1), "
                f"got {type(images).__name__}"
            )
        channels = len(self.transform.image_mean)
        for i, img in enumerate(images):
            if not isinstance(img, Tensor) or img.dim() != 3 or img.shape[0] != channels:
                shape = tuple(img.shape) if isinstance(img, Tensor) else type(img).__name__
                raise ModelArgumentError(
                    f"{_MODEL}: images[{i}] must be a Tensor[{channels}, H, W], got {shape}"
                )
            if not img.is_floating_point():
                raise ModelArgumentError(
                    f"{_MODEL}: images[{i}] must be a floating-point tensor with values in "
                    f"[0, 1], got {img.dtype} (divide uint8 images by 255)"
                )
            if img.shape[1] == 0 or img.shape[2] == 0:
                raise ModelArgumentError(f"{_MODEL}: images[{i}] is empty: {tuple(img.shape)}")
        return list(images)

    def _check_targets(self, targets: object, images: Sequence[Tensor]) -> list[dict[str, Tensor]]:
        return check_detection_targets(targets, images, self.num_classes)

    # --------------------------------------------------------------------- forward

    def forward(
        self,
        images: list[Tensor] | Tensor,
        targets: list[dict[str, Tensor]] | None = None,
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Training: dict of the four losses. Evaluation: per image ``{"boxes": Tensor[K, 4]
        (xyxy, input pixels), "labels": int64 Tensor[K], "scores": Tensor[K]}`` by decreasing
        score."""
        imgs = self._check_images(images)
        checked = self._check_targets(targets, imgs) if self.training else None
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in imgs]
        image_list, checked = self.transform(imgs, checked)
        features = self.backbone(image_list.tensors)
        if isinstance(features, Tensor):
            features = OrderedDict([("0", features)])
        proposals, rpn_losses = self.rpn(image_list, features, checked)
        detections, head_losses = self.roi_heads(
            features, proposals, image_list.image_sizes, checked
        )
        if self.training:
            return {**head_losses, **rpn_losses}
        return self.transform.postprocess(detections, image_list.image_sizes, original_sizes)

    # --------------------------------------------------------------------- weights

    def load_backbone_weights(self, state_dict: Mapping[str, Tensor]) -> list[str]:
        """Load a classifier's weights (e.g. our ``resnet50`` holding ImageNet weights converted
        from torchvision) into the backbone (and a box head taken from it: ResNet's layer4,
        VGG's fc6/fc7), following ``trunk_prefixes``.

        Returns the classifier keys that were skipped (e.g. its final layer). A key that maps to
        nothing in this model, or a shape mismatch, raises ModelArgumentError.
        """
        if not self.trunk_prefixes:
            raise ModelArgumentError(
                f"{_MODEL}: this model has no trunk_prefixes: its backbone is not a zoo classifier"
            )
        mapped: dict[str, Tensor] = {}
        skipped: list[str] = []
        for key, value in state_dict.items():
            for src, dst in self.trunk_prefixes:
                if key.startswith(src):
                    if dst is None:
                        skipped.append(key)
                    else:
                        mapped[dst + key[len(src) :]] = value
                    break
            else:
                skipped.append(key)
        own = self.state_dict()
        unknown = sorted(
            k for k in mapped if k not in own and not k.endswith("num_batches_tracked")
        )
        if unknown:
            raise ModelArgumentError(
                f"{_MODEL}: backbone weights do not fit: no place for {unknown[:8]}"
            )
        try:
            self.load_state_dict(mapped, strict=False)
        except RuntimeError as e:  # shape mismatches
            raise ModelArgumentError(f"{_MODEL}: backbone weights do not fit: {e}") from None
        return skipped


# ------------------------------------------------------------------------------ builders


def _roi_kwargs(roi_op: object, roi_aligned: object, model: str) -> None:
    check_choice("roi_op", roi_op, ROI_OPS, model=model)
    check_bool("roi_aligned", roi_aligned, model=model)


@register_model(task="detection", family="faster_rcnn", paper=_PAPER, input_size=(3, 600, 600),
                model_class=FasterRCNN)  # fmt: skip
def fasterrcnn_vgg16(
    *,
    num_classes: int = 91,
    pretrained_backbone: bool = False,
    trainable_layers: int = 3,
    roi_op: str = "pool",
    roi_aligned: bool = False,
    representation_size: int = 4096,
    dropout: float = 0.5,
    **kwargs: Any,
) -> FasterRCNN:
    """The paper's VGG-16 model (§4.1): conv5_3 at stride 16, anchors 128/256/512 x 3 ratios,
    RoI max pooling 7x7 then fc6/fc7 (4096, dropout 0.5); images resized to 600 (max 1000);
    12000/2000 proposals before/after NMS in training, 6000/300 in testing, 128 RoIs per image
    (py-faster-rcnn's end-to-end settings). ``trainable_layers`` = conv stages trained from the
    top (3: conv3_1 and up, as the paper)."""
    name = "fasterrcnn_vgg16"
    _no_download(pretrained_backbone, name, "interop.torchvision.from_torchvision('vgg16', ...)")
    _roi_kwargs(roi_op, roi_aligned, name)
    _check_int("representation_size", representation_size, model=name)
    if not _is_number(dropout) or not 0 <= float(dropout) < 1:
        raise ModelArgumentError(
            f"{name}: dropout must be a probability in [0, 1), got {dropout!r}"
        )
    defaults: dict[str, Any] = dict(
        min_size=600,
        max_size=1000,
        anchor_sizes=((128, 256, 512),),
        rpn_pre_nms_top_n_train=12000,
        rpn_post_nms_top_n_train=2000,
        rpn_pre_nms_top_n_test=6000,
        rpn_post_nms_top_n_test=300,
        box_batch_size_per_image=128,
    )
    kwargs = {**defaults, **kwargs}
    _check_levels(kwargs["anchor_sizes"], 1, name)
    backbone = vgg16_conv5_backbone(trainable_layers=trainable_layers, model=name)
    pool = RoIPooler(["0"], 7, 2, op=roi_op, aligned=roi_aligned)
    head = TwoMLPHead(512 * 7 * 7, representation_size, dropout=float(dropout))
    trunk = (
        ("features.", "backbone.body."),
        ("classifier.0.", "roi_heads.box_head.fc6."),
        ("classifier.3.", "roi_heads.box_head.fc7."),
        ("classifier.", None),
    )
    return FasterRCNN(backbone, num_classes, box_roi_pool=pool, box_head=head,
                      trunk_prefixes=trunk, **kwargs)  # fmt: skip


@register_model(task="detection", family="faster_rcnn", paper=_PAPER, input_size=(3, 800, 800),
                model_class=FasterRCNN)  # fmt: skip
def fasterrcnn_resnet50_c4(
    *,
    num_classes: int = 91,
    pretrained_backbone: bool = False,
    trainable_layers: int = 3,
    norm_layer: str = "frozen_bn",
    norm_eps: float = 1e-5,
    roi_op: str = "align",
    roi_aligned: bool = False,
    **kwargs: Any,
) -> FasterRCNN:
    """ResNet-50-C4 (ResNet paper App. A; Detectron's defaults): stem..layer3 at stride 16,
    anchors 32-512 x 3 ratios on that map, RoIAlign 14x14 (adaptive sampling) then layer4
    (stride 2) and average pooling; 12000/2000 proposals before/after NMS in training,
    6000/1000 in testing. Frozen BN; ``trainable_layers`` counts back from layer4."""
    name = "fasterrcnn_resnet50_c4"
    _no_download(pretrained_backbone, name, "interop.torchvision.from_torchvision('resnet50', ...)")
    _roi_kwargs(roi_op, roi_aligned, name)
    defaults: dict[str, Any] = dict(
        anchor_sizes=((32, 64, 128, 256, 512),),
        rpn_pre_nms_top_n_train=12000,
        rpn_post_nms_top_n_train=2000,
        rpn_pre_nms_top_n_test=6000,
        rpn_post_nms_top_n_test=1000,
    )
    kwargs = {**defaults, **kwargs}
    _check_levels(kwargs["anchor_sizes"], 1, name)
    backbone, layer4 = resnet50_c4_backbone(
        norm_layer=norm_layer, norm_eps=norm_eps, trainable_layers=trainable_layers, model=name
    )
    pool = RoIPooler(["0"], 14, 0, op=roi_op, aligned=roi_aligned)
    trunk = (
        ("fc.", None),
        ("layer4.", "roi_heads.box_head.layer4."),
        ("", "backbone.body."),
    )
    return FasterRCNN(backbone, num_classes, box_roi_pool=pool, box_head=ResNetC5Head(layer4),
                      trunk_prefixes=trunk, **kwargs)  # fmt: skip


@register_model(task="detection", family="faster_rcnn", paper=_PAPER, input_size=(3, 800, 800),
                model_class=FasterRCNN)  # fmt: skip
def fasterrcnn_resnet50_fpn(
    *,
    num_classes: int = 91,
    pretrained_backbone: bool = False,
    trainable_layers: int = 3,
    norm_layer: str = "frozen_bn",
    norm_eps: float = 1e-5,
    representation_size: int = 1024,
    roi_op: str = "align",
    roi_aligned: bool = False,
    **kwargs: Any,
) -> FasterRCNN:
    """ResNet-50-FPN, torchvision's ``fasterrcnn_resnet50_fpn`` layout and defaults (so its
    COCO weights load with ``from_torchvision``): P2-P6 with anchors 32..512 (one size per
    level) x 3 ratios, multi-level RoIAlign 7x7 (sampling 2), fc6/fc7 of 1024; images resized
    to 800 (max 1333); 2000/2000 proposals per level/image in training, 1000/1000 in testing.
    ``norm_layer``: "frozen_bn" (torchvision's pretrained detectors; use ``norm_eps=0.0`` for
    its COCO_V1 weights) or "bn"."""
    name = "fasterrcnn_resnet50_fpn"
    _no_download(pretrained_backbone, name, "interop.torchvision.from_torchvision('resnet50', ...)")
    _roi_kwargs(roi_op, roi_aligned, name)
    _check_int("representation_size", representation_size, model=name)
    _check_levels(kwargs.get("anchor_sizes"), 5, name)
    backbone = resnet50_fpn_backbone(
        norm_layer=norm_layer, norm_eps=norm_eps, trainable_layers=trainable_layers, model=name
    )
    pool = RoIPooler(["0", "1", "2", "3"], 7, 2, op=roi_op, aligned=roi_aligned)
    head = TwoMLPHead(backbone.out_channels * 7 * 7, representation_size)
    trunk = (("fc.", None), ("", "backbone.body."))
    return FasterRCNN(backbone, num_classes, box_roi_pool=pool, box_head=head,
                      trunk_prefixes=trunk, **kwargs)  # fmt: skip


@register_model(task="detection", family="faster_rcnn", paper=_PAPER, input_size=(3, 128, 128),
                model_class=FasterRCNN)  # fmt: skip
def fasterrcnn_mobilenet_v2(
    *,
    num_classes: int = 91,
    pretrained_backbone: bool = False,
    width_mult: float = 1.0,
    fpn_channels: int = 64,
    frozen_bn: bool = False,
    representation_size: int = 256,
    roi_op: str = "align",
    roi_aligned: bool = False,
    **kwargs: Any,
) -> FasterRCNN:
    """MobileNet v2 + a small FPN for CPU training on small images (see the module docstring):
    strides 8/16/32 (+64 pooled, RPN only) with anchors 16/32/64/128 x 3 ratios, RoIAlign 7x7,
    fc6/fc7 of ``representation_size``; images resized to 128 (max 192); 600/300 proposals
    per level/image in training, 300/100 in testing; 128 RoIs per image."""
    name = "fasterrcnn_mobilenet_v2"
    _no_download(
        pretrained_backbone, name, "interop.torchvision.from_torchvision('mobilenet_v2', ...)"
    )
    _roi_kwargs(roi_op, roi_aligned, name)
    if not _is_number(width_mult) or float(width_mult) <= 0:
        raise ModelArgumentError(
            f"{name}: width_mult must be a positive number, got {width_mult!r}"
        )
    _check_int("fpn_channels", fpn_channels, model=name)
    _check_int("representation_size", representation_size, model=name)
    check_bool("frozen_bn", frozen_bn, model=name)
    defaults: dict[str, Any] = dict(
        min_size=128,
        max_size=192,
        anchor_sizes=((16,), (32,), (64,), (128,)),
        rpn_pre_nms_top_n_train=600,
        rpn_post_nms_top_n_train=300,
        rpn_pre_nms_top_n_test=300,
        rpn_post_nms_top_n_test=100,
        box_batch_size_per_image=128,
    )
    kwargs = {**defaults, **kwargs}
    _check_levels(kwargs["anchor_sizes"], 4, name)
    backbone = mobilenet_v2_fpn_backbone(
        width_mult=float(width_mult), fpn_channels=fpn_channels, frozen_bn=frozen_bn, model=name
    )
    pool = RoIPooler(["0", "1", "2"], 7, 2, op=roi_op, aligned=roi_aligned)
    head = TwoMLPHead(fpn_channels * 7 * 7, representation_size)
    trunk = (("features.", "backbone.body."), ("classifier.", None))
    return FasterRCNN(backbone, num_classes, box_roi_pool=pool, box_head=head,
                      trunk_prefixes=trunk, **kwargs)  # fmt: skip
