"""Object-detection data: samples, transforms, box checks and the ``data.*`` builder.

``data.name`` picks the source:

=========  ================================================================================
name       source
=========  ================================================================================
``shapes`` built-in generator: every visible shape is a box (``data.train_size``,
           ``data.val_size``, ``data.seed``, ``data.num_classes`` = the first k shape classes,
           ``data.image_size``)
``coco``   COCO JSON under ``data.root`` (:mod:`visionzoo.data.formats.coco`)
``voc``    Pascal VOC XML under ``data.root`` (:mod:`visionzoo.data.formats.voc`)
=========  ================================================================================

A sample is ``(image uint8 Tensor[3, H, W], target)`` with ``target`` a dict of plain tensors:

- ``boxes`` float32 ``[K, 4]``: ``(x1, y1, x2, y2)`` in continuous pixel coordinates of this
  image (the image spans ``[0, W] x [0, H]``); ``K`` may be 0 (an image without objects).
- ``labels`` int64 ``[K]``: class index + 1, in ``1..C`` (0 is the background, torchvision's
  convention).
- ``ignore`` bool ``[K]``: boxes that neither train nor count in evaluation (COCO ``iscrowd``,
  VOC ``difficult``). The task drops them from the model's training targets; the metrics treat
  a detection matched to them as neither right nor wrong.
- ``iscrowd`` bool ``[K]``: the COCO crowd boxes among the ignored ones (COCO's metric matches
  them by intersection over the detection's area).
- ``image_id`` int64 ``[]``: the index of the sample in its split (the metrics use it to drop
  the duplicates a distributed sampler pads with).

:func:`collate_detection` batches samples as ``(list[image], list[target])``: images differ in
size, and the detection models take lists (DESIGN.md §3).

Images stay ``uint8`` to the end of the pipeline. The detection models normalise inside
themselves (torchvision's convention), so the task only divides by 255.

**Transforms** (``torchvision.transforms.v2``, so the boxes follow the image), ``data.augment``:

- ``none``: nothing.
- ``light`` (default): ``RandomHorizontalFlip`` when ``data.hflip`` (torchvision's detection
  reference recipe, "hflip").
- ``photometric``: ``light`` + ``RandomPhotometricDistort`` (SSD's brightness, contrast,
  saturation, hue jitter and channel swap, each with probability 0.5).

The classification presets ``trivialaugment`` / ``randaugment`` are refused (ConfigError).
``SanitizeBoundingBoxes`` runs after the geometric steps, so a box a future crop or flip makes
degenerate is dropped together with its label and flags. Evaluation and ``predict`` only
convert the image to ``uint8 [3, H, W]``: no resizing, so boxes are in the input's pixels
(the model resizes internally and maps its boxes back). ``data.image_size`` sets the size of
the generated ``shapes`` images and is not used for ``coco`` and ``voc``, whose images keep
their size (choose the model's input size with its ``min_size``/``max_size`` arguments).

**Bad boxes** (``data.bad_boxes``), checked once when a data set is built, per annotation:

- a coordinate that is not a finite number, zero or negative width or height, a box entirely
  outside its image, or a label that is not one of the classes (an unknown COCO
  ``category_id``, a name outside the VOC classes) is bad. ``drop`` (default) removes it, counts
  it in ``DataBundle.skipped["<split>_boxes"]`` and logs a warning naming the annotation file,
  the image and the first few boxes; ``raise`` raises DataError naming the annotation file, the
  image and the box as written there.
- a box partly outside its image is clipped to it (not an error: annotation tools round
  outwards).

**Files.** Image file names that escape their image folder (absolute paths, ``..``
components) are always refused with DataError naming the annotation file and the name. A
corrupt or missing image raises DataError naming the file when it is read; with
``data.skip_bad=true`` every image is test-decoded when the data set is built and the bad ones
are dropped and counted in ``DataBundle.skipped["<split>"]``. An image whose decoded size is not
the size its annotation states raises DataError (its boxes would be misplaced).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from ..errors import ConfigError, DataError, did_you_mean
from .bundle import DataBundle
from .images import load_image, verify_image
from .transforms import ToUint8RGB

if TYPE_CHECKING:
    from ..engine.config import DataConfig

__all__ = [
    "DETECTION_DATASETS",
    "DETECTION_AUGMENT",
    "BAD_BOX_POLICIES",
    "TARGET_KEYS",
    "Annotations",
    "DetectionDataset",
    "DetectionTransform",
    "ShapesDetection",
    "build_detection_data",
    "clean_boxes",
    "collate_detection",
    "detection_eval_transform",
    "detection_train_transform",
    "safe_join",
]

log = logging.getLogger(__name__)

DETECTION_DATASETS = ("shapes", "coco", "voc")
DETECTION_AUGMENT = ("none", "light", "photometric")
BAD_BOX_POLICIES = ("drop", "raise")
# Per-box tensors of a target, filtered together with the boxes.
TARGET_KEYS = ("boxes", "labels", "ignore", "iscrowd")
# Bad boxes described in a "drop" warning (the count covers them all).
_SHOWN = 5


# ---------------------------------------------------------------------------------------------
# File names


_DRIVE = re.compile(r"^[A-Za-z]:")


def safe_join(base: str | os.PathLike[str], name: object, source: str | os.PathLike[str]) -> str:
    """``base/name`` for a file name read from an annotation file, refusing names that escape
    ``base``.

    Backslashes count as separators (annotations written on Windows). Absolute paths, drive
    letters and ``..`` components raise DataError naming ``source`` (the annotation file) and
    the name. The check is on the text: a symbolic link inside ``base`` is followed, since
    people link their data sets into place.
    """
    if not isinstance(name, str) or not name.strip():
        raise DataError(f"{source}: image file name must be a non-empty string, got {name!r}")
    parts = PurePosixPath(name.replace("\\", "/"))
    if parts.is_absolute() or _DRIVE.match(name) or ".." in parts.parts:
        raise DataError(
            f"{source}: image file name {name!r} escapes the image folder {base} (absolute "
            "paths and '..' are refused); give names relative to that folder"
        )
    return os.path.join(os.fspath(base), *parts.parts)


# ---------------------------------------------------------------------------------------------
# Annotations as flat arrays, and the bad-box check


@dataclass
class Annotations:
    """The boxes of a split as written in its annotation files, one row per box (M boxes,
    N images). Formats fill it; :func:`clean_boxes` checks it.

    ``files`` are image paths (already checked by :func:`safe_join`), ``names`` the file
    names as written (for messages), ``sources`` the annotation file of each image, ``sizes``
    int64 ``[N, 2]`` as (height, width). Per box: ``image`` int64 ``[M]`` (row of its image),
    ``boxes`` float64 ``[M, 4]`` xyxy in continuous pixels, ``labels`` int64 ``[M]`` (``1..C``,
    0 when the class is unknown), ``ignore`` and ``iscrowd`` bool ``[M]``. ``describe(j)``
    gives box ``j`` as written in the file (e.g. ``"bbox [x, y, w, h] (annotations[5], ...)"``)
    and ``label_text(j)`` its label (for messages).
    """

    files: list[str]
    names: list[str]
    sources: list[str]
    sizes: np.ndarray
    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    ignore: np.ndarray
    iscrowd: np.ndarray
    describe: Callable[[int], str]
    label_text: Callable[[int], str]


def clean_boxes(ann: Annotations, num_classes: int, policy: str) -> tuple[Annotations, int]:
    """Apply the bad-box rules of the module docstring to every box at once.

    Returns the annotations with bad boxes removed (``policy="drop"``) and partly-outside
    boxes clipped, and the number of boxes removed. ``policy="raise"``: DataError naming the
    annotation file, the image and the first bad box.
    """
    if policy not in BAD_BOX_POLICIES:
        raise ConfigError(
            f"data.bad_boxes={policy!r} is not a policy; valid: {', '.join(BAD_BOX_POLICIES)}"
        )
    b = ann.boxes  # (M, 4) xyxy
    hw = ann.sizes[ann.image].astype(np.float64)  # (M, 2) (H, W) of each box's image
    h, w = hw[:, 0], hw[:, 1]
    finite = np.isfinite(b).all(axis=1)
    label_ok = (ann.labels >= 1) & (ann.labels <= num_classes)
    with np.errstate(invalid="ignore"):  # NaN compares False: such boxes are already bad
        positive = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        overlaps = (b[:, 2] > 0) & (b[:, 3] > 0) & (b[:, 0] < w) & (b[:, 1] < h)
    good = finite & label_ok & positive & overlaps
    bad = np.flatnonzero(~good)
    if bad.size:

        def reason(j: int) -> str:
            if not finite[j]:
                return "has a coordinate that is not a finite number"
            if not label_ok[j]:
                return (
                    f"has label {ann.label_text(j)}, which is not one of the {num_classes} classes"
                )
            if not positive[j]:
                return "has zero or negative width or height"
            return f"lies entirely outside its {int(w[j])}x{int(h[j])} image"

        def message(j: int) -> str:
            i = ann.image[j]
            return f"{ann.sources[i]}: image {ann.names[i]!r}: {ann.describe(j)} {reason(j)}"

        if policy == "raise":
            raise DataError(
                f"{message(int(bad[0]))}; fix the annotation, or set data.bad_boxes=drop to "
                f"drop such boxes ({bad.size} bad box(es) in this split)"
            )
        shown = "; ".join(message(int(j)) for j in bad[:_SHOWN])
        more = f" ... and {bad.size - _SHOWN} more" if bad.size > _SHOWN else ""
        log.warning("dropped %d bad box(es) (data.bad_boxes=drop): %s%s", bad.size, shown, more)
    keep = good
    boxes = b[keep].copy()
    hw_k = hw[keep]
    # Clip partly-outside boxes to their image: x to [0, W], y to [0, H].
    np.clip(boxes[:, 0::2], 0.0, hw_k[:, 1:2], out=boxes[:, 0::2])
    np.clip(boxes[:, 1::2], 0.0, hw_k[:, 0:1], out=boxes[:, 1::2])
    kept_idx = np.flatnonzero(keep)

    out = Annotations(
        files=ann.files,
        names=ann.names,
        sources=ann.sources,
        sizes=ann.sizes,
        image=ann.image[keep],
        boxes=boxes,
        labels=ann.labels[keep],
        ignore=ann.ignore[keep],
        iscrowd=ann.iscrowd[keep],
        describe=lambda j: ann.describe(int(kept_idx[j])),
        label_text=lambda j: ann.label_text(int(kept_idx[j])),
    )
    return out, int(bad.size)


# ---------------------------------------------------------------------------------------------
# Transforms and collation


def _labels_getter(inputs: Any) -> tuple[Tensor, ...]:
    # (image, target): the per-box tensors SanitizeBoundingBoxes filters with the boxes.
    target = inputs[1]
    return tuple(target[k] for k in TARGET_KEYS[1:])


class DetectionTransform:
    """``(image, target) -> (uint8 Tensor[3, H, W], target of plain tensors)``.

    The image may be a Pillow image of any mode or a uint8 tensor (converted to 3-channel
    RGB as the classification pipeline does); ``target["boxes"]`` a ``tv_tensors.BoundingBoxes``
    or an xyxy tensor. Missing ``ignore`` / ``iscrowd`` become all-False; other keys (the
    shapes generator's instance masks) are dropped unless listed in ``keep``. ``steps`` are
    ``torchvision.transforms.v2`` transforms applied to ``(tv_tensors.Image, target)``.
    """

    def __init__(self, steps: Sequence[Callable[..., Any]] = (), keep: Sequence[str] = ()):
        self.steps = list(steps)
        self.keep = tuple(keep)
        self._pipeline = v2.Compose(self.steps) if self.steps else None
        self._to_uint8 = ToUint8RGB()

    def __call__(self, image: Any, target: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        img = tv_tensors.Image(self._to_uint8(image))  # (3, H, W) uint8
        canvas = tuple(img.shape[-2:])
        boxes = target["boxes"]
        if not isinstance(boxes, tv_tensors.BoundingBoxes):
            boxes = tv_tensors.BoundingBoxes(
                torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                format="XYXY",
                canvas_size=canvas,
            )
        n = boxes.shape[0]
        t: dict[str, Any] = {
            "boxes": boxes,
            "labels": torch.as_tensor(target["labels"], dtype=torch.int64).reshape(n),
        }
        for k in ("ignore", "iscrowd"):
            v = target.get(k)
            t[k] = torch.zeros(n, dtype=torch.bool) if v is None else torch.as_tensor(v).bool()
        for k in self.keep:
            if k in target:
                t[k] = target[k]
        if self._pipeline is not None:
            img, t = self._pipeline(img, t)
        out = {k: v.as_subclass(Tensor) if isinstance(v, Tensor) else v for k, v in t.items()}
        out["boxes"] = out["boxes"].to(torch.float32)
        return img.as_subclass(Tensor), out

    def __repr__(self) -> str:
        return f"DetectionTransform({self.steps!r})"


def detection_train_transform(cfg: DataConfig) -> DetectionTransform:
    """The train-time pipeline of ``data.augment`` (module docstring).

    Raises:
        ConfigError: ``data.augment`` is not a detection preset.
    """
    augment = cfg.augment
    if augment not in DETECTION_AUGMENT:
        hint = did_you_mean(str(augment), DETECTION_AUGMENT)
        raise ConfigError(
            f"data.augment={augment!r} is not a detection preset{hint}; valid values: "
            f"{', '.join(DETECTION_AUGMENT)}"
        )
    steps: list[Callable[..., Any]] = []
    if augment != "none" and cfg.hflip:
        steps.append(v2.RandomHorizontalFlip(p=0.5))
    if augment == "photometric":
        steps.append(v2.RandomPhotometricDistort(p=0.5))
    if steps:
        # After the geometric steps: drop boxes they made degenerate, with their labels/flags.
        steps.append(v2.SanitizeBoundingBoxes(labels_getter=_labels_getter))
    return DetectionTransform(steps)


def detection_eval_transform(cfg: DataConfig | None = None) -> Callable[[Any], Tensor]:
    """PIL image (any mode) or uint8 tensor -> uint8 ``[3, H, W]``, at its own size."""
    return ToUint8RGB()


def collate_detection(
    batch: Sequence[tuple[Tensor, dict[str, Tensor]]],
) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    """``[(image, target), ...] -> ([image, ...], [target, ...])``."""
    return [s[0] for s in batch], [s[1] for s in batch]


# ---------------------------------------------------------------------------------------------
# Datasets


class DetectionDataset(Dataset):
    """Images and boxes of one split from :class:`Annotations` (checked with
    :func:`clean_boxes`): items ``transform(image, target)`` with the target of the module
    docstring.

    Boxes are kept as flat arrays with per-image offsets, so a split of a hundred thousand
    images costs a few arrays, not a Python object per box, in every loader worker.

    Args:
        ann: the parsed annotations (from a format).
        classes: the class names, label ``i + 1`` is ``classes[i]``.
        transform: a :class:`DetectionTransform` (None: a plain conversion).
        bad_boxes: ``"drop"`` or ``"raise"`` (module docstring).
        skip_bad: test-decode every image now and drop unreadable ones.

    Attributes:
        classes, files, skipped (images dropped by ``skip_bad``), skipped_files (list of
        (path, reason)), dropped_boxes (bad boxes dropped).
    """

    def __init__(
        self,
        ann: Annotations,
        classes: Sequence[str],
        transform: Callable[..., Any] | None = None,
        bad_boxes: str = "drop",
        skip_bad: bool = False,
    ) -> None:
        self.classes = [str(c) for c in classes]
        self.transform = transform or DetectionTransform()
        ann, self.dropped_boxes = clean_boxes(ann, len(self.classes), bad_boxes)
        self.skipped = 0
        self.skipped_files: list[tuple[str, str]] = []
        keep_images = np.ones(len(ann.files), dtype=bool)
        if skip_bad:
            keep_images = self._verify(ann.files)
        else:
            self._check_exist(ann)
        self._set(ann, keep_images)

    def _check_exist(self, ann: Annotations) -> None:
        missing = [i for i, f in enumerate(ann.files) if not os.path.isfile(f)]
        if missing:
            i = missing[0]
            more = f" ({len(missing)} images missing in all)" if len(missing) > 1 else ""
            raise DataError(
                f"{ann.files[i]}: image file not found (listed in {ann.sources[i]}){more}; "
                "data.skip_bad=true drops missing and unreadable images"
            )

    def _verify(self, files: list[str]) -> np.ndarray:
        # Pillow releases the GIL while decoding, so threads overlap the work.
        workers = max(1, min(8, os.cpu_count() or 1))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            reasons = list(pool.map(verify_image, files))
        self.skipped_files = [(f, r) for f, r in zip(files, reasons, strict=True) if r is not None]
        self.skipped = len(self.skipped_files)
        if self.skipped:
            shown = "; ".join(r for _, r in self.skipped_files[:_SHOWN])
            log.warning(
                "skipped %d unreadable image(s) (data.skip_bad=true): %s%s",
                self.skipped,
                shown,
                " ..." if self.skipped > _SHOWN else "",
            )
        return np.array([r is None for r in reasons], dtype=bool)

    def _set(self, ann: Annotations, keep_images: np.ndarray) -> None:
        new_index = np.cumsum(keep_images) - 1  # old image row -> new row (where kept)
        box_keep = keep_images[ann.image]
        image = new_index[ann.image[box_keep]]
        # Stable sort by image, so each image's boxes keep their order in the file.
        order = np.argsort(image, kind="stable")
        self.files = [f for f, k in zip(ann.files, keep_images, strict=True) if k]
        self.names = [n for n, k in zip(ann.names, keep_images, strict=True) if k]
        self.sources = [s for s, k in zip(ann.sources, keep_images, strict=True) if k]
        self.sizes = ann.sizes[keep_images]
        self.boxes = ann.boxes[box_keep][order].astype(np.float32)
        self.labels = ann.labels[box_keep][order].astype(np.int64)
        self.ignore = ann.ignore[box_keep][order].astype(bool)
        self.iscrowd = ann.iscrowd[box_keep][order].astype(bool)
        counts = np.bincount(image, minlength=len(self.files))
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)  # (N + 1,)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.files)

    def target(self, index: int) -> dict[str, Tensor]:
        """The untransformed target of image ``index`` (plain tensors)."""
        lo, hi = self.offsets[index], self.offsets[index + 1]
        return {
            "boxes": torch.from_numpy(self.boxes[lo:hi].copy()),
            "labels": torch.from_numpy(self.labels[lo:hi].copy()),
            "ignore": torch.from_numpy(self.ignore[lo:hi].copy()),
            "iscrowd": torch.from_numpy(self.iscrowd[lo:hi].copy()),
        }

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        path = self.files[index]
        img = load_image(path)  # DataError naming the file
        h, w = (int(v) for v in self.sizes[index])
        if img.size != (w, h):
            hint = " (EXIF orientation?)" if img.size == (h, w) else ""
            raise DataError(
                f"{path}: the image is {img.size[0]}x{img.size[1]} but "
                f"{self.sources[index]} gives {w}x{h}{hint}; its boxes would be misplaced"
            )
        raw = self.target(index)
        raw["boxes"] = tv_tensors.BoundingBoxes(raw["boxes"], format="XYXY", canvas_size=(h, w))
        image, target = self.transform(TF.pil_to_tensor(img), raw)
        target["image_id"] = torch.tensor(index, dtype=torch.int64)
        return image, target


class ShapesDetection(Dataset):
    """The ``shapes`` generator as a detection dataset: one box per visible shape, label =
    class + 1, no ignored boxes, instance masks dropped (the detection models do not use
    them). Keyword arguments go to :class:`~visionzoo.data.shapes.ShapesDataset`."""

    def __init__(self, transform: Callable[..., Any] | None = None, **kwargs: Any) -> None:
        from .shapes import ShapesDataset

        self.base = ShapesDataset(task="detection", transform=None, **kwargs)
        self.classes = list(self.base.classes)
        self.transform = transform or DetectionTransform()
        self.skipped = 0
        self.dropped_boxes = 0

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        if index < 0:
            index += len(self)
        image, raw = self.base[index]
        image, target = self.transform(image, raw)
        target["image_id"] = torch.tensor(index, dtype=torch.int64)
        return image, target


# ---------------------------------------------------------------------------------------------
# Builder


def _check_stats(cfg: DataConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    out = []
    for key in ("mean", "std"):
        v = list(getattr(cfg, key))
        if len(v) != 3:
            raise ConfigError(f"data.{key} needs 3 values (R, G, B in 0-1 units), got {v}")
        if key == "std" and any(s <= 0 for s in v):
            raise ConfigError(f"data.std values must be > 0, got {v}")
        out.append(tuple(float(x) for x in v))
    return out[0], out[1]


def _check_positive(cfg: DataConfig, key: str) -> int:
    v = getattr(cfg, key)
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ConfigError(f"data.{key} must be a positive integer, got {v!r}")
    return v


def _need_root(cfg: DataConfig, layout: str) -> str:
    if not cfg.root:
        raise ConfigError(f"data.root is required for data.name={cfg.name}: {layout}")
    return cfg.root


def _shapes(cfg: DataConfig, train_tf: Any, val_tf: Any) -> tuple[Any, Any]:
    _check_positive(cfg, "train_size")
    _check_positive(cfg, "val_size")
    _check_positive(cfg, "image_size")
    common = dict(image_size=cfg.image_size, num_classes=cfg.num_classes, seed=cfg.seed)
    train = ShapesDetection(split="train", size=cfg.train_size, transform=train_tf, **common)
    val = ShapesDetection(split="val", size=cfg.val_size, transform=val_tf, **common)
    return train, val


def _coco(cfg: DataConfig, train_tf: Any, val_tf: Any) -> tuple[Any, Any]:
    from .formats.coco import CocoDetection

    root = _need_root(
        cfg, "the folder with annotations/instances_{train,val}.json and {train,val}/ images"
    )
    kw = dict(bad_boxes=cfg.bad_boxes, skip_bad=cfg.skip_bad)
    train = CocoDetection(root, "train", transform=train_tf, **kw)
    val = CocoDetection(root, "val", transform=val_tf, categories=train.categories, **kw)
    return train, val


def _voc(cfg: DataConfig, train_tf: Any, val_tf: Any) -> tuple[Any, Any]:
    from .formats.voc import VOCDetection

    root = _need_root(
        cfg, "VOCdevkit/VOC20xx, its parent, or a folder with Annotations/ and JPEGImages/"
    )
    kw = dict(bad_boxes=cfg.bad_boxes, skip_bad=cfg.skip_bad)
    train = VOCDetection(root, "train", transform=train_tf, **kw)
    val = VOCDetection(root, "val", transform=val_tf, **kw)
    return train, val


_BUILDERS = {"shapes": _shapes, "coco": _coco, "voc": _voc}


def build_detection_data(cfg: DataConfig) -> DataBundle:
    """Datasets, transforms, class names and the collate function for ``cfg.name`` (module
    docstring). ``num_classes`` counts the object classes (the model adds the background).

    ``skipped`` holds ``"train"`` / ``"val"``: images dropped by ``data.skip_bad`` (when on),
    and ``"train_boxes"`` / ``"val_boxes"``: bad boxes dropped by ``data.bad_boxes=drop``.

    Raises:
        ConfigError: unknown ``data.name`` (with did-you-mean), ``data.root`` missing, a bad
            ``data.augment`` / ``data.bad_boxes`` / ``data.mean`` / ``data.std``, or a
            ``data.num_classes`` the data does not have.
        DataError: files missing, unreadable, escaping their folder or inconsistent (naming
            the file), or a bad box under ``data.bad_boxes=raise``.
    """
    name = cfg.name
    if name not in _BUILDERS:
        raise ConfigError(
            f"data.name={name!r} is not a detection data set{did_you_mean(str(name), _BUILDERS)};"
            f" valid: {', '.join(DETECTION_DATASETS)}"
        )
    if cfg.bad_boxes not in BAD_BOX_POLICIES:
        raise ConfigError(
            f"data.bad_boxes={cfg.bad_boxes!r} is not a policy; valid: "
            f"{', '.join(BAD_BOX_POLICIES)}"
        )
    mean, std = _check_stats(cfg)
    train_tf = detection_train_transform(cfg)
    val_tf = DetectionTransform()
    train, val = _BUILDERS[name](cfg, train_tf, val_tf)
    class_names = [str(c) for c in train.classes]
    if name != "shapes" and cfg.num_classes is not None and cfg.num_classes != len(class_names):
        raise ConfigError(
            f"data.num_classes={cfg.num_classes} but {name} has {len(class_names)} classes; "
            "leave data.num_classes unset (it selects a subset of classes only for shapes)"
        )
    skipped = {"train_boxes": train.dropped_boxes, "val_boxes": val.dropped_boxes}
    if cfg.skip_bad:
        skipped = {"train": train.skipped, "val": val.skipped, **skipped}
    return DataBundle(
        train=train,
        val=val,
        num_classes=len(class_names),
        class_names=class_names,
        mean=mean,  # type: ignore[arg-type]
        std=std,  # type: ignore[arg-type]
        eval_transform=detection_eval_transform(cfg),
        collate_fn=collate_detection,
        skipped=skipped,
    )
