"""RoIAlign (Mask R-CNN, arXiv:1703.06870 §3), with torchvision's conventions.

Each RoI is split into ``output_size`` bins without quantisation; each bin averages the
bilinearly interpolated feature at a grid of ``sampling_ratio x sampling_ratio`` points
(``ceil(roi_size / output_size)`` per axis, per RoI, when ``sampling_ratio <= 0``). The
conventions are torchvision's CPU kernel, operation for operation:

* RoI start/end = ``coordinate * spatial_scale - (0.5 if aligned else 0)``; without
  ``aligned`` the RoI size is clamped to >= 1 (legacy behaviour; Detectron2 uses aligned=True,
  the half-pixel shift that the paper's continuous coordinates imply).
* sample point ``y = start + ph * bin_h + (iy + 0.5) * bin_h / grid_h`` (same association);
* a point with ``y < -1`` or ``y > H`` (likewise x) contributes 0; otherwise ``y`` is clamped to
  >= 0, and a point at or beyond row H-1 reads row H-1 only;
* the bin value is the sum of the weighted samples over ``max(grid_h * grid_w, 1)``.

The gradient flows to the input only (as torchvision; RoI coordinates get none).

How it is vectorised (no loop over RoIs, bins, samples or pixels): bilinear interpolation and
the average are separable, so bin (ph, pw) of RoI k equals ``sum_{r, c} A_y[k, ph, r] *
A_x[k, pw, c] * F[b_k, :, r, c]`` where ``A_y[k, ph, r]`` sums the y-weights that the bin's
sample rows put on feature row r (and is 0 for points outside the map). The per-axis weights
are built for all RoIs at once, padded to the largest sampling grid and masked (the adaptive
grid differs per RoI); weights of one axis landing on the same row are merged when that
shortens the list (adaptive grids touch about grid + 1 rows, not 2 x grid). Every bin is then a
weighted "bag" of pixel indices into the (N*H*W, C) channels-last pixel table, and one
``F.embedding_bag(mode="sum", per_sample_weights=...)`` call computes all bins over contiguous
C-vectors, with the matching scatter-add backward built in.

Shape glossary: N images, C channels, H x W feature map, K RoIs, PH x PW output bins, G the
largest sampling grid along an axis, EY/EX the weighted rows/columns per bin.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import OpArgumentError
from .boxes import _as_rois, _check_feature_map, _check_spatial_scale, _pair_output_size
from .roi_pool import _bags_to_nchw, _divide, _pixel_table, _zeros_like_output

__all__ = ["roi_align", "RoIAlign"]

# Largest padded (K, PH, PW, EY, EX) tensor built at once (elements); see roi_pool.
_MAX_BAG_ELEMENTS = 1 << 22


def _axis_weights(
    start: Tensor, bin_size: Tensor, grid: Tensor, g_max: int, p: int, size: int
) -> tuple[Tensor, Tensor]:
    """Rows (or columns) and weights touched by each bin's samples along one axis.

    Args:
        start, bin_size: (K,) RoI start and bin size in feature-map units.
        grid: (K,) int64 samples per bin along this axis (>= 0).
        g_max: the largest grid (>= 1), the padded sample count.
        p: bins along this axis; size: feature-map extent (H or W).

    Returns:
        index (K, P, E) int64 in [0, size) and weight (K, P, E), E <= 2 * g_max; weights are 0
        for padding and for points outside [-1, size]. Duplicate indices are merged when that
        makes E smaller.
    """
    dtype, device = bin_size.dtype, bin_size.device
    k = start.shape[0]
    pos = torch.arange(p, dtype=dtype, device=device)
    # (iy + .5f) is formed in float, then cast to T, as in the kernel
    half = (torch.arange(g_max, device=device, dtype=torch.float32) + 0.5).to(dtype)
    in_grid = torch.arange(g_max, device=device) < grid[:, None]  # (K, G)
    grid_t = grid.to(dtype).clamp(min=1)  # padding samples only; masked below
    base = start[:, None] + pos * bin_size[:, None]  # (K, P)
    step = half * bin_size[:, None] / grid_t[:, None]  # (K, G)
    coord = base[:, :, None] + step[:, None, :]  # (K, P, G)
    coord = torch.where(in_grid[:, None, :], coord, torch.zeros_like(coord))
    valid = in_grid[:, None, :] & (coord >= -1.0) & (coord <= size)
    coord = coord.clamp(min=0)
    low = coord.floor()
    top = low >= size - 1
    low = torch.where(top, torch.full_like(low, size - 1), low)
    coord = torch.where(top, low, coord)
    frac = coord - low  # ly
    low_i = low.long()
    high_i = torch.where(top, low_i, low_i + 1)
    zero = torch.zeros_like(frac)
    w_low = torch.where(valid, 1.0 - frac, zero)  # hy
    w_high = torch.where(valid, frac, zero)  # ly
    # Weightless entries point at the bin's lowest valid row so they never widen a merge window
    # (rows decrease along the samples for an inverted aligned RoI with a fixed sampling_ratio).
    first = torch.where(valid, low_i, torch.full_like(low_i, size)).amin(-1, keepdim=True)
    first.clamp_(max=size - 1)  # (K, P, 1); a bin without valid samples points at any row
    low_i = torch.where(valid, low_i, first)
    high_i = torch.where(valid, high_i, first)
    index = torch.stack([low_i, high_i], dim=-1).reshape(k, p, 2 * g_max)  # (K, P, 2G)
    weight = torch.stack([w_low, w_high], dim=-1).reshape(k, p, 2 * g_max)
    if k == 0:
        return index, weight
    rel = index - first  # >= 0: offsets inside the bin's window of rows
    span = int(rel.max()) + 1
    if span >= 2 * g_max:
        return index, weight
    merged = weight.new_zeros((k, p, span)).scatter_add_(2, rel, weight)
    return first + torch.arange(span, device=device), merged


def _align_bags(
    rois: Tensor,
    scale: float,
    ph: int,
    pw: int,
    height: int,
    width: int,
    sampling_ratio: int,
    aligned: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Flat pixel indices, weights (1/count folded in) and bag offsets of every bin."""
    k = rois.shape[0]
    dtype, device = rois.dtype, rois.device
    s = torch.tensor(scale, dtype=dtype, device=device)  # the kernel multiplies in T
    offset = 0.5 if aligned else 0.0
    batch = rois[:, 0].long()
    start_w = rois[:, 1] * s - offset
    start_h = rois[:, 2] * s - offset
    roi_w = (rois[:, 3] * s - offset) - start_w
    roi_h = (rois[:, 4] * s - offset) - start_h
    if not aligned:
        roi_w = roi_w.clamp(min=1.0)  # malformed RoIs are forced to 1x1 (legacy)
        roi_h = roi_h.clamp(min=1.0)
    bin_h = _divide(roi_h, ph)  # correctly rounded on CUDA too (see _divide)
    bin_w = _divide(roi_w, pw)
    if sampling_ratio > 0:
        grid_h = torch.full((k,), sampling_ratio, dtype=torch.int64, device=device)
        grid_w = grid_h
    else:
        # ceil(roi / pooled) is the same float division as bin; an aligned RoI of zero or
        # negative size gets an empty grid and outputs 0
        grid_h = torch.ceil(bin_h).long().clamp_(min=0)
        grid_w = torch.ceil(bin_w).long().clamp_(min=0)
    g_h = max(int(grid_h.max()), 1)
    g_w = max(int(grid_w.max()), 1)
    count = (grid_h * grid_w).clamp(min=1).to(dtype)
    rows, wy = _axis_weights(start_h, bin_h, grid_h, g_h, ph, height)  # (K, PH, EY)
    cols, wx = _axis_weights(start_w, bin_w, grid_w, g_w, pw, width)  # (K, PW, EX)
    wy = wy / count[:, None, None]
    row_base = (batch[:, None, None] * height + rows) * width
    ey, ex = rows.shape[2], cols.shape[2]
    per_roi = ph * pw * ey * ex
    step = max(1, _MAX_BAG_ELEMENTS // max(per_roi, 1))
    idx_parts, w_parts, n_parts = [], [], []
    for s0 in range(0, k, step):
        sl = slice(s0, s0 + step)
        # (k', PH, PW, EY, EX): every (row, column) pair of every bin and its weight
        w = wy[sl][:, :, None, :, None] * wx[sl][:, None, :, None, :]
        idx = row_base[sl][:, :, None, :, None] + cols[sl][:, None, :, None, :]
        nz = w != 0  # out-of-map samples, padding and merged-away slots
        n_parts.append(nz.flatten(3).sum(-1).flatten())
        idx_parts.append(idx.masked_select(nz))
        w_parts.append(w.masked_select(nz))
    per_bag = torch.cat(n_parts)
    offsets = torch.cumsum(per_bag, 0) - per_bag
    return torch.cat(idx_parts), torch.cat(w_parts), offsets


def roi_align(
    input: Tensor,
    boxes: Tensor | list[Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """RoIAlign, torchvision.ops.roi_align's signature and semantics.

    Args:
        input: Tensor[N, C, H, W] feature map, floating point.
        boxes: Tensor[K, 5] of (batch index, x1, y1, x2, y2), or a list of Tensor[L_i, 4] xyxy
            boxes, one per image; same dtype as ``input``.
        output_size: int or (height, width) of the output bins.
        spatial_scale: maps box coordinates to feature-map coordinates (e.g. 1/16).
        sampling_ratio: sample points per bin along each axis; <= 0: adaptive,
            ``ceil(roi_size / output_size)`` per RoI.
        aligned: shift the RoI by -0.5 pixel (pixel centres at integer + 0.5), as Detectron2.

    Returns:
        Tensor[K, C, PH, PW].
    """
    op = "roi_align"
    input = _check_feature_map(input, op)
    ph, pw = _pair_output_size(output_size, op)
    scale = _check_spatial_scale(spatial_scale, op)
    if isinstance(sampling_ratio, bool) or not isinstance(sampling_ratio, int):
        raise OpArgumentError(f"{op}: sampling_ratio must be an int, got {sampling_ratio!r}")
    if not isinstance(aligned, bool):
        raise OpArgumentError(f"{op}: aligned must be a bool, got {aligned!r}")
    rois = _as_rois(boxes, input, op)
    n, c, height, width = input.shape
    k = rois.shape[0]
    if k == 0 or c == 0 or height == 0 or width == 0:
        return _zeros_like_output(input, k, ph, pw)
    with torch.no_grad():
        idx, weight, offsets = _align_bags(
            rois.detach(), scale, ph, pw, height, width, sampling_ratio, aligned
        )
    out = F.embedding_bag(  # (K*PH*PW, C)
        idx, _pixel_table(input), offsets, mode="sum", per_sample_weights=weight
    )
    return _bags_to_nchw(out, k, c, ph, pw)


class RoIAlign(nn.Module):
    """Module form of :func:`roi_align`."""

    def __init__(
        self,
        output_size: int | tuple[int, int],
        spatial_scale: float,
        sampling_ratio: int,
        aligned: bool = False,
    ):
        super().__init__()
        self.output_size = _pair_output_size(output_size, "RoIAlign")
        self.spatial_scale = _check_spatial_scale(spatial_scale, "RoIAlign")
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def forward(self, input: Tensor, rois: Tensor | list[Tensor]) -> Tensor:
        return roi_align(
            input, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned
        )

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}"
        )
