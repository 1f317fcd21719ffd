"""Selective search object proposals (Uijlings, van de Sande, Gevers and Smeulders, "Selective
Search for Object Recognition", IJCV 104(2), 2013; no arXiv id). R-CNN (arXiv:1311.2524) and
Fast R-CNN (arXiv:1504.08083) take their proposals from it.

The algorithm, per *strategy* (a colour space, a Felzenszwalb threshold ``k`` and a similarity
combination):

1. Initial regions: Felzenszwalb and Huttenlocher's graph segmentation (IJCV 2004) of the image
   converted to the colour space, with Gaussian smoothing ``sigma = 0.8`` and threshold ``k``
   (:func:`skimage.segmentation.felzenszwalb`).
2. Region features, computed once from the pixels, all regions at a time (``np.bincount`` over
   ``label * D + bin``): the size, the bounding box, a colour histogram (25 bins per channel) and
   a texture histogram (Gaussian derivatives with ``sigma = 1`` in 8 orientations, 10 bins each,
   per channel), both L1-normalised over the whole vector.
3. Hierarchical grouping: the neighbour graph of the regions (8-connected pixel adjacency);
   repeatedly merge the most similar pair of neighbours, with

   ``s(ri, rj) = a1 s_colour + a2 s_texture + a3 s_size + a4 s_fill``, ``a in {0, 1}``:

   - ``s_colour``, ``s_texture``: histogram intersection ``sum_k min(ci_k, cj_k)``;
   - ``s_size = 1 - (size_i + size_j) / size(image)``: small regions merge first;
   - ``s_fill = 1 - (size(BB_ij) - size_i - size_j) / size(image)``, ``BB_ij`` the tight box
     around both: regions that fit into each other merge first.

   A merged region's histograms are the size-weighted average of its parts' (the paper's
   propagation rule, no return to the pixels; for these histograms it equals the histogram of
   the union exactly), its box is the union box, and its neighbours the union of its parts'.
   Every region of the hierarchy, from the initial ones to the whole image, is a proposal.
4. Diversification and ranking: the strategies of the mode run independently; within each
   hierarchy a region gets its position counted from the top (the last merge is 1, the one
   before 2, ...) times a random number in ``[0, 1]``; all regions of all strategies are sorted
   by this value (lower = better), duplicate boxes keep their best-ranked copy, and boxes with
   a side under ``min_box_size`` are dropped.

Modes (the paper's single strategy, "Selective Search Fast" and "Selective Search Quality"),
one strategy per row entry combination:

=========== ===================== ================= =========================
mode        colour spaces         k                 similarities
=========== ===================== ================= =========================
``single``  HSV                   100               C+T+S+F
``fast``    HSV, Lab              50, 100           C+T+S+F, T+S+F
``quality`` HSV, Lab, rgI, H, I   50, 100, 150, 300 C+T+S+F, T+S+F, F, S
=========== ===================== ================= =========================

k and Felzenszwalb's minimum component size (= k, as in the authors' code) keep the paper's
values at every image size (``k_scale=1``); docs/selective_search.md measures why that suits
the small ``shapes`` images and what a smaller ``k_scale`` trades.

Departures from the paper, each marked where it happens (``DEPARTURE``):

* Texture: the 8 orientations are the positive and negative halves of the first Gaussian
  derivative steered to 0, 45, 90 and 135 degrees (``cos t * Gx + sin t * Gy``), each divided by
  its channel's largest response in the image before binning into ``[0, 1]``. The paper fixes
  neither how the orientations are computed nor the range of the bins.
* Segmentation: scikit-image's Felzenszwalb joins the channels of a colour image into one graph
  (Euclidean distance between pixel colours), where Felzenszwalb's own code, which the authors
  used, segments each channel and intersects the results. Both use ``k`` on a 0-255 scale.
* Neighbours are 8-connected (diagonal contact counts), matching the 8-connected grid graph
  that the segmentation is computed on.
* Each colour space's channels are scaled to ``[0, 1]`` before segmentation and histograms
  (Lab: ``L / 100``, ``(a + 128) / 255``, ``(b + 128) / 255``); the single-channel spaces H and I
  are segmented on that one channel.
* Boxes with a side shorter than ``min_box_size`` are removed (the authors' demo removes
  boxes narrower than 20 px on VOC images); the default scales with the image, see
  :func:`selective_search`.

Shape glossary: H, W image height and width; P = H * W pixels; C channels of a colour space;
R initial regions; D histogram length (25 C colour, 80 C texture); E neighbour pairs;
K proposals.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import OpArgumentError, did_you_mean

__all__ = ["selective_search", "MODES", "COLOUR_SPACES", "Strategy"]

COLOUR_BINS = 25  # per channel (the paper)
TEXTURE_BINS = 10  # per orientation and channel (the paper)
TEXTURE_ORIENTATIONS = 8
TEXTURE_SIGMA = 1.0  # Gaussian derivative scale (the paper)
FELZENSZWALB_SIGMA = 0.8  # pre-smoothing of the segmentation (the paper, and Felzenszwalb's)

# Channels of each colour space (the paper's Table 1 names); "rgb" is not in any mode but can be
# asked for through ``colour_spaces``.
COLOUR_SPACES: dict[str, int] = {"rgb": 3, "hsv": 3, "lab": 3, "rgi": 3, "h": 1, "i": 1}

_SIMILARITY_LETTERS = "CTSF"  # colour, texture, size, fill


@dataclass(frozen=True)
class Strategy:
    """A diversification setting: every (colour space, k, similarity) combination is one run."""

    colour_spaces: tuple[str, ...]
    ks: tuple[float, ...]
    similarities: tuple[str, ...]


MODES: dict[str, Strategy] = {
    "single": Strategy(("hsv",), (100.0,), ("CTSF",)),
    "fast": Strategy(("hsv", "lab"), (50.0, 100.0), ("CTSF", "TSF")),
    "quality": Strategy(
        ("hsv", "lab", "rgi", "h", "i"), (50.0, 100.0, 150.0, 300.0), ("CTSF", "TSF", "F", "S")
    ),
}


# ------------------------------------------------------------------------------ argument checks


def _fail(msg: str) -> OpArgumentError:
    return OpArgumentError("selective_search: " + msg)


def _check_image(image: object) -> np.ndarray:
    """-> uint8 [H, W, 3]; a grayscale [H, W] image is stacked into three equal channels."""
    if not isinstance(image, np.ndarray):
        raise _fail(
            "image must be a numpy array, uint8 [H, W, 3] RGB, got "
            f"{type(image).__name__} (for a torch uint8 [3, H, W] tensor pass "
            "t.permute(1, 2, 0).numpy())"
        )
    if image.dtype != np.uint8:
        raise _fail(
            f"image must have dtype uint8 (0-255), got {image.dtype}; for floats in [0, 1] "
            "pass (image * 255).round().astype(np.uint8)"
        )
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)  # grayscale: three equal channels
    elif image.ndim != 3:
        raise _fail(f"image must be [H, W, 3] (RGB) or [H, W] (grayscale), got shape {image.shape}")
    if image.shape[2] != 3:
        hint = ""
        if image.shape[0] == 3:
            hint = "; channels must come last (HWC), e.g. image.transpose(1, 2, 0)"
        elif image.shape[2] == 4:
            hint = "; drop the alpha channel with image[..., :3]"
        raise _fail(
            f"image must have 3 channels (RGB) in its last axis, got shape {image.shape}{hint}"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise _fail(f"image must not be empty, got shape {image.shape}")
    return np.ascontiguousarray(image)


def _is_int(x: object) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _check_optional_int(name: str, value: object, lo: int) -> int | None:
    if value is None:
        return None
    if not _is_int(value) or value < lo:
        raise _fail(f"{name} must be None or an integer >= {lo}, got {value!r}")
    return int(value)


def _resolve_strategy(
    mode: object,
    colour_spaces: Sequence[str] | None,
    ks: Sequence[float] | None,
    similarities: Sequence[str] | None,
) -> Strategy:
    if not isinstance(mode, str) or mode not in MODES:
        hint = did_you_mean(mode, MODES) if isinstance(mode, str) else ""
        raise _fail(f"unknown mode {mode!r}{hint}; valid modes: {', '.join(MODES)}")
    base = MODES[mode]
    if colour_spaces is None:
        spaces = base.colour_spaces
    else:
        if isinstance(colour_spaces, str) or not colour_spaces:
            raise _fail(
                f"colour_spaces must be a non-empty sequence of names, got {colour_spaces!r}"
            )
        spaces = tuple(colour_spaces)
        for s in spaces:
            if s not in COLOUR_SPACES:
                raise _fail(
                    f"unknown colour space {s!r}{did_you_mean(str(s), COLOUR_SPACES)}; valid: "
                    + ", ".join(COLOUR_SPACES)
                )
    if ks is None:
        kvals = base.ks
    else:
        if isinstance(ks, str) or not ks or not all(_is_number(k) and k > 0 for k in ks):
            raise _fail(f"ks must be a non-empty sequence of numbers > 0, got {ks!r}")
        kvals = tuple(float(k) for k in ks)
    if similarities is None:
        sims = base.similarities
    else:
        if isinstance(similarities, str) or not similarities:
            raise _fail(
                "similarities must be a non-empty sequence of combinations such as "
                f"['CTSF', 'TSF'], got {similarities!r}"
            )
        sims = tuple(similarities)
        for s in sims:
            if (
                not isinstance(s, str)
                or not s
                or any(c not in _SIMILARITY_LETTERS for c in s)
                or len(set(s)) != len(s)
            ):
                raise _fail(
                    f"similarity combination {s!r} must be a non-empty string of distinct "
                    "letters from C (colour), T (texture), S (size), F (fill), e.g. 'CTSF'"
                )
    return Strategy(spaces, kvals, sims)


# ------------------------------------------------------------------------------- pixel features


def _to_colour_space(rgb: np.ndarray, space: str) -> np.ndarray:
    """uint8 [H, W, 3] RGB -> float64 [H, W, C] with every channel in [0, 1]."""
    from skimage import color  # lazy: importing visionzoo.ops must not import scikit-image

    x = rgb.astype(np.float64) / 255.0
    if space == "rgb":
        return x
    # DEPARTURE (scaling): every channel in [0, 1] so that one set of 25 bins fits all spaces.
    if space in ("hsv", "h"):
        hsv = color.rgb2hsv(x)
        return hsv if space == "hsv" else hsv[:, :, :1]
    if space == "lab":
        lab = color.rgb2lab(x)
        # DEPARTURE (scaling): L in [0, 100], a and b within [-128, 127] -> [0, 1]
        lab[:, :, 0] /= 100.0
        lab[:, :, 1:] = (lab[:, :, 1:] + 128.0) / 255.0
        return np.clip(lab, 0.0, 1.0)
    if space == "rgi":
        s = x.sum(axis=2, keepdims=True)  # (H, W, 1)
        # normalised r and g; black pixels (s = 0) are neutral grey, r = g = 1/3
        rg = np.divide(x[:, :, :2], s, out=np.full_like(x[:, :, :2], 1.0 / 3.0), where=s > 0)
        return np.concatenate([rg, s / 3.0], axis=2)
    if space == "i":
        return x.mean(axis=2, keepdims=True)
    raise AssertionError(space)  # unreachable: validated by _resolve_strategy


def _colour_bins(conv: np.ndarray) -> np.ndarray:
    """[H, W, C] in [0, 1] -> int64 [P, C]: bin ``c * 25 + floor(25 v)`` of every pixel."""
    h, w, c = conv.shape
    b = np.minimum((conv.reshape(h * w, c) * COLOUR_BINS).astype(np.int64), COLOUR_BINS - 1)
    return b + np.arange(c) * COLOUR_BINS  # (P, C): channel offset into the 25 C vector


def _texture_bins(conv: np.ndarray) -> np.ndarray:
    """[H, W, C] in [0, 1] -> int64 [P, 8 C]: bin ``(c * 8 + o) * 10 + b`` of every pixel.

    DEPARTURE (texture): the first derivative of a Gaussian (sigma = 1) is steerable, so the
    response at angle t is ``cos t * Gx + sin t * Gy``; 0, 45, 90, 135 degrees and their
    opposites (the negated responses) give the 8 orientations, each half-wave rectified. Each
    channel's responses are divided by its largest one, so that the 10 bins span ``[0, 1]``.
    """
    from scipy import ndimage

    h, w, c = conv.shape
    x = conv.astype(np.float32)  # float32 halves the cost of the (P, C, 8) arrays below
    sig = (TEXTURE_SIGMA, TEXTURE_SIGMA, 0)
    gy = ndimage.gaussian_filter(x, sigma=sig, order=(1, 0, 0)).reshape(h * w, c, 1)
    gx = ndimage.gaussian_filter(x, sigma=sig, order=(0, 1, 0)).reshape(h * w, c, 1)
    t = np.arange(TEXTURE_ORIENTATIONS // 2) * (np.pi / (TEXTURE_ORIENTATIONS // 2))
    steered = gx * np.cos(t).astype(np.float32) + gy * np.sin(t).astype(np.float32)  # (P, C, 4)
    resp = np.concatenate([steered, -steered], axis=2)  # (P, C, 8); negatives are rectified
    peak = resp.max(axis=(0, 2), keepdims=True)  # (1, C, 1)
    scale = np.where(peak > 0, TEXTURE_BINS / np.where(peak > 0, peak, 1), 0).astype(np.float32)
    b = np.clip(resp * scale, 0, TEXTURE_BINS - 1).astype(np.int64)  # (P, C, 8): 0 if < 0
    b = b.reshape(h * w, c * TEXTURE_ORIENTATIONS)
    return b + np.arange(c * TEXTURE_ORIENTATIONS) * TEXTURE_BINS


def _histograms(labels: np.ndarray, bins: np.ndarray, length: int) -> np.ndarray:
    """Per-region L1-normalised histograms, all regions at once.

    labels: int64 [P] in [0, R); bins: int64 [P, M], each pixel's M entries (one per channel or
    channel x orientation) already offset into the ``length``-long vector -> float64 [R, length].
    Every region's vector sums to 1 (each of its ``size * M`` entries counts ``1 / (size M)``).
    """
    r = int(labels.max()) + 1
    flat = (labels[:, None] * length + bins).ravel()  # (P * M,)
    counts = np.bincount(flat, minlength=r * length).reshape(r, length).astype(np.float64)
    return counts / counts.sum(axis=1, keepdims=True)


@dataclass
class _Regions:
    """Initial regions of one segmentation, in arrays indexed by label (R rows)."""

    size: np.ndarray  # int64 [R] pixels
    box: np.ndarray  # int64 [R, 4] xyxy, pixel indices (x_min, y_min, x_max + 1, y_max + 1)
    colour: np.ndarray  # float64 [R, 25 C]
    texture: np.ndarray  # float64 [R, 80 C]
    edges: np.ndarray  # int64 [E, 2] neighbour pairs (i < j)
    image_area: int


def _region_boxes(labels: np.ndarray, r: int) -> np.ndarray:
    """labels [H, W] in [0, R) -> int64 [R, 4] tight xyxy boxes, by sorted segment reductions."""
    h, w = labels.shape
    flat = labels.ravel()
    order = np.argsort(flat, kind="stable")
    starts = np.searchsorted(flat[order], np.arange(r))  # every label occurs: no empty segment
    ys, xs = np.divmod(order, w)
    return np.stack(
        [
            np.minimum.reduceat(xs, starts),
            np.minimum.reduceat(ys, starts),
            np.maximum.reduceat(xs, starts) + 1,
            np.maximum.reduceat(ys, starts) + 1,
        ],
        axis=1,
    ).astype(np.int64)


def _neighbour_pairs(labels: np.ndarray, r: int) -> np.ndarray:
    """labels [H, W] -> int64 [E, 2] unique pairs (i < j) of regions that touch (8-connected)."""
    # DEPARTURE (neighbours): the paper does not say; diagonal contact counts, as in the
    # 8-connected grid graph the segmentation itself is computed on.
    a = [labels[:, :-1], labels[:-1, :], labels[:-1, :-1], labels[:-1, 1:]]
    b = [labels[:, 1:], labels[1:, :], labels[1:, 1:], labels[1:, :-1]]
    u = np.concatenate([x.ravel() for x in a]).astype(np.int64)
    v = np.concatenate([x.ravel() for x in b]).astype(np.int64)
    lo, hi = np.minimum(u, v), np.maximum(u, v)
    keep = lo != hi
    codes = np.unique(lo[keep] * r + hi[keep])
    return np.stack([codes // r, codes % r], axis=1)


def _regions(labels: np.ndarray, colour_bins: np.ndarray, texture_bins: np.ndarray) -> _Regions:
    """Features of every region of ``labels`` [H, W] (contiguous labels 0..R-1)."""
    h, w = labels.shape
    flat = labels.ravel().astype(np.int64)
    r = int(flat.max()) + 1
    return _Regions(
        size=np.bincount(flat, minlength=r).astype(np.int64),
        box=_region_boxes(labels, r),
        colour=_histograms(flat, colour_bins, colour_bins.shape[1] * COLOUR_BINS),
        texture=_histograms(flat, texture_bins, texture_bins.shape[1] * TEXTURE_BINS),
        edges=_neighbour_pairs(labels, r),
        image_area=h * w,
    )


# ---------------------------------------------------------------------------------- similarity


def _histogram_intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[..., D] x [..., D] -> [...]: ``sum_k min(a_k, b_k)`` (1 for equal L1-normalised ones)."""
    return np.minimum(a, b).sum(axis=-1)


