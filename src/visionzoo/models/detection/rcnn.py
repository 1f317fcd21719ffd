"""R-CNN: Rich feature hierarchies for accurate object detection and semantic segmentation
(Girshick, Donahue, Darrell, Malik, 2014, arXiv:1311.2524).

Detection by classifying region proposals with CNN features, in four separately trained
stages (``RCNN.fit``; the progress output names them):

1. **proposals** — selective search "fast" mode, ~2000 boxes per image (:mod:`.proposals`,
   cached on disk). On the 64 px ``shapes`` images it gives ~55, all of which are used.
2. **fine-tune CNN** — every proposal is *warped with context* (§2.1, App. A): the box is
   dilated so that, at the warped size, ``context_padding`` pixels of the image surround it
   (p = 16 at 227 px in the paper), and the dilated box is anisotropically resized to
   ``warp_size`` x ``warp_size`` (pixels outside the image are the mean, i.e. 0 after
   normalisation). The CNN (a zoo ResNet-18, global-pooled; its ``fc`` is the N + 1-way
   softmax) is trained on the warped regions: IoU >= 0.5 with a ground-truth box is that box's
   class, everything else background; minibatches of 128 = 32 positives + 96 background
   (§2.3 "Domain-specific fine-tuning").
3. **features + SVMs (hard-negative mining)** — the pooled features (fc7 in the paper) of every
   proposal and ground-truth box are computed once and cached on disk (keyed by the image, the
   CNN's weights and the warp settings, so the cache is reused while valid and not read after
   the CNN changes); one linear SVM per class (hinge loss, liblinear as in the paper) with the
   ground-truth boxes as positives and proposals with IoU < 0.3 to every instance of the class
   as negatives, trained by hard-negative mining (§2.3, App. B): start from a random subset of
   negatives, then repeatedly add the highest-scoring negatives that violate the margin
   (score > -1) and drop easy ones (score < -1.2), retraining until none is left (at most
   ``svm_mining_rounds`` passes; the returned SVM is always trained on the final cache).
4. **bbox regression** — per class, ridge regression (lambda = 1000) from the features of
   proposals with IoU > 0.6 to their ground-truth box, targets (App. C)
   ``t_x = (G_x - P_x) / P_w``, ``t_y = (G_y - P_y) / P_h``, ``t_w = log(G_w / P_w)``,
   ``t_h = log(G_h / P_h)`` (centres, widths, heights).

Test time: proposals -> warp -> features -> SVM scores for every class -> class-specific box
regression -> per-class NMS at IoU 0.3 -> the best ``detections_per_img``. Scores are the SVM
margins through a sigmoid (monotone, so AP is unchanged, and 0.5 is the SVM's decision
boundary, which ``predict``'s default threshold then means).

Engine integration: the SVM and regressor weights are buffers (``svm_weight``, ``svm_bias``,
``bbox_weight``, ``bbox_bias``, ``feature_scale``, ``fitted``), so ``state_dict``, checkpoints
and ``visionzoo.load`` carry them. R-CNN is not trained by SGD on one loss, so the training-mode
``forward`` with targets raises a ModelArgumentError pointing at :meth:`RCNN.fit`; the trainer
delegates to :meth:`RCNN.multi_stage_fit` instead (then evaluates and checkpoints as for any
run).

Departures from the paper, also marked where they happen:

* the CNN is a ResNet-18 trained from scratch on the warped regions (the paper fine-tunes an
  ImageNet AlexNet/VGG); its features are the 512-d global average pool (the paper: fc7, 4096-d)
  and box regression uses the same features (the paper: pool5);
* ``warp_size`` is 64 (the paper: 227) and the context padding keeps the paper's proportion
  (16 / 227 of the warp size) unless given;
* features are scaled so that their mean L2 norm is 20 (the released code's ``feat_norm_mean``),
  positive weight 2 and bias multiplier 10 are the released code's, but C = 0.1 (the released
  code: 1e-3): with ~130 positives per class and 512-d features, C = 1e-3 under-fits (shapes,
  400 images: mAP@0.5 0.52 at 1e-3, 0.53 at 1e-2, 0.56 at 0.1, same CNN);
* the box regressor is applied to every scored proposal before NMS (as Fast R-CNN does).

Shape glossary: K proposals of an image, S the warp size, D the feature width, C classes
including background (the SVMs and regressors exist for the C - 1 object classes).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError, ModelArgumentError
from ...ops import batched_nms, box_iou
from ...registry import register_model
from .._checks import check_choice, check_positive_int
from ..classification.resnet import BasicBlock, ResNet
from .faster_rcnn import _check_int, _check_unit
from .proposals import ProposalCache, default_cache_root, image_digest, image_to_uint8_hwc
from .transform import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "RCNN",
    "rcnn_box_targets",
    "rcnn_apply_deltas",
    "warp_regions",
    "context_boxes",
    "mine_hard_negatives",
    "train_linear_svm",
    "fit_ridge",
    "FeatureCache",
    "rcnn_resnet18",
    "STAGES",
]

_PAPER = "arXiv:1311.2524"
_MODEL = "RCNN"
STAGES = (
    "stage 1/4: proposals",
    "stage 2/4: fine-tune CNN",
    "stage 3/4: features + SVMs (hard-negative mining)",
    "stage 4/4: bbox regression",
)
PROPOSAL_MODES = ("fast", "quality", "single")
SCORINGS = ("svm", "softmax")


# ------------------------------------------------------------------------------ box helpers


def _centres(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    return boxes[:, 0] + 0.5 * w, boxes[:, 1] + 0.5 * h, w, h


def rcnn_box_targets(proposals: Tensor, gt: Tensor) -> Tensor:
    """The paper's regression targets (App. C) of ``gt`` Tensor[K, 4] relative to ``proposals``
    Tensor[K, 4] (both xyxy): ``(t_x, t_y, t_w, t_h)`` Tensor[K, 4]."""
    px, py, pw, ph = _centres(proposals)
    gx, gy, gw, gh = _centres(gt)
    return torch.stack(
        ((gx - px) / pw, (gy - py) / ph, torch.log(gw / pw), torch.log(gh / ph)), dim=1
    )


def rcnn_apply_deltas(proposals: Tensor, deltas: Tensor) -> Tensor:
    """Inverse of :func:`rcnn_box_targets`: ``G_x = P_w d_x + P_x``, ``G_w = P_w exp(d_w)``
    (App. C, eq. 1-4) -> xyxy Tensor[K, 4]."""
    px, py, pw, ph = _centres(proposals)
    gx = pw * deltas[:, 0] + px
    gy = ph * deltas[:, 1] + py
    # exp overflow guard (the released code's clip at log(1000 / 16)) for untrained regressors
    gw = pw * torch.exp(deltas[:, 2].clamp(max=math.log(1000.0 / 16)))
    gh = ph * torch.exp(deltas[:, 3].clamp(max=math.log(1000.0 / 16)))
    return torch.stack((gx - 0.5 * gw, gy - 0.5 * gh, gx + 0.5 * gw, gy + 0.5 * gh), dim=1)


def context_boxes(boxes: Tensor, warp_size: int, padding: float) -> Tensor:
    """Dilate each xyxy box so that, warped to ``warp_size``, the original box fills the inner
    ``warp_size - 2 padding`` pixels (the paper's "warp with context", App. A)."""
    inner = warp_size - 2.0 * padding
    w = (boxes[:, 2] - boxes[:, 0]).clamp(min=1e-3)
    h = (boxes[:, 3] - boxes[:, 1]).clamp(min=1e-3)
    pad_x = padding * w / inner  # image pixels per side
    pad_y = padding * h / inner
    return torch.stack(
        (boxes[:, 0] - pad_x, boxes[:, 1] - pad_y, boxes[:, 2] + pad_x, boxes[:, 3] + pad_y), 1
    )


def warp_regions(image: Tensor, boxes: Tensor, warp_size: int, padding: float) -> Tensor:
    """Warp the regions ``boxes`` Tensor[K, 4] of a normalised ``image`` Tensor[3, H, W] with
    context to Tensor[K, 3, S, S] (bilinear; outside the image = 0 = the mean)."""
    k = boxes.shape[0]
    h, w = image.shape[-2:]
    if k == 0:
        return image.new_zeros((0, image.shape[0], warp_size, warp_size))
    ctx = context_boxes(boxes.to(image.dtype), warp_size, padding)
    # Output pixel centres (j + 0.5) / S across the dilated box, in grid_sample's [-1, 1]
    # coordinates where -1 and 1 are the image's outer edges (align_corners=False).
    g = (torch.arange(warp_size, dtype=image.dtype, device=image.device) + 0.5) / warp_size
    xs = ctx[:, 0:1] + g[None] * (ctx[:, 2:3] - ctx[:, 0:1])  # (K, S)
    ys = ctx[:, 1:2] + g[None] * (ctx[:, 3:4] - ctx[:, 1:2])
    u = (2.0 * xs / w - 1.0)[:, None, :].expand(k, warp_size, warp_size)  # (K, S_y, S_x)
    v = (2.0 * ys / h - 1.0)[:, :, None].expand(k, warp_size, warp_size)
    grid = torch.stack((u, v), dim=-1)  # (K, S, S, 2)
    src = image[None].expand(k, -1, -1, -1)
    return F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# ------------------------------------------------------------------------------ SVM / ridge


def mine_hard_negatives(
    scores: Tensor, in_cache: Tensor, max_new: int | None = None, threshold: float = -1.0001
) -> Tensor:
    """Indices of the hard negatives to add to the cache, highest score first: negatives not
    yet in the cache whose SVM score exceeds ``threshold`` (they violate the margin, score >
    -1; the released code's -1.0001), at most ``max_new`` of them.

    ``scores`` Tensor[M] (scores of all negatives), ``in_cache`` bool Tensor[M] -> int64
    Tensor[<= max_new]."""
    candidates = torch.where((scores > threshold) & ~in_cache)[0]
    order = torch.argsort(scores[candidates], descending=True, stable=True)
    picked = candidates[order]
    return picked if max_new is None else picked[:max_new]


def train_linear_svm(
    x: Tensor,
    y: Tensor,
    c: float = 1e-3,
    pos_weight: float = 2.0,
    bias_mult: float = 10.0,
    seed: int = 0,
) -> tuple[Tensor, float]:
    """Linear SVM with hinge loss (liblinear, the paper's solver): ``x`` Tensor[M, D], ``y``
    Tensor[M] in {-1, +1} -> (weight Tensor[D], bias). ``pos_weight`` multiplies C for the
    positives and ``bias_mult`` is the constant feature that carries the (regularised) bias:
    the released code's ``pos_loss_weight = 2`` and ``bias_mult = 10``."""
    from sklearn.svm import LinearSVC

    svm = LinearSVC(
        C=c,
        loss="hinge",
        dual=True,
        class_weight={1: pos_weight, -1: 1.0},
        intercept_scaling=bias_mult,
        max_iter=5000,
        tol=1e-4,
        random_state=seed,
    )
    import warnings

    with warnings.catch_warnings():
        # liblinear may stop at max_iter on separable data: the solution is still usable.
        warnings.simplefilter("ignore")
        svm.fit(x.double().numpy(), y.numpy())
    w = torch.from_numpy(svm.coef_[0].astype(np.float32))
    return w, float(svm.intercept_[0])


def fit_ridge(x: Tensor, t: Tensor, lam: float = 1000.0) -> tuple[Tensor, Tensor]:
    """Ridge regression ``min ||x W + b - t||^2 + lam ||W||^2`` (bias not regularised):
    ``x`` Tensor[M, D], ``t`` Tensor[M, 4] -> (W Tensor[4, D], b Tensor[4])."""
    x64, t64 = x.double(), t.double()
    mx, mt = x64.mean(0), t64.mean(0)
    xc, tc = x64 - mx, t64 - mt
    a = xc.T @ xc + lam * torch.eye(x.shape[1], dtype=torch.float64)
    w = torch.linalg.solve(a, xc.T @ tc)  # (D, 4)
    b = mt - mx @ w
    return w.T.float(), b.float()


# ------------------------------------------------------------------------------ feature cache


class FeatureCache:
    """Per-image CNN features of R-CNN's regions, on disk, as the paper cached them.

    The key of an image is a SHA-1 of its pixels, of its regions (the boxes), of the CNN's
    weights (``weights_digest``) and of the warp settings: a changed CNN (e.g. after more
    fine-tuning) or warp gives new keys, so stale features are never read. Entries are
    ``<root>/<key[:2]>/<key>.pt`` holding a float Tensor[K, D], written atomically.
    ``stats`` counts hits and misses.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_root("rcnn_features")
        self.stats = {"hits": 0, "misses": 0}

    def key(self, image_hwc: np.ndarray, boxes: Tensor, weights_digest: str, settings: str) -> str:
        h = hashlib.sha1(image_digest(image_hwc).encode())
        h.update(boxes.float().contiguous().numpy().tobytes())
        h.update(weights_digest.encode())
        h.update(settings.encode())
        return h.hexdigest()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.pt"

    def get(self, key: str) -> Tensor | None:
        p = self.path(key)
        if not p.is_file():
            return None
        try:
            feats = torch.load(p, weights_only=True)
        except (OSError, RuntimeError, EOFError):
            return None  # a truncated file: recompute
        self.stats["hits"] += 1
        return feats

    def put(self, key: str, feats: Tensor) -> None:
        self.stats["misses"] += 1
        p = self.path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, suffix=".tmp")
        os.close(fd)
        try:
            torch.save(feats.contiguous(), tmp)
            os.replace(tmp, p)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def weights_digest(module: nn.Module) -> str:
    """SHA-1 of a module's parameters and buffers (names, shapes and values)."""
    h = hashlib.sha1()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------ model


def _say(progress: bool | Callable[[str], None], msg: str) -> None:
    if progress is True:
        print(msg, file=sys.stderr, flush=True)
    elif callable(progress):
        progress(msg)


class RCNN(nn.Module):
    """R-CNN: warped proposals -> CNN features -> per-class linear SVMs and box regressors
    (module docstring).

    Args:
        cnn: a zoo classifier with ``forward_features`` and ``forward_head(x, pre_logits)``
            whose head has ``num_classes`` outputs (the fine-tuning softmax, N + 1 way) and
            ``num_features`` pooled features.
        num_classes: classes including the background (label 0).
        warp_size: the side of the warped regions (227 in the paper).
        context_padding: context pixels around the box in the warped frame (None: the paper's
            16 / 227 of ``warp_size``).
        image_mean, image_std: normalisation of [0, 1] images.
        proposal_mode, max_proposals, proposal_cache_dir, proposal_disk_cache: selective search
            and its cache (see :class:`~.proposals.ProposalCache`).
        feature_cache_dir: where stage 3 caches features (None: ``~/.cache/visionzoo/
            rcnn_features``).
        fg_iou_thresh: fine-tuning positives (0.5).
        svm_neg_iou_thresh: SVM negatives have IoU below this with every instance of the
            class (0.3).
        bbox_iou_thresh: box-regression training pairs have IoU above this (0.6).
        svm_c, svm_pos_weight, svm_bias_mult: the SVM's settings (C: see the module docstring).
        ridge_lambda: the box regressor's L2 weight (1000).
        score_thresh: detections with a (sigmoid) score <= this are dropped.
        nms_thresh: per-class NMS IoU (0.3).
        detections_per_img: detections kept per image.
        bbox_regression: apply the box regressors at test time (the paper's "BB" rows).
        scoring: "svm" (the paper) or "softmax" (the fine-tuned N + 1-way classifier, the
            comparison of App. B).
        feature_batch: warped regions per CNN call when extracting features.
    """

    def __init__(
        self,
        cnn: nn.Module,
        num_classes: int,
        *,
        warp_size: int = 64,
        context_padding: float | None = None,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        proposal_mode: str = "fast",
        max_proposals: int | None = 2000,
        proposal_cache_dir: str | None = None,
        proposal_disk_cache: bool = True,
        feature_cache_dir: str | None = None,
        fg_iou_thresh: float = 0.5,
        svm_neg_iou_thresh: float = 0.3,
        bbox_iou_thresh: float = 0.6,
        svm_c: float = 0.1,
        svm_pos_weight: float = 2.0,
        svm_bias_mult: float = 10.0,
        ridge_lambda: float = 1000.0,
        score_thresh: float = 0.01,
        nms_thresh: float = 0.3,
        detections_per_img: int = 100,
        bbox_regression: bool = True,
        scoring: str = "svm",
        feature_batch: int = 256,
    ) -> None:
        super().__init__()
        _check_int("num_classes (background included)", num_classes, lo=2, model=_MODEL)
        check_positive_int("warp_size", warp_size, model=_MODEL)
        check_positive_int("detections_per_img", detections_per_img, model=_MODEL)
        check_positive_int("feature_batch", feature_batch, model=_MODEL)
        check_choice("proposal_mode", proposal_mode, PROPOSAL_MODES, model=_MODEL)
        check_choice("scoring", scoring, SCORINGS, model=_MODEL)
        if max_proposals is not None:
            check_positive_int("max_proposals", max_proposals, model=_MODEL)
        padding = 16.0 * warp_size / 227.0 if context_padding is None else context_padding
        if not isinstance(padding, (int, float)) or not 0 <= padding < warp_size / 2:
            raise ModelArgumentError(
                f"{_MODEL}: context_padding must be a number in [0, warp_size / 2 = "
                f"{warp_size / 2}), got {context_padding!r}"
            )
        for name, value in (
            ("fg_iou_thresh", fg_iou_thresh),
            ("svm_neg_iou_thresh", svm_neg_iou_thresh),
            ("bbox_iou_thresh", bbox_iou_thresh),
            ("score_thresh", score_thresh),
            ("nms_thresh", nms_thresh),
        ):
            _check_unit(name, value, model=_MODEL)
        for name, value in (
            ("svm_c", svm_c),
            ("svm_pos_weight", svm_pos_weight),
            ("svm_bias_mult", svm_bias_mult),
            ("ridge_lambda", ridge_lambda),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ModelArgumentError(
                    f"{_MODEL}: {name} must be a positive number, got {value!r}"
                )
        if not (hasattr(cnn, "forward_features") and hasattr(cnn, "forward_head")):
            raise ModelArgumentError(
                f"{_MODEL}: cnn must be a zoo classifier with forward_features / forward_head"
            )
        self.cnn = cnn
        self.num_classes = num_classes
        self.warp_size = int(warp_size)
        self.context_padding = float(padding)
        self.image_mean = tuple(float(m) for m in image_mean)
        self.image_std = tuple(float(s) for s in image_std)
        self.fg_iou_thresh = float(fg_iou_thresh)
        self.svm_neg_iou_thresh = float(svm_neg_iou_thresh)
        self.bbox_iou_thresh = float(bbox_iou_thresh)
        self.svm_c = float(svm_c)
        self.svm_pos_weight = float(svm_pos_weight)
        self.svm_bias_mult = float(svm_bias_mult)
        self.ridge_lambda = float(ridge_lambda)
        self.score_thresh = float(score_thresh)
        self.nms_thresh = float(nms_thresh)
        self.detections_per_img = int(detections_per_img)
        self.bbox_regression = bool(bbox_regression)
        self.scoring = scoring
        self.feature_batch = int(feature_batch)
        d = int(getattr(cnn, "num_features", 512))
        c = num_classes - 1
        # Stage 3 and 4 results: buffers, so checkpoints and visionzoo.load carry them.
        self.register_buffer("feature_scale", torch.ones(()))
        self.register_buffer("svm_weight", torch.zeros(c, d))
        self.register_buffer("svm_bias", torch.zeros(c))
        self.register_buffer("bbox_weight", torch.zeros(c, 4, d))
        self.register_buffer("bbox_bias", torch.zeros(c, 4))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.proposal_cache = ProposalCache(
            proposal_mode, max_proposals, root=proposal_cache_dir, disk=proposal_disk_cache
        )
        self.feature_cache = FeatureCache(feature_cache_dir)

    # ------------------------------------------------------------------------------ pieces

    def extra_repr(self) -> str:
        return (
            f"warp_size={self.warp_size}, context_padding={self.context_padding:.2f}, "
            f"nms_thresh={self.nms_thresh}, bbox_regression={self.bbox_regression}"
        )

    def _normalise(self, image: Tensor) -> Tensor:
        x = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
        mean = torch.as_tensor(self.image_mean, dtype=x.dtype, device=x.device)[:, None, None]
        std = torch.as_tensor(self.image_std, dtype=x.dtype, device=x.device)[:, None, None]
        return (x - mean) / std

    def warp(self, image: Tensor, boxes: Tensor) -> Tensor:
        """Warped, normalised regions of a uint8 or [0, 1] image: Tensor[K, 3, S, S]."""
        return warp_regions(self._normalise(image), boxes, self.warp_size, self.context_padding)

    def _warp_settings(self) -> str:
        return json.dumps(
            [self.warp_size, self.context_padding, self.image_mean, self.image_std, "v1"]
        )

    @torch.no_grad()
    def region_features(self, image: Tensor, boxes: Tensor) -> Tensor:
        """Pooled CNN features (unscaled) of the regions: Tensor[K, D]. Runs the CNN in eval
        mode; batches of ``feature_batch`` regions."""
        was_training = self.cnn.training
        self.cnn.eval()
        try:
            out = []
            for lo in range(0, boxes.shape[0], self.feature_batch):
                crops = self.warp(image, boxes[lo : lo + self.feature_batch])
                x = self.cnn.forward_features(crops)
                out.append(self.cnn.forward_head(x, pre_logits=True))
            if not out:
                d = self.svm_weight.shape[1]
                return torch.zeros((0, d), device=image.device)
            return torch.cat(out)
        finally:
            self.cnn.train(was_training)

    def cached_features(self, image: Tensor, boxes: Tensor, digest: str | None = None) -> Tensor:
        """:meth:`region_features` through the on-disk :class:`FeatureCache` (``digest``: the
        CNN's :func:`weights_digest`, computed when not given)."""
        digest = digest or weights_digest(self.cnn)
        key = self.feature_cache.key(
            image_to_uint8_hwc(image), boxes.cpu(), digest, self._warp_settings()
        )
        feats = self.feature_cache.get(key)
        if feats is None:
            feats = self.region_features(image, boxes).cpu()
            self.feature_cache.put(key, feats)
        return feats.to(image.device)

    def score_and_regress(self, feats: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
        """Scores in [0, 1] Tensor[K, C-1] (see ``scoring``) and per-class regressed boxes Tensor[K, C-1, 4] of
        regions with unscaled features ``feats`` Tensor[K, D] and boxes Tensor[K, 4]."""
        f = feats * self.feature_scale
        if self.scoring == "svm":
            # The margin through a sigmoid: monotone (AP unchanged), 0.5 = the SVM boundary.
            scores = torch.sigmoid(f @ self.svm_weight.T + self.svm_bias)  # (K, C-1)
        else:  # the fine-tuned softmax (App. B's comparison)
            scores = F.softmax(self.cnn.fc(feats), dim=1)[:, 1:]
        k, c = scores.shape
        if not self.bbox_regression:
            return scores, boxes[:, None, :].expand(k, c, 4)
        deltas = torch.einsum("kd,cjd->kcj", f, self.bbox_weight) + self.bbox_bias  # (K, C-1, 4)
        reg = rcnn_apply_deltas(
            boxes[:, None, :].expand(k, c, 4).reshape(-1, 4), deltas.reshape(-1, 4)
        )
        return scores, reg.reshape(k, c, 4)

    # ------------------------------------------------------------------------------ forward

    def forward(
        self, images: list[Tensor] | Tensor, targets: list[dict[str, Tensor]] | None = None
    ) -> list[dict[str, Tensor]]:
        """Evaluation: per image ``{"boxes": Tensor[K, 4], "labels": int64 Tensor[K],
        "scores": Tensor[K]}`` (sigmoid of the SVM margin), best first. R-CNN has no training
        forward: train it with :meth:`fit` (or ``visionzoo train rcnn_resnet18``)."""
        if self.training and targets is not None:
            raise ModelArgumentError(
                f"{_MODEL}: R-CNN is trained in stages (fine-tuning, SVMs with hard-negative "
                "mining, box regression), not by a loss from forward(images, targets): call "
                "model.fit(dataset) or `visionzoo train rcnn_resnet18 data=...` (the trainer "
                "calls model.multi_stage_fit)"
            )
        if isinstance(images, Tensor) and images.dim() == 4:
            images = list(images.unbind(0))
        if not isinstance(images, (list, tuple)) or not images:
            raise ModelArgumentError(
                f"{_MODEL}: images must be a non-empty list of Tensor[3, H, W]"
            )
        out = []
        for image in images:
            if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3:
                shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
                raise ModelArgumentError(
                    f"{_MODEL}: each image must be Tensor[3, H, W], got {shape}"
                )
            boxes = self.proposal_cache(image).to(image.device)
            if boxes.shape[0] == 0:
                out.append(self._empty(image.device))
                continue
            feats = self.region_features(image, boxes)
            scores, reg = self.score_and_regress(feats, boxes)
            out.append(self._postprocess(scores, reg, image.shape[-2:]))
        return out

    def _empty(self, device: torch.device) -> dict[str, Tensor]:
        return {
            "boxes": torch.zeros((0, 4), device=device),
            "labels": torch.zeros(0, dtype=torch.int64, device=device),
            "scores": torch.zeros(0, device=device),
        }

    def _postprocess(
        self, margins: Tensor, boxes: Tensor, size: Sequence[int]
    ) -> dict[str, Tensor]:
        k, c = margins.shape
        h, w = int(size[0]), int(size[1])
        boxes = torch.stack(
            (
                boxes[..., 0].clamp(0, w),
                boxes[..., 1].clamp(0, h),
                boxes[..., 2].clamp(0, w),
                boxes[..., 3].clamp(0, h),
            ),
            dim=-1,
        ).reshape(-1, 4)  # (K*(C-1), 4)
        scores = margins.reshape(-1)
        labels = torch.arange(1, c + 1, device=margins.device).repeat(k)
        ok = (scores > self.score_thresh) & (boxes[:, 2] - boxes[:, 0] > 1e-2)
        ok &= boxes[:, 3] - boxes[:, 1] > 1e-2
        idx = torch.where(ok)[0]
        keep = batched_nms(boxes[idx], scores[idx], labels[idx], self.nms_thresh)
        keep = idx[keep[: self.detections_per_img]]
        return {"boxes": boxes[keep], "labels": labels[keep], "scores": scores[keep]}

    # ------------------------------------------------------------------------------ training

    def fit(
        self,
        dataset: Any,
        *,
        finetune_iters: int = 600,
        finetune_lr: float = 0.02,
        finetune_batch: int = 128,
        finetune_positive_fraction: float = 0.25,
        weight_decay: float = 5e-4,
        svm_first_negatives: int = 2000,
        svm_mining_rounds: int = 4,
        svm_max_new_negatives: int = 4000,
        svm_evict_thresh: float = -1.2,
        finetune: bool = True,
        seed: int = 0,
        progress: bool | Callable[[str], None] = True,
        log: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Train the four stages on ``dataset`` (items ``(image uint8 Tensor[3, H, W], target
        dict with "boxes" and "labels")``; "ignore" boxes are dropped) and return timings and
        counts per stage. ``finetune=False`` skips stage 2 (e.g. to retrain the SVMs and
        regressors with other settings from the cached features). ``progress``: print the stage names (True), call a function with
        each line, or stay silent (False)."""
        check_positive_int("finetune_iters", finetune_iters, model=_MODEL)
        check_positive_int("finetune_batch", finetune_batch, model=_MODEL)
        device = self.svm_weight.device
        gen = torch.Generator().manual_seed(seed)
        report: dict[str, Any] = {}

        # -- stage 1: proposals (cached) and region labels --------------------------------
        _say(progress, STAGES[0])
        t0 = time.perf_counter()
        images: list[Tensor] = []
        gts: list[Tensor] = []
        gt_labels: list[Tensor] = []
        props: list[Tensor] = []
        misses0, secs0 = self.proposal_cache.stats["misses"], self.proposal_cache.stats["seconds"]
        for i in range(len(dataset)):
            sample = dataset[i]  # one draw: a random flip must hit the image and its boxes
            image, target = sample[0], sample[1]
            boxes = target["boxes"].as_subclass(Tensor).float().reshape(-1, 4)
            labels = target["labels"].as_subclass(Tensor).long().reshape(-1)
            ignore = target.get("ignore")
            if ignore is not None and ignore.numel():
                boxes, labels = boxes[~ignore.bool()], labels[~ignore.bool()]
            if labels.numel() and (int(labels.min()) < 1 or int(labels.max()) >= self.num_classes):
                raise ConfigError(
                    f"{_MODEL}.fit: sample {i} has labels {labels.tolist()}; valid: 1.."
                    f"{self.num_classes - 1} (num_classes includes the background)"
                )
            images.append(image)
            gts.append(boxes)
            gt_labels.append(labels)
            props.append(self.proposal_cache(image))
        if not images:
            raise ConfigError(f"{_MODEL}.fit: the dataset is empty")
        n_props = sum(p.shape[0] for p in props)
        report["proposals"] = {
            "images": len(images),
            "per_image": n_props / len(images),
            "computed": self.proposal_cache.stats["misses"] - misses0,
            "search_seconds": self.proposal_cache.stats["seconds"] - secs0,
            "seconds": time.perf_counter() - t0,
        }
        _say(progress, f"  {len(images)} images, {n_props / len(images):.1f} proposals/image")

        # Regions of each image: proposals + ground truth; their best IoU and class.
        regions, region_iou, region_cls = [], [], []
        for p, g, lab in zip(props, gts, gt_labels, strict=True):
            r = torch.cat([p, g])
            if g.shape[0]:
                iou = box_iou(r, g)  # (K+M, M)
                best, arg = iou.max(dim=1)
                cls = lab[arg]
            else:
                best = torch.zeros(r.shape[0])
                cls = torch.zeros(r.shape[0], dtype=torch.int64)
            regions.append(r)
            region_iou.append(best)
            region_cls.append(cls)

        # -- stage 2: fine-tune the CNN on warped regions ---------------------------------
        _say(progress, STAGES[1] + ("" if finetune else " (skipped: finetune=False)"))
        t0 = time.perf_counter()
        if finetune:
            report["finetune"] = self._finetune(
                images, regions, region_iou, region_cls, finetune_iters, finetune_lr,
                finetune_batch, finetune_positive_fraction, weight_decay, gen, progress, log,
            )  # fmt: skip
        self.cnn.eval()

        # -- stage 3: features (cached) + SVMs with hard-negative mining -------------------
        _say(progress, STAGES[2])
        t0 = time.perf_counter()
        digest = weights_digest(self.cnn)
        hits0, misses0 = self.feature_cache.stats["hits"], self.feature_cache.stats["misses"]
        feats = [
            self.cached_features(images[i].to(device), regions[i].to(device), digest).cpu()
            for i in range(len(images))
        ]
        t_feat = time.perf_counter() - t0
        all_feats = torch.cat(feats)  # (sum K_i + M_i, D)
        # The released code scales features to a mean L2 norm of 20 (SVM C was set for that).
        scale = 20.0 / all_feats.norm(dim=1).mean().clamp(min=1e-12)
        self.feature_scale.fill_(float(scale))
        all_feats = all_feats * scale
        is_gt = torch.cat(
            [
                torch.cat([torch.zeros(p.shape[0], dtype=torch.bool),
                           torch.ones(g.shape[0], dtype=torch.bool)])
                for p, g in zip(props, gts, strict=True)
            ]
        )  # fmt: skip
        # Per region: the IoU with the closest instance of each class -> (R, C-1).
        c1 = self.num_classes - 1
        iou_cls = torch.zeros(all_feats.shape[0], c1)
        row = 0
        for r, g, lab in zip(regions, gts, gt_labels, strict=True):
            if g.shape[0]:
                iou = box_iou(r, g)  # (K, M)
                for j in range(g.shape[0]):  # M is small: a few boxes per image
                    col = int(lab[j]) - 1
                    iou_cls[row : row + r.shape[0], col] = torch.maximum(
                        iou_cls[row : row + r.shape[0], col], iou[:, j]
                    )
            row += r.shape[0]
        gt_cls = torch.cat(region_cls)
        svm_stats = []
        for c in range(c1):
            pos = torch.where(is_gt & (gt_cls == c + 1))[0]
            negs = torch.where(~is_gt & (iou_cls[:, c] < self.svm_neg_iou_thresh))[0]
            if pos.numel() == 0 or negs.numel() == 0:
                svm_stats.append({"class": c + 1, "positives": int(pos.numel()), "rounds": 0})
                continue
            in_cache = torch.zeros(negs.numel(), dtype=torch.bool)
            first = torch.randperm(negs.numel(), generator=gen)[:svm_first_negatives]
            in_cache[first] = True
            # Train, mine, repeat; the last SVM is always trained on the final cache (with
            # the last mined negatives), after at most svm_mining_rounds mining passes.
            rounds, converged = 0, False
            while True:
                rounds += 1
                cached = negs[in_cache]
                x = torch.cat([all_feats[pos], all_feats[cached]])
                y = torch.cat([torch.ones(pos.numel()), -torch.ones(cached.numel())]).long()
                w, b = train_linear_svm(
                    x, y, self.svm_c, self.svm_pos_weight, self.svm_bias_mult, seed=seed
                )
                if rounds > svm_mining_rounds:
                    break
                neg_scores = all_feats[negs] @ w + b
                # Drop easy negatives from the cache, then add the hardest new ones.
                in_cache &= ~(neg_scores < svm_evict_thresh)
                new = mine_hard_negatives(neg_scores, in_cache, svm_max_new_negatives)
                if new.numel() == 0:
                    converged = True
                    break
                in_cache[new] = True
            self.svm_weight[c] = w.to(device)
            self.svm_bias[c] = b
            svm_stats.append(
                {"class": c + 1, "positives": int(pos.numel()), "negatives": int(negs.numel()),
                 "cached_negatives": int(in_cache.sum()), "rounds": rounds,
                 "converged": converged}
            )  # fmt: skip
        report["svm"] = {
            "feature_seconds": t_feat,
            "feature_cache_hits": self.feature_cache.stats["hits"] - hits0,
            "feature_cache_misses": self.feature_cache.stats["misses"] - misses0,
            "classes": svm_stats,
            "seconds": time.perf_counter() - t0,
        }
        _say(
            progress,
            f"  features: {t_feat:.1f} s ({report['svm']['feature_cache_hits']} images from "
            "the cache); SVMs trained",
        )

        # -- stage 4: class-specific bbox regression ---------------------------------------
        _say(progress, STAGES[3])
        t0 = time.perf_counter()
        prop_rows = torch.where(~is_gt)[0]
        all_boxes = torch.cat(regions)
        # Each proposal's best ground truth (over all classes) and its box.
        best_gt_box = torch.zeros(all_boxes.shape[0], 4)
        row = 0
        for r, g in zip(regions, gts, strict=True):
            if g.shape[0]:
                best_gt_box[row : row + r.shape[0]] = g[box_iou(r, g).argmax(dim=1)]
            row += r.shape[0]
        ious_all = torch.cat(region_iou)
        reg_counts = []
        for c in range(c1):
            sel = prop_rows[
                (gt_cls[prop_rows] == c + 1) & (ious_all[prop_rows] > self.bbox_iou_thresh)
            ]
            reg_counts.append(int(sel.numel()))
            if sel.numel() == 0:
                continue
            t = rcnn_box_targets(all_boxes[sel], best_gt_box[sel])
            wt, bt = fit_ridge(all_feats[sel], t, self.ridge_lambda)
            self.bbox_weight[c] = wt.to(device)
            self.bbox_bias[c] = bt.to(device)
        report["bbox_regression"] = {"pairs": reg_counts, "seconds": time.perf_counter() - t0}
        self.fitted.fill_(True)
        return report

    def _finetune(self, images, regions, region_iou, region_cls, finetune_iters, finetune_lr,
                  finetune_batch, finetune_positive_fraction, weight_decay, gen, progress,
                  log) -> dict[str, Any]:  # fmt: skip
        """Stage 2: SGD on warped regions (see :meth:`fit`)."""
        device = self.svm_weight.device
        t0 = time.perf_counter()
        img_idx = torch.cat([torch.full((r.shape[0],), i) for i, r in enumerate(regions)])
        reg_idx = torch.cat([torch.arange(r.shape[0]) for r in regions])
        ious, classes = torch.cat(region_iou), torch.cat(region_cls)
        # IoU >= 0.5: that box's class; everything else: background (§2.3).
        ft_labels = torch.where(ious >= self.fg_iou_thresh, classes, torch.zeros_like(classes))
        pos_all = torch.where(ft_labels > 0)[0]
        neg_all = torch.where(ft_labels == 0)[0]
        n_pos = min(int(round(finetune_batch * finetune_positive_fraction)), pos_all.numel())
        n_neg = min(finetune_batch - n_pos, neg_all.numel())
        params = [p for p in self.cnn.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=finetune_lr, momentum=0.9, weight_decay=weight_decay)
        warm = max(1, finetune_iters // 20)

        def lr_at(it: int) -> float:  # linear warm-up then cosine (from-scratch training)
            if it < warm:
                return finetune_lr * (it + 1) / warm
            return (
                0.5
                * finetune_lr
                * (1 + math.cos(math.pi * (it - warm) / max(1, finetune_iters - warm)))
            )

        self.cnn.train()
        running = 0.0
        for it in range(finetune_iters):
            for group in opt.param_groups:
                group["lr"] = lr_at(it)
            pick = torch.cat(
                [
                    pos_all[torch.randint(pos_all.numel(), (n_pos,), generator=gen)]
                    if n_pos
                    else pos_all[:0],
                    neg_all[torch.randint(neg_all.numel(), (n_neg,), generator=gen)]
                    if n_neg
                    else neg_all[:0],
                ]
            )
            crops, labels = [], []
            for i in torch.unique(img_idx[pick]).tolist():
                sel = pick[img_idx[pick] == i]
                boxes = regions[i][reg_idx[sel]].to(device)
                crops.append(self.warp(images[i].to(device), boxes))
                labels.append(ft_labels[sel])
            x = torch.cat(crops)
            y = torch.cat(labels).to(device)
            flip = torch.rand(x.shape[0], generator=gen) < 0.5  # mirrored regions (App. A-like)
            x = torch.where(flip.to(device)[:, None, None, None], x.flip(-1), x)
            logits = self.cnn(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            lv = float(loss.detach())
            running = 0.9 * running + 0.1 * lv if it else lv
            if log is not None and ((it + 1) % 20 == 0 or it + 1 == finetune_iters):
                log({"step": it + 1, "train/loss": running, "train/lr": lr_at(it)})
            if (it + 1) % max(1, finetune_iters // 10) == 0:
                _say(progress, f"  iter {it + 1}/{finetune_iters} loss {running:.4f}")
        self.cnn.eval()
        return {
            "iters": finetune_iters,
            "positives": int(pos_all.numel()),
            "negatives": int(neg_all.numel()),
            "final_loss": running,
            "seconds": time.perf_counter() - t0,
        }

    def multi_stage_fit(self, bundle: Any, cfg: Any, run_dir: Any) -> dict[str, Any]:
        """The trainer's entry point (engine hook): :meth:`fit` on ``bundle.train`` with the
        fine-tuning length from the run config: ``cfg.trainer.epochs`` passes over the
        fine-tuning positives (32 per iteration), capped by ``cfg.trainer.max_steps``;
        ``optim.lr`` is the fine-tuning learning rate; ``trainer.seed`` seeds sampling. The
        stage report is written to ``<run_dir>/rcnn_stages.json``."""
        t = cfg.trainer
        # A first pass over the proposals to size an "epoch" would compute them twice; the
        # number of positives is about the number of ground-truth boxes times a small factor,
        # so an epoch is defined on the images instead: one iteration per 2 training images.
        iters = max(1, t.epochs * math.ceil(len(bundle.train) / 2))
        if t.max_steps:
            iters = min(iters, int(t.max_steps))
        report = self.fit(
            bundle.train,
            finetune_iters=iters,
            finetune_lr=float(cfg.optim.lr),
            seed=int(t.seed),
            progress=bool(t.progress),
        )
        path = Path(run_dir) / "rcnn_stages.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2, default=float))
        return report


# ------------------------------------------------------------------------------ builders


@register_model(task="detection", family="rcnn", paper=_PAPER, input_size=(3, 64, 64),
                model_class=RCNN)  # fmt: skip
def rcnn_resnet18(*, num_classes: int = 21, **kwargs: Any) -> RCNN:
    """R-CNN with a ResNet-18 CNN (global-pooled 512-d features; its ``fc`` is the N + 1-way
    fine-tuning classifier), regions warped to 64 px with proportional context padding."""
    cnn = ResNet(BasicBlock, (2, 2, 2, 2), num_classes)
    return RCNN(cnn, num_classes, **kwargs)
