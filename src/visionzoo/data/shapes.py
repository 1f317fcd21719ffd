"""``shapes``: the built-in, offline, deterministic dataset of drawn geometric shapes.

One generator gives every label kind for every task (DESIGN.md §5): the class of the largest
shape (classification), a semantic mask (segmentation), instance boxes and masks (detection,
instance segmentation) and an English caption (image-text). Nothing is downloaded; a sample is
a pure function of ``(seed, split, index)``.

A scene is 1-4 (``min_shapes``..``max_shapes``) filled shapes from :data:`SHAPE_CLASSES`, each in
a distinct named colour from :data:`COLOURS`, with a random size, position and rotation, drawn in
painter's order (later shapes occlude earlier ones) on a noisy gradient background (a
random-direction linear gradient between two dim colours plus Gaussian noise).

Rules worth knowing (docs/data_shapes.md says the same for users):

- **Class balance.** The *dominant* shape's class is drawn first, uniformly over the first
  ``num_classes`` classes, and the layout guarantees it is the strictly largest visible shape:
  every other shape's visible area is at most ``_DOMINANCE`` (0.8) of the dominant one's. The
  classification label is therefore uniform over classes, and :meth:`ShapesGenerator.label`
  reads it from the first random draw without rendering.
- **Sizes.** Each shape is either "large" (area a fraction ``large_area`` of the image) or
  "small" (``small_area``); the two bands do not overlap, so the caption's size words are true.
  The dominant shape is always large.
- **Occlusion.** Masks, boxes and areas describe *visible* pixels only. A shape whose visible
  area is below ``min_visible`` (0.5: more than half hidden) of its own unoccluded in-image area
  is dropped from the instance labels. The generator avoids such scenes: a shape whose placement
  would leave any shape under ``min_visible`` visible (or would break the dominance rule) is
  re-placed, up to ``_MAX_TRIES`` times (a large one is made small half-way), and left out of
  the scene (neither drawn nor labelled) if it never fits. Generated samples therefore never
  contain dropped fragments, and the semantic mask is exactly the union of the instance masks.
  The drop rule only fires for hand-made scenes passed to :meth:`ShapesGenerator.render`; there
  the dropped fragment's pixels keep their class in the semantic mask (they *are* that class)
  but get no instance.
- **Pixels.** A pixel belongs to a shape (in every mask) when its centre is inside the shape;
  the image is alpha-blended with the coverage of ``antialias**2`` sub-samples per pixel.
  Boxes are ``xyxy`` in continuous pixel coordinates around the visible pixels:
  ``(x_min, y_min, x_max + 1, y_max + 1)`` for pixel indices, so a one-pixel object has a 1x1 box.
- **Captions** (:func:`_caption`): the shapes largest first, each as "a SIZE COLOUR CLASS"; the
  first two joined by the first's position relative to the second ("left of", "right of",
  "above", "below", by the larger offset of their centres); a third and fourth appended with
  ", and ... and ...". Example: "a large red circle left of a small blue square, and a small
  green star".

Rendering is vectorised: each shape's coverage is computed in one shot with numpy over a
sub-sampled coordinate grid of its bounding square (rotated half-plane tests for polygons, a
fold onto one half-spike then one half-plane test for the star, quadratic forms for the circle
and ellipse); no Python loop touches pixels.

Shape glossary: H, W image height and width; K kept instances; B batch of images.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataError

__all__ = [
    "SHAPE_CLASSES",
    "COLOURS",
    "SPLITS",
    "TASKS",
    "Shape",
    "ShapesGenerator",
    "ShapesDataset",
]

SHAPE_CLASSES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "hexagon",
    "cross",
    "ellipse",
    "diamond",
)

# Saturated colours, well separated from each other and from the dim backgrounds.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 30, 30),
    "green": (40, 200, 50),
    "blue": (45, 85, 245),
    "yellow": (240, 225, 35),
    "magenta": (225, 45, 220),
    "cyan": (40, 215, 225),
    "orange": (255, 130, 0),
    "white": (245, 245, 245),
}

SPLITS: tuple[str, ...] = ("train", "val", "test")
TASKS: tuple[str, ...] = ("classification", "segmentation", "detection", "image-text")

# Every other shape's visible area is at most this fraction of the dominant shape's, so "the
# largest shape" is unambiguous to a viewer, not only by a pixel.
_DOMINANCE = 0.8
# A non-dominant shape drawn "large" may not exceed this fraction of the dominant's area.
_OTHER_MAX_REL_AREA = 0.7
_P_LARGE = 0.35  # chance that a non-dominant shape is drawn large
_MAX_TRIES = 20  # placements tried per shape before it is left out
_BG_MAX = 90  # background colours are drawn per channel in [0, _BG_MAX]: dim, so shapes stand out

# Gaussian noise by table: a random byte picks one of 256 equal-probability quantiles of N(0, 1).
# At 8-bit output precision this is Gaussian noise, ~7x cheaper than standard_normal, which
# otherwise dominates the cost of a 224x224 image. Rescaled to unit standard deviation.
_NOISE_LUT = np.array([NormalDist().inv_cdf((q + 0.5) / 256) for q in range(256)])
_NOISE_LUT = (_NOISE_LUT / _NOISE_LUT.std()).astype(np.float32)

# Geometry of the unit shapes (circumradius 1, centred on the origin, before rotation).
_STAR_INNER = 0.42  # inner/outer radius of the five-pointed star
_ELLIPSE_MINOR = 0.55  # minor/major semi-axis
_DIAMOND_MINOR = 0.6  # short/long half-diagonal of the rhombus
_CROSS_HALF_WIDTH = 0.3  # arm half-width / arm half-length
# Arm half-length such that the arm's tip corners lie on the unit circle.
_CROSS_LEN = 1.0 / math.sqrt(1.0 + _CROSS_HALF_WIDTH**2)
_CROSS_W = _CROSS_HALF_WIDTH * _CROSS_LEN

# Area of each unit shape, to turn a target pixel area into a circumradius.
_UNIT_AREA: dict[str, float] = {
    "circle": math.pi,
    "square": 2.0,
    "triangle": 3.0 * math.sqrt(3.0) / 4.0,
    "star": 5.0 * _STAR_INNER * math.sin(math.pi / 5.0),
    "hexagon": 3.0 * math.sqrt(3.0) / 2.0,
    "cross": 8.0 * _CROSS_W * _CROSS_LEN - 4.0 * _CROSS_W**2,
    "ellipse": math.pi * _ELLIPSE_MINOR,
    "diamond": 2.0 * _DIAMOND_MINOR,
}


# --------------------------------------------------------------------------------------------
# Unit-shape membership tests: (u, v) local coordinates in circumradius units -> bool, any shape.
# --------------------------------------------------------------------------------------------


def _regular_polygon(u: np.ndarray, v: np.ndarray, n: int) -> np.ndarray:
    # Inside iff on the inner side of all n edge half-planes; edge normals point at the edge
    # midpoints, at angle pi/n + 2*pi*k/n when the first vertex sits on +u.
    angles = np.pi / n + 2.0 * np.pi * np.arange(n) / n
    apothem = math.cos(math.pi / n)
    inside = np.ones(u.shape, dtype=bool)
    for a in angles:  # n <= 6 half-planes, each a whole-array operation
        inside &= u * math.cos(a) + v * math.sin(a) <= apothem
    return inside


def _circle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u * u + v * v <= 1.0


def _square(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    half = 1.0 / math.sqrt(2.0)  # corners on the unit circle
    return (np.abs(u) <= half) & (np.abs(v) <= half)


def _triangle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return _regular_polygon(u, v, 3)


def _hexagon(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return _regular_polygon(u, v, 6)


def _star(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # Fold the plane onto one half-spike without trigonometry: the outer vertex nearest in angle
    # to p has the largest projection px = max_k p.d_k (d_k its unit direction), and the folded
    # point is (px, py) with py = sqrt(|p|^2 - px^2) >= 0. There the boundary is the segment from
    # O = (1, 0) to the inner vertex I = r (cos pi/5, sin pi/5), i.e. py <= m (1 - px) with
    # m = I_y / (1 - I_x); squaring (both sides >= 0 when px <= 1) avoids the square root.
    px = u.copy()  # the vertex on +u
    for k in range(1, 5):  # the other four outer vertices
        a = 2.0 * math.pi * k / 5.0
        np.maximum(px, u * math.cos(a) + v * math.sin(a), out=px)
    ix, iy = _STAR_INNER * math.cos(math.pi / 5.0), _STAR_INNER * math.sin(math.pi / 5.0)
    m = iy / (1.0 - ix)
    rest = np.maximum(1.0 - px, 0.0)  # beyond the tip (px > 1) is outside: see the last test
    return (u * u + v * v - px * px <= (m * m) * rest * rest) & (px <= 1.0)


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    au, av = np.abs(u), np.abs(v)
    return ((au <= _CROSS_LEN) & (av <= _CROSS_W)) | ((au <= _CROSS_W) & (av <= _CROSS_LEN))


def _ellipse(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    w = v / _ELLIPSE_MINOR
    return u * u + w * w <= 1.0


def _diamond(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.abs(u) + np.abs(v) / _DIAMOND_MINOR <= 1.0


_INSIDE: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "circle": _circle,
    "square": _square,
    "triangle": _triangle,
    "star": _star,
    "hexagon": _hexagon,
    "cross": _cross,
    "ellipse": _ellipse,
    "diamond": _diamond,
}


# --------------------------------------------------------------------------------------------
# Scene description and rasterisation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """One shape of a scene, in pixel units.

    ``cls`` indexes :data:`SHAPE_CLASSES`; ``colour`` is a key of :data:`COLOURS`; ``cx, cy`` is
    the centre in continuous pixel coordinates (the image spans ``[0, W] x [0, H]``);
    ``radius`` is the circumradius (every point of the shape is within it of the centre);
    ``angle`` is the rotation in radians; ``size`` is the word the caption uses.
    """

    cls: int
    colour: str
    cx: float
    cy: float
    radius: float
    angle: float = 0.0
    size: str = "large"


@dataclass
class _Raster:
    """A shape's pixels inside its bounding square ``[y0:y1, x0:x1]`` (clipped to the image)."""

    y0: int
    y1: int
    x0: int
    x1: int
    hits: np.ndarray  # uint8 [h, w]: how many of the ss*ss sub-samples fall inside
    hard: np.ndarray  # bool [h, w]: the pixel centre is inside (what the labels use)
    full_area: int  # hard pixels before occlusion