def _size_similarity(size_i: np.ndarray, size_j: np.ndarray, image_area: int) -> np.ndarray:
    return 1.0 - (size_i + size_j) / image_area


def _fill_similarity(
    size_i: np.ndarray, size_j: np.ndarray, box_i: np.ndarray, box_j: np.ndarray, image_area: int
) -> np.ndarray:
    """``1 - (|BB_ij| - size_i - size_j) / |image|`` with ``BB_ij`` the box around both."""
    lo = np.minimum(box_i[..., :2], box_j[..., :2])
    hi = np.maximum(box_i[..., 2:], box_j[..., 2:])
    bb = (hi - lo).prod(axis=-1)
    return 1.0 - (bb - size_i - size_j) / image_area


def _merge_histograms(
    hist_i: np.ndarray, size_i: int, hist_j: np.ndarray, size_j: int
) -> np.ndarray:
    """The paper's propagation: ``(size_i h_i + size_j h_j) / (size_i + size_j)``."""
    return (size_i * hist_i + size_j * hist_j) / (size_i + size_j)


class _Hierarchy:
    """Region features of one grouping in arrays with room for all 2R - 1 regions."""

    def __init__(self, regions: _Regions, similarity: str):
        r = regions.size.shape[0]
        cap = 2 * r - 1
        self.use_colour = "C" in similarity
        self.use_texture = "T" in similarity
        self.use_size = "S" in similarity
        self.use_fill = "F" in similarity
        self.area = regions.image_area
        self.size = np.zeros(cap, np.int64)
        self.size[:r] = regions.size
        self.box = np.zeros((cap, 4), np.int64)
        self.box[:r] = regions.box
        # Only the histograms this similarity reads are carried through the merges.
        self.colour = self._grow(regions.colour, cap) if self.use_colour else None
        self.texture = self._grow(regions.texture, cap) if self.use_texture else None
        self.count = r

    @staticmethod
    def _grow(h: np.ndarray, cap: int) -> np.ndarray:
        out = np.zeros((cap, h.shape[1]), h.dtype)
        out[: h.shape[0]] = h
        return out

    def similarity(self, i: np.ndarray | int, j: np.ndarray) -> np.ndarray:
        """s(r_i, r_j) for region(s) ``i`` against the array ``j`` [n] (broadcast) -> [n]."""
        s = np.zeros(np.broadcast(i, j).shape)
        if self.use_colour:
            s += _histogram_intersection(self.colour[i], self.colour[j])
        if self.use_texture:
            s += _histogram_intersection(self.texture[i], self.texture[j])
        if self.use_size:
            s += _size_similarity(self.size[i], self.size[j], self.area)
        if self.use_fill:
            s += _fill_similarity(self.size[i], self.size[j], self.box[i], self.box[j], self.area)
        return s

    def merge(self, i: int, j: int) -> int:
        """Create region ``t = i U j`` from the parts' features (O(D), no pixel is read)."""
        t = self.count
        self.count += 1
        si, sj = int(self.size[i]), int(self.size[j])
        self.size[t] = si + sj
        self.box[t, :2] = np.minimum(self.box[i, :2], self.box[j, :2])
        self.box[t, 2:] = np.maximum(self.box[i, 2:], self.box[j, 2:])
        if self.colour is not None:
            self.colour[t] = _merge_histograms(self.colour[i], si, self.colour[j], sj)
        if self.texture is not None:
            self.texture[t] = _merge_histograms(self.texture[i], si, self.texture[j], sj)
        return t


