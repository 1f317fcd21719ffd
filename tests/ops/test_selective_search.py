"""Selective search (Uijlings et al., IJCV 2013): proposals, features, grouping and ranking.

The features and the grouping are checked against plain-loop references computed from the
pixels; the ranking against the paper's rule re-derived from the hierarchies.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from visionzoo import ops
from visionzoo.data.shapes import ShapesGenerator
from visionzoo.errors import OpArgumentError, VisionZooError
from visionzoo.ops import selective_search as ss_fn
from visionzoo.ops.selective_search import (
    COLOUR_BINS,
    MODES,
    TEXTURE_BINS,
    _colour_bins,
    _fill_similarity,
    _hierarchical_grouping,
    _Hierarchy,
    _histogram_intersection,
    _neighbour_pairs,
    _regions,
    _segment,
    _size_similarity,
    _texture_bins,
    _to_colour_space,
)


def _shapes_image(i: int = 0, size: int | tuple[int, int] = 64) -> np.ndarray:
    return ShapesGenerator(size).sample("val", i)["image"]


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return ops.box_iou(torch.from_numpy(a).double(), torch.from_numpy(b).double()).numpy()


def _rectangles_image() -> tuple[np.ndarray, np.ndarray]:
    """Three flat rectangles on a mildly noisy flat background, and their xyxy boxes."""
    rng = np.random.default_rng(0)
    img = np.clip(rng.normal(45, 3, size=(80, 96, 3)), 0, 255)
    boxes = np.array([[6, 5, 30, 25], [40, 12, 70, 30], [20, 44, 88, 72]])
    for (x0, y0, x1, y1), c in zip(
        boxes, [(220, 30, 30), (40, 200, 50), (45, 85, 245)], strict=True
    ):
        img[y0:y1, x0:x1] = c
    return img.round().astype(np.uint8), boxes.astype(np.float64)


# ----------------------------------------------------------------------------- public behaviour


def test_exported_from_ops():
    assert "selective_search" in ops.__all__
    assert callable(ss_fn) and ss_fn is ops.selective_search


def test_import_ops_does_not_import_skimage():
    code = "import sys, visionzoo.ops; print('skimage' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_output_shape_dtype_and_bounds_non_square():
    img = _shapes_image(3, (48, 72))  # H=48, W=72: catches x/y mix-ups
    boxes = ops.selective_search(img, "fast")
    assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
    assert boxes.shape[0] > 10
    x1, y1, x2, y2 = boxes.T
    assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= 72).all() and (y2 <= 48).all()
    assert (x2 > x1).all() and (y2 > y1).all()
    assert (boxes == boxes.round()).all()  # region boxes are whole pixels
    # the top of every hierarchy is the whole image
    assert (boxes == np.array([0, 0, 72, 48], np.float32)).all(axis=1).any()
    # distinct boxes
    assert len(np.unique(boxes, axis=0)) == len(boxes)


def test_default_min_box_size_and_explicit():
    img = _shapes_image(1)
    boxes = ops.selective_search(img)
    wh = boxes[:, 2:] - boxes[:, :2]
    assert wh.min() >= 2  # default at 64 px: max(2, round(64 / 32))
    big = ops.selective_search(img, min_box_size=12)
    assert (big[:, 2:] - big[:, :2]).min() >= 12
    # the filter only removes: the big boxes keep their relative order
    keep = ((wh >= 12).all(axis=1)).nonzero()[0]
    np.testing.assert_array_equal(big, boxes[keep])


def test_deterministic_with_seed():
    img = _shapes_image(2)
    a = ops.selective_search(img, seed=3)
    b = ops.selective_search(img, seed=3)
    np.testing.assert_array_equal(a, b)
    c = ops.selective_search(img, seed=4)
    # another seed ranks the same set of boxes differently
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(np.unique(a, axis=0), np.unique(c, axis=0))


def test_max_proposals_is_a_prefix():
    img = _shapes_image(4)
    full = ops.selective_search(img)
    top = ops.selective_search(img, max_proposals=7)
    assert top.shape == (7, 4)
    np.testing.assert_array_equal(top, full[:7])
    assert ops.selective_search(img, max_proposals=10**6).shape == full.shape


def test_rectangles_recovered():
    img, gt = _rectangles_image()
    for mode in ("single", "fast"):
        boxes = ops.selective_search(img, mode).astype(np.float64)
        best = _iou(gt, boxes).max(axis=1)
        assert (best >= 0.9).all(), (mode, best)


def test_shapes_recall():
    # the figure in miniature: every box of 8 validation images at IoU >= 0.5
    gen = ShapesGenerator(64)
    hit = total = 0
    for i in range(8):
        s = gen.sample("val", i)
        best = _iou(s["boxes"].astype(np.float64), ops.selective_search(s["image"]).astype(float))
        hit += int((best.max(axis=1) >= 0.5).sum())
        total += len(s["boxes"])
    assert hit == total


def test_grayscale_is_stacked():
    img = _shapes_image(5)[:, :, 1]
    np.testing.assert_array_equal(
        ops.selective_search(img), ops.selective_search(np.stack([img] * 3, axis=2))
    )


def test_quality_contains_fast():
    # quality's strategies include all of fast's (HSV, Lab x k 50, 100 x CTSF, TSF)
    img = _shapes_image(6, 40)
    fast = {tuple(b) for b in ops.selective_search(img, "fast").tolist()}
    quality = ops.selective_search(img, "quality")
    assert fast <= {tuple(b) for b in quality.tolist()}
    assert len(quality) > len(fast)


def test_overrides_reproduce_single_mode():
    img = _shapes_image(7)
    np.testing.assert_array_equal(
        ops.selective_search(img, "single", seed=1),
        ops.selective_search(
            img, "quality", colour_spaces=["hsv"], ks=[100], similarities=["CTSF"], seed=1
        ),
    )


def test_modes_table():
    assert MODES["fast"].colour_spaces == ("hsv", "lab")
    assert MODES["fast"].ks == (50.0, 100.0)
    assert MODES["fast"].similarities == ("CTSF", "TSF")
    q = MODES["quality"]
    assert len(q.colour_spaces) * len(q.ks) * len(q.similarities) == 80


def test_ranking_and_dedup_follow_the_paper():
    """Single strategy: order = (position from the top) x U[0, 1], first copy of a box kept."""
    img, seed = _shapes_image(8), 5
    conv = _to_colour_space(img, "hsv")
    regions = _regions(_segment(conv, 100.0, 100), _colour_bins(conv), _texture_bins(conv))
    boxes = _hierarchical_grouping(regions, "CTSF")
    n = len(boxes)
    priority = [(n - m) * u for m, u in enumerate(np.random.default_rng(seed).random(n))]
    expected, seen = [], set()
    for m in sorted(range(n), key=lambda m: priority[m]):
        b = tuple(boxes[m].tolist())
        if b[2] - b[0] >= 2 and b[3] - b[1] >= 2 and b not in seen:
            seen.add(b)
            expected.append(b)
    got = ops.selective_search(img, "single", seed=seed)
    assert len(expected) < n  # the hierarchy does repeat boxes: dedup had work to do
    np.testing.assert_array_equal(got, np.array(expected, np.float32))


# ---------------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "image, match",
    [
        (np.zeros((8, 8, 3), np.float32), "dtype uint8 .*float32"),
        (np.zeros((2, 8, 8, 3), np.uint8), r"\[H, W, 3\] \(RGB\) or \[H, W\].*\(2, 8, 8, 3\)"),
        (np.zeros((8, 8, 4), np.uint8), "3 channels.*alpha"),
        (np.zeros((3, 8, 8), np.uint8), "3 channels.*channels must come last"),
        (np.zeros((0, 8, 3), np.uint8), r"must not be empty.*\(0, 8, 3\)"),
        (np.zeros((8, 0), np.uint8), "must not be empty"),
        (torch.zeros(8, 8, 3, dtype=torch.uint8), "numpy array.*Tensor"),
        ([[1, 2], [3, 4]], "numpy array.*list"),
    ],
)
def test_bad_images(image, match):
    with pytest.raises(OpArgumentError, match="selective_search: .*" + match):
        ops.selective_search(image)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(mode="fsat"), r"unknown mode 'fsat' \(did you mean fast\?\); valid modes: single"),
        (dict(mode=3), "unknown mode 3"),
        (dict(max_proposals=0), "max_proposals must be None or an integer >= 1, got 0"),
        (dict(max_proposals=2.5), "max_proposals"),
        (dict(min_size=0), "min_size must be None or an integer >= 1"),
        (dict(min_box_size=True), "min_box_size"),
        (dict(k_scale=0), "k_scale must be a number > 0, got 0"),
        (dict(seed=-1), "seed must be a non-negative integer"),
        (dict(colour_spaces=["hvs"]), r"unknown colour space 'hvs' \(did you mean hsv\?\)"),
        (dict(colour_spaces="hsv"), "colour_spaces must be a non-empty sequence"),
        (dict(ks=[50, -1]), "ks must be a non-empty sequence of numbers > 0"),
        (dict(similarities=["CTX"]), "'CTX' must be a non-empty string of distinct letters"),
        (dict(similarities=["CC"]), "'CC'"),
        (dict(similarities="CTSF"), "similarities must be a non-empty sequence"),
    ],
)
def test_bad_arguments(kwargs, match):
    img = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(OpArgumentError, match="selective_search: .*" + match) as info:
        ops.selective_search(img, **kwargs)
    assert isinstance(info.value, VisionZooError) and isinstance(info.value, ValueError)


def test_tiny_and_flat_images():
    # one region: the hierarchy is that region alone, the whole image
    np.testing.assert_array_equal(
        ops.selective_search(np.full((5, 7, 3), 9, np.uint8)), [[0, 0, 7, 5]]
    )
    assert ops.selective_search(np.zeros((1, 1, 3), np.uint8), min_box_size=1).tolist() == [
        [0, 0, 1, 1]
    ]


# ------------------------------------------------------------------ features against hand values

# Four regions of a 4 x 6 image:
#   A A B B C C
#   A A B B C C
#   D D D D C C
#   D D D D C C
_LABELS = np.array([[0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 2, 2], [3, 3, 3, 3, 2, 2], [3, 3, 3, 3, 2, 2]])


def _features(img: np.ndarray, labels: np.ndarray = _LABELS):
    conv = _to_colour_space(img, "rgb")
    return _regions(labels, _colour_bins(conv), _texture_bins(conv)), conv


def test_colour_histograms_and_intersection_by_hand():
    img = np.zeros((4, 6, 3), np.uint8)
    img[..., 2] = 100  # blue 100 everywhere: bin floor(100 / 255 * 25) = 9
    img[0, 0:2, 0] = 255  # two pixels of A are red 255: bin 24 (the top bin includes 1.0)
    regions, _ = _features(img)
    a, b = regions.colour[0], regions.colour[1]
    assert a.shape == (3 * COLOUR_BINS,)
    expected_a = np.zeros(75)
    expected_a[[24, 0]] = 2 / 12  # R: two pixels in 24, two in 0; 4 pixels x 3 channels = 12
    expected_a[25 + 0] = 4 / 12  # G all 0
    expected_a[50 + 9] = 4 / 12  # B all 100
    np.testing.assert_allclose(a, expected_a)
    expected_b = np.zeros(75)
    expected_b[[0, 25, 59]] = 1 / 3
    np.testing.assert_allclose(b, expected_b)
    np.testing.assert_allclose(regions.colour.sum(axis=1), 1.0)
    np.testing.assert_allclose(regions.texture.sum(axis=1), 1.0)
    # intersection: min(2/12, 1/3) + min(4/12, 1/3) + min(4/12, 1/3) = 10/12
    assert _histogram_intersection(a, b) == pytest.approx(10 / 12)
    loop = sum(min(x, y) for x, y in zip(a.tolist(), b.tolist(), strict=True))
    assert _histogram_intersection(a, b) == pytest.approx(loop)
    assert _histogram_intersection(a, a) == pytest.approx(1.0)


def test_size_fill_boxes_and_neighbours_by_hand():
    regions, _ = _features(np.zeros((4, 6, 3), np.uint8))
    np.testing.assert_array_equal(regions.size, [4, 4, 8, 8])
    np.testing.assert_array_equal(
        regions.box, [[0, 0, 2, 2], [2, 0, 4, 2], [4, 0, 6, 4], [0, 2, 4, 4]]
    )
    assert regions.image_area == 24
    assert {tuple(e) for e in regions.edges.tolist()} == {(0, 1), (0, 3), (1, 2), (1, 3), (2, 3)}
    s, b = regions.size, regions.box
    assert _size_similarity(s[0], s[1], 24) == pytest.approx(1 - 8 / 24)
    # A, B: union box 4 x 2 = 8 pixels, all of them A or B -> fill 1
    assert _fill_similarity(s[0], s[1], b[0], b[1], 24) == pytest.approx(1.0)
    # A, C: union box is the whole image (24), A + C = 12 -> 1 - 12 / 24
    assert _fill_similarity(s[0], s[2], b[0], b[2], 24) == pytest.approx(0.5)
    # the combined similarity is the sum of its parts, vectorised over pairs
    hier = _Hierarchy(regions, "SF")
    np.testing.assert_allclose(hier.similarity(0, np.array([1, 2])), [2 / 3 + 1, 0.5 + 0.5])


def test_diagonal_contact_makes_neighbours():
    labels = np.array([[0, 1, 1], [2, 3, 1], [2, 2, 1]])
    pairs = {tuple(e) for e in _neighbour_pairs(labels, 4).tolist()}
    assert (0, 3) in pairs  # touching only at a corner
    assert pairs == {(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)}


def test_texture_orientations_on_a_step_edge():
    img = np.zeros((16, 16, 3), np.uint8)
    img[:, 8:] = 200  # dark -> bright from left to right: Gx > 0, Gy = 0
    conv = _to_colour_space(img, "rgb")
    bins = _texture_bins(conv).reshape(16, 16, 3, 8)
    offset = (np.arange(24) * TEXTURE_BINS).reshape(3, 8)
    local = bins - offset  # (H, W, C, 8) bin within each orientation
    # strongest response on the edge (between columns 7 and 8), every row and channel alike:
    # orientations 0, 45, 90, 135 degrees, then their opposites; cos 45 = 0.707 -> bin 7
    for x in (7, 8):
        np.testing.assert_array_equal(
            local[:, x], np.broadcast_to([9, 7, 0, 0, 0, 0, 0, 7], (16, 3, 8))
        )
    # flat far from the edge: no response, bin 0 everywhere
    assert (local[:, 0] == 0).all() and (local[:, 15] == 0).all()


def test_merge_is_size_weighted_average_and_equals_pixels():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, size=(4, 6, 3), dtype=np.uint8)
    regions, conv = _features(img)
    hier = _Hierarchy(regions, "CTSF")
    t = hier.merge(0, 3)  # A (4 px) and D (8 px)
    assert t == 4 and hier.size[t] == 12
    np.testing.assert_array_equal(hier.box[t], [0, 0, 4, 4])
    np.testing.assert_allclose(
        hier.colour[t], (4 * regions.colour[0] + 8 * regions.colour[3]) / 12, rtol=0, atol=1e-15
    )
    np.testing.assert_allclose(
        hier.texture[t], (4 * regions.texture[0] + 8 * regions.texture[3]) / 12, atol=1e-15
    )
    # ... which is the histogram of the union computed from its pixels
    merged_labels = np.where(_LABELS == 3, 0, _LABELS)  # regions 0 (A u D), 1, 2
    union = _regions(merged_labels, _colour_bins(conv), _texture_bins(conv))
    np.testing.assert_allclose(hier.colour[t], union.colour[0], atol=1e-12)
    np.testing.assert_allclose(hier.texture[t], union.texture[0], atol=1e-12)


def test_grouping_merges_most_similar_first():
    img = np.zeros((4, 6, 3), np.uint8)
    img[_LABELS <= 1] = (200, 10, 10)  # A and B share a colour
    img[_LABELS == 2] = (10, 200, 10)
    img[_LABELS == 3] = (10, 10, 200)
    regions, _ = _features(img)
    boxes = _hierarchical_grouping(regions, "C")
    assert len(boxes) == 2 * 4 - 1
    np.testing.assert_array_equal(boxes[:4], regions.box)
    np.testing.assert_array_equal(boxes[4], [0, 0, 4, 2])  # A u B first
    np.testing.assert_array_equal(boxes[-1], [0, 0, 6, 4])  # the whole image last


def _reference_grouping(labels: np.ndarray, conv: np.ndarray, similarity: str) -> list:
    """Plain greedy grouping from the pixels: every step recomputes every feature and pair."""
    cb, tb = _colour_bins(conv), _texture_bins(conv)
    dc, dt = cb.shape[1] * COLOUR_BINS, tb.shape[1] * TEXTURE_BINS
    h, w = labels.shape
    members = {r: {r} for r in range(labels.max() + 1)}
    owner = labels.copy()  # current region of every pixel
    boxes, nxt = [], labels.max() + 1

    def feats(r):
        mask = (owner == r).ravel()
        ys, xs = np.nonzero(owner == r)
        c = np.zeros(dc)
        for v in cb[mask].ravel():
            c[v] += 1
        t = np.zeros(dt)
        for v in tb[mask].ravel():
            t[v] += 1
        box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        return mask.sum(), box, c / c.sum(), t / t.sum()

    for r in sorted(members):
        boxes.append(feats(r)[1])
    while len(members) > 1:
        pairs = set()
        for y in range(h):
            for x in range(w):
                for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < h and 0 <= xx < w and owner[y, x] != owner[yy, xx]:
                        a, b = sorted((owner[y, x], owner[yy, xx]))
                        pairs.add((a, b))
        best = None
        for a, b in sorted(pairs):
            sa, ba, ca, ta = feats(a)
            sb, bb, cbh, tbh = feats(b)
            s = 0.0
            if "C" in similarity:
                s += sum(min(x, y) for x, y in zip(ca, cbh, strict=True))
            if "T" in similarity:
                s += sum(min(x, y) for x, y in zip(ta, tbh, strict=True))
            if "S" in similarity:
                s += 1 - (sa + sb) / (h * w)
            if "F" in similarity:
                bw = max(ba[2], bb[2]) - min(ba[0], bb[0])
                bh = max(ba[3], bb[3]) - min(ba[1], bb[1])
                s += 1 - (bw * bh - sa - sb) / (h * w)
            if best is None or s > best[0] + 1e-12:
                best = (s, a, b)
        _, a, b = best
        owner[(owner == a) | (owner == b)] = nxt
        members[nxt] = members.pop(a) | members.pop(b)
        boxes.append(feats(nxt)[1])
        nxt += 1
    return boxes


@pytest.mark.parametrize("similarity", ["CTSF", "TSF"])
def test_grouping_matches_plain_reference(similarity):
    img = _shapes_image(9, 24)
    conv = _to_colour_space(img, "lab")
    labels = _segment(conv, 20.0, 4)
    assert 8 <= labels.max() + 1 <= 60  # enough regions for a real hierarchy
    regions = _regions(labels, _colour_bins(conv), _texture_bins(conv))
    got = _hierarchical_grouping(regions, similarity)
    np.testing.assert_array_equal(got, np.array(_reference_grouping(labels, conv, similarity)))