# Largest rendered-image cache a ShapesDataset keeps (bytes).
CACHE_LIMIT = 1 << 30


@functools.lru_cache(maxsize=1024)
def _steps(n: int, ss: int) -> np.ndarray:
    """``[0, 1/ss, 2/ss, ...]`` float32 (n*ss,), read-only and shared: grids are built often."""
    out = np.arange(n * ss, dtype=np.float32) / np.float32(ss)
    out.flags.writeable = False
    return out


def _local_grid(
    shape: Shape, y0: int, x0: int, h: int, w: int, ss: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sub-sample centres of pixels ``[y0:y0+h, x0:x0+w]`` in the shape's unit frame.

    ``ss`` samples per pixel side at offsets ``(k + 0.5) / ss``; returns ``u, v`` (h*ss, w*ss):
    translated to the shape centre, rotated by ``-angle`` and divided by the circumradius.
    """
    inv_r = 1.0 / shape.radius
    ys = ((y0 - shape.cy + 0.5 / ss) + _steps(h, ss)) * inv_r
    xs = ((x0 - shape.cx + 0.5 / ss) + _steps(w, ss)) * inv_r
    c, s = np.float32(math.cos(shape.angle)), np.float32(math.sin(shape.angle))
    # (1, w*ss) op (h*ss, 1) -> (h*ss, w*ss)
    return xs[None, :] * c + ys[:, None] * s, ys[:, None] * c - xs[None, :] * s


def _rasterise(shape: Shape, height: int, width: int, ss: int) -> _Raster:
    r = shape.radius
    y0, y1 = max(math.floor(shape.cy - r), 0), min(math.ceil(shape.cy + r), height)
    x0, x1 = max(math.floor(shape.cx - r), 0), min(math.ceil(shape.cx + r), width)
    h, w = max(y1 - y0, 0), max(x1 - x0, 0)
    if h == 0 or w == 0:  # wholly outside the image (hand-made scenes only)
        empty = np.zeros((h, w), dtype=np.uint8)
        return _Raster(y0, y0 + h, x0, x0 + w, empty, empty.astype(bool), 0)
    inside_fn = _INSIDE[SHAPE_CLASSES[shape.cls]]
    u, v = _local_grid(shape, y0, x0, h, w, ss)
    inside = inside_fn(u, v).view(np.uint8)  # (h*ss, w*ss)
    # Count hits per pixel: a loop over the ss*ss sub-sample offsets, each a (h, w) slice.
    hits = inside[0::ss, 0::ss].copy()
    for k in range(1, ss * ss):
        hits += inside[k // ss :: ss, k % ss :: ss]
    # Labels use the pixel-centre rule, not "coverage >= 0.5": with an even ss, edge pixels tie
    # at exactly half so often that thresholding would grow every mask by ~3% of its area.
    if ss % 2:
        hard = inside[ss // 2 :: ss, ss // 2 :: ss].astype(bool)  # the centre is a sub-sample
    else:
        # The grid is affine in position, so the pixel centre is the midpoint of the first and
        # last sub-samples along the diagonal: (h, w) each.
        e = ss - 1
        uc = (u[0::ss, 0::ss] + u[e::ss, e::ss]) * np.float32(0.5)
        vc = (v[0::ss, 0::ss] + v[e::ss, e::ss]) * np.float32(0.5)
        hard = inside_fn(uc, vc)
    return _Raster(y0, y1, x0, x1, hits, hard, int(np.count_nonzero(hard)))


def _owners(rasters: Sequence[_Raster], height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Who is visible where, for rasters given back to front.

    Returns ``owner`` uint8 [H, W] (0 = background, i + 1 = raster i; later shapes overwrite
    earlier ones, which is painter's order) and the visible pixel count of each raster, int64 [n].
    """
    owner = np.zeros((height, width), dtype=np.uint8)
    for i, ra in enumerate(rasters):  # over <= max_shapes shapes
        owner[ra.y0 : ra.y1, ra.x0 : ra.x1][ra.hard] = i + 1
    areas = np.bincount(owner.ravel(), minlength=len(rasters) + 1)[1:]
    return owner, areas


def _background(
    params: np.ndarray, height: int, width: int, noise: float, rng: np.random.Generator
) -> np.ndarray:
    """float32 [H, W, 3]: a linear gradient between two dim colours plus Gaussian noise.

    ``params`` holds 7 uniforms in [0, 1): the two colours (6) and the gradient direction.
    """
    c0 = params[0:3].astype(np.float32) * _BG_MAX
    c1 = params[3:6].astype(np.float32) * _BG_MAX
    theta = 2.0 * math.pi * float(params[6])
    ct, st = math.cos(theta), math.sin(theta)
    # Normalise the projection so t runs from 0 at one corner to 1 at the opposite one.
    half = max((abs(ct) * (width - 1) + abs(st) * (height - 1)) / 2.0, 1e-6)
    tx = (np.arange(width, dtype=np.float32) - (width - 1) / 2.0) * np.float32(ct / half / 2)
    ty = (np.arange(height, dtype=np.float32) - (height - 1) / 2.0) * np.float32(st / half / 2)
    t = (tx[None, :] + ty[:, None] + np.float32(0.5))[:, :, None]  # (H, W, 1)
    if noise > 0:
        codes = np.frombuffer(rng.bytes(height * width * 3), dtype=np.uint8)
        img = np.take(_NOISE_LUT * np.float32(noise), codes).reshape(height, width, 3)
        img += c0
    else:
        img = np.broadcast_to(c0, (height, width, 3)).copy()
    img += t * (c1 - c0)  # (H, W, 1) * (3,) -> (H, W, 3)
    return img


def _compose(
    background: np.ndarray, shapes: Sequence[Shape], rasters: Sequence[_Raster], ss: int
) -> np.ndarray:
    """Alpha-blend the shapes back to front onto the background (in place) -> uint8 [H, W, 3]."""
    img = background
    scale = np.float32(1.0 / (ss * ss))
    for shape, ra in zip(shapes, rasters, strict=True):
        if ra.hard.size == 0:
            continue
        alpha = ra.hits[:, :, None] * scale  # (h, w, 1) coverage in [0, 1]
        colour = np.asarray(COLOURS[shape.colour], dtype=np.float32)
        window = img[ra.y0 : ra.y1, ra.x0 : ra.x1]
        window += alpha * (colour - window)
    img += np.float32(0.5)  # round to nearest below
    np.clip(img, 0.0, 255.0, out=img)
    return img.astype(np.uint8)


def _relation(a: Shape, b: Shape) -> str:
    """Where ``a`` is relative to ``b``, by the dominant axis of the centre offset."""
    dx, dy = a.cx - b.cx, a.cy - b.cy
    if abs(dx) >= abs(dy):
        return "left of" if dx < 0 else "right of"
    return "above" if dy < 0 else "below"  # image y grows downwards


def _caption(shapes: Sequence[Shape], areas: Sequence[int]) -> str:
    """The caption of ``shapes`` ranked by visible ``areas`` (largest first). Grammar:

    phrase(s)  = "a" SIZE COLOUR CLASS
    1 shape    = phrase(s1)
    2 shapes   = phrase(s1) RELATION phrase(s2)
    3-4 shapes = phrase(s1) RELATION phrase(s2) ", and " phrase(s3) [" and " phrase(s4)]
    RELATION   = "left of" | "right of" | "above" | "below"  (s1's centre relative to s2's)
    """
    order = sorted(range(len(shapes)), key=lambda i: -areas[i])  # stable: ties keep paint order
    ranked = [shapes[i] for i in order]

    def phrase(s: Shape) -> str:
        return f"a {s.size} {s.colour} {SHAPE_CLASSES[s.cls]}"

    if not ranked:
        return "an empty background"
    text = phrase(ranked[0])
    if len(ranked) >= 2:
        text += f" {_relation(ranked[0], ranked[1])} {phrase(ranked[1])}"
    if len(ranked) >= 3:
        text += ", and " + " and ".join(phrase(s) for s in ranked[2:])
    return text


def caption_subject(caption: str) -> str:
    """The first phrase of a :func:`_caption` caption: the largest shape alone ("a large red
    circle"); the whole caption when it has one phrase."""
    words = caption.split()
    return " ".join(words[:4]) if len(words) > 4 else caption


# --------------------------------------------------------------------------------------------
# Argument checks: user errors name the argument and what would be valid.
# --------------------------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_int(name: str, value: object, lo: int, hi: int | None = None) -> int:
    if not _is_int(value) or value < lo or (hi is not None and value > hi):
        valid = f"an integer >= {lo}" if hi is None else f"an integer between {lo} and {hi}"
        raise DataError(f"shapes: {name} must be {valid}, got {value!r}")
    return int(value)


def _check_range(name: str, value: object, lo: float, hi: float) -> tuple[float, float]:
    ok = (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value)
        and lo < value[0] <= value[1] <= hi
    )
    if not ok:
        raise DataError(
            f"shapes: {name} must be a pair (low, high) with {lo} < low <= high <= {hi}, "
            f"got {value!r}"
        )
    return float(value[0]), float(value[1])