def _hierarchical_grouping(regions: _Regions, similarity: str) -> np.ndarray:
    """Greedy grouping of one segmentation -> int64 [n, 4] boxes in creation order.

    Rows 0..R-1 are the initial regions, then one row per merge; the last row is the top of
    the hierarchy (the whole image when the neighbour graph is connected). A lazy-deletion
    max-heap holds the pair similarities: a merge kills two regions and pushes one entry per
    neighbour of the new region, so a step costs O(neighbours log E), not O(pixels).
    """
    hier = _Hierarchy(regions, similarity)
    r = regions.size.shape[0]
    alive = np.zeros(2 * r - 1, dtype=bool)
    alive[:r] = True
    neighbours: list[set[int] | None] = [set() for _ in range(r)]
    edges = regions.edges
    for i, j in edges.tolist():
        neighbours[i].add(j)
        neighbours[j].add(i)
    if len(edges):
        s0 = hier.similarity(edges[:, 0], edges[:, 1])  # all initial pairs in one shot
        # (-s, i, j): highest similarity first, ties to the lowest indices (deterministic)
        heap = list(zip((-s0).tolist(), edges[:, 0].tolist(), edges[:, 1].tolist(), strict=True))
        heapq.heapify(heap)
    else:
        heap = []
    while heap:
        _, i, j = heapq.heappop(heap)
        if not (alive[i] and alive[j]):
            continue  # stale: one of the pair was merged away since this entry was pushed
        t = hier.merge(i, j)
        alive[i] = alive[j] = False
        alive[t] = True
        nb = (neighbours[i] | neighbours[j]) - {i, j}
        neighbours[i] = neighbours[j] = None
        for n in nb:
            nset = neighbours[n]
            nset.discard(i)
            nset.discard(j)
            nset.add(t)
        neighbours.append(nb)
        if nb:
            others = np.fromiter(sorted(nb), dtype=np.int64, count=len(nb))
            for sv, n in zip((-hier.similarity(t, others)).tolist(), others.tolist(), strict=True):
                heapq.heappush(heap, (sv, n, t))  # n < t: every older region has a lower index
    return hier.box[: hier.count]


