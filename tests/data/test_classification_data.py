"""build_classification_data: dispatch, bundle contents, config errors, on-disk torchvision data."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from visionzoo.data.bundle import DataBundle
from visionzoo.data.classification import build_classification_data
from visionzoo.data.formats.torchvision_datasets import TorchvisionClassification
from visionzoo.engine.config import DataConfig
from visionzoo.errors import ConfigError, DataError

# --------------------------------------------------------------------------------------------
# fakes on disk


def _image_tree(root: Path, bad: int = 0) -> Path:
    for split, n in (("train", 3), ("val", 2)):
        for k, name in enumerate(("ant", "bee")):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (20, 12), (k * 200, i, 0)).save(d / f"{i}.png")
    for i in range(bad):
        (root / "train" / "ant" / f"bad{i}.png").write_bytes(b"not a png")
    return root


def _fake_cifar10(root: Path, per_batch: int = 2) -> Path:
    """The python-pickle layout of cifar-10-batches-py with a few images per batch."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for b, name in enumerate(names):
        data = rng.integers(0, 256, (per_batch, 3 * 32 * 32), dtype=np.uint8)
        data[:, 0] = b  # first red pixel tags the batch
        labels = [(b + i) % 10 for i in range(per_batch)]
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels, "batch_label": name}, f)
    meta = {"label_names": [f"class{i}" for i in range(10)], "num_vis": 3072}
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(meta, f)
    return root


def _idx(path: Path, array: np.ndarray) -> None:
    # IDX: magic (0, 0, dtype 0x08 = ubyte, ndim), then big-endian dims, then the bytes.
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _fake_mnist(root: Path, folder: str = "MNIST") -> Path:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    for split, n in (("train", 4), ("t10k", 3)):
        images = np.arange(n * 28 * 28).reshape(n, 28, 28) % 256
        _idx(raw / f"{split}-images-idx3-ubyte", images)
        _idx(raw / f"{split}-labels-idx1-ubyte", np.arange(n) % 10)
    return root


# --------------------------------------------------------------------------------------------
# dispatch


def test_digits_bundle():
    b = build_classification_data(DataConfig(name="digits", image_size=16, augment="light"))
    assert isinstance(b, DataBundle)
    assert (len(b.train), len(b.val), b.num_classes) == (1437, 360, 10)
    assert b.class_names == [str(i) for i in range(10)]
    assert b.mean == (0.485, 0.456, 0.406) and b.std == (0.229, 0.224, 0.225)
    assert b.skipped == {}
    x, y = b.train[0]
    assert x.dtype == torch.uint8 and x.shape == (3, 16, 16) and isinstance(y, int)
    v, _ = b.val[0]
    assert v.shape == (3, 16, 16) and torch.equal(v, b.val[0][0])  # eval is deterministic
    # Built-in data: milder crops, and never mirrored digits even though data.hflip is true.
    kinds = [type(t) for t in b.train.transform.transforms]
    assert v2.RandomHorizontalFlip not in kinds
    assert b.train.transform.transforms[1].scale == (0.7, 1.0)
    # eval_transform maps a PIL image of any mode to what the val set yields.
    assert b.eval_transform(Image.new("L", (40, 30), 9)).shape == (3, 16, 16)


def test_shapes_bundle():
    cfg = DataConfig(name="shapes", image_size=32, train_size=12, val_size=5, num_classes=3)
    b = build_classification_data(cfg)
    assert (len(b.train), len(b.val), b.num_classes) == (12, 5, 3)
    assert b.class_names == b.train.classes and len(b.class_names) == 3
    x, y = b.train[0]
    assert x.dtype == torch.uint8 and x.shape == (3, 32, 32) and 0 <= y < 3
    # Validation images are the generated ones, untouched by the eval resize/crop.
    raw_val = type(b.val)(split="val", size=5, image_size=32, num_classes=3, seed=0)
    assert torch.equal(b.val[2][0], raw_val[2][0])
    assert b.train.transform.transforms[1].scale == (0.7, 1.0)
    assert v2.RandomHorizontalFlip in [type(t) for t in b.train.transform.transforms]


def test_shapes_seed_changes_data():
    a = build_classification_data(DataConfig(name="shapes", train_size=2, val_size=2, seed=0))
    b = build_classification_data(DataConfig(name="shapes", train_size=2, val_size=2, seed=1))
    assert not torch.equal(a.val[0][0], b.val[0][0])


def test_shapes_bad_sizes():
    with pytest.raises(ConfigError, match=r"data\.train_size must be a positive integer"):
        build_classification_data(DataConfig(name="shapes", train_size=0))


def test_imagefolder_bundle(tmp_path):
    root = _image_tree(tmp_path)
    cfg = DataConfig(name="imagefolder", root=str(root), image_size=8, augment="none")
    b = build_classification_data(cfg)
    assert b.class_names == ["ant", "bee"] and b.num_classes == 2
    assert (len(b.train), len(b.val)) == (6, 4)
    x, y = b.val[3]
    assert x.shape == (3, 8, 8) and x.dtype == torch.uint8 and y == 1
    assert x[:, 4, 4].tolist() == [200, 1, 0]
    assert b.skipped == {}
    # People's own data keep the default (0.35, 1) crop of the light preset.
    cfg.augment = "light"
    assert build_classification_data(cfg).train.transform.transforms[1].scale == (0.35, 1.0)


