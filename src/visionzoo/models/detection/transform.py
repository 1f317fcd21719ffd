"""The image transform in front of Faster R-CNN (arXiv:1506.01497, §3.3 "Implementation Details").

The paper re-scales each image so that its shorter side is s = 600 pixels (capped so that the
longer side is at most 1000); torchvision's FPN models use 800 / 1333. The transform

1. normalises a float image in [0, 1] with the ImageNet mean and standard deviation (the paper's
   Caffe models subtract a BGR pixel mean instead: a departure that matches the torchvision
   ImageNet backbones);
2. resizes it by ``min(min_size / shorter side, max_size / longer side)`` with bilinear
   interpolation (``min_size`` may be a sequence: training then draws one per image, the
   multi-scale training of the paper's §3.3 / SPP-net, with torch's RNG as torchvision does);
3. scales the target boxes by the same factors;
4. pads the batch with zeros at the bottom/right to a common size divisible by
   ``size_divisible`` (32, so every FPN level has an integer size);

and :meth:`DetectionTransform.postprocess` maps predicted boxes back to the original image size.
The arithmetic is torchvision's ``GeneralizedRCNNTransform``'s, for parity.

Shape glossary: N images, C channels, H x W an image's size, K boxes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ImageList", "DetectionTransform", "resize_boxes", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageList(NamedTuple):
    """A padded batch and the size of each image inside it before padding."""

    tensors: Tensor  # (N, C, H_pad, W_pad)
    image_sizes: list[tuple[int, int]]  # (h, w) of each resized image


def resize_boxes(boxes: Tensor, original_size: Sequence[int], new_size: Sequence[int]) -> Tensor:
    """Scale xyxy ``boxes`` Tensor[K, 4] from an image of ``original_size`` (h, w) to
    ``new_size``."""
    ratio_h, ratio_w = (
        torch.tensor(s, dtype=torch.float32, device=boxes.device)
        / torch.tensor(s0, dtype=torch.float32, device=boxes.device)
        for s, s0 in zip(new_size, original_size, strict=True)
    )
    x1, y1, x2, y2 = boxes.unbind(1)
    return torch.stack((x1 * ratio_w, y1 * ratio_h, x2 * ratio_w, y2 * ratio_h), dim=1)


class DetectionTransform(nn.Module):
    """Normalise, resize and batch images (and their target boxes) for the detector.

    Args:
        min_size: target length of the shorter side; a sequence draws one per image in training
            (the largest is used in evaluation).
        max_size: cap on the longer side.
        image_mean, image_std: per-channel normalisation of [0, 1] images.
        size_divisible: the padded batch's height and width are multiples of this.
    """

    def __init__(
        self,
        min_size: int | Sequence[int],
        max_size: int,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        size_divisible: int = 32,
    ) -> None:
        super().__init__()
        self.min_size = (int(min_size),) if isinstance(min_size, int) else tuple(map(int, min_size))
        self.max_size = int(max_size)
        self.image_mean = tuple(float(m) for m in image_mean)
        self.image_std = tuple(float(s) for s in image_std)
        self.size_divisible = int(size_divisible)

    def extra_repr(self) -> str:
        return (
            f"min_size={self.min_size}, max_size={self.max_size}, mean={self.image_mean}, "
            f"std={self.image_std}, size_divisible={self.size_divisible}"
        )

    def normalize(self, image: Tensor) -> Tensor:
        mean = torch.as_tensor(self.image_mean, dtype=image.dtype, device=image.device)
        std = torch.as_tensor(self.image_std, dtype=image.dtype, device=image.device)
        return (image - mean[:, None, None]) / std[:, None, None]

    def _pick_min_size(self) -> int:
        if not self.training:
            return self.min_size[-1]
        # torch's RNG (not Python's) so that seeding torch fixes the scales, as in torchvision;
        # drawn even for a single size, which keeps the random stream aligned with torchvision's.
        index = int(torch.empty(1).uniform_(0.0, float(len(self.min_size))).item())
        return self.min_size[index]

    def resize(self, image: Tensor, min_size: int) -> Tensor:
        """Tensor[C, H, W] -> Tensor[C, H', W'] with the shorter side ``min_size`` (or the longer
        side ``max_size``)."""
        h, w = image.shape[-2:]
        scale = min(min_size / min(h, w), self.max_size / max(h, w))
        return F.interpolate(
            image[None],
            scale_factor=scale,
            mode="bilinear",
            recompute_scale_factor=True,
            align_corners=False,
        )[0]

    def batch_images(self, images: Sequence[Tensor]) -> Tensor:
        """Zero-pad images to a common size divisible by ``size_divisible`` -> Tensor[N, C, H, W]."""
        c = max(int(img.shape[0]) for img in images)
        stride = float(self.size_divisible)
        h = int(math.ceil(max(int(img.shape[1]) for img in images) / stride) * stride)
        w = int(math.ceil(max(int(img.shape[2]) for img in images) / stride) * stride)
        batch = images[0].new_zeros((len(images), c, h, w))
        for i, img in enumerate(images):
            batch[i, : img.shape[0], : img.shape[1], : img.shape[2]].copy_(img)
        return batch

    def forward(
        self, images: Sequence[Tensor], targets: Sequence[dict[str, Tensor]] | None = None
    ) -> tuple[ImageList, list[dict[str, Tensor]] | None]:
        """Images Tensor[C, H, W] in [0, 1] (and targets with xyxy "boxes") -> a padded batch
        and the targets with boxes in the resized images' coordinates (other keys kept)."""
        resized, new_targets = [], None if targets is None else []
        for i, image in enumerate(images):
            out = self.resize(self.normalize(image), self._pick_min_size())
            resized.append(out)
            if targets is not None:
                target = dict(targets[i])  # shallow copy: the caller's dict is left untouched
                target["boxes"] = resize_boxes(target["boxes"], image.shape[-2:], out.shape[-2:])
                new_targets.append(target)
        sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in resized]
        return ImageList(self.batch_images(resized), sizes), new_targets

    def postprocess(
        self,
        detections: list[dict[str, Tensor]],
        image_sizes: Sequence[tuple[int, int]],
        original_sizes: Sequence[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        """Map each detection's boxes from the resized image back to the original one."""
        for det, size, original in zip(detections, image_sizes, original_sizes, strict=True):
            det["boxes"] = resize_boxes(det["boxes"], size, original)
        return detections
