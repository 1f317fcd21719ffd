"""Object detection: Faster R-CNN (arXiv:1506.01497) split like the paper.

anchors.py (anchor generator), box_coder.py (box coder, matcher, balanced sampler), rpn.py
(Region Proposal Network), roi_heads.py (RoI pooling, box heads, Fast R-CNN head),
transform.py (normalise / resize / pad), backbones.py (VGG-16, ResNet-50-C4, ResNet-50-FPN,
MobileNet v2 + FPN, FrozenBatchNorm2d), faster_rcnn.py (the model and its builders).
"""

from . import fast_rcnn, faster_rcnn, rcnn  # noqa: F401  (registers the builders)
from .anchors import AnchorGenerator
from .backbones import FeaturePyramidNetwork, FrozenBatchNorm2d, freeze_batchnorm
from .box_coder import BalancedPositiveNegativeSampler, BoxCoder, Matcher
from .faster_rcnn import (
    FasterRCNN,
    fasterrcnn_mobilenet_v2,
    fasterrcnn_resnet50_c4,
    fasterrcnn_resnet50_fpn,
    fasterrcnn_vgg16,
)
from .roi_heads import FastRCNNPredictor, ResNetC5Head, RoIHeads, RoIPooler, TwoMLPHead
from .rpn import RegionProposalNetwork, RPNHead
from .transform import DetectionTransform, ImageList

__all__ = [
    "AnchorGenerator",
    "BalancedPositiveNegativeSampler",
    "BoxCoder",
    "DetectionTransform",
    "FastRCNNPredictor",
    "FasterRCNN",
    "FeaturePyramidNetwork",
    "FrozenBatchNorm2d",
    "ImageList",
    "Matcher",
    "RPNHead",
    "RegionProposalNetwork",
    "ResNetC5Head",
    "RoIHeads",
    "RoIPooler",
    "TwoMLPHead",
    "fasterrcnn_mobilenet_v2",
    "fasterrcnn_resnet50_c4",
    "fasterrcnn_resnet50_fpn",
    "fasterrcnn_vgg16",
    "freeze_batchnorm",
]
