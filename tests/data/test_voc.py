"""Pascal VOC detection XML on tiny trees written to tmp_path: finding the year folder,
1-based boxes, difficult flags, the bad-box policy, refused names, broken files."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from visionzoo.data.formats.voc import VOC_CLASSES, VOCDetection, find_voc_root
from visionzoo.errors import DataError

W, H = 50, 40


def _image(path: Path, w: int = W, h: int = H) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(len(path.name)).integers(0, 255, (h, w, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)


def _obj(name: str, box: tuple, difficult: int | None = 0) -> str:
    diff = "" if difficult is None else f"<difficult>{difficult}</difficult>"
    xmin, ymin, xmax, ymax = box
    return (
        f"<object><name>{name}</name><pose>Left</pose><truncated>0</truncated>{diff}"
        f"<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax>"
        "</bndbox></object>"
    )


def _xml(objects: list[str], filename: str | None = None, size: bool = True) -> str:
    fn = f"<filename>{filename}</filename>" if filename else ""
    sz = f"<size><width>{W}</width><height>{H}</height><depth>3</depth></size>" if size else ""
    return f"<annotation><folder>VOC2012</folder>{fn}{sz}{''.join(objects)}</annotation>"


def write_voc(year_dir: Path, images: dict[str, list[str]], split: str = "train", **xml_kw) -> Path:
    """``images``: id -> object XML snippets; writes JPEGImages/<id>.jpg, Annotations/<id>.xml and
    ImageSets/Main/<split>.txt."""
    for image_id, objects in images.items():
        _image(year_dir / "JPEGImages" / f"{image_id}.jpg")
        ann = year_dir / "Annotations" / f"{image_id}.xml"
        ann.parent.mkdir(parents=True, exist_ok=True)
        ann.write_text(_xml(objects, filename=f"{image_id}.jpg", **xml_kw))
    sets = year_dir / "ImageSets" / "Main"
    sets.mkdir(parents=True, exist_ok=True)
    (sets / f"{split}.txt").write_text("".join(f"{i}\n" for i in images))
    return year_dir


def _tree(tmp_path: Path) -> Path:
    return write_voc(
        tmp_path / "VOCdevkit" / "VOC2012",
        {
            "2008_000001": [
                _obj("dog", (1, 1, 10, 20)),
                _obj("person", (5, 6, 30, 40), difficult=1),
                _obj("car", (20, 3, 50, 12), difficult=None),
            ],
            "2008_000002": [],
        },
    )


def test_reads_boxes_labels_and_difficult(tmp_path):
    _tree(tmp_path)
    ds = VOCDetection(tmp_path, "train")
    assert ds.classes == list(VOC_CLASSES) and len(VOC_CLASSES) == 20
    assert len(ds) == 2
    image, target = ds[0]
    assert image.shape == (3, H, W) and image.dtype == torch.uint8
    # 1-based inclusive pixels -> continuous: (xmin - 1, ymin - 1, xmax, ymax).
    torch.testing.assert_close(
        target["boxes"], torch.tensor([[0.0, 0, 10, 20], [4, 5, 30, 40], [19, 2, 50, 12]])
    )
    names = [VOC_CLASSES[i - 1] for i in target["labels"].tolist()]
    assert names == ["dog", "person", "car"]
    assert target["ignore"].tolist() == [False, True, False]
    assert target["iscrowd"].tolist() == [False, False, False]
    _, empty = ds[1]
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)


@pytest.mark.parametrize("where", ["root", "devkit", "year"])
def test_finds_the_year_folder(tmp_path, where):
    year = _tree(tmp_path)
    root = {"root": tmp_path, "devkit": tmp_path / "VOCdevkit", "year": year}[where]
    assert find_voc_root(root) == year
    assert len(VOCDetection(root, "train")) == 2


def test_two_years_are_ambiguous(tmp_path):
    _tree(tmp_path)
    write_voc(tmp_path / "VOCdevkit" / "VOC2007", {"000005": []})
    with pytest.raises(DataError, match=r"several VOC years found .*VOC2007.*VOC2012"):
        VOCDetection(tmp_path, "train")


def test_no_tree_and_missing_split(tmp_path):
    with pytest.raises(DataError, match="no VOC tree found"):
        find_voc_root(tmp_path)
    _tree(tmp_path)
    with pytest.raises(DataError, match=r"ImageSets/Main/val\.txt: split file not found"):
        VOCDetection(tmp_path, "val")


def test_unknown_class_dropped_or_raised(tmp_path, caplog):
    year = write_voc(
        tmp_path / "VOC2012", {"a": [_obj("dog", (1, 1, 10, 10)), _obj("unicorn", (2, 2, 8, 8))]}
    )
    with caplog.at_level(logging.WARNING):
        ds = VOCDetection(year, "train")
    assert ds.dropped_boxes == 1 and ds[0][1]["labels"].tolist() == [VOC_CLASSES.index("dog") + 1]
    assert "a.xml" in caplog.text and "'unicorn'" in caplog.text
    with pytest.raises(
        DataError,
        match=r"a\.xml: image 'a\.jpg': box \[xmin=2, ymin=2, xmax=8, ymax=8\] \(object 1\) has "
        r"label 'unicorn', which is not one of the 20 classes",
    ):
        VOCDetection(year, "train", bad_boxes="raise")


def test_degenerate_and_outside_boxes(tmp_path):
    year = write_voc(
        tmp_path / "VOC2012",
        {
            "a": [
                _obj("cat", (10, 10, 9, 20)),  # xmax = xmin - 1: zero width
                _obj("cat", (10, 10, 9.5, 20)),  # 1-based: x1 = 9 < x2 = 9.5, a half pixel: kept
                _obj("cat", (60, 5, 70, 9)),  # beyond the 50-pixel width
                _obj("cat", (40, 30, 60, 50)),  # partly outside: clipped
            ]
        },
    )
    ds = VOCDetection(year, "train")
    assert ds.dropped_boxes == 2
    assert ds[0][1]["boxes"].tolist() == [[9, 9, 9.5, 20], [39, 29, 50, 40]]
    with pytest.raises(DataError, match=r"\(object 0\) has zero or negative width or height"):
        VOCDetection(year, "train", bad_boxes="raise")


def test_ids_escaping_the_tree_are_refused(tmp_path):
    year = _tree(tmp_path)
    (year / "ImageSets" / "Main" / "train.txt").write_text("../../../etc/passwd\n")
    with pytest.raises(DataError, match=r"train\.txt: image file name '\.\./\.\./\.\./etc/passwd"):
        VOCDetection(year, "train")


def test_filename_fallback_and_its_escape(tmp_path):
    year = tmp_path / "VOC2012"
    _image(year / "JPEGImages" / "x.png")
    (year / "Annotations").mkdir(parents=True)
    (year / "Annotations" / "x.xml").write_text(_xml([_obj("cat", (1, 1, 5, 5))], filename="x.png"))
    (year / "ImageSets" / "Main").mkdir(parents=True)
    (year / "ImageSets" / "Main" / "train.txt").write_text("x\n")
    ds = VOCDetection(year, "train")
    assert ds.files[0].endswith("x.png") and ds[0][0].shape == (3, H, W)
    (year / "Annotations" / "x.xml").write_text(_xml([], filename="/abs/x.png"))
    with pytest.raises(DataError, match=r"x\.xml: image file name '/abs/x\.png' escapes"):
        VOCDetection(year, "train")


def test_size_read_from_image_when_missing(tmp_path):
    year = write_voc(tmp_path / "VOC2012", {"a": [_obj("cat", (40, 30, 60, 50))]}, size=False)
    ds = VOCDetection(year, "train")
    assert ds.sizes.tolist() == [[H, W]]
    assert ds[0][1]["boxes"].tolist() == [[39, 29, 50, 40]]  # clipped to the header's size


def test_broken_xml_and_missing_files(tmp_path):
    year = _tree(tmp_path)
    xml = year / "Annotations" / "2008_000002.xml"
    xml.write_text("<annotation><object>")
    with pytest.raises(DataError, match=r"2008_000002\.xml: not valid XML"):
        VOCDetection(year, "train")
    xml.unlink()
    with pytest.raises(DataError, match=r"2008_000002\.xml: annotation file not found"):
        VOCDetection(year, "train")
    xml.write_text(_xml(["<object><name>cat</name><bndbox><xmin>1</xmin></bndbox></object>"]))
    with pytest.raises(DataError, match=r"2008_000002\.xml: object 0 has no <bndbox><ymin>"):
        VOCDetection(year, "train")
    xml.write_text(_xml([_obj("cat", ("one", 1, 5, 5))]))
    with pytest.raises(DataError, match=r"<xmin> is not a number: 'one'"):
        VOCDetection(year, "train")


def test_corrupt_image_raises_or_is_skipped(tmp_path):
    year = _tree(tmp_path)
    (year / "JPEGImages" / "2008_000002.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"junk" * 20)
    ds = VOCDetection(year, "train")
    with pytest.raises(DataError, match=r"2008_000002\.jpg"):
        ds[1]
    ds = VOCDetection(year, "train", skip_bad=True)
    assert len(ds) == 1 and ds.skipped == 1
    assert "2008_000002.jpg" in ds.skipped_files[0][0]
