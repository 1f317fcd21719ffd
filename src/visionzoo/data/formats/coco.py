"""COCO object-detection JSON (``instances_*.json``), read into flat arrays.

Layout of ``data.root`` (the first match wins, per split ``train`` / ``val``)::

    root/
      annotations/instances_train.json      or  annotations/instances_train2017.json
      annotations/instances_val.json        or  annotations/instances_val2017.json
      train/ ...images...                   or  train2017/  (or images/train/, images/train2017/)
      val/   ...images...                   or  val2017/    (or images/val/, images/val2017/)

The COCO 2017 release unpacked into one folder (``annotations/``, ``train2017/``,
``val2017/``) is such a root. ``file_name`` entries are relative to the split's image folder;
names that escape it (absolute paths, ``..``) are refused.

What is read from the JSON (https://cocodataset.org/#format-data):

- ``categories``: sorted by ``id`` and mapped to contiguous labels ``1..K`` (COCO's 80 ids run
  1..90 with gaps); names are kept. The val file must list the same categories as the train
  file (DataError naming both otherwise), so labels mean the same in both splits.
- ``images``: ``id``, ``file_name``, ``width``, ``height``. Every listed image is a sample,
  including the ones without annotations (negatives).
- ``annotations``: ``image_id``, ``category_id``, ``bbox`` = ``[x, y, width, height]`` in
  pixels (converted to ``x1 y1 x2 y2 = x, y, x + width, y + height``), ``iscrowd`` (default 0).
  Crowd boxes are kept as ``ignore`` (and ``iscrowd``): the task leaves them out of the training
  targets, the COCO metric ignores detections on them, as COCO's own evaluation does.
  Segmentations, keypoints and ``area`` are not read (the metric's size ranges use box areas,
  see :mod:`visionzoo.metrics.detection`).

Structural problems (invalid JSON, a missing key, an annotation naming an image id the file
does not list, duplicate ids) raise DataError naming the file and the entry. Boxes and labels
are then checked by :func:`visionzoo.data.detection.clean_boxes` (``data.bad_boxes``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DataError
from ..detection import Annotations, DetectionDataset, safe_join

__all__ = ["CocoDetection", "find_coco_split", "read_coco"]

SPLITS = ("train", "val")


def find_coco_split(root: str | os.PathLike[str], split: str) -> tuple[Path, Path]:
    """``(annotation file, image folder)`` of ``split`` under ``root`` (module docstring).

    Raises:
        DataError: naming the root or the paths tried.
    """
    r = Path(root)
    if not r.is_dir():
        what = "does not exist" if not r.exists() else "is not a directory"
        raise DataError(f"{r}: COCO root {what} (data.root)")
    ann_tried = [
        r / "annotations" / f"instances_{split}.json",
        r / "annotations" / f"instances_{split}2017.json",
    ]
    ann = next((p for p in ann_tried if p.is_file()), None)
    if ann is None:
        raise DataError(
            f"{r}: no COCO annotation file for the {split} split; looked for "
            f"{', '.join(str(p) for p in ann_tried)}"
        )
    img_tried = [r / split, r / f"{split}2017", r / "images" / split, r / "images" / f"{split}2017"]
    images = next((p for p in img_tried if p.is_dir()), None)
    if images is None:
        raise DataError(
            f"{r}: no image folder for the {split} split; looked for "
            f"{', '.join(str(p) for p in img_tried)}"
        )
    return ann, images


def _load_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise DataError(f"{path}: annotation file not found") from None
    except json.JSONDecodeError as e:
        raise DataError(
            f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})"
        ) from None
    except (UnicodeDecodeError, OSError) as e:
        raise DataError(f"{path}: cannot read the annotation file ({e})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object with images, annotations, categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(
                f"{path}: no {key!r} list; a COCO detection file holds images, annotations "
                "and categories (image_info files without annotations cannot train or evaluate)"
            )
    if not data["categories"]:
        raise DataError(f"{path}: the 'categories' list is empty")
    return data


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _field(path: Path, what: str, i: int, entry: object, key: str, check: Callable) -> Any:
    if not isinstance(entry, dict) or key not in entry:
        raise DataError(f"{path}: {what}[{i}] has no {key!r}")
    v = entry[key]
    if not check(v):
        raise DataError(f"{path}: {what}[{i}] has an invalid {key!r}: {v!r}")
    return v


def _is_bbox(v: object) -> bool:
    return (
        isinstance(v, list)
        and len(v) == 4
        and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
    )


def _categories(path: Path, cats: list[Any]) -> list[tuple[int, str]]:
    out = [
        (
            _field(path, "categories", i, c, "id", _is_int),
            str(_field(path, "categories", i, c, "name", lambda v: isinstance(v, str))),
        )
        for i, c in enumerate(cats)
    ]
    ids = [c for c, _ in out]
    if len(set(ids)) != len(ids):
        dup = sorted({c for c in ids if ids.count(c) > 1})
        raise DataError(f"{path}: duplicate category ids {dup}")
    return sorted(out)


def read_coco(
    ann_file: str | os.PathLike[str],
    image_dir: str | os.PathLike[str],
    categories: Sequence[tuple[int, str]] | None = None,
) -> tuple[Annotations, list[tuple[int, str]]]:
    """Parse a COCO detection file into :class:`~visionzoo.data.detection.Annotations`
    (boxes not yet checked) and its ``(id, name)`` categories sorted by id.

    ``categories``: those of the train split; the file must list the same ones.
    """
    path = Path(ann_file)
    data = _load_json(path)
    cats = _categories(path, data["categories"])
    if categories is not None and list(categories) != cats:
        raise DataError(
            f"{path}: its categories differ from the train split's; both files must list the "
            f"same (id, name) pairs (train: {list(categories)[:5]}..., this file: {cats[:5]}...)"
        )
    src = str(path)

    images = data["images"]
    img_ids = np.empty(len(images), dtype=np.int64)
    files, names = [], []
    sizes = np.empty((len(images), 2), dtype=np.int64)
    positive = lambda v: _is_int(v) and v > 0  # noqa: E731
    for i, im in enumerate(images):
        img_ids[i] = _field(path, "images", i, im, "id", _is_int)
        name = _field(path, "images", i, im, "file_name", lambda v: isinstance(v, str))
        sizes[i, 0] = _field(path, "images", i, im, "height", positive)
        sizes[i, 1] = _field(path, "images", i, im, "width", positive)
        files.append(safe_join(image_dir, name, src))
        names.append(name)
    order = np.argsort(img_ids, kind="stable")
    sorted_ids = img_ids[order]
    if len(sorted_ids) > 1 and bool((sorted_ids[1:] == sorted_ids[:-1]).any()):
        dup = sorted_ids[1:][sorted_ids[1:] == sorted_ids[:-1]]
        raise DataError(f"{path}: duplicate image ids, e.g. {int(dup[0])}")

    anns = data["annotations"]
    m = len(anns)
    try:
        a_img = np.array([a["image_id"] for a in anns], dtype=np.int64)
        a_cat = np.array([a["category_id"] for a in anns], dtype=np.int64)
        raw = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(m, 4)
        crowd = np.array([a.get("iscrowd", 0) for a in anns], dtype=np.int64)
        malformed = False
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError):
        malformed = True
    if malformed:
        # Find the first bad entry to name it (the fast path above does not say which).
        for i, a in enumerate(anns):
            _field(path, "annotations", i, a, "image_id", _is_int)
            _field(path, "annotations", i, a, "category_id", _is_int)
            _field(path, "annotations", i, a, "bbox", _is_bbox)
            crowd_v = a.get("iscrowd", 0)
            if not (_is_int(crowd_v) or isinstance(crowd_v, bool)):
                raise DataError(f"{path}: annotations[{i}] has an invalid 'iscrowd': {crowd_v!r}")
        raise DataError(f"{path}: malformed annotations")
    # image id -> row, vectorised; an unknown id is a broken file, not a bad box.
    pos = np.searchsorted(sorted_ids, a_img).clip(max=max(len(sorted_ids) - 1, 0))
    known = (sorted_ids[pos] == a_img) if len(sorted_ids) else np.zeros(m, dtype=bool)
    if not known.all():
        i = int(np.flatnonzero(~known)[0])
        raise DataError(
            f"{path}: annotations[{i}] refers to image_id {int(a_img[i])}, which is not in 'images'"
        )
    image = order[pos] if m else np.zeros(0, dtype=np.int64)
    # category id -> label 1..K; unknown ids get 0 (a bad box, data.bad_boxes decides).
    cat_ids = np.array([c for c, _ in cats], dtype=np.int64)
    cpos = np.searchsorted(cat_ids, a_cat).clip(max=len(cat_ids) - 1)
    labels = np.where(cat_ids[cpos] == a_cat, cpos + 1, 0).astype(np.int64)
    boxes = raw.copy()
    boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
    iscrowd = crowd != 0

    def describe(j: int) -> str:
        x, y, w, h = (float(v) for v in raw[j])
        return f"bbox [{x:g}, {y:g}, {w:g}, {h:g}] (annotations[{j}], x y width height)"

    def label_text(j: int) -> str:
        return f"category_id {int(a_cat[j])}"

    ann = Annotations(
        files=files,
        names=names,
        sources=[src] * len(files),
        sizes=sizes,
        image=image.astype(np.int64),
        boxes=boxes,
        labels=labels,
        ignore=iscrowd.copy(),
        iscrowd=iscrowd,
        describe=describe,
        label_text=label_text,
    )
    return ann, cats


class CocoDetection(DetectionDataset):
    """One split of a COCO detection root (module docstring).

    Args:
        root: the folder holding ``annotations/`` and the image folders.
        split: ``"train"`` or ``"val"``.
        transform, bad_boxes, skip_bad: see :class:`~visionzoo.data.detection.DetectionDataset`.
        categories: the train split's ``(id, name)`` pairs, which this split must repeat.

    Attributes (besides DetectionDataset's): ``categories`` (``(id, name)`` sorted by id;
    label ``i + 1`` is ``categories[i]``), ``category_ids``, ``ann_file``, ``image_dir``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        transform: Callable[..., Any] | None = None,
        bad_boxes: str = "drop",
        skip_bad: bool = False,
        categories: Sequence[tuple[int, str]] | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        self.ann_file, self.image_dir = find_coco_split(root, split)
        ann, cats = read_coco(self.ann_file, self.image_dir, categories)
        self.categories = cats
        self.category_ids = [c for c, _ in cats]
        super().__init__(
            ann, [n for _, n in cats], transform=transform, bad_boxes=bad_boxes, skip_bad=skip_bad
        )
