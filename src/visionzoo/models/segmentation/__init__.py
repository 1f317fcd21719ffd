"""Semantic segmentation models: U-Net and DeepLab v1/v2/v3."""

from . import deeplab, unet  # noqa: F401