def _split_id(split: object) -> int:
    if split not in SPLITS:
        raise DataError(f"shapes: split must be one of {', '.join(SPLITS)}, got {split!r}")
    return SPLITS.index(split)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Generator
# --------------------------------------------------------------------------------------------


class ShapesGenerator:
    """Deterministic generator of shape scenes with every label kind.

    Args:
        image_size: ``S`` for ``S x S`` or ``(H, W)``; each side >= 16.
        num_classes: use the first ``num_classes`` of :data:`SHAPE_CLASSES` (None = all of them).
        min_shapes, max_shapes: shapes per scene, drawn uniformly in ``[min_shapes, max_shapes]``
            (``max_shapes <= len(COLOURS)``: colours are distinct within a scene). A shape that
            finds no place after ``_MAX_TRIES`` tries is left out, so a crowded configuration
            can fall short of ``min_shapes``; with the defaults none did in 3000 samples.
        seed: fixes the whole dataset; a sample depends only on ``(seed, split, index)``.
        small_area, large_area: ``(low, high)`` area of a small / large shape as a fraction of
            the image area; the bands must not overlap (``small_area[1] < large_area[0]``).
        noise: standard deviation of the background's Gaussian noise, in 0-255 units.
        antialias: sub-samples per pixel side (1 = none); 2 costs ~20% more time per image.
        rotate: rotate shapes by a uniformly random angle (else axis-aligned).
        min_visible: fraction of a shape's own (in-image) area that must stay visible for it to
            be labelled; 0.5 rather than a laxer 0.3 because a shape less than half visible is
            rarely recognisable, and the caption names it.

    :meth:`sample` returns a dict:

    - ``image``: uint8 ``[H, W, 3]`` RGB.
    - ``label``: int, class index of the largest visible shape (classification).
    - ``semantic_mask``: uint8 ``[H, W]``, 0 = background, ``class index + 1`` on shapes.
    - ``boxes``: float32 ``[K, 4]`` xyxy pixels, tight around each instance's visible pixels.
    - ``labels``: int64 ``[K]`` 0-based class indices (no background offset here; detection adds
      +1 itself, see :class:`ShapesDataset`).
    - ``instance_masks``: bool ``[K, H, W]`` visible pixels of each instance.
    - ``areas``: int64 ``[K]`` visible pixel counts.
    - ``colours``, ``sizes`` ("small"/"large"), ``class_names``: ``list[str]`` per instance.
    - ``caption``: str, e.g. "a large red circle left of a small blue square".

    Instances are listed in painter's order (back to front).
    """

    def __init__(
        self,
        image_size: int | tuple[int, int] = 64,
        num_classes: int | None = None,
        min_shapes: int = 1,
        max_shapes: int = 4,
        seed: int = 0,
        *,
        small_area: tuple[float, float] = (0.015, 0.04),
        large_area: tuple[float, float] = (0.07, 0.14),
        noise: float = 8.0,
        antialias: int = 2,
        rotate: bool = True,
        min_visible: float = 0.5,
    ) -> None:
        if _is_int(image_size):
            hw: tuple[object, object] = (image_size, image_size)
        elif isinstance(image_size, (tuple, list)) and len(image_size) == 2:
            hw = (image_size[0], image_size[1])
        else:
            raise DataError(
                f"shapes: image_size must be an integer or a pair (H, W), got {image_size!r}"
            )
        self.height = _check_int("image_size", hw[0], 16)
        self.width = _check_int("image_size", hw[1], 16)
        k = len(SHAPE_CLASSES) if num_classes is None else num_classes
        self.num_classes = _check_int("num_classes", k, 1, len(SHAPE_CLASSES))
        self.min_shapes = _check_int("min_shapes", min_shapes, 1, len(COLOURS))
        self.max_shapes = _check_int("max_shapes", max_shapes, self.min_shapes, len(COLOURS))
        if not _is_int(seed) or seed < 0:
            raise DataError(f"shapes: seed must be a non-negative integer, got {seed!r}")
        self.seed = int(seed)
        self.small_area = _check_range("small_area", small_area, 0.0, 0.5)
        self.large_area = _check_range("large_area", large_area, 0.0, 0.5)
        if self.small_area[1] >= self.large_area[0]:
            raise DataError(
                f"shapes: small_area {small_area!r} and large_area {large_area!r} must not "
                "overlap (small_area[1] < large_area[0]) so that 'small' and 'large' mean something"
            )
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or noise < 0:
            raise DataError(f"shapes: noise must be a number >= 0, got {noise!r}")
        self.noise = float(noise)
        self.antialias = _check_int("antialias", antialias, 1, 8)
        self.rotate = bool(rotate)
        if (
            isinstance(min_visible, bool)
            or not isinstance(min_visible, (int, float))
            or not 0.0 < min_visible <= 1.0
        ):
            raise DataError(f"shapes: min_visible must be a number in (0, 1], got {min_visible!r}")
        self.min_visible = float(min_visible)

    @property
    def classes(self) -> list[str]:
        """Names of the classes in use, index = class id."""
        return list(SHAPE_CLASSES[: self.num_classes])

    @property
    def image_size(self) -> tuple[int, int]:
        return self.height, self.width

    # -- randomness ----------------------------------------------------------------------------

    def _rng(self, split: str, index: int) -> np.random.Generator:
        if not _is_int(index) or index < 0:
            raise DataError(f"shapes: index must be a non-negative integer, got {index!r}")
        # One independent stream per sample: the same sample whatever the access order.
        return np.random.default_rng(
            np.random.SeedSequence([self.seed, _split_id(split), int(index)])
        )

    def label(self, split: str, index: int) -> int:
        """The classification label of a sample without rendering it (its first random draw)."""
        return int(self._rng(split, index).integers(self.num_classes))

    # -- layout --------------------------------------------------------------------------------

    def _radius(self, cls: int, area_frac: float) -> float:
        area = area_frac * self.height * self.width
        r = math.sqrt(area / _UNIT_AREA[SHAPE_CLASSES[cls]])
        return min(r, 0.5 * min(self.height, self.width) - 1.0)  # must fit inside the image

    def _layout(self, rng: np.random.Generator) -> tuple[np.ndarray, list[Shape], list[_Raster]]:
        """Draw a scene: background float32 [H, W, 3] and the placed shapes, back to front."""
        H, W, k = self.height, self.width, self.num_classes
        # The first draw is the label (see `label`). Never reorder the draws below: every
        # sample of every seed would change.
        dominant_cls = int(rng.integers(k))
        n = int(rng.integers(self.min_shapes, self.max_shapes + 1))
        # One block of uniforms for the rest of the scene (a call per number costs more than
        # the numbers): background (7), colour keys, depth keys (n), dominant area (1), and per
        # other shape its class, large-or-small and area (3 each).
        nc = len(COLOURS)
        block = rng.random(7 + nc + n + 1 + 3 * (n - 1))
        bg, colour_keys = block[:7], block[7 : 7 + nc]
        depth_keys = block[7 + nc : 7 + nc + n]  # painting position of shape j: its key's rank
        lo, hi = self.large_area
        s_lo, s_hi = self.small_area
        dominant_area = lo + block[7 + nc + n] * (hi - lo)
        others = block[8 + nc + n :].reshape(n - 1, 3)
        colour_ids = np.argsort(colour_keys)[:n]  # a random permutation: distinct colours
        names = list(COLOURS)
        background = _background(bg, H, W, self.noise, rng)

        # (depth key, is_dominant, shape, raster), kept sorted back to front. The dominant shape
        # is placed first, into an empty scene, so it is never left out and the label holds.
        placed: list[tuple[float, bool, Shape, _Raster]] = []
        for j in range(n):
            if j == 0:
                cls, size, area = dominant_cls, "large", dominant_area
            else:
                c_u, p, a = others[j - 1]
                cls = min(int(c_u * k), k - 1)
                cap = min(hi, _OTHER_MAX_REL_AREA * dominant_area)
                if p < _P_LARGE and cap > lo:
                    size, area = "large", lo + a * (cap - lo)
                else:
                    size, area = "small", s_lo + a * (s_hi - s_lo)
            radius = self._radius(cls, area)
            for attempt in range(_MAX_TRIES):
                if attempt == _MAX_TRIES // 2 and size == "large" and j > 0:
                    # A large shape that keeps covering too much gets a second chance as small.
                    size, radius = "small", self._radius(cls, s_lo + a * (s_hi - s_lo))
                cx_u, cy_u, ang_u = rng.random(3)
                shape = Shape(
                    cls=cls,
                    colour=names[int(colour_ids[j])],
                    cx=radius + cx_u * (W - 2.0 * radius),  # wholly inside the image
                    cy=radius + cy_u * (H - 2.0 * radius),
                    radius=radius,
                    angle=2.0 * math.pi * ang_u if self.rotate else 0.0,
                    size=size,
                )
                raster = _rasterise(shape, H, W, self.antialias)
                entry = (float(depth_keys[j]), j == 0, shape, raster)
                trial = sorted([*placed, entry], key=lambda t: t[0])
                if raster.full_area > 0 and (j == 0 or self._acceptable(trial)):
                    placed = trial
                    break
            # A shape that never fitted is left out: neither drawn nor labelled.
        return background, [t[2] for t in placed], [t[3] for t in placed]

    def _acceptable(self, trial: list[tuple[float, bool, Shape, _Raster]]) -> bool:
        """Every shape keeps ``min_visible`` of itself; the dominant one stays clearly largest."""
        rasters = [t[3] for t in trial]
        _, areas = _owners(rasters, self.height, self.width)
        dominant = next(i for i, t in enumerate(trial) if t[1])
        limit = _DOMINANCE * areas[dominant]
        for i, (ra, a) in enumerate(zip(rasters, areas, strict=True)):
            if a == 0 or a < self.min_visible * ra.full_area:
                return False
            if i != dominant and a > limit:
                return False
        return True

    # -- labels --------------------------------------------------------------------------------

    def _labels(self, shapes: Sequence[Shape], rasters: Sequence[_Raster]) -> dict[str, Any]:
        H, W = self.height, self.width
        owner, areas = _owners(rasters, H, W)  # (H, W), (n,)
        lut = np.array([0, *(s.cls + 1 for s in shapes)], dtype=np.uint8)
        semantic = lut[owner]  # (H, W): dropped fragments keep their class here
        keep = [
            i
            for i, (ra, a) in enumerate(zip(rasters, areas, strict=True))
            if a > 0 and a >= self.min_visible * ra.full_area
        ]
        ids = np.array(keep, dtype=np.uint8) + 1
        masks = owner[None, :, :] == ids[:, None, None]  # (K, H, W)
        rows, cols = masks.any(axis=2), masks.any(axis=1)  # (K, H), (K, W)
        boxes = np.stack(
            [
                cols.argmax(axis=1),
                rows.argmax(axis=1),
                W - cols[:, ::-1].argmax(axis=1),  # one past the last visible column
                H - rows[:, ::-1].argmax(axis=1),
            ],
            axis=1,
        ).astype(np.float32)  # (K, 4) xyxy
        kept = [shapes[i] for i in keep]
        kept_areas = [int(areas[i]) for i in keep]
        label = kept[int(np.argmax(kept_areas))].cls if kept else -1
        return {
            "label": label,
            "semantic_mask": semantic,
            "boxes": boxes,
            "labels": np.array([s.cls for s in kept], dtype=np.int64),
            "instance_masks": masks,
            "areas": np.array(kept_areas, dtype=np.int64),
            "colours": [s.colour for s in kept],
            "sizes": [s.size for s in kept],
            "class_names": [SHAPE_CLASSES[s.cls] for s in kept],
            "caption": _caption(kept, kept_areas),
        }

    # -- public entry points ---------------------------------------------------------------------

    def sample(self, split: str, index: int) -> dict[str, Any]:
        """Every label kind of sample ``index`` of ``split`` (see the class docstring)."""
        background, shapes, rasters = self._layout(self._rng(split, index))
        out = self._labels(shapes, rasters)
        return {"image": _compose(background, shapes, rasters, self.antialias), **out}

    def image(self, split: str, index: int) -> np.ndarray:
        """uint8 [H, W, 3]: the image of a sample without its labels (same pixels as `sample`)."""
        background, shapes, rasters = self._layout(self._rng(split, index))
        return _compose(background, shapes, rasters, self.antialias)

    def images(self, split: str, indices: Sequence[int]) -> np.ndarray:
        """uint8 [B, H, W, 3]: images only, the fast path for classification (labels: `label`)."""
        out = np.empty((len(indices), self.height, self.width, 3), dtype=np.uint8)
        for b, index in enumerate(indices):  # per-sample streams keep samples independent
            out[b] = self.image(split, index)
        return out

    def render(self, shapes: Sequence[Shape], seed: int = 0) -> dict[str, Any]:
        """Draw a hand-made scene (``shapes`` back to front) on a background drawn from ``seed``.

        Returns the same dict as :meth:`sample`. Unlike generated scenes, nothing is re-placed:
        a shape less than ``min_visible`` visible is drawn, keeps its class in the semantic
        mask, and is dropped from the instance labels; ``label`` is -1 when no instance is left.
        """
        for s in shapes:
            _check_int("Shape.cls", s.cls, 0, self.num_classes - 1)
            if s.colour not in COLOURS:
                raise DataError(
                    f"shapes: Shape.colour must be one of {', '.join(COLOURS)}, got {s.colour!r}"
                )
            if not s.radius > 0:
                raise DataError(f"shapes: Shape.radius must be > 0, got {s.radius!r}")
        rng = np.random.default_rng(seed)
        background = _background(rng.random(7), self.height, self.width, self.noise, rng)
        rasters = [_rasterise(s, self.height, self.width, self.antialias) for s in shapes]
        out = self._labels(shapes, rasters)
        return {"image": _compose(background, shapes, rasters, self.antialias), **out}


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------


