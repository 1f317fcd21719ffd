"""The built-in ``shapes`` generator and dataset: determinism, label consistency, transforms."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from visionzoo.data.shapes import (
    _UNIT_AREA,
    COLOURS,
    SHAPE_CLASSES,
    Shape,
    ShapesDataset,
    ShapesGenerator,
)
from visionzoo.errors import DataError, VisionZooError

# One generator's samples, shared by the consistency tests (rendering them is the slow part).
_GEN = ShapesGenerator(image_size=64, seed=0)
_SAMPLES = [_GEN.sample("train", i) for i in range(60)]


def _same(a: dict, b: dict) -> bool:
    return all(
        np.array_equal(a[k], b[k]) if isinstance(a[k], np.ndarray) else a[k] == b[k] for k in a
    )


def test_class_list_and_colours():
    assert SHAPE_CLASSES[:6] == ("circle", "square", "triangle", "star", "hexagon", "cross")
    assert len(COLOURS) >= 8 and {"red", "green", "blue", "yellow", "white"} <= set(COLOURS)
    rgb = np.array(list(COLOURS.values()), dtype=float)
    dists = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1)
    assert dists[~np.eye(len(rgb), dtype=bool)].min() > 90  # well separated


def test_same_sample_whatever_the_access_order():
    g1, g2 = ShapesGenerator(seed=3), ShapesGenerator(seed=3)
    forward = {i: g1.sample("val", i) for i in (0, 1, 2, 7)}
    g2.sample("train", 11)  # touching other samples and splits changes nothing
    backward = {i: g2.sample("val", i) for i in (7, 2, 1, 0)}
    for i in forward:
        assert _same(forward[i], backward[i])
    again = g1.sample("val", 2)
    assert _same(again, forward[2])


def test_splits_and_seeds_give_different_samples():
    imgs = {s: _GEN.images(s, range(4)) for s in ("train", "val", "test")}
    assert not np.array_equal(imgs["train"], imgs["val"])
    assert not np.array_equal(imgs["val"], imgs["test"])
    assert not np.array_equal(imgs["train"], imgs["test"])
    other_seed = ShapesGenerator(seed=1).images("train", range(4))
    assert not np.array_equal(imgs["train"], other_seed)
    assert not np.array_equal(imgs["train"][0], imgs["train"][1])


def test_images_fast_path_matches_sample():
    batch = _GEN.images("train", [3, 0, 5])
    assert batch.shape == (3, 64, 64, 3) and batch.dtype == np.uint8
    for b, i in enumerate([3, 0, 5]):
        np.testing.assert_array_equal(batch[b], _SAMPLES[i]["image"])
        assert _GEN.label("train", i) == _SAMPLES[i]["label"]


def test_every_label_kind_has_its_shape_and_dtype():
    for s in _SAMPLES[:20]:
        k = len(s["labels"])
        assert 1 <= k <= 4
        assert s["image"].shape == (64, 64, 3) and s["image"].dtype == np.uint8
        assert s["semantic_mask"].shape == (64, 64) and s["semantic_mask"].dtype == np.uint8
        assert s["boxes"].shape == (k, 4) and s["boxes"].dtype == np.float32
        assert s["labels"].dtype == np.int64 and s["labels"].shape == (k,)
        assert s["instance_masks"].shape == (k, 64, 64) and s["instance_masks"].dtype == bool
        assert s["areas"].shape == (k,)
        assert len(s["colours"]) == len(s["sizes"]) == len(s["class_names"]) == k
        assert set(s["sizes"]) <= {"small", "large"}
        assert [SHAPE_CLASSES[c] for c in s["labels"]] == s["class_names"]
        assert isinstance(s["label"], int) and isinstance(s["caption"], str)
        assert len(set(s["colours"])) == k  # distinct colours within a scene


def test_shape_counts_cover_min_to_max():
    counts = np.bincount([len(s["labels"]) for s in _SAMPLES], minlength=5)
    assert counts[0] == 0 and (counts[1:] > 0).all()
    g = ShapesGenerator(min_shapes=2, max_shapes=3, seed=5)
    assert {len(g.sample("test", i)["labels"]) for i in range(15)} == {2, 3}


def test_boxes_are_the_bounding_boxes_of_the_instance_masks():
    for s in _SAMPLES:
        for box, mask in zip(s["boxes"], s["instance_masks"], strict=True):
            ys, xs = np.nonzero(mask)
            # Continuous xyxy: one past the last visible pixel.
            expected = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            np.testing.assert_array_equal(box, np.array(expected, dtype=np.float32))


def test_semantic_mask_is_the_union_of_instance_masks():
    for s in _SAMPLES:
        masks = s["instance_masks"]
        assert not (masks.sum(0) > 1).any()  # visible masks are disjoint
        expected = np.zeros((64, 64), dtype=np.uint8)
        for cls, mask in zip(s["labels"], masks, strict=True):
            expected[mask] = cls + 1
        np.testing.assert_array_equal(s["semantic_mask"], expected)
        np.testing.assert_array_equal(s["areas"], masks.sum(axis=(1, 2)))
        # The instances are visibly there: mean colour of each mask is its named colour.
        for colour, mask in zip(s["colours"], masks, strict=True):
            mean = s["image"][mask].astype(float).mean(0)
            assert np.abs(mean - COLOURS[colour]).max() < 40


def test_label_is_the_class_of_the_clearly_largest_instance():
    for s in _SAMPLES:
        areas = s["instance_masks"].sum(axis=(1, 2))
        top = int(np.argmax(areas))
        assert s["label"] == s["labels"][top]
        assert s["sizes"][top] == "large"
        others = np.delete(areas, top)
        assert (others <= 0.8 * areas[top]).all()  # strictly, and clearly, the largest


def test_classification_labels_are_roughly_uniform():
    ds = ShapesDataset("train", size=600, seed=0)
    counts = np.bincount(ds.targets, minlength=len(ds.classes))
    uniform = 600 / len(ds.classes)
    assert counts.min() >= 0.5 * uniform and counts.max() <= 1.5 * uniform, counts


def test_num_classes_uses_the_first_k_classes():
    g = ShapesGenerator(num_classes=3, seed=2)
    assert g.classes == ["circle", "square", "triangle"]
    for i in range(15):
        s = g.sample("train", i)
        assert 0 <= s["label"] < 3 and (s["labels"] < 3).all()
        assert s["semantic_mask"].max() <= 3


@pytest.mark.parametrize("bad", [0, 9, -1, "3", 2.0, True])
def test_bad_num_classes_names_the_argument(bad):
    with pytest.raises(DataError, match=r"num_classes must be an integer between 1 and 8"):
        ShapesGenerator(num_classes=bad)
    with pytest.raises(VisionZooError, match="num_classes"):
        ShapesDataset(num_classes=bad)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"image_size": 8}, "image_size"),
        ({"image_size": (64,)}, "image_size"),
        ({"min_shapes": 0}, "min_shapes"),
        ({"min_shapes": 3, "max_shapes": 2}, "max_shapes"),
        ({"max_shapes": 9}, "max_shapes"),
        ({"small_area": (0.05, 0.1)}, "must not overlap"),
        ({"large_area": (0.2, 0.1)}, "large_area"),
        ({"noise": -1}, "noise"),
        ({"antialias": 0}, "antialias"),
        ({"min_visible": 0}, "min_visible"),
    ],
)
def test_bad_generator_arguments_are_named(kwargs, match):
    with pytest.raises(DataError, match=match):
        ShapesGenerator(**kwargs)


def test_bad_split_task_and_index():
    with pytest.raises(DataError, match="split must be one of train, val, test"):
        _GEN.sample("training", 0)
    with pytest.raises(DataError, match="task must be one of"):
        ShapesDataset(task="detect")
    with pytest.raises(DataError, match="index"):
        _GEN.sample("train", -1)
    ds = ShapesDataset(size=3)
    with pytest.raises(IndexError):
        ds[3]
    torch.testing.assert_close(ds[-1][0], ds[2][0])


# -- captions ----------------------------------------------------------------------------------

_PHRASE = r"a (small|large) (\w+) (\w+)"
_RELATION = r"(left of|right of|above|below)"
_GRAMMAR = re.compile(
    rf"^{_PHRASE}(?: {_RELATION} {_PHRASE}(?:, and {_PHRASE}(?: and {_PHRASE})?)?)?$"
)


def test_captions_follow_the_grammar_and_name_every_shape():
    for s in _SAMPLES:
        cap = s["caption"]
        m = _GRAMMAR.match(cap)
        assert m, cap
        phrases = re.findall(_PHRASE, cap)
        assert len(phrases) == len(s["labels"])
        order = np.argsort(-s["areas"], kind="stable")  # largest first
        expected = [(s["sizes"][i], s["colours"][i], s["class_names"][i]) for i in order]
        assert phrases == expected, cap
        assert phrases[0][2] == SHAPE_CLASSES[s["label"]]


@pytest.mark.parametrize(
    ("dx", "dy", "relation"),
    [(-20, 0, "left of"), (20, 2, "right of"), (1, -20, "above"), (0, 20, "below")],
)
def test_caption_relation_is_the_largest_relative_to_the_second(dx, dy, relation):
    g = ShapesGenerator(96, antialias=1)
    big = Shape(SHAPE_CLASSES.index("circle"), "red", 48 + dx, 48 + dy, 14, size="large")
    small = Shape(SHAPE_CLASSES.index("square"), "blue", 48, 48, 7, size="small")
    s = g.render([small, big]) if dx < 0 else g.render([big, small])
    assert s["caption"] == f"a large red circle {relation} a small blue square"
    one = g.render([Shape(SHAPE_CLASSES.index("star"), "green", 48, 48, 10, size="small")])
    assert one["caption"] == "a small green star" and one["label"] == 3


# -- rendering and occlusion -------------------------------------------------------------------


@pytest.mark.parametrize("name", SHAPE_CLASSES)
def test_each_shape_has_its_analytic_area(name):
    # The unit areas turn a target area into a radius, so "small"/"large" depend on them.
    g = ShapesGenerator(64, antialias=2)
    for angle in (0.0, 0.7):
        s = g.render([Shape(SHAPE_CLASSES.index(name), "white", 32.3, 31.6, 22.0, angle)])
        area = s["areas"][0]
        assert area == pytest.approx(_UNIT_AREA[name] * 22.0**2, rel=0.025)
        assert s["label"] == SHAPE_CLASSES.index(name)


def test_later_shapes_occlude_earlier_ones():
    g = ShapesGenerator(64)
    circle = Shape(0, "red", 26, 32, 14)
    square = Shape(1, "blue", 40, 32, 12)
    alone = g.render([circle])["instance_masks"][0]
    both = g.render([circle, square])
    back, front = both["instance_masks"]
    full_square = g.render([square])["instance_masks"][0]
    np.testing.assert_array_equal(front, full_square)  # the front shape is whole
    assert (alone & full_square).sum() > 20  # they really overlap
    np.testing.assert_array_equal(back, alone & ~full_square)  # covered pixels excluded
    assert both["areas"][0] == back.sum() < alone.sum()
    assert both["boxes"][0][2] < g.render([circle])["boxes"][0][2]  # box shrinks to visible part
    # The pixels where they overlap show the front shape's colour.
    overlap = alone & full_square
    assert np.abs(both["image"][overlap].astype(float) - COLOURS["blue"]).max() < 40


def test_a_mostly_hidden_shape_is_dropped_from_instances_but_not_from_the_mask():
    g = ShapesGenerator(64)
    circle = Shape(0, "red", 44, 32, 6, size="small")  # three quarters under the square
    square = Shape(1, "blue", 32, 32, 20)
    s = g.render([circle, square])
    assert s["labels"].tolist() == [1] and s["colours"] == ["blue"]
    fragment = s["semantic_mask"] == 1  # circle class + 1
    assert 0 < fragment.sum() < 0.5 * g.render([circle])["areas"][0]
    assert not (fragment & s["instance_masks"][0]).any()
    assert s["caption"] == "a large blue square"


def test_other_image_sizes_and_settings():
    g = ShapesGenerator((48, 80), antialias=1, rotate=False, noise=0.0, seed=4)
    s = g.sample("test", 0)
    assert s["image"].shape == (48, 80, 3) and s["instance_masks"].shape[1:] == (48, 80)
    bg = s["semantic_mask"] == 0
    # No noise: the background is a smooth gradient (neighbouring pixels differ by <= 2 levels).
    img = s["image"].astype(int)
    both = bg[:, 1:] & bg[:, :-1]
    assert np.abs(img[:, 1:] - img[:, :-1])[both].max() <= 2
    noisy = ShapesGenerator((48, 80), noise=8.0, seed=4).sample("test", 0)["image"].astype(int)
    assert np.abs(noisy[:, 1:] - noisy[:, :-1])[both].std() > 4


# -- dataset -----------------------------------------------------------------------------------


def test_classification_dataset_and_transform():
    ds = ShapesDataset("train", size=10, image_size=64, seed=0)
    assert ds.classes == list(SHAPE_CLASSES) and len(ds) == 10
    img, label = ds[4]
    assert img.dtype == torch.uint8 and img.shape == (3, 64, 64)
    assert label == _SAMPLES[4]["label"] == ds.targets[4]
    np.testing.assert_array_equal(img.permute(1, 2, 0).numpy(), _SAMPLES[4]["image"])
    flip = ShapesDataset("train", size=10, seed=0, transform=v2.RandomHorizontalFlip(p=1.0))
    torch.testing.assert_close(flip[4][0], img.flip(-1))
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch[0].shape == (4, 3, 64, 64) and batch[1].tolist() == ds.targets[:4]


def test_segmentation_transform_keeps_the_mask_aligned():
    crop = v2.RandomResizedCrop(48, scale=(0.3, 0.8), antialias=True)
    ds = ShapesDataset("val", size=8, seed=1, task="segmentation", transform=crop)
    plain = ShapesDataset("val", size=8, seed=1, task="segmentation")
    agree = []
    for i in range(len(ds)):
        img, mask = ds[i]
        assert img.shape == (3, 48, 48) and img.dtype == torch.uint8
        assert mask.shape == (48, 48) and mask.dtype == torch.int64
        assert type(mask) is torch.Tensor and type(img) is torch.Tensor
        assert set(mask.unique().tolist()) <= set(plain[i][1].unique().tolist())
        # Shapes are bright (a channel >= 225), backgrounds dim (<= 90 + noise): a mask that
        # followed the image marks exactly the bright pixels, up to blended edge pixels.
        bright = img.max(dim=0).values > 160
        agree.append((bright == (mask > 0)).float().mean().item())
    assert min(agree) > 0.93, agree


def test_detection_targets_and_a_flip():
    ds = ShapesDataset("train", size=6, seed=0, task="detection")
    img, target = ds[2]
    s = _SAMPLES[2]
    assert isinstance(target["boxes"], tv_tensors.BoundingBoxes)
    assert target["boxes"].format == tv_tensors.BoundingBoxFormat.XYXY
    assert tuple(target["boxes"].canvas_size) == (64, 64)
    torch.testing.assert_close(target["labels"], torch.from_numpy(s["labels"]) + 1)
    assert target["labels"].dtype == torch.int64 and target["labels"].min() >= 1
    assert isinstance(target["masks"], tv_tensors.Mask) and target["masks"].shape[0] == len(
        s["labels"]
    )
    flipped = ShapesDataset(
        "train", size=6, seed=0, task="detection", transform=v2.RandomHorizontalFlip(p=1.0)
    )
    fimg, ftarget = flipped[2]
    torch.testing.assert_close(fimg, img.flip(-1))
    boxes = torch.from_numpy(s["boxes"])
    expected = torch.stack([64 - boxes[:, 2], boxes[:, 1], 64 - boxes[:, 0], boxes[:, 3]], dim=1)
    torch.testing.assert_close(ftarget["boxes"].as_subclass(torch.Tensor), expected)
    torch.testing.assert_close(ftarget["masks"], target["masks"].flip(-1))


def test_image_text_dataset_returns_the_caption():
    ds = ShapesDataset("train", size=5, seed=0, task="image-text")
    img, caption = ds[1]
    assert img.shape == (3, 64, 64) and caption == _SAMPLES[1]["caption"]


def test_generator_draws_are_not_rendering_dependent():
    # `label` reads only the first draw; changing render settings must not change the labels.
    a = ShapesGenerator(64, seed=9)
    b = ShapesGenerator(96, seed=9, antialias=1, noise=0.0)
    assert [a.label("val", i) for i in range(30)] == [b.label("val", i) for i in range(30)]
    assert all(b.sample("val", i)["label"] == b.label("val", i) for i in range(10))


def test_classification_cache_returns_the_same_items(monkeypatch):
    cached = ShapesDataset("val", size=6, image_size=32, cache=True)
    plain = ShapesDataset("val", size=6, image_size=32, cache=False)
    first = [cached[i] for i in range(6)]
    for i in range(6):
        assert torch.equal(first[i][0], plain[i][0]) and first[i][1] == plain[i][1]
    # Once rendered, an image is served from the cache without the generator.
    monkeypatch.setattr(cached.generator, "image", lambda *a, **k: pytest.fail("re-rendered"))
    assert all(torch.equal(cached[i][0], first[i][0]) for i in range(6))


def test_image_text_cache_returns_the_same_items(monkeypatch):
    cached = ShapesDataset("val", size=6, image_size=32, task="image-text", cache=True)
    plain = ShapesDataset("val", size=6, image_size=32, task="image-text", cache=False)
    first = [cached[i] for i in range(6)]
    for (img, cap), (img_p, cap_p) in zip(first, (plain[i] for i in range(6)), strict=True):
        assert torch.equal(img, img_p) and cap == cap_p
    assert [cached.caption(i) for i in range(6)] == [c for _, c in first]
    # Once rendered, a scene and its caption come from the cache without the generator.
    monkeypatch.setattr(cached.generator, "sample", lambda *a, **k: pytest.fail("re-rendered"))
    assert all(torch.equal(cached[i][0], first[i][0]) for i in range(6))
    assert [cached[i][1] for i in range(6)] == [c for _, c in first]
    # The cache hands out copies: changing a returned image leaves the next one intact.
    cached[0][0].zero_()
    assert torch.equal(cached[0][0], first[0][0])


def test_caption_of_other_tasks_comes_from_the_generator():
    seg = ShapesDataset("val", size=3, image_size=32, task="segmentation")
    text = ShapesDataset("val", size=3, image_size=32, task="image-text")
    assert [seg.caption(i) for i in range(3)] == [text.caption(i) for i in range(3)]
