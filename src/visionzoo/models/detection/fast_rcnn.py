"""Fast R-CNN (Girshick, 2015, arXiv:1504.08083).

R-CNN runs a CNN on every warped proposal; Fast R-CNN runs it once per image and pools each
proposal from the shared feature map (§2):

1. the image goes through the conv trunk once (a stride-16 map: VGG-16 conv5_3 in the paper,
   ResNet-18 up to layer3, "C4", here);
2. each selective-search proposal (:mod:`.proposals`, computed once per image and cached on
   disk) is projected onto the map and max-pooled to 7 x 7 (RoI pooling, §2.1; ``roi_op=
   "align"`` switches to RoIAlign);
3. fc layers (fc6, fc7) and two sibling outputs: N + 1 class scores (softmax) and
   class-specific box deltas (§2.2), parameterised as in R-CNN and scaled by (10, 10, 5, 5)
   (the released code's target normalisation, std 0.1 / 0.2);
4. the multi-task loss L = L_cls + lambda [u >= 1] L_loc, cross-entropy plus smooth L1 (beta =
   1) on the true class's deltas of foreground RoIs (eq. 1-3, lambda = 1);
5. minibatches of 2 images x 64 RoIs (``rois_per_image``; the batch size of 2 images is the
   recipe's ``data.batch_size``), 25% foreground (IoU >= 0.5 with a ground-truth box), the rest
   background with IoU in [0.1, 0.5) (``bg_iou_thresh_lo``, §2.3 "Mini-batch sampling"); the
   ground-truth boxes join the proposals in training; horizontal flips come from the data;
6. at test time: softmax, decode per class, per-class NMS at 0.3 (§3), score threshold,
   ``detections_per_img`` per image, boxes mapped back to the input image.

The pieces are the Faster R-CNN issue's (:mod:`.roi_heads`: :class:`RoIPooler`,
:class:`TwoMLPHead`, :class:`FastRCNNPredictor`, the sampler and post-processing of
:class:`RoIHeads`; :class:`DetectionTransform`), so the three detectors of the benchmark share
all but what the papers change.

Model convention (DESIGN.md §3): ``model(images: list[Tensor[3, H, W]] in [0, 1], targets)``;
training returns ``{"loss_classifier", "loss_box_reg"}``; evaluation returns per image
``{"boxes", "labels", "scores"}``; label 0 is background, ``num_classes`` counts it.

Departures from the paper, also marked where they happen:

* backbone: ResNet-18 trained from scratch with batch norm (the paper fine-tunes ImageNet
  VGG-16, conv3_1 and up); ``fast_rcnn_vgg16`` builds the paper's network;
* image scale: the paper resizes to a 600 px shorter side; the 64 px ``shapes`` images are
  resized to 128 (``min_size``), so the stride-16 map is 8 x 8;
* the fc layers are 512 wide (``representation_size``; the paper's 4096 with dropout in
  ``fast_rcnn_vgg16``);
* normalisation: ImageNet mean/std (the paper subtracts the BGR pixel mean);
* truncated SVD of fc layers (§3.1) is not implemented (a speed trick for large heads).

Shape glossary: N images, R RoIs, C classes including background, K proposals of an image.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ModelArgumentError
from ...registry import register_model
from .._checks import check_bool, check_choice, check_positive_int
from ..classification.resnet import BasicBlock, ResNet
from .backbones import NORM_LAYERS, Backbone, FrozenBatchNorm2d, vgg16_conv5_backbone
from .faster_rcnn import (
    FasterRCNN,
    _check_int,
    _check_levels,
    _check_unit,
    check_detection_targets,
)
from .proposals import ProposalCache
from .roi_heads import ROI_OPS, FastRCNNPredictor, RoIHeads, RoIPooler, TwoMLPHead
from .transform import IMAGENET_MEAN, IMAGENET_STD, DetectionTransform, resize_boxes

__all__ = [
    "FastRCNN",
    "fast_rcnn_loss",
    "resnet18_c4_backbone",
    "fast_rcnn_resnet18",
    "fast_rcnn_vgg16",
    "fasterrcnn_resnet18_c4",
]

_PAPER = "arXiv:1504.08083"
_MODEL = "FastRCNN"
PROPOSAL_MODES = ("fast", "quality", "single")


def resnet18_c4_backbone(*, norm_layer: str = "bn", model: str = "fast_rcnn_resnet18") -> Backbone:
    """ResNet-18 stem + layer1..layer3 (stride 16, 256 channels): the "C4" trunk shared by the
    R-CNN / Fast R-CNN / Faster R-CNN benchmark. ``norm_layer``: "bn" (trainable, for
    from-scratch training) or "frozen_bn" (for ImageNet weights)."""
    check_choice("norm_layer", norm_layer, NORM_LAYERS, model=model)
    norm = nn.BatchNorm2d if norm_layer == "bn" else FrozenBatchNorm2d
    body = ResNet(BasicBlock, (2, 2, 2, 2), norm_layer=norm)
    # layer4 and the classifier are not part of a C4 trunk.
    del body.layer4, body.avgpool, body.fc
    return Backbone(body, {"layer3": "0"}, 256)


def fast_rcnn_loss(
    class_logits: Tensor,
    box_regression: Tensor,
    labels: Tensor,
    regression_targets: Tensor,
    beta: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """The multi-task loss (eq. 1): cross-entropy over the R sampled RoIs, and smooth L1 with
    ``beta`` (eq. 3: beta = 1) of the true class's deltas on the foreground RoIs, divided by R.

    ``class_logits`` Tensor[R, C], ``box_regression`` Tensor[R, 4C], ``labels`` int64 Tensor[R],
    ``regression_targets`` Tensor[R, 4].
    """
    cls_loss = F.cross_entropy(class_logits, labels)
    r = class_logits.shape[0]
    pos = torch.where(labels > 0)[0]
    deltas = box_regression.reshape(r, -1, 4)[pos, labels[pos]]  # (R_fg, 4)
    box_loss = F.smooth_l1_loss(deltas, regression_targets[pos], beta=beta, reduction="sum")
    return cls_loss, box_loss / max(r, 1)


class FastRCNN(nn.Module):
    """Fast R-CNN over a backbone returning one stride-s feature map (module docstring).

    Args:
        backbone: ``Tensor[N, 3, H, W] -> {"0": Tensor[N, out_channels, H/s, W/s]}`` with an
            ``out_channels`` attribute.
        num_classes: classes including the background (label 0).
        box_head: per-RoI network with ``out_features`` (default: fc6/fc7 of
            ``representation_size``).
        roi_op: "pool" (RoI max pooling, the paper) or "align" (RoIAlign).
        roi_output_size: the pooled grid (7 in the paper).
        representation_size, dropout: the default box head's width and dropout.
        min_size, max_size, image_mean, image_std, size_divisible: the image transform.
        proposal_mode, max_proposals: selective search settings (R-CNN and Fast R-CNN used
            "fast" mode, ~2000 boxes per image).
        proposal_cache_dir: where proposals are cached (None: ``~/.cache/visionzoo/proposals``);
            ``proposal_disk_cache=False`` keeps them in memory only.
        rois_per_image, positive_fraction: RoIs sampled per image and their foreground share.
        fg_iou_thresh: foreground at IoU >= this; background below it, down to
            ``bg_iou_thresh_lo`` (0.1 in the paper; 0 keeps every low-overlap RoI).
        add_gt_proposals: add the ground-truth boxes to the proposals in training.
        smooth_l1_beta: the smooth-L1 transition point (1 in the paper).
        bbox_reg_weights: the box coder's (w_x, w_y, w_w, w_h).
        score_thresh, nms_thresh, detections_per_img: test-time post-processing (NMS 0.3).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        *,
        box_head: nn.Module | None = None,
        roi_op: str = "pool",
        roi_output_size: int = 7,
        representation_size: int = 512,
        dropout: float = 0.0,
        min_size: int = 128,
        max_size: int = 1000,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        size_divisible: int = 16,
        proposal_mode: str = "fast",
        max_proposals: int | None = 2000,
        proposal_cache_dir: str | None = None,
        proposal_disk_cache: bool = True,
        rois_per_image: int = 64,
        positive_fraction: float = 0.25,
        fg_iou_thresh: float = 0.5,
        bg_iou_thresh_lo: float = 0.1,
        add_gt_proposals: bool = True,
        smooth_l1_beta: float = 1.0,
        bbox_reg_weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
        score_thresh: float = 0.05,
        nms_thresh: float = 0.3,
        detections_per_img: int = 100,
    ) -> None:
        super().__init__()
        _check_int("num_classes (background included)", num_classes, lo=2, model=_MODEL)
        if not hasattr(backbone, "out_channels"):
            raise ModelArgumentError(f"{_MODEL}: backbone must have an out_channels attribute")
        check_choice("roi_op", roi_op, ROI_OPS, model=_MODEL)
        check_choice("proposal_mode", proposal_mode, PROPOSAL_MODES, model=_MODEL)
        for name, value in (
            ("roi_output_size", roi_output_size),
            ("representation_size", representation_size),
            ("min_size", min_size),
            ("max_size", max_size),
            ("size_divisible", size_divisible),
            ("rois_per_image", rois_per_image),
            ("detections_per_img", detections_per_img),
        ):
            check_positive_int(name, value, model=_MODEL)
        if max_proposals is not None:
            check_positive_int("max_proposals", max_proposals, model=_MODEL)
        check_bool("add_gt_proposals", add_gt_proposals, model=_MODEL)
        check_bool("proposal_disk_cache", proposal_disk_cache, model=_MODEL)
        for name, value, lo_open in (
            ("positive_fraction", positive_fraction, True),
            ("fg_iou_thresh", fg_iou_thresh, False),
            ("bg_iou_thresh_lo", bg_iou_thresh_lo, False),
            ("nms_thresh", nms_thresh, False),
            ("score_thresh", score_thresh, False),
            ("dropout", dropout, False),
        ):
            _check_unit(name, value, open_low=lo_open, model=_MODEL)
        if bg_iou_thresh_lo > fg_iou_thresh:
            raise ModelArgumentError(
                f"{_MODEL}: bg_iou_thresh_lo ({bg_iou_thresh_lo}) must be <= fg_iou_thresh "
                f"({fg_iou_thresh}): background RoIs lie in [bg_iou_thresh_lo, fg_iou_thresh)"
            )
        if not isinstance(smooth_l1_beta, (int, float)) or smooth_l1_beta <= 0:
            raise ModelArgumentError(
                f"{_MODEL}: smooth_l1_beta must be a positive number, got {smooth_l1_beta!r}"
            )
        self.num_classes = num_classes
        self.smooth_l1_beta = float(smooth_l1_beta)
        self.transform = DetectionTransform(
            min_size, max_size, image_mean, image_std, size_divisible
        )
        self.backbone = backbone
        if box_head is None:
            in_features = backbone.out_channels * roi_output_size * roi_output_size
            box_head = TwoMLPHead(in_features, representation_size, dropout=float(dropout))
        # sampling_ratio 2 matters only for roi_op="align".
        pool = RoIPooler(["0"], roi_output_size, 2, op=roi_op)
        self.roi_heads = RoIHeads(
            pool,
            box_head,
            FastRCNNPredictor(box_head.out_features, num_classes),
            fg_iou_thresh=fg_iou_thresh,
            bg_iou_thresh=fg_iou_thresh,
            bg_iou_thresh_lo=bg_iou_thresh_lo,
            batch_size_per_image=rois_per_image,
            positive_fraction=positive_fraction,
            bbox_reg_weights=bbox_reg_weights,
            score_thresh=score_thresh,
            nms_thresh=nms_thresh,
            detections_per_img=detections_per_img,
            add_gt_proposals=add_gt_proposals,
        )
        # Not a module: the cache holds no weights and is rebuilt from the arguments.
        self.proposal_cache = ProposalCache(
            proposal_mode,
            max_proposals,
            root=proposal_cache_dir,
            disk=proposal_disk_cache,
        )

    # ------------------------------------------------------------------------------ inputs

    def _check_images(self, images: object) -> list[Tensor]:
        if isinstance(images, Tensor) and images.dim() == 4:
            images = list(images.unbind(0))
        if not isinstance(images, (list, tuple)) or not images:
            raise ModelArgumentError(
                f"{_MODEL}: images must be a non-empty list of Tensor[3, H, W] in [0, 1]"
            )
        for i, im in enumerate(images):
            if not isinstance(im, Tensor) or im.dim() != 3 or im.shape[0] != 3:
                shape = tuple(im.shape) if isinstance(im, Tensor) else type(im).__name__
                raise ModelArgumentError(
                    f"{_MODEL}: images[{i}] must be Tensor[3, H, W], got {shape}"
                )
        return list(images)

    def proposals(self, images: Sequence[Tensor]) -> list[Tensor]:
        """Selective-search boxes (cached) of each input image: Tensor[K_i, 4] in its pixels."""
        return [self.proposal_cache(im) for im in images]

    # ------------------------------------------------------------------------------ forward

    def forward(
        self, images: list[Tensor] | Tensor, targets: list[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Training: ``{"loss_classifier", "loss_box_reg"}``. Evaluation: per image
        ``{"boxes": Tensor[K, 4] (input pixels), "labels": int64 Tensor[K], "scores":
        Tensor[K]}``, best first."""
        imgs = self._check_images(images)
        checked = (
            check_detection_targets(targets, imgs, self.num_classes, _MODEL)
            if self.training
            else None
        )
        device = imgs[0].device
        original_sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in imgs]
        proposals = self.proposals(imgs)  # in the input images' pixels
        if checked is not None:
            checked = [{k: v.to(device) for k, v in t.items()} for t in checked]
        image_list, checked = self.transform(imgs, checked)
        # Project the proposals into the resized images (the transform scaled the targets).
        proposals = [
            resize_boxes(p.to(device), orig, size)
            for p, orig, size in zip(proposals, original_sizes, image_list.image_sizes, strict=True)
        ]
        features = self.backbone(image_list.tensors)
        if isinstance(features, Tensor):
            features = OrderedDict([("0", features)])
        heads = self.roi_heads
        if self.training:
            assert checked is not None
            rois, labels, reg_targets = heads.select_training_samples(proposals, checked)
            x = heads.box_roi_pool(features, rois, image_list.image_sizes)  # (R, C, 7, 7)
            x = heads.box_head(x)  # (R, D)
            class_logits, box_regression = heads.box_predictor(x)  # (R, C), (R, 4C)
            loss_cls, loss_box = fast_rcnn_loss(
                class_logits, box_regression, labels, reg_targets, self.smooth_l1_beta
            )
            return {"loss_classifier": loss_cls, "loss_box_reg": loss_box}
        detections, _ = heads(features, proposals, image_list.image_sizes)
        return self.transform.postprocess(detections, image_list.image_sizes, original_sizes)


# ------------------------------------------------------------------------------ builders


@register_model(task="detection", family="fast_rcnn", paper=_PAPER, input_size=(3, 64, 64),
                model_class=FastRCNN)  # fmt: skip
def fast_rcnn_resnet18(*, num_classes: int = 21, norm_layer: str = "bn", **kwargs: Any) -> FastRCNN:
    """Fast R-CNN on a ResNet-18 C4 trunk (stride 16, 256 channels), RoI max pooling 7x7,
    fc6/fc7 of 512, images resized to 128 px (for the 64 px ``shapes`` images on a CPU)."""
    name = "fast_rcnn_resnet18"
    backbone = resnet18_c4_backbone(norm_layer=norm_layer, model=name)
    return FastRCNN(backbone, num_classes, **kwargs)


@register_model(task="detection", family="fast_rcnn", paper=_PAPER, input_size=(3, 600, 600),
                model_class=FastRCNN)  # fmt: skip
def fast_rcnn_vgg16(*, num_classes: int = 21, trainable_layers: int = 3, **kwargs: Any) -> FastRCNN:
    """The paper's network (§4.1 "model L"): VGG-16 conv5_3 (stride 16), RoI max pooling 7x7,
    fc6/fc7 of 4096 with dropout 0.5, images resized to 600 (max 1000); conv3_1 and up trained
    (``trainable_layers`` = 3)."""
    name = "fast_rcnn_vgg16"
    backbone = vgg16_conv5_backbone(trainable_layers=trainable_layers, model=name)
    defaults: dict[str, Any] = dict(
        representation_size=4096, dropout=0.5, min_size=600, max_size=1000
    )
    return FastRCNN(backbone, num_classes, **{**defaults, **kwargs})


@register_model(task="detection", family="faster_rcnn", paper="arXiv:1506.01497",
                input_size=(3, 64, 64), model_class=FasterRCNN)  # fmt: skip
def fasterrcnn_resnet18_c4(
    *, num_classes: int = 21, norm_layer: str = "bn", roi_op: str = "pool", **kwargs: Any
) -> FasterRCNN:
    """Faster R-CNN on the same ResNet-18 C4 trunk, RoI head and image size as
    :func:`fast_rcnn_resnet18` (the detection-evolution benchmark's third detector): the RPN
    replaces selective search. One stride-16 map, anchors 16-128 px x 3 ratios (the shapes
    objects are 8-60 px at 64 px, 16-120 px after the resize to 128), 600/300 proposals before/
    after NMS in training and 300/100 in testing, 128 RoIs per image, per-class NMS 0.3 as
    the papers' test setting."""
    name = "fasterrcnn_resnet18_c4"
    check_choice("roi_op", roi_op, ROI_OPS, model=name)
    backbone = resnet18_c4_backbone(norm_layer=norm_layer, model=name)
    defaults: dict[str, Any] = dict(
        min_size=128,
        max_size=1000,
        size_divisible=16,
        anchor_sizes=((16, 32, 64, 128),),
        rpn_pre_nms_top_n_train=600,
        rpn_post_nms_top_n_train=300,
        rpn_pre_nms_top_n_test=300,
        rpn_post_nms_top_n_test=100,
        box_batch_size_per_image=128,
        box_nms_thresh=0.3,
    )
    kwargs = {**defaults, **kwargs}
    _check_levels(kwargs["anchor_sizes"], 1, name)
    pool = RoIPooler(["0"], 7, 2, op=roi_op)
    head = TwoMLPHead(backbone.out_channels * 7 * 7, 512)
    return FasterRCNN(backbone, num_classes, box_roi_pool=pool, box_head=head, **kwargs)
