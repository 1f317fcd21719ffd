"""Build a classification DataBundle from ``data.*`` config keys.

``data.name`` picks the source:

=================  ===========================================================================
name               source
=================  ===========================================================================
``shapes``         built-in generator (``data.train_size``, ``data.val_size``, ``data.seed``,
                   ``data.num_classes`` = the first k shape classes, ``data.image_size``)
``digits``         scikit-learn's 8x8 handwritten digits, fixed 1437/360 split
``imagefolder``    ``data.root`` with ``train/<class>/`` and ``val/<class>/`` folders
``cifar10``,       torchvision data sets already on disk under ``data.root`` (default
``cifar100``,      ``data``); ``data.download=true`` fetches them
``mnist``,
``fashionmnist``
=================  ===========================================================================

The train split gets :func:`~visionzoo.data.transforms.train_transform`, the validation split
:func:`~visionzoo.data.transforms.eval_transform`. Choices made per source:

- ``shapes`` and ``digits``: the ``light`` preset crops with scale (0.7, 1) instead of
  (0.35, 1). A shape may fill a small part of its 64-pixel image and a digit is 8x8 pixels, so
  a 35 % crop can cut out the very thing that carries the label.
- ``digits`` and ``mnist``: horizontal flips stay off whatever ``data.hflip`` says (a mirrored
  2, 3, 4, 5, 7 or 9 is not that digit).
- ``data.num_classes`` selects shape classes for ``shapes``; for every other source the class
  count comes from the data, and a different ``data.num_classes`` is a ConfigError.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, did_you_mean
from .bundle import DataBundle
from .transforms import DEFAULT_CROP_SCALE, eval_transform, train_transform

if TYPE_CHECKING:
    from ..engine.config import DataConfig

__all__ = ["CLASSIFICATION_DATASETS", "build_classification_data"]

CLASSIFICATION_DATASETS = (
    "shapes",
    "digits",
    "imagefolder",
    "cifar10",
    "cifar100",
    "mnist",
    "fashionmnist",
)

# RandomResizedCrop area range of the light preset for the built-in data (module docstring).
BUILTIN_CROP_SCALE = (0.7, 1.0)
_NO_HFLIP = ("digits", "mnist")


def _check_stats(cfg: DataConfig) -> tuple[tuple[float, float, float], tuple[float, ...]]:
    out = []
    for key in ("mean", "std"):
        v = list(getattr(cfg, key))
        if len(v) != 3:
            raise ConfigError(f"data.{key} needs 3 values (R, G, B in 0-1 units), got {v}")
        if key == "std" and any(s <= 0 for s in v):
            raise ConfigError(f"data.std values must be > 0, got {v}")
        out.append(tuple(float(x) for x in v))
    return out[0], out[1]  # type: ignore[return-value]


def _check_positive(cfg: DataConfig, key: str) -> int:
    v = getattr(cfg, key)
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ConfigError(f"data.{key} must be a positive integer, got {v!r}")
    return v


def _shapes(cfg: DataConfig, train_tf: Any, val_tf: Any) -> tuple[Any, Any, dict[str, int]]:
    from .shapes import ShapesDataset

    _check_positive(cfg, "train_size")
    _check_positive(cfg, "val_size")
    common = dict(
        image_size=cfg.image_size,
        num_classes=cfg.num_classes,
        seed=cfg.seed,
        task="classification",
    )
    train = ShapesDataset(split="train", size=cfg.train_size, transform=train_tf, **common)
    val = ShapesDataset(split="val", size=cfg.val_size, transform=val_tf, **common)
    return train, val, {}


def _digits(cfg: DataConfig, train_tf: Any, val_tf: Any) -> tuple[Any, Any, dict[str, int]]:
    from .digits import DigitsDataset

    return DigitsDataset("train", transform=train_tf), DigitsDataset("val", transform=val_tf), {}


def _imagefolder(cfg: DataConfig, train_tf: Any, val_tf: Any) -> tuple[Any, Any, dict[str, int]]:
    from .formats.imagefolder import ImageFolderDataset

    if not cfg.root:
        raise ConfigError(
            "data.root is required for data.name=imagefolder: the folder that holds train/ and "
            "val/ (one subfolder per class in each)"
        )
    train = ImageFolderDataset(cfg.root, "train", transform=train_tf, skip_bad=cfg.skip_bad)
    val = ImageFolderDataset(cfg.root, "val", transform=val_tf, skip_bad=cfg.skip_bad)
    skipped = {"train": train.skipped, "val": val.skipped} if cfg.skip_bad else {}
    return train, val, skipped


def _torchvision(cfg: DataConfig, train_tf: Any, val_tf: Any) -> tuple[Any, Any, dict[str, int]]:
    from .formats.torchvision_datasets import TorchvisionClassification

    kw = dict(root=cfg.root, download=cfg.download)
    train = TorchvisionClassification(cfg.name, split="train", transform=train_tf, **kw)
    val = TorchvisionClassification(cfg.name, split="val", transform=val_tf, **kw)
    return train, val, {}


_BUILDERS = {
    "shapes": _shapes,
    "digits": _digits,
    "imagefolder": _imagefolder,
    "cifar10": _torchvision,
    "cifar100": _torchvision,
    "mnist": _torchvision,
    "fashionmnist": _torchvision,
}


def build_classification_data(cfg: DataConfig) -> DataBundle:
    """Datasets, transforms and class names for ``cfg.name`` (module docstring).

    Raises:
        ConfigError: unknown ``data.name`` (with did-you-mean), ``data.root`` missing for
            imagefolder, a bad ``data.augment`` / ``data.image_size`` / ``data.mean`` /
            ``data.std``, or a ``data.num_classes`` the data does not have.
        DataError: files missing, unreadable or inconsistent (naming the path).
    """
    name = cfg.name
    if name not in _BUILDERS:
        raise ConfigError(
            f"data.name={name!r} is not a classification data set{did_you_mean(str(name), _BUILDERS)};"
            f" valid: {', '.join(CLASSIFICATION_DATASETS)}"
        )
    mean, std = _check_stats(cfg)
    builtin = name in ("shapes", "digits")
    train_tf = train_transform(
        cfg,
        crop_scale=BUILTIN_CROP_SCALE if builtin else DEFAULT_CROP_SCALE,
        hflip=False if name in _NO_HFLIP else None,
    )
    val_tf = eval_transform(cfg)
    train, val, skipped = _BUILDERS[name](cfg, train_tf, val_tf)
    class_names = [str(c) for c in train.classes]
    if name != "shapes" and cfg.num_classes is not None and cfg.num_classes != len(class_names):
        raise ConfigError(
            f"data.num_classes={cfg.num_classes} but {name} has {len(class_names)} classes; "
            "leave data.num_classes unset (it selects a subset of classes only for shapes)"
        )
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
