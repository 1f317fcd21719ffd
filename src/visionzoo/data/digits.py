"""scikit-learn's 8x8 handwritten digits: real, small, offline (it ships inside scikit-learn).

1797 images of the digits 0-9 (UCI "Optical Recognition of Handwritten Digits", 43 writers),
each an 8x8 grid of counts 0..16. Here:

- Pixels are scaled 0..16 -> 0..255 (``round(v * 255 / 16)``) and stored as uint8; grey is
  replicated to 3 channels, so items are ``uint8 [3, 8, 8]`` before the transform. The builder's
  transforms upsample to ``data.image_size`` (bilinear).
- The train/val split is fixed: stratified 80/20 (1437 / 360 images) with its own seed 0,
  independent of ``data.seed``, so validation numbers are comparable across runs and seeds.
  ``data.train_size`` / ``data.val_size`` do not apply (they size the generated data sets).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["DigitsDataset", "DIGIT_CLASSES", "SPLIT_SEED", "VAL_FRACTION"]

DIGIT_CLASSES = [str(i) for i in range(10)]
SPLIT_SEED = 0
VAL_FRACTION = 0.2


@lru_cache(maxsize=1)
def _load() -> tuple[Tensor, Tensor, dict[str, np.ndarray]]:
    """All images ``uint8 [1797, 3, 8, 8]``, labels ``int64 [1797]``, split indices."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    pixels = np.rint(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)  # (N, 8, 8)
    images = torch.from_numpy(pixels).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
    labels = torch.from_numpy(digits.target.astype(np.int64))
    index = np.arange(len(labels))
    train_idx, val_idx = train_test_split(
        index,
        test_size=VAL_FRACTION,
        stratify=digits.target,
        random_state=SPLIT_SEED,
    )
    return images, labels, {"train": np.sort(train_idx), "val": np.sort(val_idx)}


class DigitsDataset(Dataset):
    """One split of the digits: items ``(transform(uint8 [3, 8, 8]), label)``.

    Args:
        split: ``"train"`` (1437 images) or ``"val"`` (360).
        transform: applied to each ``uint8 [3, 8, 8]`` tensor (e.g. the builder's presets, which
            resize to ``data.image_size``); None yields the 8x8 tensors.
    """

    classes = DIGIT_CLASSES

    def __init__(self, split: str = "train", transform: Callable[[Tensor], Any] | None = None):
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        images, labels, splits = _load()
        idx = torch.from_numpy(splits[split])
        self.split = split
        self.images = images[idx]  # (n, 3, 8, 8) uint8
        self.targets = labels[idx].tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        img = self.images[i]
        if self.transform is not None:
            img = self.transform(img)
        return img, self.targets[i]
