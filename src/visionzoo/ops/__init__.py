"""Detection operators with torchvision.ops' signatures and semantics, in vectorised PyTorch.

``box_convert``, ``box_area``, ``box_iou``, ``generalized_box_iou``, ``clip_boxes_to_image``,
``remove_small_boxes``, ``nms``, ``batched_nms`` (boxes.py), ``roi_pool`` (roi_pool.py) and
``roi_align`` (roi_align.py). See docs/ops.md for the semantics and the measured speed.
``selective_search`` (selective_search.py, numpy in and out) proposes object boxes for R-CNN
and Fast R-CNN; it imports scikit-image only when called (docs/selective_search.md).
"""

from .boxes import (
    batched_nms,
    box_area,
    box_convert,
    box_iou,
    clip_boxes_to_image,
    generalized_box_iou,
    nms,
    remove_small_boxes,
)
from .roi_align import RoIAlign, roi_align
from .roi_pool import RoIPool, roi_pool
from .selective_search import selective_search  # numpy only at import; scikit-image on call

__all__ = [
    "box_convert",
    "box_area",
    "box_iou",
    "generalized_box_iou",
    "nms",
    "batched_nms",
    "roi_pool",
    "roi_align",
    "clip_boxes_to_image",
    "remove_small_boxes",
    "RoIPool",
    "RoIAlign",
    "selective_search",
]
