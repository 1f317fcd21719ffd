"""The selective-search proposal cache shared by R-CNN and Fast R-CNN."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from visionzoo.errors import ModelArgumentError
from visionzoo.models.detection.proposals import ProposalCache, default_cache_root
from visionzoo.ops import selective_search


def _image(seed: int = 0, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    img = torch.zeros(3, size, size, dtype=torch.uint8)
    img[:, 4:20, 6:18] = torch.randint(100, 255, (3, 1, 1), generator=g, dtype=torch.uint8)
    img[:, 22:30, 20:30] = 60
    return img


def test_boxes_are_selective_search_and_cache_is_reused_from_disk(tmp_path):
    img = _image()
    cache = ProposalCache("single", None, root=tmp_path)
    boxes = cache(img)
    expected = selective_search(img.permute(1, 2, 0).numpy(), "single")
    assert torch.equal(boxes, torch.from_numpy(expected))
    assert cache.stats["misses"] == 1 and cache.stats["hits"] == 0
    assert cache.path(cache.key(img)).is_file()
    # A new cache object over the same folder reads the file instead of searching again.
    again = ProposalCache("single", None, root=tmp_path)
    again.compute = None  # type: ignore[assignment]  (would fail if called)
    assert torch.equal(again(img), boxes)
    assert again.stats == {"hits": 1, "misses": 0, "seconds": 0.0}


def test_float_images_share_the_uint8_entry(tmp_path):
    img = _image()
    cache = ProposalCache("single", root=tmp_path)
    assert cache.key(img) == cache.key(img.float() / 255)


def test_invalidated_when_the_settings_or_the_image_change(tmp_path):
    img = _image()
    base = ProposalCache("single", None, root=tmp_path)
    base(img)
    other_settings = [
        ProposalCache("fast", None, root=tmp_path),
        ProposalCache("single", 5, root=tmp_path),
        ProposalCache("single", None, root=tmp_path, seed=1),
    ]
    for cache in other_settings:
        assert cache.key(img) != base.key(img)
        cache(img)
        assert cache.stats["misses"] == 1 and cache.stats["hits"] == 0
    assert ProposalCache("single", 5, root=tmp_path)(img).shape[0] <= 5
    changed = img.clone()
    changed[0, 0, 0] += 1  # one pixel
    assert base.key(changed) != base.key(img)
    base(changed)
    assert base.stats["misses"] == 2


def test_a_corrupt_file_is_recomputed(tmp_path):
    img = _image()
    cache = ProposalCache("single", root=tmp_path)
    boxes = cache(img)
    cache.path(cache.key(img)).write_bytes(b"not a numpy file")
    fresh = ProposalCache("single", root=tmp_path)
    assert torch.equal(fresh(img), boxes)
    assert fresh.stats["misses"] == 1


def test_memory_only_cache_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("VISIONZOO_CACHE", str(tmp_path))
    cache = ProposalCache("single", disk=False)
    assert cache.root == tmp_path / "proposals" == default_cache_root("proposals")
    cache(_image())
    cache(_image())
    assert cache.stats["hits"] == 1
    assert not any(tmp_path.iterdir())


def test_bad_images_are_refused(tmp_path):
    cache = ProposalCache("single", root=tmp_path)
    with pytest.raises(ModelArgumentError, match=r"Tensor\[3, H, W\]"):
        cache(torch.zeros(1, 8, 8))
    with pytest.raises(ModelArgumentError, match="uint8"):
        cache(np.zeros((8, 8, 3), dtype=np.float32))
