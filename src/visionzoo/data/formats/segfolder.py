"""Semantic-segmentation data on disk: image + mask folders, and Pascal VOC 2012.

Image + mask folders (``data.name=segfolder``)::

    root/
      classes.txt            optional: one class name per line, line i names class i
      train/
        images/  a.jpg  b.png  sub/c.jpg ...
        masks/   a.png  b.png  sub/c.png ...   same relative path and stem, PNG
      val/
        images/ ...
        masks/ ...

Pascal VOC 2012 (``data.name=voc``), as the official archive unpacks: ``root`` is the
``VOC2012`` folder itself, or a folder holding ``VOCdevkit/VOC2012`` or ``VOC2012``, with
``JPEGImages/``, ``SegmentationClass/`` and ``ImageSets/Segmentation/{train,val}.txt``. The 21
classes are VOC's (background + 20 objects) and its palette masks use 255 on object borders.

Masks are single-channel PNGs whose pixel *values are class indices*: 8-bit grey (``L``),
palette (``P``: the index is the class, whatever colour the palette shows — how VOC and most
annotation tools save them), 1-bit, or 16-bit grey. Pixels equal to ``ignore_index`` (255) are
left out of the loss and the metrics. An RGB mask whose three channels differ is refused: its
colours would need a colour-to-class table, and guessing one silently mislabels pixels.

Checked, with an error naming the file (:class:`~visionzoo.errors.DataError`):

- an image without a mask (at construction, listing the first few),
- a mask whose size differs from its image's,
- mask values outside ``[0, num_classes)`` other than ``ignore_index`` (listing them),
- unreadable images or masks. With ``skip_bad=True`` pairs whose image or mask cannot be read
  are dropped at construction and counted in ``skipped`` instead.

Size and value checks run when a sample is read (before any transform), so a bad mask stops
training at the step that meets it, naming the file, rather than corrupting the loss.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ...errors import ConfigError, DataError
from ..images import load_image, verify_image
from .imagefolder import list_images
from .voc import VOC_CLASSES as VOC_OBJECT_CLASSES

__all__ = [
    "VOC_CLASSES",
    "SegmentationFolderDataset",
    "VOCSegmentationDataset",
    "read_mask",
    "read_class_names",
    "find_voc_root",
]

log = logging.getLogger(__name__)

SPLITS = ("train", "val")

# Background, then the 20 object classes in the order the detection XML reader uses.
VOC_CLASSES = ("background", *VOC_OBJECT_CLASSES)

_MAX_LISTED = 5  # offending files / values named in one message


def read_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """A mask PNG -> ``int64 [H, W]`` class indices (see the module docstring for the modes).

    Raises:
        DataError: naming ``path``: missing, unreadable, or a colour mask.
    """
    p = Path(path)
    try:
        with open(p, "rb") as f:
            img = Image.open(f)
            img.load()
    except FileNotFoundError:
        raise DataError(f"{p}: mask file not found") from None
    except Exception as e:  # Pillow raises many types on bad data
        raise DataError(f"{p}: unreadable mask ({type(e).__name__}: {e})") from None
    mode = img.mode
    if mode in ("P", "L", "1", "I", "I;16", "I;16B", "I;16L", "I;16N"):
        # Palette images give their indices, not the colours the palette shows.
        arr = np.asarray(img)
    elif mode in ("LA", "PA"):
        arr = np.asarray(img)[..., 0]
    elif mode in ("RGB", "RGBA"):
        rgb = np.asarray(img)[..., :3]
        if not ((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()):
            raise DataError(
                f"{p}: colour (RGB) mask; masks must hold class indices: save it as a "
                "single-channel (grey) or palette PNG whose pixel values are the classes"
            )
        arr = rgb[..., 0]
    else:
        raise DataError(f"{p}: mask mode {mode!r} is not a class-index image (use L or P PNGs)")
    return arr.astype(np.int64)


def read_class_names(path: str | os.PathLike[str]) -> list[str]:
    """Class names, one per non-empty line of a text file (line i names class i)."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise DataError(f"{p}: cannot read class names ({e})") from None
    names = [ln.strip() for ln in lines if ln.strip()]
    if not names:
        raise DataError(f"{p}: no class names (expected one name per line)")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise DataError(f"{p}: class names repeat: {', '.join(dup)}")
    return names


