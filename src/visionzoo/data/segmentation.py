"""Build a semantic-segmentation DataBundle from ``data.*`` config keys.

``data.name`` picks the source:

=============  ===============================================================================
name           source
=============  ===============================================================================
``shapes``     built-in generator: class 0 is background, class ``i + 1`` is shape ``i``
               (``data.num_classes`` selects the first k shapes, so there are k + 1 classes)
``segfolder``  ``data.root`` with ``{train,val}/images`` + ``{train,val}/masks`` PNGs
               (:mod:`visionzoo.data.formats.segfolder`); class names from
               ``root/classes.txt`` or ``data.num_classes`` (background included)
``voc``        Pascal VOC 2012 under ``data.root`` (21 classes, 255 on borders)
=============  ===============================================================================

Joint transforms (torchvision.transforms.v2 with ``tv_tensors.Mask``, so every geometric
operation moves the mask with the image and masks are resampled nearest-neighbour):

- train, ``data.augment=light`` (default): ``RandomResizedCrop(S, scale, ratio)`` then
  ``RandomHorizontalFlip`` when ``data.hflip``; ``scale`` is (0.5, 1) for files and (0.7, 1)
  for ``shapes`` (whose shapes are small: a 35 % crop can leave little but background), and
  ``shapes`` crops are square (an aspect change turns a circle into an ellipse, a square into a
  rectangle: another class, or none, under an unchanged mask).
- train, ``data.augment=none``, and validation: ``Resize((S, S))``. Metrics are computed at
  this network resolution; ``predict`` upsamples its logits back to each image's own size.
- ``trivialaugment`` / ``randaugment`` are refused: their geometric operations move the image
  but not the mask.

Images stay ``uint8 [3, S, S]`` and masks become ``int64 [S, S]`` (class indices, or the
ignore value 255); the task normalises on the device.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..errors import ConfigError, did_you_mean
from .bundle import DataBundle
from .transforms import ToUint8RGB

if TYPE_CHECKING:
    from ..engine.config import DataConfig

__all__ = [
    "SEGMENTATION_DATASETS",
    "JointTransform",
    "build_segmentation_data",
    "segmentation_eval_transform",
    "segmentation_train_transform",
]

SEGMENTATION_DATASETS = ("shapes", "segfolder", "voc")
SEG_AUGMENT = ("none", "light")
FILE_CROP_SCALE = (0.5, 1.0)
BUILTIN_CROP_SCALE = (0.7, 1.0)


class JointTransform(nn.Module):
    """``(image, mask) -> (uint8 [3, S, S], int64 [S, S])`` through a v2 pipeline.

    The image may be a PIL image or a uint8 tensor; the mask a tensor, NumPy array or None
    (then only the image is returned: what ``predict`` needs)."""

    def __init__(self, ops: list[nn.Module]) -> None:
        super().__init__()
        self.to_uint8 = ToUint8RGB()  # PIL image (any mode) or uint8 tensor -> uint8 [3, H, W]
        self.ops = v2.Compose(ops)

    def forward(self, image: Any, mask: Any = None) -> Any:
        img = tv_tensors.Image(self.to_uint8(image))
        if mask is None:
            return self.ops(img).as_subclass(Tensor)
        m = tv_tensors.Mask(torch.as_tensor(mask))
        img, m = self.ops(img, m)
        return img.as_subclass(Tensor), m.as_subclass(Tensor).long()

    def __repr__(self) -> str:
        return f"JointTransform({self.ops!r})"


def _size(cfg: DataConfig) -> int:
    s = cfg.image_size
    if not isinstance(s, int) or isinstance(s, bool) or s < 1:
        raise ConfigError(f"data.image_size must be a positive integer, got {s!r}")
    return s


def segmentation_train_transform(
    cfg: DataConfig,
    crop_scale: tuple[float, float] = FILE_CROP_SCALE,
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> JointTransform:
    """The train-time joint pipeline (module docstring)."""
    size = _size(cfg)
    if cfg.augment not in SEG_AUGMENT:
        raise ConfigError(
            f"data.augment={cfg.augment!r} is not available for segmentation"
            f"{did_you_mean(str(cfg.augment), SEG_AUGMENT)}; valid: {', '.join(SEG_AUGMENT)} "
            "(TrivialAugment/RandAugment would move the image's pixels but not the mask's)"
        )
    if cfg.augment == "none":
        return JointTransform([v2.Resize((size, size), antialias=True)])
    ops: list[nn.Module] = [
        v2.RandomResizedCrop(size, scale=tuple(crop_scale), ratio=tuple(crop_ratio), antialias=True)
    ]
    if cfg.hflip:
        ops.append(v2.RandomHorizontalFlip())
    return JointTransform(ops)


def segmentation_eval_transform(cfg: DataConfig) -> JointTransform:
    """``Resize((S, S))`` for image and mask (nearest for the mask)."""
    size = _size(cfg)
    return JointTransform([v2.Resize((size, size), antialias=True)])


def build_segmentation_data(cfg: DataConfig, ignore_index: int | None = 255) -> DataBundle:
    """Datasets, joint transforms and class names for ``cfg.name`` (module docstring).

    Raises:
        ConfigError: unknown ``data.name`` (with did-you-mean), ``data.root`` missing, a bad
            ``data.augment`` / ``data.image_size``, or a class count the data contradicts.
        DataError: files missing, unreadable or inconsistent (naming the path).
    """
    from .classification import _check_positive, _check_stats

    name = cfg.name
    if name not in SEGMENTATION_DATASETS:
        raise ConfigError(
            f"data.name={name!r} is not a segmentation data set"
            f"{did_you_mean(str(name), SEGMENTATION_DATASETS)}; valid: "
            f"{', '.join(SEGMENTATION_DATASETS)}"
        )
    mean, std = _check_stats(cfg)
    val_tf = segmentation_eval_transform(cfg)
    skipped: dict[str, int] = {}
    if name == "shapes":
        from .shapes import ShapesDataset

        # Square crops only: stretching turns a circle into an ellipse and a square into a
        # rectangle, i.e. into another class (or none) while the mask keeps the old label.
        train_tf = segmentation_train_transform(cfg, BUILTIN_CROP_SCALE, (1.0, 1.0))
        common: dict[str, Any] = dict(
            image_size=cfg.image_size, num_classes=cfg.num_classes, seed=cfg.seed
        )
        train = ShapesDataset(
            "train",
            _check_positive(cfg, "train_size"),
            task="segmentation",
            transform=train_tf,
            **common,
        )
        val = ShapesDataset(
            "val", _check_positive(cfg, "val_size"), task="segmentation", transform=val_tf, **common
        )
        class_names = ["background", *train.classes]
    else:
        if not cfg.root:
            raise ConfigError(
                f"data.root is required for data.name={name}: "
                + (
                    "the folder holding train/ and val/ (each with images/ and masks/)"
                    if name == "segfolder"
                    else "the folder holding VOCdevkit/VOC2012 (or VOC2012 itself)"
                )
            )
        train_tf = segmentation_train_transform(cfg, FILE_CROP_SCALE)
        if name == "segfolder":
            from .formats.segfolder import SegmentationFolderDataset

            kw: dict[str, Any] = dict(
                num_classes=cfg.num_classes, ignore_index=ignore_index, skip_bad=cfg.skip_bad
            )
            train = SegmentationFolderDataset(cfg.root, "train", transform=train_tf, **kw)
            val = SegmentationFolderDataset(cfg.root, "val", transform=val_tf, **kw)
        else:
            from .formats.segfolder import VOCSegmentationDataset

            if cfg.num_classes not in (None, 21):
                raise ConfigError(
                    f"data.num_classes={cfg.num_classes} but Pascal VOC has 21 classes "
                    "(background included); leave it unset"
                )
            train = VOCSegmentationDataset(
                cfg.root, "train", transform=train_tf, skip_bad=cfg.skip_bad
            )
            val = VOCSegmentationDataset(cfg.root, "val", transform=val_tf, skip_bad=cfg.skip_bad)
        class_names = list(train.classes)
        if cfg.skip_bad:
            skipped = {"train": train.skipped, "val": val.skipped}
    return DataBundle(
        train=train,
        val=val,
        num_classes=len(class_names),
        class_names=class_names,
        mean=mean,
        std=std,
        eval_transform=val_tf,
        skipped=skipped,
    )
