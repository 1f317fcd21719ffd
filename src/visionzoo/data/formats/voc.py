"""Pascal VOC detection annotations (one XML file per image), read into flat arrays.

Everingham et al., "The PASCAL Visual Object Classes (VOC) Challenge", IJCV 2010; the devkit's
``VOCreadxml``/``VOCevaldet`` define what is read here.

``data.root`` is the year folder (the one holding ``Annotations/``), or a folder above it: the
first of ``root``, ``root/VOC20xx``, ``root/VOCdevkit/VOC20xx`` that has ``Annotations/``. When
several years are found (``VOC2007`` and ``VOC2012`` side by side), DataError asks for the
one meant. Inside the year folder::

    Annotations/<id>.xml
    JPEGImages/<id>.jpg
    ImageSets/Main/train.txt   one image id per line
    ImageSets/Main/val.txt

(Segmentation masks of the same tree are read elsewhere, by the segmentation data.)

Per image: the image is ``JPEGImages/<id>.jpg``, or ``JPEGImages/<filename>`` from the XML when
that file does not exist (VOC-style exports of other data); ids and file names escaping their
folder are refused. ``<size>`` gives the image size (read from the image header when absent or
zero). Per ``<object>`` (direct children of ``<annotation>``; the person-layout ``<part>``
boxes are not objects): ``<name>`` -> label (:data:`VOC_CLASSES`, alphabetical, label
``i + 1``), ``<difficult>`` -> ``ignore`` (excluded from the training targets and ignored by
VOC AP, as the devkit does; ``<truncated>``, ``<occluded>`` and ``<pose>`` are not used), and
``<bndbox>`` with ``xmin ymin xmax ymax``.

Coordinates: VOC numbers pixels from 1 and its boxes include both end pixels, so a box is
converted to continuous coordinates as ``(xmin - 1, ymin - 1, xmax, ymax)``: the box covers
exactly its pixels, the devkit's ``+1`` in widths and overlaps is built in, and IoU is computed
without it (detectron2 does the same).

An unknown class name is a label out of range and follows ``data.bad_boxes``; a missing split
file, annotation file or ``<bndbox>`` field, a coordinate that is not a number, or invalid XML
raises DataError naming the file.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ...errors import DataError
from ..detection import Annotations, DetectionDataset, safe_join

__all__ = ["VOC_CLASSES", "VOCDetection", "find_voc_root", "read_voc"]

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

SPLITS = ("train", "val", "trainval", "test")


def find_voc_root(root: str | os.PathLike[str]) -> Path:
    """The year folder (holding ``Annotations/``) under ``root`` (module docstring).

    Raises:
        DataError: naming the root and what was looked for, or the ambiguous candidates.
    """
    r = Path(root)
    if not r.is_dir():
        what = "does not exist" if not r.exists() else "is not a directory"
        raise DataError(f"{r}: VOC root {what} (data.root)")
    if (r / "Annotations").is_dir():
        return r
    found = [
        p
        for parent in (r, r / "VOCdevkit")
        if parent.is_dir()
        for p in sorted(parent.glob("VOC20*"))
        if (p / "Annotations").is_dir()
    ]
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise DataError(
            f"{r}: several VOC years found ({', '.join(str(p) for p in found)}); set data.root "
            "to the one to use"
        )
    raise DataError(
        f"{r}: no VOC tree found: looked for Annotations/ in it, in VOC20xx/ and in "
        "VOCdevkit/VOC20xx/"
    )


def _read_ids(split_file: Path) -> list[str]:
    try:
        text = split_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(
            f"{split_file}: split file not found (ImageSets/Main/<split>.txt lists the image "
            "ids of a split)"
        ) from None
    except (UnicodeDecodeError, OSError) as e:
        raise DataError(f"{split_file}: cannot read the split file ({e})") from None
    # One id per line; class-specific files (<class>_train.txt) add a second column.
    ids = [line.split()[0] for line in text.splitlines() if line.strip()]
    if not ids:
        raise DataError(f"{split_file}: the split file lists no image ids")
    return ids


def _number(xml: Path, obj: int, node: ET.Element, key: str) -> float:
    text = node.findtext(key)
    if text is None:
        raise DataError(f"{xml}: object {obj} has no <bndbox><{key}>")
    try:
        return float(text.strip())
    except ValueError:
        raise DataError(f"{xml}: object {obj}: <{key}> is not a number: {text!r}") from None


def _image_size(xml: Path, root: ET.Element, image: str) -> tuple[int, int]:
    """(height, width) from ``<size>``, else from the image header."""
    size = root.find("size")
    if size is not None:
        try:
            w = int(float(size.findtext("width") or 0))
            h = int(float(size.findtext("height") or 0))
        except ValueError:
            raise DataError(f"{xml}: <size> holds a value that is not a number") from None
        if w > 0 and h > 0:
            return h, w
    try:
        with Image.open(image) as im:  # the header only: no pixel decoding
            w, h = im.size
    except FileNotFoundError:
        raise DataError(f"{image}: image file not found (listed in {xml})") from None
    except Exception as e:  # Pillow raises many types on bad data
        raise DataError(f"{image}: cannot read the image size ({type(e).__name__}: {e})") from e
    return h, w


def read_voc(
    voc_root: str | os.PathLike[str], split: str, classes: Sequence[str] = VOC_CLASSES
) -> Annotations:
    """Parse the annotations of ``split`` under the year folder ``voc_root`` into
    :class:`~visionzoo.data.detection.Annotations` (boxes not yet checked)."""
    vr = Path(voc_root)
    split_file = vr / "ImageSets" / "Main" / f"{split}.txt"
    ids = _read_ids(split_file)
    ann_dir, img_dir = vr / "Annotations", vr / "JPEGImages"
    class_to_label = {c: i + 1 for i, c in enumerate(classes)}

    files, names, sources = [], [], []
    sizes = np.empty((len(ids), 2), dtype=np.int64)
    image, raw, labels, difficult, obj_names, obj_index = [], [], [], [], [], []
    for i, image_id in enumerate(ids):
        xml = Path(safe_join(ann_dir, image_id + ".xml", split_file))
        try:
            root = ET.parse(xml).getroot()
        except FileNotFoundError:
            raise DataError(f"{xml}: annotation file not found (listed in {split_file})") from None
        except ET.ParseError as e:
            raise DataError(f"{xml}: not valid XML ({e})") from None
        except OSError as e:
            raise DataError(f"{xml}: cannot read the annotation file ({e})") from None
        path = safe_join(img_dir, image_id + ".jpg", split_file)
        name = image_id + ".jpg"
        fname = (root.findtext("filename") or "").strip()
        if fname and fname != name and not os.path.isfile(path):
            path, name = safe_join(img_dir, fname, xml), fname
        files.append(path)
        names.append(name)
        sources.append(str(xml))
        sizes[i] = _image_size(xml, root, path)
        for k, obj in enumerate(root.findall("object")):
            cls = (obj.findtext("name") or "").strip()
            box = obj.find("bndbox")
            if box is None:
                raise DataError(f"{xml}: object {k} ({cls!r}) has no <bndbox>")
            raw.append([_number(xml, k, box, key) for key in ("xmin", "ymin", "xmax", "ymax")])
            diff = (obj.findtext("difficult") or "0").strip()
            difficult.append(diff not in ("0", "", "false", "False"))
            labels.append(class_to_label.get(cls, 0))
            obj_names.append(cls)
            obj_index.append(k)
            image.append(i)

    raw_a = np.array(raw, dtype=np.float64).reshape(-1, 4)
    boxes = raw_a.copy()
    boxes[:, :2] -= 1.0  # 1-based inclusive pixel indices -> continuous coordinates
    diff_a = np.array(difficult, dtype=bool)

    def describe(j: int) -> str:
        x1, y1, x2, y2 = (float(v) for v in raw_a[j])
        return f"box [xmin={x1:g}, ymin={y1:g}, xmax={x2:g}, ymax={y2:g}] (object {obj_index[j]})"

    def label_text(j: int) -> str:
        return f"{obj_names[j]!r}"

    return Annotations(
        files=files,
        names=names,
        sources=sources,
        sizes=sizes,
        image=np.array(image, dtype=np.int64),
        boxes=boxes,
        labels=np.array(labels, dtype=np.int64),
        ignore=diff_a,
        iscrowd=np.zeros(len(diff_a), dtype=bool),
        describe=describe,
        label_text=label_text,
    )


class VOCDetection(DetectionDataset):
    """One split of a Pascal VOC tree (module docstring).

    Args:
        root: the year folder or a folder above it (:func:`find_voc_root`).
        split: an ``ImageSets/Main`` split: ``"train"``, ``"val"``, ``"trainval"``, ``"test"``.
        transform, bad_boxes, skip_bad: see :class:`~visionzoo.data.detection.DetectionDataset`.
        classes: the class names (default the 20 VOC classes); other names are bad labels.

    Attributes (besides DetectionDataset's): ``voc_root`` (the year folder).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        transform: Callable[..., Any] | None = None,
        bad_boxes: str = "drop",
        skip_bad: bool = False,
        classes: Sequence[str] = VOC_CLASSES,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        self.voc_root = find_voc_root(root)
        ann = read_voc(self.voc_root, split, classes)
        super().__init__(ann, classes, transform=transform, bad_boxes=bad_boxes, skip_bad=skip_bad)