class ShapesDataset(Dataset):
    """A torch Dataset over :class:`ShapesGenerator` samples ``0 .. size-1`` of one split.

    What ``__getitem__`` returns depends on ``task``:

    - ``"classification"``: ``(image uint8 Tensor[3, H, W], label int)``; ``transform(image)``.
    - ``"segmentation"``: ``(image, mask int64 Tensor[H, W])`` (0 = background, class + 1);
      ``transform(tv_tensors.Image, tv_tensors.Mask)`` so geometric transforms move both.
    - ``"detection"``: ``(image, {"boxes": tv_tensors.BoundingBoxes XYXY [K, 4], "labels": int64
      [K] = class index + 1 (0 is background in detection), "masks": tv_tensors.Mask uint8
      [K, H, W]})``; ``transform(image, target)``. Add ``v2.SanitizeBoundingBoxes()`` to a
      cropping transform to drop boxes cropped away.
    - ``"image-text"``: ``(image, caption str)``; ``transform(image)``. Flips and crops can make a
      caption's "left of"/"right of" false: use photometric transforms only.

    ``transform`` is a ``torchvision.transforms.v2`` transform taking and returning uint8 tensors.
    Remaining keyword arguments go to :class:`ShapesGenerator`.
    """

    def __init__(
        self,
        split: str = "train",
        size: int = 2000,
        image_size: int | tuple[int, int] = 64,
        num_classes: int | None = None,
        seed: int = 0,
        task: str = "classification",
        transform: Callable[..., Any] | None = None,
        cache: bool = True,
        **gen_kw: Any,
    ) -> None:
        _split_id(split)
        if task not in TASKS:
            raise DataError(f"shapes: task must be one of {', '.join(TASKS)}, got {task!r}")
        if transform is not None and not callable(transform):
            raise DataError(f"shapes: transform must be callable or None, got {transform!r}")
        self.generator = ShapesGenerator(image_size, num_classes, seed=seed, **gen_kw)
        self.split = split
        self.size = _check_int("size", size, 0)
        self.task = task
        self.transform = transform
        self.classes = self.generator.classes
        self._targets: list[int] | None = None
        # Classification images are rendered once and kept (uint8, before the transform), so
        # epochs after the first cost only the augmentation. Skipped above CACHE_LIMIT bytes.
        # Segmentation caches the mask too (one more byte per pixel); image-text the caption
        # (a string per scene).
        h, w = self.generator.image_size
        per_pixel = {"classification": 3, "segmentation": 4, "image-text": 3}.get(task)
        self._cache_on = (
            bool(cache) and per_pixel is not None and self.size * h * w * per_pixel <= CACHE_LIMIT
        )
        self._cache: np.ndarray | None = None
        # The task's other cached field: masks (segmentation) or captions (image-text).
        self._extra: np.ndarray | list[str | None] | None = None
        self._cached: np.ndarray | None = None

    @property
    def num_classes(self) -> int:
        return self.generator.num_classes

    @property
    def targets(self) -> list[int]:
        """Classification labels of every sample, computed without rendering (cached)."""
        if self._targets is None:
            self._targets = [self.generator.label(self.split, i) for i in range(self.size)]
        return self._targets

    def __len__(self) -> int:
        return self.size

    def _image(self, index: int) -> np.ndarray:
        if not self._cache_on:
            return self.generator.image(self.split, index)
        if self._cache is None:
            h, w = self.generator.image_size
            self._cache = np.empty((self.size, h, w, 3), dtype=np.uint8)
            self._cached = np.zeros(self.size, dtype=bool)
        if not self._cached[index]:
            self._cache[index] = self.generator.image(self.split, index)
            self._cached[index] = True
        return self._cache[index]

    def _image_and(self, index: int, key: str) -> tuple[np.ndarray, Any]:
        """(image uint8 [H, W, 3], ``sample[key]``), from the cache when on. ``key`` is the
        task's one other field: "semantic_mask" (uint8 [H, W]) or "caption" (str)."""
        if not self._cache_on:
            s = self.generator.sample(self.split, index)
            return s["image"], s[key]
        if self._cache is None or self._extra is None:
            h, w = self.generator.image_size
            self._cache = np.empty((self.size, h, w, 3), dtype=np.uint8)
            self._extra = (
                np.empty((self.size, h, w), dtype=np.uint8)
                if key == "semantic_mask"
                else [None] * self.size
            )
            self._cached = np.zeros(self.size, dtype=bool)
        if not self._cached[index]:
            s = self.generator.sample(self.split, index)
            self._cache[index] = s["image"]
            self._extra[index] = s[key]
            self._cached[index] = True
        return self._cache[index], self._extra[index]

    def caption(self, index: int) -> str:
        """The caption of scene ``index`` (for ``task="image-text"`` rendered once, into the
        cache when on)."""
        if self.task != "image-text":
            return self.generator.sample(self.split, index)["caption"]
        return self._image_and(index, "caption")[1]

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        from torchvision import tv_tensors  # imported lazily: the generator alone needs numpy only

        if index < 0:
            index += self.size
        if not 0 <= index < self.size:
            raise IndexError(f"shapes: index {index} out of range for a dataset of {self.size}")
        gen = self.generator
        if self.task == "classification":
            image = _to_chw(self._image(index))
            label = self.targets[index] if self._cache_on else gen.label(self.split, index)
            return (self.transform(image) if self.transform else image), label

        if self.task == "segmentation":
            img_np, mask_np = self._image_and(index, "semantic_mask")
            image = tv_tensors.Image(_to_chw(img_np))
            mask = tv_tensors.Mask(torch.from_numpy(mask_np.astype(np.int64)))
            if self.transform:
                image, mask = self.transform(image, mask)
            return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)

        if self.task == "image-text":
            img_np, caption = self._image_and(index, "caption")
            image = tv_tensors.Image(_to_chw(img_np))
            out = self.transform(image) if self.transform else image
            return out.as_subclass(torch.Tensor), caption

        s = gen.sample(self.split, index)
        image = tv_tensors.Image(_to_chw(s["image"]))
        target = {
            "boxes": tv_tensors.BoundingBoxes(
                torch.from_numpy(s["boxes"]), format="XYXY", canvas_size=gen.image_size
            ),
            "labels": torch.from_numpy(s["labels"]) + 1,
            # uint8, not bool: resizing transforms interpolate masks and do not take bool.
            "masks": tv_tensors.Mask(torch.from_numpy(s["instance_masks"]).to(torch.uint8)),
        }
        if self.transform:
            image, target = self.transform(image, target)
        return image.as_subclass(torch.Tensor), target


def _to_chw(image: np.ndarray) -> torch.Tensor:
    # (H, W, 3) -> (3, H, W), contiguous so batches collate without a copy per sample later.
    return torch.from_numpy(image).permute(2, 0, 1).contiguous()