def test_imagefolder_skip_bad_surfaces_count(tmp_path):
    root = _image_tree(tmp_path, bad=2)
    cfg = DataConfig(name="imagefolder", root=str(root), image_size=8, skip_bad=True)
    b = build_classification_data(cfg)
    assert b.skipped == {"train": 2, "val": 0}
    assert len(b.train) == 6


def test_imagefolder_bad_file_without_skip(tmp_path):
    root = _image_tree(tmp_path, bad=1)
    b = build_classification_data(DataConfig(name="imagefolder", root=str(root), image_size=8))
    assert len(b.train) == 7
    with pytest.raises(DataError, match=r"bad0\.png: not an image"):
        [b.train[i] for i in range(len(b.train))]


def test_imagefolder_needs_root():
    with pytest.raises(ConfigError, match=r"data\.root is required for data\.name=imagefolder"):
        build_classification_data(DataConfig(name="imagefolder"))


def test_imagefolder_missing_root_is_data_error(tmp_path):
    with pytest.raises(DataError, match=r"missing: image folder root does not exist"):
        build_classification_data(DataConfig(name="imagefolder", root=str(tmp_path / "missing")))


# --------------------------------------------------------------------------------------------
# config errors


def test_unknown_name_did_you_mean():
    with pytest.raises(
        ConfigError,
        match=r"data\.name='cifar' .*did you mean cifar10.*valid: shapes, digits, imagefolder",
    ):
        build_classification_data(DataConfig(name="cifar"))


def test_unknown_augment():
    with pytest.raises(ConfigError, match=r"data\.augment='heavy'.*valid values"):
        build_classification_data(DataConfig(name="digits", augment="heavy"))


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("mean", [0.5, 0.5], r"data\.mean needs 3 values"),
        ("std", [0.5, 0.0, 0.5], r"data\.std values must be > 0"),
        ("image_size", 0, r"data\.image_size must be a positive integer"),
    ],
)
def test_bad_values(key, value, match):
    cfg = DataConfig(name="digits")
    setattr(cfg, key, value)
    with pytest.raises(ConfigError, match=match):
        build_classification_data(cfg)


def test_num_classes_mismatch():
    cfg = DataConfig(name="digits", num_classes=5)
    with pytest.raises(ConfigError, match=r"data\.num_classes=5 but digits has 10 classes"):
        build_classification_data(cfg)


# --------------------------------------------------------------------------------------------
# torchvision data sets on disk


@pytest.mark.parametrize(
    ("name", "where"),
    [
        ("cifar10", "cifar-10-batches-py"),
        ("cifar100", "cifar-100-python"),
        ("mnist", "MNIST/raw"),
        ("fashionmnist", "FashionMNIST/raw"),
    ],
)
def test_not_on_disk_says_where_and_how(tmp_path, name, where):
    cfg = DataConfig(name=name, root=str(tmp_path))
    with pytest.raises(DataError, match=rf"not found under .*{where}.*data\.download=true"):
        build_classification_data(cfg)


def test_fake_cifar10_loads_without_download(tmp_path):
    root = _fake_cifar10(tmp_path)
    raw = TorchvisionClassification("cifar10", root=root, split="train")
    assert len(raw) == 10 and raw.classes == [f"class{i}" for i in range(10)]
    x, y = raw[2]  # first image of data_batch_2
    assert x.dtype == torch.uint8 and x.shape == (3, 32, 32) and x.is_contiguous()
    assert x[0, 0, 0].item() == 1 and y == 1
    with open(root / "cifar-10-batches-py" / "data_batch_2", "rb") as f:
        entry = pickle.load(f)
    # torchvision's layout: rows are R plane, G plane, B plane of 32x32.
    assert torch.equal(x, torch.from_numpy(entry["data"][0].reshape(3, 32, 32)))

    b = build_classification_data(DataConfig(name="cifar10", root=str(root), image_size=32))
    assert (len(b.train), len(b.val), b.num_classes) == (10, 2, 10)
    assert b.class_names[3] == "class3"
    v, y = b.val[1]
    assert v.shape == (3, 32, 32) and y == 6


def test_corrupt_cifar_is_data_error(tmp_path):
    root = _fake_cifar10(tmp_path)
    (root / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(
        DataError, match=r"cifar-10-batches-py: CIFAR-10 files are present but unreadable"
    ):
        TorchvisionClassification("cifar10", root=root, split="train")


@pytest.mark.parametrize("folder", ["MNIST", "FashionMNIST"])
def test_fake_mnist_grey_to_three_channels(tmp_path, folder):
    name = folder.lower()
    root = _fake_mnist(tmp_path, folder)
    b = build_classification_data(
        DataConfig(name=name, root=str(root), image_size=28, augment="none")
    )
    assert (len(b.train), len(b.val), b.num_classes) == (4, 3, 10)
    x, y = b.val[2]
    assert x.shape == (3, 28, 28) and x.dtype == torch.uint8 and y == 2
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    expected = torch.from_numpy((np.arange(3 * 784).reshape(3, 28, 28) % 256).astype(np.uint8))
    assert torch.equal(x[0], expected[2])
