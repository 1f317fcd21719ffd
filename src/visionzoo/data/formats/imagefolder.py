"""ImageFolder: one subfolder per class, with ``train/`` and ``val/`` splits inside the root.

::

    root/
      train/
        cat/  001.jpg 002.png ...
        dog/  a.jpeg nested/b.jpg ...
      val/
        cat/  ...
        dog/  ...

- Classes are the sorted names of the subfolders of ``train/``; label ``i`` is ``classes[i]``.
  ``val/`` must hold the same class folders (a missing or extra one is an error naming it), so
  labels mean the same thing in both splits.
- Images are found recursively under each class folder, with suffixes ``.jpg .jpeg .png .bmp
  .gif .webp .tif .tiff`` in any case. Other files are ignored, and so are hidden files and
  folders (names starting with "."), e.g. macOS ``._photo.jpg`` resource forks, which carry an
  image suffix but are not images.
- A missing root, ``train/`` or ``val/`` folder, a split without class folders, or a class
  folder without images raises DataError naming the path.
- Unreadable images: by default reading one raises DataError naming the file (at the step that
  reads it). With ``skip_bad=True`` every file is test-decoded when the data set is built
  (:func:`visionzoo.data.images.verify_image`: JPEGs at 1/8 scale, other formats fully, on up to
  8 threads) and the bad ones are dropped and counted in ``skipped``. That costs about one
  un-augmented pass of decoding over the data set, once, at start-up.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from ...errors import DataError
from ..images import IMAGE_EXTENSIONS, load_image, verify_image

__all__ = ["ImageFolderDataset", "find_classes", "list_images"]

log = logging.getLogger(__name__)

SPLITS = ("train", "val")


def _split_dir(root: str | os.PathLike[str], split: str) -> Path:
    r = Path(root)
    if not r.exists():
        raise DataError(f"{r}: image folder root does not exist (data.root)")
    if not r.is_dir():
        raise DataError(f"{r}: image folder root is not a directory (data.root)")
    d = r / split
    if not d.is_dir():
        raise DataError(
            f"{d}: no {split}/ folder; an image folder root holds train/ and val/, each with "
            "one subfolder per class"
        )
    return d


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def find_classes(split_dir: str | os.PathLike[str]) -> list[str]:
    """Sorted names of the (non-hidden) subfolders of ``split_dir``.

    Raises:
        DataError: no class folders (naming the loose images, if any, found directly inside).
    """
    d = Path(split_dir)
    classes = sorted(e.name for e in os.scandir(d) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        loose = sorted(e.name for e in os.scandir(d) if e.is_file() and _is_image(e.name))
        hint = (
            f"; found {len(loose)} images directly inside (e.g. {loose[0]}): move them into "
            "a subfolder named after their class"
            if loose
            else ""
        )
        raise DataError(f"{d}: no class folders (expected one subfolder per class){hint}")
    return classes


def list_images(class_dir: str | os.PathLike[str]) -> list[str]:
    """Image files under ``class_dir`` (recursive, symlinks followed), sorted by path.

    Paths are plain strings: a million ``Path`` objects cost several times the memory, and the
    sample list is copied into every loader worker.
    """
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
        dirnames[:] = sorted(n for n in dirnames if not n.startswith("."))
        found.extend(os.path.join(dirpath, n) for n in filenames if _is_image(n))
    return sorted(found)


class ImageFolderDataset(Dataset):
    """One split of an ImageFolder tree (module docstring): items ``(transform(image), label)``.

    Args:
        root: folder holding ``train/`` and ``val/``.
        split: ``"train"`` or ``"val"``. Classes always come from ``train/``.
        transform: applied to the RGB Pillow image from :func:`load_image` (the builder's
            transforms return ``uint8 [3, H, W]``); None yields the Pillow image.
        skip_bad: test-decode every file now and drop the unreadable ones (counted in
            ``skipped``, listed with reasons in ``skipped_files``).

    Attributes:
        classes, class_to_idx, samples (list of (path str, label)), targets, skipped,
        skipped_files (list of (path str, reason)).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        transform: Callable[[Any], Any] | None = None,
        skip_bad: bool = False,
    ):
        if split not in SPLITS:
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        self.root = Path(root)
        self.split = split
        self.transform = transform
        self.classes = find_classes(_split_dir(root, "train"))
        split_dir = _split_dir(root, split)
        if split != "train":
            self._check_same_classes(split_dir)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

        samples: list[tuple[str, int]] = []
        for label, name in enumerate(self.classes):
            files = list_images(split_dir / name)
            if not files:
                raise DataError(
                    f"{split_dir / name}: class folder has no images "
                    f"(looked for {' '.join(IMAGE_EXTENSIONS)}, any case)"
                )
            samples.extend((f, label) for f in files)

        self.skipped = 0
        self.skipped_files: list[tuple[str, str]] = []
        if skip_bad:
            samples = self._drop_unreadable(samples, split_dir)
        self.samples = samples
        self.targets = [label for _, label in samples]

    def _check_same_classes(self, split_dir: Path) -> None:
        have = {e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith(".")}
        missing = sorted(set(self.classes) - have)
        extra = sorted(have - set(self.classes))
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing class folders {', '.join(missing)}")
            if extra:
                parts.append(f"class folders not in train/: {', '.join(extra)}")
            raise DataError(
                f"{split_dir}: {'; '.join(parts)} (the class folders of val/ must match "
                f"those of {self.root / 'train'})"
            )

    def _drop_unreadable(
        self, samples: list[tuple[str, int]], split_dir: Path
    ) -> list[tuple[str, int]]:
        # Pillow releases the GIL while decoding, so threads overlap the work.
        workers = max(1, min(8, os.cpu_count() or 1))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            reasons = list(pool.map(verify_image, [p for p, _ in samples]))
        kept = [s for s, r in zip(samples, reasons, strict=True) if r is None]
        self.skipped_files = [
            (p, r) for (p, _), r in zip(samples, reasons, strict=True) if r is not None
        ]
        self.skipped = len(self.skipped_files)
        if self.skipped:
            shown = "; ".join(r for _, r in self.skipped_files[:5])
            log.warning(
                "%s: skipped %d unreadable image(s) (data.skip_bad=true): %s%s",
                split_dir,
                self.skipped,
                shown,
                " ..." if self.skipped > 5 else "",
            )
        left = {label for _, label in kept}
        empty = [self.classes[i] for i in range(len(self.classes)) if i not in left]
        if empty:
            raise DataError(
                f"{split_dir}: every image of class folder(s) {', '.join(empty)} is unreadable"
            )
        return kept

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        path, label = self.samples[i]
        img = load_image(path)
        if self.transform is not None:
            img = self.transform(img)
        return img, label
