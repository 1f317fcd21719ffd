"""scikit-learn digits: split sizes, stratification, determinism and pixel scaling."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from visionzoo.data.digits import DigitsDataset


def test_split_sizes_and_disjoint():
    train, val = DigitsDataset("train"), DigitsDataset("val")
    assert (len(train), len(val)) == (1437, 360)
    assert train.classes == [str(i) for i in range(10)]
    # Disjoint and complete: every original image lands in exactly one split.
    raw = load_digits()
    both = torch.cat([train.images, val.images])
    assert both.shape == (1797, 3, 8, 8)
    got = Counter(
        x[0].numpy().tobytes() + bytes([y])
        for x, y in zip(both, train.targets + val.targets, strict=True)
    )
    expected = Counter(
        np.rint(img * 255 / 16).astype(np.uint8).tobytes() + bytes([int(t)])
        for img, t in zip(raw.images, raw.target, strict=True)
    )
    assert got == expected


def test_stratified():
    val = Counter(DigitsDataset("val").targets)
    train = Counter(DigitsDataset("train").targets)
    for c in range(10):
        assert abs(val[c] / (val[c] + train[c]) - 0.2) < 0.02


def test_deterministic_and_independent_of_torch_seed():
    torch.manual_seed(123)
    a = DigitsDataset("val")
    torch.manual_seed(7)
    b = DigitsDataset("val")
    assert a.targets == b.targets
    assert torch.equal(a.images, b.images)


def test_pixels_scaled_to_uint8_and_grey_replicated():
    ds = DigitsDataset("train")
    img, label = ds[0]
    assert img.dtype == torch.uint8 and img.shape == (3, 8, 8)
    assert torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])
    values = set(torch.unique(ds.images).tolist())
    assert values <= {round(v * 255 / 16) for v in range(17)}
    assert max(values) == 255 and min(values) == 0
    assert isinstance(label, int) and 0 <= label <= 9


def test_transform_applied():
    ds = DigitsDataset("val", transform=lambda x: x[:1].float())
    img, _ = ds[3]
    assert img.shape == (1, 8, 8) and img.dtype == torch.float32


def test_bad_split():
    with pytest.raises(ValueError, match="split must be 'train' or 'val', got 'test'"):
        DigitsDataset("test")
