"""Image-caption pairs on disk: JSONL, CSV and COCO captions JSON.

JSONL / CSV (``data.name=captions``)::

    root/
      train.jsonl   (or train.csv)    one line/row per image or per (image, caption) pair
      val.jsonl     (or val.csv)
      ...images, anywhere under root...

- JSONL lines are objects with ``"image"`` (a path relative to ``root``) and ``"caption"`` (a
  string) or ``"captions"`` (a list of strings). CSV files have a header with ``image`` and
  ``caption`` columns (other columns are ignored).
- Lines naming the same image are merged: the image gets every caption (COCO-style several
  references per image, which retrieval recall and CIDEr use).

COCO captions (``data.name=coco_captions``)::

    root/annotations/captions_{train,val}2017.json (or captions_{train,val}.json)
    root/{train,val}2017/ (or root/{train,val}/)  images

Every file name is checked not to escape its folder (absolute paths and ``..`` are refused),
empty captions and lines without an image are errors naming the file and line, and a split
without any pair is an error.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from ...errors import DataError
from ..detection import safe_join
from ..images import load_image

__all__ = [
    "CaptionDataset",
    "build_caption_split",
    "find_coco_captions",
    "read_caption_file",
    "read_coco_captions",
]

SPLITS = ("train", "val")


def _add(
    table: dict[str, list[str]], order: list[str], image: str, caption: Any, where: str
) -> None:
    if not isinstance(caption, str) or not caption.strip():
        raise DataError(f"{where}: caption must be a non-empty string, got {caption!r}")
    if image not in table:
        table[image] = []
        order.append(image)
    table[image].append(" ".join(caption.split()))


def read_caption_file(path: str | os.PathLike[str], root: str | os.PathLike[str]):
    """``[(image path, [captions...]), ...]`` from a JSONL or CSV file (module docstring)."""
    p = Path(path)
    table: dict[str, list[str]] = {}
    order: list[str] = []
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise DataError(f"{p}: cannot read ({e})") from None
    if p.suffix == ".jsonl":
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{p}:{n}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: invalid JSON ({e.msg})") from None
            if not isinstance(obj, dict) or "image" not in obj:
                raise DataError(f'{where}: expected an object with "image" and "caption(s)"')
            image = safe_join(root, obj["image"], where)
            caps = obj.get("captions", obj.get("caption"))
            if caps is None:
                raise DataError(f'{where}: no "caption" or "captions" key')
            for c in caps if isinstance(caps, list) else [caps]:
                _add(table, order, image, c, where)
    elif p.suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames or not {"image", "caption"} <= set(reader.fieldnames):
            raise DataError(
                f"{p}: CSV needs a header with 'image' and 'caption' columns, got "
                f"{reader.fieldnames}"
            )
        for n, row in enumerate(reader, start=2):
            where = f"{p}:{n}"
            image = safe_join(root, row["image"], where)
            _add(table, order, image, row["caption"], where)
    else:
        raise DataError(f"{p}: caption files must be .jsonl or .csv")
    if not order:
        raise DataError(f"{p}: no image-caption pairs")
    return [(im, table[im]) for im in order]


def find_coco_captions(root: str | os.PathLike[str], split: str) -> tuple[Path, Path]:
    """``(captions JSON, image folder)`` of ``split`` under ``root``."""
    r = Path(root)
    tried = []
    for suffix in ("2017", ""):
        ann = r / "annotations" / f"captions_{split}{suffix}.json"
        img = r / f"{split}{suffix}"
        tried.append(str(ann))
        if ann.is_file() and img.is_dir():
            return ann, img
    raise DataError(
        f"coco_captions: no {split} captions under {str(r)!r}; looked for "
        f"{' or '.join(tried)} with the matching image folder"
    )


def read_coco_captions(path: str | os.PathLike[str], image_dir: str | os.PathLike[str]):
    """``[(image path, [captions...]), ...]`` from a COCO captions JSON."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{p}: cannot read COCO captions ({e})") from None
    try:
        files = {im["id"]: safe_join(image_dir, im["file_name"], p) for im in data["images"]}
        table: dict[str, list[str]] = {}
        order: list[str] = []
        for ann in data["annotations"]:
            if ann["image_id"] not in files:
                raise DataError(f"{p}: annotation {ann.get('id')} names unknown image id")
            _add(table, order, files[ann["image_id"]], ann["caption"], f"{p}: annotation")
    except KeyError as e:
        raise DataError(f"{p}: missing key {e} (not a COCO captions file?)") from None
    if not order:
        raise DataError(f"{p}: no captions")
    return [(im, table[im]) for im in order]


class CaptionDataset(Dataset):
    """``(image path, [captions])`` entries -> samples.

    ``train=True``: ``(image uint8 [3, S, S], caption)`` with one of the image's captions drawn
    at random per access (every reference is seen over the epochs). ``train=False``:
    ``(image, [all captions], -1)`` (the label slot that ``shapes`` fills for zero-shot)."""

    def __init__(
        self,
        entries: list[tuple[str, list[str]]],
        *,
        transform: Callable[[Any], Any] | None,
        train: bool,
        seed: int = 0,
    ) -> None:
        self.entries = entries
        self.transform = transform
        self.train = train
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int):
        path, caps = self.entries[index]
        image = load_image(path)
        x = self.transform(image) if self.transform is not None else image
        if self.train:
            return x, caps[int(self._rng.integers(len(caps)))]
        return x, list(caps), -1


def build_caption_split(name: str, root: str, split: str) -> list[tuple[str, list[str]]]:
    """The entries of ``split`` for ``data.name`` ``captions`` or ``coco_captions``."""
    if name == "coco_captions":
        ann, img_dir = find_coco_captions(root, split)
        return read_coco_captions(ann, img_dir)
    r = Path(root)
    for suffix in (".jsonl", ".csv"):
        f = r / f"{split}{suffix}"
        if f.is_file():
            return read_caption_file(f, r)
    raise DataError(f"captions: neither {r / (split + '.jsonl')} nor {r / (split + '.csv')} exists")
