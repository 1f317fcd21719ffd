"""CIFAR-10, CIFAR-100, MNIST and Fashion-MNIST through torchvision, from files already on disk.

Nothing is downloaded unless ``data.download=true``. Files are looked for where torchvision
puts them under ``data.root`` (default ``data``):

=================  =========================================================================
name               files
=================  =========================================================================
``cifar10``        ``<root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``
``cifar100``       ``<root>/cifar-100-python/{train, test, meta}``
``mnist``          ``<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``
``fashionmnist``   ``<root>/FashionMNIST/raw/`` (same names as MNIST)
=================  =========================================================================

The train split is torchvision's ``train=True`` set, the validation split its test set.
Items are ``(transform(uint8 [3, H, W]), label)``, taken straight from the arrays torchvision
loads (no Pillow round trip); MNIST and Fashion-MNIST grey is replicated to 3 channels.

Departure from torchvision: for files already on disk the CIFAR md5 checksums are not
verified (torchvision checks them on every construction). Only their presence is checked, and
a file that fails to unpickle or has the wrong shape raises DataError naming the folder. With
``download=true`` torchvision's own classes run, md5 checks and all.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import datasets as tvd

from ...errors import DataError

__all__ = ["TORCHVISION_DATASETS", "TorchvisionClassification", "DEFAULT_ROOT"]

DEFAULT_ROOT = "data"


class _OnDiskCIFAR10(tvd.CIFAR10):
    """CIFAR-10 that checks presence, not md5 (see the module docstring)."""

    def _check_integrity(self) -> bool:
        folder = Path(self.root, self.base_folder)
        return all((folder / name).is_file() for name, _ in self.train_list + self.test_list)

    def _load_meta(self) -> None:
        import pickle

        path = Path(self.root, self.base_folder, self.meta["filename"])
        with open(path, "rb") as f:
            self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


class _OnDiskCIFAR100(_OnDiskCIFAR10, tvd.CIFAR100):
    """CIFAR-100 likewise: the MRO (_OnDiskCIFAR10, CIFAR100, CIFAR10) takes the two overrides
    from _OnDiskCIFAR10 and the folder, file lists and meta key from CIFAR100."""


_MNIST_FILES = tuple(
    f"{split}-{kind}-ubyte"
    for split in ("train", "t10k")
    for kind in ("images-idx3", "labels-idx1")
)


@dataclass(frozen=True)
class _Spec:
    title: str
    download_class: type  # torchvision's class (download + md5)
    on_disk_class: type  # used when the files are already there
    folder: str
    files: tuple[str, ...]
    size: str  # download size, for the error message


TORCHVISION_DATASETS: dict[str, _Spec] = {
    "cifar10": _Spec(
        "CIFAR-10",
        tvd.CIFAR10,
        _OnDiskCIFAR10,
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta"),
        "163 MB",
    ),
    "cifar100": _Spec(
        "CIFAR-100",
        tvd.CIFAR100,
        _OnDiskCIFAR100,
        "cifar-100-python",
        ("train", "test", "meta"),
        "161 MB",
    ),
    "mnist": _Spec("MNIST", tvd.MNIST, tvd.MNIST, "MNIST/raw", _MNIST_FILES, "12 MB"),
    "fashionmnist": _Spec(
        "Fashion-MNIST",
        tvd.FashionMNIST,
        tvd.FashionMNIST,
        "FashionMNIST/raw",
        _MNIST_FILES,
        "30 MB",
    ),
}


def _open_dataset(name: str, root: Path, train: bool, download: bool) -> Any:
    spec = TORCHVISION_DATASETS[name]
    folder = root / spec.folder
    if download:
        try:
            return spec.download_class(str(root), train=train, download=True)
        except Exception as e:  # network and archive errors of every kind
            raise DataError(
                f"{folder}: downloading {spec.title} (data.download=true) failed: {e}"
            ) from e
    missing = [f for f in spec.files if not (folder / f).is_file()]
    if missing:
        raise DataError(
            f"{spec.title} not found under {root}: looked for {folder}/ and it lacks "
            f"{', '.join(missing)}. Set data.download=true to fetch it ({spec.size}) into "
            f"{root}, or point data.root at the folder that holds {spec.folder}/"
        )
    try:
        return spec.on_disk_class(str(root), train=train, download=False)
    except Exception as e:  # pickle/format errors from torchvision readers
        raise DataError(
            f"{folder}: {spec.title} files are present but unreadable "
            f"({type(e).__name__}: {e}); delete them and set data.download=true to fetch them "
            "again"
        ) from e


class TorchvisionClassification(Dataset):
    """One split of a torchvision classification data set found on disk.

    Args:
        name: ``cifar10``, ``cifar100``, ``mnist`` or ``fashionmnist``.
        root: the folder torchvision's layout starts in (module docstring); None = ``data``.
        split: ``"train"`` (torchvision's train set) or ``"val"`` (its test set).
        transform: applied to each ``uint8 [3, H, W]`` tensor; None yields it as is.
        download: let torchvision download the files when they are missing.

    Raises:
        DataError: the files are not there (saying where it looked and that
            ``data.download=true`` fetches them) or cannot be read.
    """

    def __init__(
        self,
        name: str,
        root: str | os.PathLike[str] | None = None,
        split: str = "train",
        transform: Callable[[Tensor], Any] | None = None,
        download: bool = False,
    ):
        if name not in TORCHVISION_DATASETS:
            raise ValueError(f"name must be one of {sorted(TORCHVISION_DATASETS)}, got {name!r}")
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        self.name = name
        self.split = split
        self.root = Path(root if root is not None else DEFAULT_ROOT)
        self.transform = transform
        ds = _open_dataset(name, self.root, split == "train", download)
        data = ds.data
        # Kept as torchvision holds it, (N, H, W, C) with C = 3 (CIFAR) or 1 (MNIST family),
        # so grey data is not stored three times; items are made [3, H, W] one at a time.
        images = torch.from_numpy(data) if isinstance(data, np.ndarray) else data.unsqueeze(-1)
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[-1] not in (1, 3):
            raise DataError(
                f"{self.root / TORCHVISION_DATASETS[name].folder}: unexpected image array "
                f"{tuple(data.shape)} {data.dtype}"
            )
        self.images = images
        self.targets = [int(t) for t in ds.targets]
        self.classes = list(ds.classes)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        img = self.images[i].permute(2, 0, 1).expand(3, -1, -1).contiguous()  # (3, H, W)
        if self.transform is not None:
            img = self.transform(img)
        return img, self.targets[i]
