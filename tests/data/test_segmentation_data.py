"""Segmentation data bundles and joint transforms."""

from __future__ import annotations

import pytest
import torch

from visionzoo.data.segmentation import (
    build_segmentation_data,
    segmentation_train_transform,
)
from visionzoo.engine.config import DataConfig
from visionzoo.errors import ConfigError


def test_shapes_bundle_has_background_plus_shapes():
    cfg = DataConfig(name="shapes", image_size=32, train_size=8, val_size=4, num_classes=3)
    b = build_segmentation_data(cfg)
    assert b.num_classes == 4 and b.class_names[0] == "background"
    image, mask = b.train[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8
    assert mask.shape == (32, 32) and mask.dtype == torch.int64
    assert int(mask.min()) >= 0 and int(mask.max()) < 4
    # The validation set is deterministic and unaugmented: the generator's own mask.
    gen = b.val.generator
    assert torch.equal(b.val[1][1], torch.from_numpy(gen.sample("val", 1)["semantic_mask"]).long())


def test_train_transform_moves_mask_with_image():
    # Each pixel's red value encodes its class (class * 40); after crops, resizes and flips
    # the mask must still name the class the image shows (bar a thin blurred border).
    torch.manual_seed(0)
    mask = torch.zeros(64, 64, dtype=torch.int64)
    mask[:, 40:] = 1
    mask[10:30, 5:25] = 2
    mask[50:, :20] = 3
    image = torch.zeros(3, 64, 64, dtype=torch.uint8)
    image[0] = (mask * 40).to(torch.uint8)
    tf = segmentation_train_transform(DataConfig(image_size=48, augment="light"), (0.3, 1.0))
    agree = []
    for _ in range(20):
        img, m = tf(image, mask)
        assert img.shape == (3, 48, 48) and m.shape == (48, 48) and m.dtype == torch.int64
        decoded = (img[0].float() / 40).round().long()
        agree.append((decoded == m).float().mean().item())
    assert min(agree) > 0.9
    assert set(torch.unique(m).tolist()) <= {0, 1, 2, 3}  # nearest: no invented classes


def test_bad_config():
    with pytest.raises(ConfigError, match="not a segmentation data set.*did you mean"):
        build_segmentation_data(DataConfig(name="shape"))
    with pytest.raises(ConfigError, match="trivialaugment.*not available for segmentation"):
        segmentation_train_transform(DataConfig(augment="trivialaugment"))
    with pytest.raises(ConfigError, match="data.root is required"):
        build_segmentation_data(DataConfig(name="segfolder"))
    with pytest.raises(ConfigError, match="21 classes"):
        build_segmentation_data(DataConfig(name="voc", root="/x", num_classes=5))


def test_shapes_crops_are_square_files_crops_are_not():
    # A stretched circle is an ellipse: shapes crops keep the aspect ratio, files' may change it.
    from torchvision.transforms import v2

    def crop_ratio(bundle):
        (crop,) = [
            t for t in bundle.train.transform.ops.transforms if isinstance(t, v2.RandomResizedCrop)
        ]
        return tuple(crop.ratio)

    cfg = DataConfig(name="shapes", image_size=32, train_size=4, val_size=2, augment="light")
    assert crop_ratio(build_segmentation_data(cfg)) == (1.0, 1.0)
    tf = segmentation_train_transform(DataConfig(image_size=32, augment="light"))
    (crop,) = [t for t in tf.ops.transforms if isinstance(t, v2.RandomResizedCrop)]
    assert tuple(crop.ratio) == (3 / 4, 4 / 3)
