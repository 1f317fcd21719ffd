"""build_detection_data: the shapes/coco/voc sources, transforms that move boxes with the
image, collation, and configuration errors."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import tv_tensors
from torchvision.transforms import v2

from visionzoo.data.detection import (
    DetectionTransform,
    _labels_getter,
    build_detection_data,
    collate_detection,
    detection_train_transform,
    safe_join,
)
from visionzoo.data.formats.voc import VOC_CLASSES
from visionzoo.engine.config import DataConfig
from visionzoo.errors import ConfigError, DataError
from visionzoo.tasks.base import to_device


def _cfg(**kw) -> DataConfig:
    cfg = DataConfig(train_size=6, val_size=4, image_size=48)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def test_shapes_bundle_and_collation():
    b = build_detection_data(_cfg(num_classes=3))
    assert b.num_classes == 3 and b.class_names == ["circle", "square", "triangle"]
    assert b.collate_fn is collate_detection
    assert b.skipped == {"train_boxes": 0, "val_boxes": 0}
    images, targets = next(iter(DataLoader(b.val, batch_size=3, collate_fn=b.collate_fn)))
    assert isinstance(images, list) and isinstance(targets, list) and len(images) == 3
    for i, (im, t) in enumerate(zip(images, targets, strict=True)):
        assert im.dtype == torch.uint8 and im.shape == (3, 48, 48)
        assert type(im) is torch.Tensor and type(t["boxes"]) is torch.Tensor  # plain tensors
        assert set(t) == {"boxes", "labels", "ignore", "iscrowd", "image_id"}  # masks dropped
        assert t["boxes"].dtype == torch.float32 and t["boxes"].shape[1] == 4
        assert ((t["labels"] >= 1) & (t["labels"] <= 3)).all()
        assert not t["ignore"].any() and int(t["image_id"]) == i
    # The val split is deterministic and equals the generator's boxes.
    from visionzoo.data.shapes import ShapesDataset

    raw = ShapesDataset("val", size=4, image_size=48, num_classes=3, task="detection")[0][1]
    torch.testing.assert_close(targets[0]["boxes"], raw["boxes"].as_subclass(torch.Tensor))
    # to_device walks the (list, list of dicts) batch.
    moved = to_device((images, targets), torch.device("cpu"))
    assert isinstance(moved[0], list) and moved[1][0]["boxes"].shape == targets[0]["boxes"].shape


def test_flip_moves_boxes_and_sanitize_filters_every_per_box_tensor():
    image = torch.zeros(3, 10, 20, dtype=torch.uint8)
    image[:, :, :5] = 255  # a bright left edge
    target = {
        "boxes": torch.tensor([[1.0, 2, 5, 8], [3, 3, 3, 9], [0, 0, 20, 10]]),  # 2nd: zero width
        "labels": torch.tensor([1, 2, 3]),
        "ignore": torch.tensor([False, True, True]),
        "masks": torch.zeros(3, 10, 20),
    }
    tf = DetectionTransform(
        [v2.RandomHorizontalFlip(p=1.0), v2.SanitizeBoundingBoxes(labels_getter=_labels_getter)]
    )
    out_img, out = tf(image, target)
    assert out_img[:, :, -5:].eq(255).all()  # the image flipped
    torch.testing.assert_close(out["boxes"], torch.tensor([[15.0, 2, 19, 8], [0, 0, 20, 10]]))
    assert out["labels"].tolist() == [1, 3] and out["ignore"].tolist() == [False, True]
    assert out["iscrowd"].tolist() == [False, False]  # filled in, then filtered alike
    assert "masks" not in out


def test_pil_input_and_image_without_boxes():
    tf = detection_train_transform(_cfg(augment="photometric"))
    pil = Image.fromarray(np.full((12, 16), 7, np.uint8), mode="L")
    img, t = tf(pil, {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)})
    assert img.shape == (3, 12, 16) and img.dtype == torch.uint8
    assert t["boxes"].shape == (0, 4) and t["labels"].shape == (0,) and t["ignore"].shape == (0,)


def test_augment_presets():
    assert detection_train_transform(_cfg(augment="none")).steps == []
    assert detection_train_transform(_cfg(augment="light", hflip=False)).steps == []
    kinds = [type(s) for s in detection_train_transform(_cfg(augment="photometric")).steps]
    assert kinds == [
        v2.RandomHorizontalFlip,
        v2.RandomPhotometricDistort,
        v2.SanitizeBoundingBoxes,
    ]
    with pytest.raises(ConfigError, match="data.augment='randaugment' is not a detection preset"):
        build_detection_data(_cfg(augment="randaugment"))


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"name": "coc"}, r"data.name='coc' is not a detection data set \(did you mean coco"),
        ({"bad_boxes": "ignore"}, r"data.bad_boxes='ignore' is not a policy; valid: drop, raise"),
        ({"name": "coco"}, "data.root is required for data.name=coco"),
        ({"name": "voc"}, "data.root is required for data.name=voc"),
        ({"std": [0.2, 0.0, 0.2]}, "data.std values must be > 0"),
        ({"train_size": 0}, "data.train_size must be a positive integer"),
    ],
)
def test_config_errors(kw, message):
    with pytest.raises(ConfigError, match=message):
        build_detection_data(_cfg(**kw))


def _coco_root(tmp_path, bad_box: bool = False):
    cats = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    for split in ("train", "val"):
        d = tmp_path / split
        d.mkdir(parents=True)
        Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(d / "x.png")
        anns = [{"image_id": 5, "category_id": 2, "bbox": [1, 1, 8, 8], "iscrowd": 0}]
        if bad_box and split == "train":
            anns.append({"image_id": 5, "category_id": 1, "bbox": [1, 1, 0, 8]})
        ann = tmp_path / "annotations" / f"instances_{split}.json"
        ann.parent.mkdir(exist_ok=True)
        ann.write_text(
            json.dumps(
                {
                    "images": [{"id": 5, "file_name": "x.png", "width": 30, "height": 20}],
                    "annotations": anns,
                    "categories": cats,
                }
            )
        )
    return tmp_path


def test_coco_through_the_builder(tmp_path):
    root = _coco_root(tmp_path, bad_box=True)
    b = build_detection_data(_cfg(name="coco", root=str(root)))
    assert b.class_names == ["cat", "dog"] and b.num_classes == 2
    assert b.skipped == {"train_boxes": 1, "val_boxes": 0}
    images, targets = b.collate_fn([b.val[0]])
    assert images[0].shape == (3, 20, 30) and targets[0]["labels"].tolist() == [2]
    # Loader workers get a pickled copy of the dataset.
    copy = pickle.loads(pickle.dumps(b.train))
    assert copy.files == b.train.files and len(copy.transform.steps) == 2  # flip, sanitize
    assert copy[0][1]["labels"].tolist() == [2]
    b = build_detection_data(_cfg(name="coco", root=str(root), skip_bad=True))
    assert b.skipped == {"train": 0, "val": 0, "train_boxes": 1, "val_boxes": 0}
    with pytest.raises(DataError, match=r"instances_train\.json: image 'x\.png'"):
        build_detection_data(_cfg(name="coco", root=str(root), bad_boxes="raise"))
    with pytest.raises(ConfigError, match="data.num_classes=5 but coco has 2 classes"):
        build_detection_data(_cfg(name="coco", root=str(root), num_classes=5))


def test_voc_through_the_builder(tmp_path):
    year = tmp_path / "VOCdevkit" / "VOC2012"
    (year / "JPEGImages").mkdir(parents=True)
    (year / "Annotations").mkdir()
    (year / "ImageSets" / "Main").mkdir(parents=True)
    for split, image_id in (("train", "a"), ("val", "b")):
        Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(
            year / "JPEGImages" / f"{image_id}.jpg"
        )
        (year / "Annotations" / f"{image_id}.xml").write_text(
            "<annotation><size><width>30</width><height>20</height></size><object><name>bus"
            "</name><difficult>1</difficult><bndbox><xmin>2</xmin><ymin>2</ymin><xmax>9</xmax>"
            "<ymax>9</ymax></bndbox></object></annotation>"
        )
        (year / "ImageSets" / "Main" / f"{split}.txt").write_text(image_id + "\n")
    b = build_detection_data(_cfg(name="voc", root=str(tmp_path)))
    assert b.class_names == list(VOC_CLASSES) and b.num_classes == 20
    _, t = b.val[0]
    assert t["labels"].tolist() == [VOC_CLASSES.index("bus") + 1] and t["ignore"].tolist() == [True]
    assert t["boxes"].tolist() == [[1, 1, 9, 9]]


def test_eval_transform_keeps_the_size():
    b = build_detection_data(_cfg())
    x = b.eval_transform(Image.new("RGBA", (33, 21)))
    assert x.shape == (3, 21, 33) and x.dtype == torch.uint8


def test_safe_join():
    assert safe_join("/data/img", "a/b.jpg", "f.json") == "/data/img/a/b.jpg"
    for bad in ("../x.jpg", "/x.jpg", "a/../../x.jpg", "D:x.jpg", "a\\..\\..\\x.jpg", ""):
        with pytest.raises(DataError, match=r"f\.json: image file name"):
            safe_join("/data/img", bad, "f.json")
    # BoundingBoxes input passes through unchanged when there are no steps.
    tf = DetectionTransform()
    boxes = tv_tensors.BoundingBoxes([[0, 0, 2, 2]], format="XYXY", canvas_size=(4, 4))
    _, t = tf(torch.zeros(3, 4, 4, dtype=torch.uint8), {"boxes": boxes, "labels": [1]})
    assert t["boxes"].tolist() == [[0, 0, 2, 2]] and type(t["boxes"]) is torch.Tensor