# ------------------------------------------------------------------------------------ proposals


def _segment(conv: np.ndarray, k: float, min_size: int) -> np.ndarray:
    """Felzenszwalb-Huttenlocher labels [H, W] (contiguous from 0) of a [H, W, C] image."""
    from skimage.segmentation import felzenszwalb

    # DEPARTURE (segmentation): scikit-image segments all channels at once (colour distance)
    # rather than per channel with intersection; it divides k by 255 for [0, 1] images, so k
    # keeps the paper's 0-255 units.
    if conv.shape[2] == 1:
        labels = felzenszwalb(
            conv[:, :, 0], scale=k, sigma=FELZENSZWALB_SIGMA, min_size=min_size, channel_axis=None
        )
    else:
        labels = felzenszwalb(conv, scale=k, sigma=FELZENSZWALB_SIGMA, min_size=min_size)
    labels = labels.astype(np.int64, copy=False)
    if not np.bincount(labels.ravel()).all():  # scikit-image's labels are 0..R-1; make sure
        _, inverse = np.unique(labels, return_inverse=True)
        labels = inverse.reshape(labels.shape)
    return labels


def selective_search(
    image: np.ndarray,
    mode: str = "fast",
    *,
    max_proposals: int | None = None,
    min_size: int | None = None,
    min_box_size: int | None = None,
    k_scale: float = 1.0,
    seed: int = 0,
    colour_spaces: Sequence[str] | None = None,
    ks: Sequence[float] | None = None,
    similarities: Sequence[str] | None = None,
) -> np.ndarray:
    """Selective search proposals of one image (Uijlings et al., IJCV 2013).

    Args:
        image: uint8 ``[H, W, 3]`` RGB (HWC, 0-255). A grayscale ``[H, W]`` image is accepted
            and stacked into three equal channels.
        mode: ``"fast"`` (the paper's "Selective Search Fast": HSV and Lab, k in {50, 100},
            C+T+S+F and T+S+F: 8 strategies), ``"quality"`` (HSV, Lab, rgI, H, I;
            k in {50, 100, 150, 300}; C+T+S+F, T+S+F, F, S: 80 strategies) or ``"single"``
            (HSV, k = 100, C+T+S+F).
        max_proposals: keep at most this many of the best-ranked proposals (None = all).
        min_size: Felzenszwalb's minimum component size in pixels; None = each strategy's
            ``k`` (times ``k_scale``), as in the authors' code.
        min_box_size: drop boxes with a side shorter than this (pixels); None =
            ``max(2, round(min(H, W) / 32))`` (20 px at 640, as the authors' demo; 2 px at 64).
        k_scale: multiplier of the mode's ``k`` values (and of the default ``min_size``). 1.0
            (the default) keeps the paper's values, which are in pixel units and were chosen
            for Pascal VOC-sized images (~500 x 375): a smaller value over-segments more, which
            gives more (and more precise) proposals at more cost; see docs/selective_search.md
            for its effect on the shapes data.
        seed: seed of the ranking's random numbers (the same seed gives the same output).
        colour_spaces, ks, similarities: override the mode's diversification, e.g.
            ``colour_spaces=["rgb"]``, ``ks=[100]``, ``similarities=["CTSF", "S"]`` (letters
            C colour, T texture, S size, F fill). Spaces: rgb, hsv, lab, rgi, h, i.

    Returns:
        float32 ``[K, 4]`` boxes ``(x1, y1, x2, y2)`` in pixel coordinates, best first, distinct,
        within ``[0, W] x [0, H]``; a region covering pixel columns ``x0..x1`` spans
        ``[x0, x1 + 1)``.

    Raises:
        OpArgumentError: a wrong image type, dtype, shape or channel count, an empty image,
            an unknown mode or colour space, or an out-of-range argument.
    """
    rgb = _check_image(image)
    strategy = _resolve_strategy(mode, colour_spaces, ks, similarities)
    max_proposals = _check_optional_int("max_proposals", max_proposals, 1)
    min_size = _check_optional_int("min_size", min_size, 1)
    min_box_size = _check_optional_int("min_box_size", min_box_size, 1)
    if not _is_number(k_scale) or not k_scale > 0:
        raise _fail(f"k_scale must be a number > 0, got {k_scale!r}")
    if not _is_int(seed) or seed < 0:
        raise _fail(f"seed must be a non-negative integer, got {seed!r}")

    h, w = rgb.shape[:2]
    scale = float(k_scale)
    if min_box_size is None:
        min_box_size = max(2, round(min(h, w) / 32))
    rng = np.random.default_rng(int(seed))

    all_boxes: list[np.ndarray] = []
    all_priority: list[np.ndarray] = []
    for space in strategy.colour_spaces:
        conv = _to_colour_space(rgb, space)  # (H, W, C) in [0, 1]
        cbins = _colour_bins(conv)  # (P, C)
        tbins = _texture_bins(conv)  # (P, 8 C)
        for k in strategy.ks:
            k_eff = k * scale
            ms = max(1, round(k_eff)) if min_size is None else min_size
            regions = _regions(_segment(conv, k_eff, ms), cbins, tbins)
            for sim in strategy.similarities:
                boxes = _hierarchical_grouping(regions, sim)  # (n, 4), creation order
                n = boxes.shape[0]
                # The paper's ranking: position from the top of the hierarchy (last merge = 1)
                # times a random number, so that every strategy's large regions come early
                # but no single strategy dominates the top of the list.
                rank = np.arange(n, 0, -1, dtype=np.float64)
                all_boxes.append(boxes)
                all_priority.append(rank * rng.random(n))

    boxes = np.concatenate(all_boxes)  # (N, 4) int64
    order = np.argsort(np.concatenate(all_priority), kind="stable")
    boxes = boxes[order]
    # DEPARTURE (tiny boxes): the authors' demo drops boxes narrower than 20 px on VOC
    # images; our default threshold scales with the image side.
    wh = boxes[:, 2:] - boxes[:, :2]
    boxes = boxes[(wh >= min_box_size).all(axis=1)]
    # de-duplicate, each box keeping its best-ranked (first) copy
    _, first = np.unique(boxes, axis=0, return_index=True)
    boxes = boxes[np.sort(first)]
    if max_proposals is not None:
        boxes = boxes[:max_proposals]
    return boxes.astype(np.float32)