def _check_pair(image: Image.Image, mask: np.ndarray, image_path: Path, mask_path: Path) -> None:
    if mask.shape != (image.height, image.width):
        raise DataError(
            f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image "
            f"{image_path} is {image.width}x{image.height}; a mask must match its image pixel "
            "for pixel"
        )


def _check_values(mask: np.ndarray, num_classes: int, ignore_index: int | None, path: Path) -> None:
    bad = mask >= num_classes
    bad |= mask < 0
    if ignore_index is not None:
        bad &= mask != ignore_index
    if bad.any():
        values = np.unique(mask[bad])
        shown = ", ".join(str(int(v)) for v in values[:_MAX_LISTED])
        more = f" and {len(values) - _MAX_LISTED} more" if len(values) > _MAX_LISTED else ""
        ign = f" or the ignore value {ignore_index}" if ignore_index is not None else ""
        raise DataError(
            f"{path}: mask values {shown}{more} are not classes: valid values are "
            f"0..{num_classes - 1}{ign}"
        )


class _MaskPairs(Dataset):
    """(image file, mask file) pairs -> ``transform(tv Image uint8 [3, H, W], tv Mask int64
    [H, W])``; the pair is read and checked first (module docstring)."""

    def __init__(
        self,
        pairs: Sequence[tuple[Path, Path]],
        classes: Sequence[str],
        *,
        ignore_index: int | None,
        transform: Callable[..., Any] | None,
        skip_bad: bool,
    ) -> None:
        self.classes = list(classes)
        self.ignore_index = ignore_index
        self.transform = transform
        self.skipped = 0
        pairs = list(pairs)
        if skip_bad:
            pairs = self._drop_unreadable(pairs)
        self.pairs = pairs

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def _drop_unreadable(self, pairs: list[tuple[Path, Path]]) -> list[tuple[Path, Path]]:
        def bad(pair: tuple[Path, Path]) -> str | None:
            reason = verify_image(pair[0])
            if reason is None:
                try:
                    read_mask(pair[1])
                except DataError as e:
                    reason = str(e)
            return reason

        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            reasons = list(pool.map(bad, pairs))
        kept = [p for p, r in zip(pairs, reasons, strict=True) if r is None]
        for r in reasons:
            if r is not None:
                log.warning("skipping %s", r)
        self.skipped = len(pairs) - len(kept)
        return kept

    def __len__(self) -> int:
        return len(self.pairs)

    def read(self, index: int) -> tuple[Image.Image, np.ndarray]:
        """The checked (RGB image, int64 mask [H, W]) of sample ``index``, untransformed."""
        image_path, mask_path = self.pairs[index]
        image = load_image(image_path)
        mask = read_mask(mask_path)
        _check_pair(image, mask, image_path, mask_path)
        _check_values(mask, self.num_classes, self.ignore_index, mask_path)
        return image, mask

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        from torchvision import tv_tensors
        from torchvision.transforms.v2 import functional as TF

        image, mask = self.read(index)
        img_t = tv_tensors.Image(TF.pil_to_tensor(image))
        mask_t = tv_tensors.Mask(torch.from_numpy(mask))
        if self.transform is not None:
            img_t, mask_t = self.transform(img_t, mask_t)
        return img_t.as_subclass(torch.Tensor), mask_t.as_subclass(torch.Tensor)


def _missing_error(missing: list[tuple[Path, Path]], where: Path) -> DataError:
    shown = "; ".join(f"{img} (expected {m})" for img, m in missing[:_MAX_LISTED])
    more = f" and {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
    return DataError(f"{len(missing)} image(s) in {where} have no mask: {shown}{more}")


