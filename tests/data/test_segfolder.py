"""Image + mask folders and the Pascal VOC layout: reading, checks and their messages."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from visionzoo.data.formats.segfolder import (
    VOC_CLASSES,
    SegmentationFolderDataset,
    VOCSegmentationDataset,
    find_voc_root,
    read_mask,
)
from visionzoo.errors import ConfigError, DataError


def _save_mask(arr: np.ndarray, path, mode: str = "P") -> None:
    img = Image.fromarray(arr.astype(np.uint8))
    if mode == "P":
        img.putpalette([(i * 37) % 256 for i in range(768)])  # colours unrelated to indices
    img.save(path)


def _tree(root, n=3, size=(20, 16), classes=("bg", "cat", "dog"), split="train"):
    rng = np.random.default_rng(0)
    (root / split / "images").mkdir(parents=True, exist_ok=True)
    (root / split / "masks").mkdir(parents=True, exist_ok=True)
    if classes:
        (root / "classes.txt").write_text("\n".join(classes) + "\n")
    masks = []
    for i in range(n):
        w, h = size
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
            root / split / "images" / f"im{i}.jpg"
        )
        m = rng.integers(0, len(classes or "abc"), (h, w)).astype(np.uint8)
        m[0, 0] = 255  # an ignore pixel is allowed
        _save_mask(m, root / split / "masks" / f"im{i}.png", "P" if i % 2 == 0 else "L")
        masks.append(m)
    return masks


def test_reads_palette_and_grey_masks_as_indices(tmp_path):
    masks = _tree(tmp_path)
    ds = SegmentationFolderDataset(tmp_path, "train")
    assert ds.classes == ["bg", "cat", "dog"] and len(ds) == 3
    for i in range(3):
        image, mask = ds[i]
        assert image.dtype == torch.uint8 and image.shape == (3, 16, 20)
        assert mask.dtype == torch.int64
        assert torch.equal(mask, torch.from_numpy(masks[i].astype(np.int64)))


def test_missing_mask_names_the_image(tmp_path):
    _tree(tmp_path)
    (tmp_path / "train" / "masks" / "im1.png").unlink()
    with pytest.raises(DataError, match=r"have no mask: .*im1\.jpg .*im1\.png"):
        SegmentationFolderDataset(tmp_path, "train")


def test_mask_size_mismatch_names_the_file(tmp_path):
    _tree(tmp_path)
    _save_mask(np.zeros((10, 10)), tmp_path / "train" / "masks" / "im2.png")
    ds = SegmentationFolderDataset(tmp_path, "train")
    with pytest.raises(DataError, match=r"im2\.png: mask is 10x10 .*im2\.jpg is 20x16"):
        ds[2]


def test_out_of_range_values_name_the_file_and_values(tmp_path):
    _tree(tmp_path)
    m = np.zeros((16, 20), np.uint8)
    m[3, 3], m[4, 4] = 7, 200
    _save_mask(m, tmp_path / "train" / "masks" / "im0.png")
    ds = SegmentationFolderDataset(tmp_path, "train")
    with pytest.raises(DataError, match=r"im0\.png: mask values 7, 200 are not classes.*0\.\.2"):
        ds[0]


def test_rgb_colour_mask_refused(tmp_path):
    path = tmp_path / "m.png"
    arr = np.zeros((4, 4, 3), np.uint8)
    arr[0, 0] = (128, 0, 0)
    Image.fromarray(arr).save(path)
    with pytest.raises(DataError, match=r"m\.png: colour \(RGB\) mask"):
        read_mask(path)
    Image.fromarray(np.full((4, 4, 3), 2, np.uint8)).save(path)  # grey stored as RGB: fine
    assert (read_mask(path) == 2).all()


def test_class_count_from_config_or_file(tmp_path):
    _tree(tmp_path, classes=None)
    with pytest.raises(ConfigError, match="data.num_classes"):
        SegmentationFolderDataset(tmp_path, "train")
    ds = SegmentationFolderDataset(tmp_path, "train", num_classes=3)
    assert ds.classes == ["class0", "class1", "class2"]
    (tmp_path / "classes.txt").write_text("a\nb\n")
    with pytest.raises(ConfigError, match="names 2 classes"):
        SegmentationFolderDataset(tmp_path, "train", num_classes=3)


def test_missing_folders_and_corrupt_files(tmp_path):
    with pytest.raises(DataError, match="is not a folder"):
        SegmentationFolderDataset(tmp_path / "nope", "train")
    _tree(tmp_path)
    with pytest.raises(DataError, match=r"val/images is missing"):
        SegmentationFolderDataset(tmp_path, "val")
    (tmp_path / "train" / "images" / "im1.jpg").write_bytes(b"not a jpeg")
    ds = SegmentationFolderDataset(tmp_path, "train")
    with pytest.raises(DataError, match=r"im1\.jpg"):
        ds[1]
    ds = SegmentationFolderDataset(tmp_path, "train", skip_bad=True)
    assert len(ds) == 2 and ds.skipped == 1


def _voc(root):
    voc = root / "VOCdevkit" / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / d).mkdir(parents=True)
    for i in ("2007_000032", "2007_000039"):
        Image.fromarray(np.zeros((8, 12, 3), np.uint8)).save(voc / "JPEGImages" / f"{i}.jpg")
        m = np.full((8, 12), 15, np.uint8)
        m[0] = 255
        _save_mask(m, voc / "SegmentationClass" / f"{i}.png")
    (voc / "ImageSets/Segmentation/train.txt").write_text("2007_000032\n2007_000039\n")
    (voc / "ImageSets/Segmentation/val.txt").write_text("2007_000039\n")
    return voc


def test_voc_layout(tmp_path):
    voc = _voc(tmp_path)
    for root in (tmp_path, tmp_path / "VOCdevkit", voc):
        assert find_voc_root(root) == voc
    ds = VOCSegmentationDataset(tmp_path, "train")
    assert len(ds) == 2 and ds.classes == list(VOC_CLASSES) and len(VOC_CLASSES) == 21
    _, mask = ds[0]
    assert set(mask.unique().tolist()) == {15, 255}  # person, and the ignored border
    with pytest.raises(DataError, match="no Pascal VOC 2012 folder"):
        find_voc_root(tmp_path / "VOCdevkit" / "VOC2012" / "JPEGImages")
    (voc / "ImageSets/Segmentation/val.txt").write_text("../../etc/passwd\n")
    with pytest.raises(DataError, match="not a plain file name"):
        VOCSegmentationDataset(tmp_path, "val")
