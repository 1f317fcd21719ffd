"""Selective-search proposals for R-CNN (arXiv:1311.2524) and Fast R-CNN (arXiv:1504.08083),
computed once per image and cached on disk, as both papers did.

Both detectors take their regions of interest from selective search (Uijlings et al., IJCV
2013; :func:`visionzoo.ops.selective_search`), an external CPU algorithm that is not part of the
network: the papers precompute the proposals of every image once and read them back in every
epoch. :class:`ProposalCache` does the same:

* the key of an image is a SHA-1 of its uint8 pixels (shape included) and of the selective
  search settings (mode, ``max_proposals``, every other keyword, a format version), so changing
  either the image or the settings gives a new key: a stale file is never read;
* each entry is one ``<root>/<key[:2]>/<key>.npy`` (float32 ``[K, 4]`` xyxy), written atomically
  (temporary file + rename), plus an in-memory copy for the life of the object;
* ``root`` defaults to ``$VISIONZOO_CACHE/proposals`` or ``~/.cache/visionzoo/proposals``;
  ``root=None`` with ``disk=False`` keeps the cache in memory only.

Images may be given as uint8 ``Tensor[3, H, W]`` or as float ``Tensor[3, H, W]`` in [0, 1]
(the detection models' input): floats are mapped back to uint8 by ``round(x * 255)``, which
recovers the dataset's uint8 pixels exactly, so training and evaluation share entries.

``stats`` counts hits, misses and the seconds spent in selective search (the benchmark's
"proposal time per image").

Shape glossary: K proposals of an image, H x W the image size.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ...errors import ModelArgumentError
from ...ops import selective_search

__all__ = ["ProposalCache", "default_cache_root", "image_to_uint8_hwc", "image_digest"]

# Bumped when the stored format or the meaning of the settings changes.
_FORMAT_VERSION = 1


def default_cache_root(kind: str) -> Path:
    """``$VISIONZOO_CACHE/<kind>`` or ``~/.cache/visionzoo/<kind>``."""
    base = os.environ.get("VISIONZOO_CACHE")
    root = Path(base) if base else Path.home() / ".cache" / "visionzoo"
    return root / kind


def image_to_uint8_hwc(image: Tensor | np.ndarray) -> np.ndarray:
    """uint8 or float-in-[0, 1] ``Tensor[3, H, W]`` (or a uint8 ``[H, W, 3]`` array) ->
    contiguous uint8 ``np.ndarray[H, W, 3]``."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ModelArgumentError(
                f"proposals: a numpy image must be uint8 [H, W, 3], got {image.dtype} {image.shape}"
            )
        return np.ascontiguousarray(image)
    if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ModelArgumentError(f"proposals: images must be Tensor[3, H, W], got {shape}")
    x = image.detach().cpu()
    if x.dtype != torch.uint8:
        # float 0-1 -> the uint8 pixels it was made from (x = u / 255 round-trips exactly)
        x = (x.float() * 255.0).round_().clamp_(0, 255).to(torch.uint8)
    return np.ascontiguousarray(x.permute(1, 2, 0).numpy())  # (3, H, W) -> (H, W, 3)


def image_digest(image_hwc: np.ndarray) -> str:
    """SHA-1 of a uint8 ``[H, W, 3]`` image's shape and pixels."""
    h = hashlib.sha1(str(image_hwc.shape).encode())
    h.update(image_hwc.tobytes())
    return h.hexdigest()


class ProposalCache:
    """Selective-search boxes per image, computed once and reused (module docstring).

    Args:
        mode: selective search mode ("fast", "quality" or "single").
        max_proposals: keep at most this many best-ranked boxes (R-CNN: ~2000); None = all.
        root: the cache folder (default: :func:`default_cache_root` ``("proposals")``).
        disk: store entries on disk (False: in memory only).
        **search_kwargs: other :func:`~visionzoo.ops.selective_search` keywords (``seed``,
            ``k_scale``, ``min_box_size``, ...); they are part of the key.

    ``cache(image) -> float32 Tensor[K, 4]`` (xyxy, the image's pixels, best first).
    """

    def __init__(
        self,
        mode: str = "fast",
        max_proposals: int | None = 2000,
        *,
        root: str | os.PathLike[str] | None = None,
        disk: bool = True,
        **search_kwargs: Any,
    ) -> None:
        self.settings: dict[str, Any] = {
            "mode": mode,
            "max_proposals": max_proposals,
            **dict(sorted(search_kwargs.items())),
        }
        self.disk = bool(disk)
        self.root = Path(root) if root is not None else default_cache_root("proposals")
        self._settings_digest = hashlib.sha1(
            json.dumps({"v": _FORMAT_VERSION, **self.settings}, sort_keys=True).encode()
        ).hexdigest()
        self._memory: dict[str, np.ndarray] = {}
        self.stats = {"hits": 0, "misses": 0, "seconds": 0.0}

    def __repr__(self) -> str:
        where = str(self.root) if self.disk else "memory"
        return f"ProposalCache({self.settings}, at={where})"

    def key(self, image: Tensor | np.ndarray) -> str:
        """The cache key of an image under these settings."""
        return self._key(image_to_uint8_hwc(image))

    def _key(self, hwc: np.ndarray) -> str:
        return hashlib.sha1((image_digest(hwc) + self._settings_digest).encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def _read(self, key: str) -> np.ndarray | None:
        if key in self._memory:
            return self._memory[key]
        if not self.disk:
            return None
        p = self.path(key)
        if not p.is_file():
            return None
        try:
            boxes = np.load(p, allow_pickle=False)
        except (OSError, ValueError):
            return None  # a truncated file from a killed process: recompute it
        if boxes.dtype != np.float32 or boxes.ndim != 2 or boxes.shape[1] != 4:
            return None
        self._memory[key] = boxes
        return boxes

    def _write(self, key: str, boxes: np.ndarray) -> None:
        self._memory[key] = boxes
        if not self.disk:
            return
        p = self.path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        # Atomic: several processes (or helpers) may fill the same cache.
        fd, tmp = tempfile.mkstemp(dir=p.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, boxes, allow_pickle=False)
            os.replace(tmp, p)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def compute(self, hwc: np.ndarray) -> np.ndarray:
        """Run selective search (no cache) on a uint8 ``[H, W, 3]`` image."""
        kwargs: Mapping[str, Any] = {k: v for k, v in self.settings.items() if k != "mode"}
        boxes = selective_search(hwc, self.settings["mode"], **kwargs)
        return np.ascontiguousarray(boxes, dtype=np.float32).reshape(-1, 4)

    def __call__(self, image: Tensor | np.ndarray) -> Tensor:
        hwc = image_to_uint8_hwc(image)
        key = self._key(hwc)
        boxes = self._read(key)
        if boxes is None:
            t0 = time.perf_counter()
            boxes = self.compute(hwc)
            self.stats["seconds"] += time.perf_counter() - t0
            self.stats["misses"] += 1
            self._write(key, boxes)
        else:
            self.stats["hits"] += 1
        return torch.from_numpy(boxes.copy())

    def clear_memory(self) -> None:
        """Forget the in-memory copies (disk entries stay)."""
        self._memory.clear()