class SegmentationFolderDataset(_MaskPairs):
    """``root/<split>/images`` + ``root/<split>/masks`` (module docstring).

    Args:
        root: the data root.
        split: ``"train"`` or ``"val"``.
        num_classes: number of classes; None reads them from ``root/classes.txt``. When both
            are given they must agree.
        ignore_index: mask value left out of loss and metrics (None: every value is a class).
        transform: joint transform ``(tv Image, tv Mask) -> (image, mask)``.
        skip_bad: drop unreadable pairs (counted in ``skipped``) instead of failing on them.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        *,
        num_classes: int | None = None,
        ignore_index: int | None = 255,
        transform: Callable[..., Any] | None = None,
        skip_bad: bool = False,
    ) -> None:
        if split not in SPLITS:
            raise DataError(f"segfolder: split must be one of {', '.join(SPLITS)}, got {split!r}")
        root_p = Path(root)
        if not root_p.is_dir():
            raise DataError(f"segfolder: data root {str(root_p)!r} is not a folder")
        image_dir, mask_dir = root_p / split / "images", root_p / split / "masks"
        for d in (image_dir, mask_dir):
            if not d.is_dir():
                raise DataError(
                    f"segfolder: {d} is missing; expected {root_p}/{split}/images/ and "
                    f"{root_p}/{split}/masks/ (see docs/segmentation.md)"
                )
        classes = _resolve_classes(root_p, num_classes)
        images = [Path(f) for f in list_images(image_dir)]
        if not images:
            raise DataError(f"segfolder: {image_dir} holds no images")
        pairs, missing = [], []
        for img in images:
            mask = mask_dir / img.relative_to(image_dir).with_suffix(".png")
            (pairs if mask.is_file() else missing).append((img, mask))
        if missing:
            raise _missing_error(missing, image_dir)
        super().__init__(
            pairs, classes, ignore_index=ignore_index, transform=transform, skip_bad=skip_bad
        )


def _resolve_classes(root: Path, num_classes: int | None) -> list[str]:
    names_file = root / "classes.txt"
    if names_file.is_file():
        names = read_class_names(names_file)
        if num_classes is not None and num_classes != len(names):
            raise ConfigError(
                f"data.num_classes={num_classes} but {names_file} names {len(names)} classes"
            )
        return names
    if num_classes is None:
        raise ConfigError(
            f"segfolder: set data.num_classes (background included) or write {names_file} "
            "with one class name per line"
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"data.num_classes must be an integer >= 2, got {num_classes!r}")
    return [f"class{i}" for i in range(num_classes)]


def find_voc_root(root: str | os.PathLike[str]) -> Path:
    """The ``VOC2012`` folder under ``root`` (module docstring), or a DataError naming what
    was looked for."""
    base = Path(root)
    for cand in (base, base / "VOCdevkit" / "VOC2012", base / "VOC2012"):
        if (cand / "JPEGImages").is_dir() and (cand / "SegmentationClass").is_dir():
            return cand
    raise DataError(
        f"voc: no Pascal VOC 2012 folder under {str(base)!r}: expected JPEGImages/ and "
        "SegmentationClass/ in it, in VOCdevkit/VOC2012/ or in VOC2012/ (nothing is "
        "downloaded; unpack VOCtrainval_11-May-2012.tar there)"
    )


class VOCSegmentationDataset(_MaskPairs):
    """Pascal VOC 2012 semantic segmentation, ``ImageSets/Segmentation/<split>.txt``
    (module docstring). 21 classes; 255 marks object borders (ignored)."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        *,
        transform: Callable[..., Any] | None = None,
        skip_bad: bool = False,
    ) -> None:
        if split not in SPLITS:
            raise DataError(f"voc: split must be one of {', '.join(SPLITS)}, got {split!r}")
        voc = find_voc_root(root)
        list_file = voc / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not list_file.is_file():
            raise DataError(f"voc: split list {list_file} not found")
        ids = [ln.strip() for ln in list_file.read_text().splitlines() if ln.strip()]
        if not ids:
            raise DataError(f"voc: split list {list_file} is empty")
        pairs, missing = [], []
        for i in ids:
            if "/" in i or "\\" in i or i.startswith("."):
                raise DataError(f"voc: {list_file}: image id {i!r} is not a plain file name")
            img = voc / "JPEGImages" / f"{i}.jpg"
            mask = voc / "SegmentationClass" / f"{i}.png"
            if not img.is_file():
                raise DataError(f"voc: {list_file} lists {i!r} but {img} does not exist")
            (pairs if mask.is_file() else missing).append((img, mask))
        if missing:
            raise _missing_error(missing, voc / "JPEGImages")
        super().__init__(
            pairs, VOC_CLASSES, ignore_index=255, transform=transform, skip_bad=skip_bad
        )
