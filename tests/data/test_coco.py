"""COCO detection JSON on tiny trees written to tmp_path: layouts, category mapping, crowd
boxes, the bad-box policy, refused file names, corrupt and missing files."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from visionzoo.data.formats.coco import CocoDetection, find_coco_split
from visionzoo.errors import DataError

W, H = 40, 30  # image width, height


def _png(path: Path, w: int = W, h: int = H, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)


CATEGORIES = [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}, {"id": 11, "name": "bird"}]


def write_coco(
    root: Path,
    split: str = "train",
    annotations: list[dict] | None = None,
    images: list[dict] | None = None,
    categories: list[dict] | None = None,
    ann_name: str | None = None,
    img_dir: str | None = None,
) -> Path:
    """A COCO split: by default image 1 (a.png) with a dog, a crowd of cats and a bird; image 2
    (b.png) with nothing."""
    images = images or [
        {"id": 1, "file_name": "a.png", "width": W, "height": H},
        {"id": 2, "file_name": "b.png", "width": W, "height": H},
    ]
    if annotations is None:
        annotations = [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [2, 3, 10, 5], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [20, 10, 15, 15], "iscrowd": 1},
            {"id": 3, "image_id": 1, "category_id": 11, "bbox": [0.5, 0.5, 4, 4]},
        ]
    d = root / (img_dir or split)
    d.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        name = im["file_name"]
        if ".." not in name and not name.startswith("/"):
            _png(d / name, im["width"], im["height"], seed=i)
    ann = root / "annotations" / (ann_name or f"instances_{split}.json")
    ann.parent.mkdir(parents=True, exist_ok=True)
    ann.write_text(
        json.dumps(
            {
                "images": images,
                "annotations": annotations,
                "categories": categories or CATEGORIES,
            }
        )
    )
    return ann


def test_reads_boxes_labels_and_crowds(tmp_path):
    write_coco(tmp_path)
    ds = CocoDetection(tmp_path, "train")
    # Categories sorted by id: 3 cat -> 1, 7 dog -> 2, 11 bird -> 3.
    assert ds.classes == ["cat", "dog", "bird"]
    assert ds.categories == [(3, "cat"), (7, "dog"), (11, "bird")]
    assert len(ds) == 2 and ds.dropped_boxes == 0
    image, target = ds[0]
    assert image.dtype == torch.uint8 and image.shape == (3, H, W)
    # xywh -> xyxy, in the file's order.
    torch.testing.assert_close(
        target["boxes"],
        torch.tensor([[2, 3, 12, 8], [20, 10, 35, 25], [0.5, 0.5, 4.5, 4.5]]),
    )
    assert target["labels"].tolist() == [2, 1, 3]
    assert target["ignore"].tolist() == [False, True, False]
    assert target["iscrowd"].tolist() == [False, True, False]
    assert int(target["image_id"]) == 0
    # An image without annotations is a sample with no boxes.
    image, target = ds[1]
    assert target["boxes"].shape == (0, 4) and target["boxes"].dtype == torch.float32
    assert target["labels"].shape == (0,) and target["labels"].dtype == torch.int64


def test_coco2017_names_and_images_folder(tmp_path):
    write_coco(tmp_path, "val", ann_name="instances_val2017.json", img_dir="val2017")
    ann, images = find_coco_split(tmp_path, "val")
    assert ann.name == "instances_val2017.json" and images.name == "val2017"
    assert len(CocoDetection(tmp_path, "val")) == 2


def test_missing_annotation_file_names_the_paths(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match=r"instances_train\.json.*instances_train2017\.json"):
        CocoDetection(tmp_path, "train")
    with pytest.raises(DataError, match="does not exist"):
        CocoDetection(tmp_path / "nope", "train")


def test_missing_image_folder(tmp_path):
    write_coco(tmp_path)
    for f in (tmp_path / "train").iterdir():
        f.unlink()
    (tmp_path / "train").rmdir()
    with pytest.raises(DataError, match="no image folder for the train split"):
        CocoDetection(tmp_path, "train")


def test_invalid_json_names_file_and_line(tmp_path):
    ann = write_coco(tmp_path)
    ann.write_text('{"images": [\n  {"id": 1,,}\n]}')
    with pytest.raises(DataError, match=r"instances_train\.json: not valid JSON \(line 2"):
        CocoDetection(tmp_path, "train")


def test_structural_errors_name_the_entry(tmp_path):
    ann = write_coco(tmp_path, annotations=[{"id": 1, "image_id": 1, "bbox": [0, 0, 1, 1]}])
    with pytest.raises(DataError, match=r"annotations\[0\] has no 'category_id'"):
        CocoDetection(tmp_path, "train")
    write_coco(tmp_path, annotations=[{"image_id": 9, "category_id": 7, "bbox": [0, 0, 5, 5]}])
    with pytest.raises(DataError, match=r"annotations\[0\] refers to image_id 9"):
        CocoDetection(tmp_path, "train")
    write_coco(tmp_path, annotations=[{"image_id": 1, "category_id": 7, "bbox": [0, 0, 5]}])
    with pytest.raises(DataError, match=r"annotations\[0\] has an invalid 'bbox'"):
        CocoDetection(tmp_path, "train")
    data = json.loads(ann.read_text())
    del data["annotations"]
    ann.write_text(json.dumps(data))
    with pytest.raises(DataError, match="no 'annotations' list"):
        CocoDetection(tmp_path, "train")


def test_bad_boxes_dropped_with_count_and_warning(tmp_path, caplog):
    anns = [
        {"image_id": 1, "category_id": 7, "bbox": [2, 3, 10, 5]},  # good
        {"image_id": 1, "category_id": 7, "bbox": [5, 5, 0, 4]},  # zero width
        {"image_id": 1, "category_id": 3, "bbox": [5, 5, 4, -2]},  # negative height
        {"image_id": 1, "category_id": 3, "bbox": [50, 5, 4, 4]},  # right of the image
        {"image_id": 1, "category_id": 99, "bbox": [1, 1, 4, 4]},  # unknown category
        {"image_id": 2, "category_id": 11, "bbox": [-5, 20, 10, 20]},  # partly outside: clipped
    ]
    write_coco(tmp_path, annotations=anns)
    with caplog.at_level(logging.WARNING):
        ds = CocoDetection(tmp_path, "train", bad_boxes="drop")
    assert ds.dropped_boxes == 4
    text = caplog.text
    assert "dropped 4 bad box(es)" in text and "instances_train.json" in text
    assert "image 'a.png'" in text and "category_id 99" in text
    assert ds[0][1]["boxes"].tolist() == [[2, 3, 12, 8]]
    assert ds[1][1]["boxes"].tolist() == [[0, 20, 5, 30]]  # x from -5 to 0, y2 40 -> 30


@pytest.mark.parametrize(
    ("bbox", "category", "message"),
    [
        ([5, 5, 0, 4], 7, r"bbox \[5, 5, 0, 4\].* has zero or negative width or height"),
        ([50, 5, 4, 4], 7, r"lies entirely outside its 40x30 image"),
        ([1, 1, 4, 4], 99, r"has label category_id 99, which is not one of the 3 classes"),
        ([1, float("nan"), 4, 4], 7, r"not a finite number"),
    ],
)
def test_bad_boxes_raise_names_file_image_and_box(tmp_path, bbox, category, message):
    write_coco(tmp_path, annotations=[{"image_id": 1, "category_id": category, "bbox": bbox}])
    with pytest.raises(DataError, match=r"instances_train\.json: image 'a\.png': .*" + message):
        CocoDetection(tmp_path, "train", bad_boxes="raise")


@pytest.mark.parametrize("name", ["../escape.png", "/etc/passwd", "sub/../../x.png", "C:\\x.png"])
def test_file_names_escaping_the_root_are_refused(tmp_path, name):
    write_coco(tmp_path, images=[{"id": 1, "file_name": name, "width": W, "height": H}])
    with pytest.raises(DataError, match="escapes the image folder") as e:
        CocoDetection(tmp_path, "train")
    assert repr(name) in str(e.value) and "instances_train.json" in str(e.value)


def test_subfolder_names_are_fine(tmp_path):
    write_coco(
        tmp_path,
        images=[{"id": 1, "file_name": "sub\\deep.png", "width": W, "height": H}],
        annotations=[],
    )
    # Written with a backslash (Windows), read as a subfolder.
    _png(tmp_path / "train" / "sub" / "deep.png")
    ds = CocoDetection(tmp_path, "train")
    assert ds.files[0].endswith("train/sub/deep.png") and ds[0][0].shape == (3, H, W)


def test_corrupt_image_raises_or_is_skipped(tmp_path, caplog):
    write_coco(tmp_path)
    (tmp_path / "train" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 10)
    ds = CocoDetection(tmp_path, "train")
    with pytest.raises(DataError, match=r"b\.png"):
        ds[1]
    with caplog.at_level(logging.WARNING):
        ds = CocoDetection(tmp_path, "train", skip_bad=True)
    assert len(ds) == 1 and ds.skipped == 1 and "b.png" in caplog.text
    assert ds[0][1]["labels"].tolist() == [2, 1, 3]  # a.png keeps its boxes


def test_missing_image_file_is_named_at_build(tmp_path):
    write_coco(tmp_path)
    (tmp_path / "train" / "a.png").unlink()
    with pytest.raises(DataError, match=r"a\.png: image file not found \(listed in .*json\)"):
        CocoDetection(tmp_path, "train")


def test_size_mismatch(tmp_path):
    write_coco(tmp_path)
    _png(tmp_path / "train" / "a.png", w=H, h=W)  # rotated
    with pytest.raises(DataError, match=r"a\.png: the image is 30x40 but .* gives 40x30"):
        CocoDetection(tmp_path, "train")[0]


def test_val_categories_must_match_train(tmp_path):
    write_coco(tmp_path, "train")
    write_coco(tmp_path, "val", categories=[{"id": 7, "name": "dog"}])
    train = CocoDetection(tmp_path, "train")
    with pytest.raises(DataError, match=r"instances_val\.json: its categories differ"):
        CocoDetection(tmp_path, "val", categories=train.categories)
