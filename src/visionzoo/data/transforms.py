"""Classification transforms on torchvision.transforms.v2: uint8 in, uint8 out.

Datasets yield ``uint8`` tensors ``[3, H, W]``; the float conversion and normalisation happen
on the device as the last step (:func:`normalize`), so workers move a quarter of the bytes and
the CPU never touches float pixels. Every pipeline starts with :class:`ToUint8RGB`, which
accepts a Pillow image of any mode (through :func:`visionzoo.data.images.to_rgb`) or a uint8
tensor with 1, 2, 3 or 4 channels, and gives ``uint8 [3, H, W]``.

Presets (``data.augment``), with ``S = data.image_size``:

- ``none``: ``Resize(S)`` (shorter side) + ``CenterCrop(S)``, the same as evaluation.
- ``light``: ``RandomResizedCrop(S, scale=crop_scale)`` + ``RandomHorizontalFlip`` when
  ``data.hflip``. ``crop_scale`` is (0.35, 1) by default; the builder passes a milder one for
  the built-in data sets, whose objects are small relative to the image.
- ``trivialaugment``: ``light`` + ``TrivialAugmentWide`` (arXiv:2103.10158).
- ``randaugment``: ``light`` + ``RandAugment`` (arXiv:1909.13719; 2 ops, magnitude 9).

Evaluation: ``Resize(S)`` + ``CenterCrop(S)``. The ImageNet habit of resizing to ``S / 0.875``
before the crop is deliberately not used: it is tuned for 224-pixel photos and would cut the
edges off the small built-in images, whose train images are not cropped that way either.

Batch-level MixUp (arXiv:1710.09412) and CutMix (arXiv:1905.04899) come from
:func:`batch_mix` and are applied by the task to float batches on the device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from torch import Tensor, nn
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from ..errors import ConfigError, did_you_mean
from .images import to_rgb

if TYPE_CHECKING:  # the data layer does not import the engine at run time
    from ..engine.config import DataConfig

__all__ = [
    "AUGMENT_PRESETS",
    "DEFAULT_CROP_SCALE",
    "ToUint8RGB",
    "train_transform",
    "eval_transform",
    "BatchMix",
    "batch_mix",
    "normalize",
]

AUGMENT_PRESETS = ("none", "light", "trivialaugment", "randaugment")
DEFAULT_CROP_SCALE = (0.35, 1.0)


class ToUint8RGB(nn.Module):
    """Pillow image (any mode) or uint8 tensor ``[C, H, W]`` / ``[H, W]`` -> uint8 ``[3, H, W]``.

    Tensor channels: 1 (grey) is replicated, 2 (grey + alpha) keeps the grey, 4 drops alpha,
    the same rules as :func:`visionzoo.data.images.to_rgb` for Pillow images.
    """

    def forward(self, img: Any) -> Tensor:
        if isinstance(img, Image.Image):
            return TF.pil_to_tensor(to_rgb(img))
        if not isinstance(img, Tensor):
            raise TypeError(f"expected a PIL image or a uint8 tensor, got {type(img).__name__}")
        x = img.as_subclass(Tensor)  # tv_tensors.Image -> plain tensor
        if x.dtype != torch.uint8:
            raise TypeError(f"expected a uint8 image tensor, got dtype {x.dtype}")
        if x.dim() == 2:
            x = x.unsqueeze(0)
        if x.dim() != 3 or x.shape[0] not in (1, 2, 3, 4):
            raise TypeError(
                f"expected an image tensor [C, H, W] with C in 1..4, got {tuple(x.shape)}"
            )
        c = x.shape[0]
        if c in (1, 2):
            x = x[:1].expand(3, -1, -1)
        elif c == 4:
            x = x[:3]
        return x.contiguous()


def _check_size(cfg: DataConfig) -> int:
    size = cfg.image_size
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ConfigError(f"data.image_size must be a positive integer, got {size!r}")
    return size


def _check_augment(cfg: DataConfig) -> str:
    if cfg.augment not in AUGMENT_PRESETS:
        raise ConfigError(
            f"data.augment={cfg.augment!r} is not a preset{did_you_mean(str(cfg.augment), AUGMENT_PRESETS)};"
            f" valid values: {', '.join(AUGMENT_PRESETS)}"
        )
    return cfg.augment


def train_transform(
    cfg: DataConfig,
    *,
    crop_scale: tuple[float, float] = DEFAULT_CROP_SCALE,
    hflip: bool | None = None,
) -> v2.Compose:
    """The train-time pipeline of preset ``cfg.augment`` (module docstring).

    ``crop_scale`` is RandomResizedCrop's area range for the augmenting presets; ``hflip``
    overrides ``cfg.hflip`` (the builder turns flips off for digits, where a mirrored glyph is
    another glyph or none).

    Raises:
        ConfigError: ``data.augment`` is not a preset, or ``data.image_size`` is not positive.
    """
    size = _check_size(cfg)
    augment = _check_augment(cfg)
    flip = cfg.hflip if hflip is None else hflip
    steps: list[Callable[[Any], Any]] = [ToUint8RGB()]
    if augment == "none":
        steps += [v2.Resize(size, antialias=True), v2.CenterCrop(size)]
        return v2.Compose(steps)
    steps.append(v2.RandomResizedCrop(size, scale=tuple(crop_scale), antialias=True))
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    if augment == "trivialaugment":
        steps.append(v2.TrivialAugmentWide())
    elif augment == "randaugment":
        steps.append(v2.RandAugment(num_ops=2, magnitude=9))
    return v2.Compose(steps)


def eval_transform(cfg: DataConfig) -> v2.Compose:
    """``Resize(S)`` (shorter side) + ``CenterCrop(S)``: PIL image or uint8 tensor -> uint8
    ``[3, S, S]``. Used for the validation set and by ``predict``."""
    size = _check_size(cfg)
    return v2.Compose([ToUint8RGB(), v2.Resize(size, antialias=True), v2.CenterCrop(size)])


class BatchMix:
    """``(images float [N, 3, H, W], labels int [N]) -> (mixed images, soft labels [N, K])``.

    Wraps v2.MixUp / v2.CutMix (one picked at random per batch when both are on). Pairs are
    consecutive samples, so the batch must come from a shuffled loader. Apply it after
    :func:`normalize`: mixing needs float pixels.
    """

    def __init__(self, op: Callable[..., Any], num_classes: int):
        self.op = op
        self.num_classes = num_classes

    def __call__(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        if not images.is_floating_point():
            raise TypeError(
                f"batch mixing needs float images (apply normalize() first), got {images.dtype}"
            )
        return self.op(images, labels)

    def __repr__(self) -> str:
        return f"BatchMix({self.op!r}, num_classes={self.num_classes})"


def batch_mix(cfg: DataConfig, num_classes: int) -> BatchMix | None:
    """MixUp (``data.mixup_alpha``) and/or CutMix (``data.cutmix_alpha``), or None when both
    alphas are 0.

    Raises:
        ConfigError: a negative alpha.
    """
    ops: list[Callable[..., Any]] = []
    for key, cls in (("mixup_alpha", v2.MixUp), ("cutmix_alpha", v2.CutMix)):
        alpha = float(getattr(cfg, key))
        if alpha < 0:
            raise ConfigError(f"data.{key} must be >= 0 (0 turns it off), got {alpha}")
        if alpha > 0:
            ops.append(cls(alpha=alpha, num_classes=num_classes))
    if not ops:
        return None
    return BatchMix(ops[0] if len(ops) == 1 else v2.RandomChoice(ops), num_classes)


def normalize(
    images: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """uint8 images ``[..., 3, H, W]`` -> ``(x / 255 - mean) / std`` in ``dtype``.

    Runs on the tensor's device and keeps its memory format (channels_last stays
    channels_last): one copy for the dtype change, then in-place arithmetic.
    """
    if images.dtype != torch.uint8:
        raise TypeError(f"normalize expects uint8 images, got {images.dtype}")
    x = images.to(dtype).div_(255)  # .to() keeps the memory format
    m = torch.as_tensor(mean, dtype=dtype, device=x.device).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=dtype, device=x.device).view(-1, 1, 1)
    return x.sub_(m).div_(s)
