"""RoI max pooling (Fast R-CNN, arXiv:1504.08083 §2.1), with torchvision's conventions.

Each RoI is quantised to the feature grid and split into ``output_size`` bins; each bin outputs
the maximum of its pixels, per channel. Quantisation follows torchvision's kernel exactly:
``roi_start = round(x1 * spatial_scale)`` (half away from zero), ``roi_end = round(x2 *
spatial_scale)``, RoI size ``max(end - start + 1, 1)``, bin ``[floor(p * bin), ceil((p + 1) *
bin))`` offset by the RoI start and clipped to the map; an empty bin outputs 0. The gradient
flows to the arg-max pixel of each bin (the first maximum in row-major order, as torchvision);
RoI coordinates get no gradient.

How it is vectorised (no loop over RoIs, bins or pixels): a bin is a rectangle of h x w pixels,
and the max of a rectangle is the max of four overlapping 2^i x 2^j windows (i = floor(log2 h),
j = floor(log2 w)). A 2-D sparse table holds the max of every such window of the feature map
(channels-last, one level per (i, j), each built with one elementwise max of the previous
level), so every bin of every RoI is four gathers of C-vectors and three maxima. The cost is
O(N*C*H*W * log(LH) * log(LW) + K*PH*PW*C), whatever the RoI sizes. When a gradient is needed
the table also carries the row-major first arg-max of each window, and a custom backward
scatter-adds each bin's gradient to its arg-max pixel, as torchvision's kernel does.

Shape glossary: N images, C channels, H x W feature map, K RoIs, PH x PW output bins, B = K*PH*PW
bins, LH x LW the largest bin (pixels).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .boxes import _as_rois, _check_feature_map, _check_spatial_scale, _pair_output_size

__all__ = ["roi_pool", "RoIPool"]

# Elements of one chunk's (bins, C) scratch buffers: on CPU small enough to stay in cache; on
# a GPU large enough that kernel launches do not dominate.
_CHUNK_ELEMENTS = {"cpu": 1 << 17}
_CHUNK_ELEMENTS_DEFAULT = 1 << 24


def _pixel_table(input: Tensor) -> Tensor:
    """Tensor[N, C, H, W] -> Tensor[N*H*W, C]: one row per pixel (a view if channels-last)."""
    n, c, h, w = input.shape
    return input.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1).reshape(-1, c)


def _bags_to_nchw(out: Tensor, k: int, c: int, ph: int, pw: int) -> Tensor:
    """(K*PH*PW, C) bag outputs -> contiguous Tensor[K, C, PH, PW], like torchvision returns.

    Copying into a preallocated NCHW tensor through its permuted view is ~3x faster on CPU
    than ``.permute(...).contiguous()`` for these shapes.
    """
    result = out.new_empty((k, c, ph, pw))
    result.permute(0, 2, 3, 1).copy_(out.view(k, ph, pw, c))
    return result


def _zeros_like_output(input: Tensor, k: int, ph: int, pw: int) -> Tensor:
    # Still attached to the graph, so backward through an empty result works (zero gradient).
    return (input.sum() * 0).expand(k, input.shape[1], ph, pw).contiguous()


def _divide(x: Tensor, d: int) -> Tensor:
    """``x / d`` correctly rounded, as the kernels' ``T(roi) / T(pooled)``.

    On CUDA PyTorch divides by a Python scalar through its reciprocal, which can be one ulp off
    (49 * (1/7) = 7.0000005) and flips a ceil() on exact integers; a tensor divisor is divided.
    """
    return x / torch.full_like(x, d)


def _round_half_away(x: Tensor) -> Tensor:
    """C's round(): halves away from zero (torch.round rounds halves to even).

    ``floor(x + 0.5)`` would be wrong for the float just below 0.5, whose sum with 0.5 rounds
    up to 1; ``x - trunc(x)`` is exact.
    """
    t = torch.trunc(x)
    frac = x - t
    return t + torch.where(frac.abs() >= 0.5, torch.sign(frac), torch.zeros_like(frac))


def _bin_edges(start: Tensor, bin_size: Tensor, p: int, size: int) -> tuple[Tensor, Tensor]:
    """Clipped [lo, hi) pixel range of each bin along one axis: (K, P) int64 each."""
    pos = torch.arange(p, dtype=bin_size.dtype, device=bin_size.device)
    lo = torch.floor(pos * bin_size[:, None]).long() + start[:, None]
    hi = torch.ceil((pos + 1) * bin_size[:, None]).long() + start[:, None]
    return lo.clamp_(0, size), hi.clamp_(0, size)


def _level(length: Tensor) -> Tensor:
    """floor(log2(length)) for integer lengths >= 1, exactly (frexp, no float log)."""
    return torch.frexp(length.to(torch.float64))[1].long() - 1


def _take_later(v1: Tensor, i1: Tensor, v2: Tensor, i2: Tensor) -> Tensor:
    """Where the second candidate wins: larger value, or equal value at an earlier pixel."""
    return (v2 > v1) | ((v2 == v1) & (i2 < i1))


def _combine(a: list[Tensor], b: list[Tensor], out: list[Tensor]) -> None:
    """Elementwise max of two candidates into ``out`` (each a [values] / [keys] or
    [values, pixel] list). Ties keep the earlier pixel: keys encode it, pairs compare it."""
    if len(a) == 1:
        torch.maximum(a[0], b[0], out=out[0])
        return
    take = _take_later(a[0], a[1], b[0], b[1])
    torch.where(take, b[0], a[0], out=out[0])
    torch.where(take, b[1], a[1], out=out[1])


_LOW32 = (1 << 32) - 1


def _encode(x: Tensor, pixel: Tensor) -> Tensor:
    """float32 values and int pixel indices -> int64 keys ordered by (value, -pixel).

    The float's bits, with the magnitude bits flipped for negatives, order like the floats
    (-0.0 is first made +0.0, which compares equal); the low 32 bits hold ``2^32 - 1 - pixel``
    so that among equal values the earlier pixel is the larger key. One integer max then
    keeps torchvision's row-major first maximum.
    """
    bits = (x + 0.0).view(torch.int32)
    mono = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    return (mono.long() << 32) | (_LOW32 - pixel.long())


def _decode(key: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """int64 keys -> (values, int64 pixel indices)."""
    mono = (key >> 32).to(torch.int32)
    bits = mono ^ ((mono >> 31) & 0x7FFFFFFF)
    return bits.view(torch.float32).to(dtype), (key & _LOW32).neg_().add_(_LOW32)


class _RectMaxTable:
    """Maxima (and optionally arg-maxima) of every 2^i x 2^j window of a channels-last map.

    Level (i, j) holds, at (n, y, x), the max over rows [y, y + 2^i) and columns [x, x + 2^j):
    a 2-D sparse table, each level one elementwise max of two shifted views of the previous
    one. Any rectangle of h x w pixels is then the max of 4 (overlapping) windows of level
    (floor(log2 h), floor(log2 w)); overlap is harmless for a max, and preferring the earlier
    pixel among equal maxima keeps the row-major first one (each window holds its own first
    maximum, and the rectangle's first maximum lies in one of them). All levels live in one
    (rows, C) buffer so that one gather serves every bin.

    Modes: "value" (max only: float values), "key" (max and arg-max of float32/16 maps as
    int64 keys, see :func:`_encode`), "pair" (float64 with arg-max: values and pixels).
    """

    def __init__(self, x: Tensor, li: int, lj: int, mode: str):
        n, h, w, c = x.shape  # channels-last view of the feature map
        self.mode, self.dtype, self.lj = mode, x.dtype, lj
        self.shapes = [
            (h - (1 << i) + 1, w - (1 << j) + 1) for i in range(li + 1) for j in range(lj + 1)
        ]
        sizes = [n * hi * wj for hi, wj in self.shapes]
        self.base = [sum(sizes[:k]) for k in range(len(sizes))]
        total = sum(sizes)
        # flat pixel index into the (N*H*W) pixel table, batch offset included
        pixel = torch.arange(n * h * w, device=x.device, dtype=torch.int64).view(n, h, w, 1)
        if mode == "value":
            self.bufs = [x.new_empty((total, c))]
            first = [x]
        elif mode == "key":
            self.bufs = [x.new_empty((total, c), dtype=torch.int64)]
            first = [_encode(x.float(), pixel)]
        else:
            self.bufs = [x.new_empty((total, c)), x.new_empty((total, c), dtype=torch.int64)]
            first = [x, pixel.expand(n, h, w, c)]

        def level(i: int, j: int) -> list[Tensor]:
            k = i * (lj + 1) + j
            hi, wj = self.shapes[k]
            return [b[self.base[k] : self.base[k] + sizes[k]].view(n, hi, wj, c) for b in self.bufs]

        for i in range(li + 1):
            for j in range(lj + 1):
                out = level(i, j)
                if i == 0 and j == 0:
                    for o, f in zip(out, first, strict=True):
                        o.copy_(f)
                    continue
                # two half-size windows of the previous level, side by side along one axis
                src, step, dim = (
                    (level(i - 1, 0), 1 << (i - 1), 1)
                    if j == 0
                    else (level(i, j - 1), 1 << (j - 1), 2)
                )
                size = out[0].shape[dim]
                _combine(
                    [t.narrow(dim, 0, size) for t in src],
                    [t.narrow(dim, step, size) for t in src],
                    out,
                )

    def rows(self, batch: Tensor, y0: Tensor, y1: Tensor, x0: Tensor, x1: Tensor) -> Tensor:
        """(4, B) buffer rows of the four windows covering [y0, y1) x [x0, x1); lengths >= 1."""
        li = _level(y1 - y0)
        lj = _level(x1 - x0)
        k = li * (self.lj + 1) + lj
        device = batch.device
        base = torch.tensor(self.base, device=device)[k]
        hs = torch.tensor([s[0] for s in self.shapes], device=device)[k]
        ws = torch.tensor([s[1] for s in self.shapes], device=device)[k]
        ys = (y0, y1 - (1 << li))
        xs = (x0, x1 - (1 << lj))
        return torch.stack([base + (batch * hs + yy) * ws + xx for yy in ys for xx in xs])

    def scratch(self, m: int) -> tuple[list[Tensor], list[Tensor]]:
        """Two reusable (m, C) candidate buffers for :meth:`lookup`."""
        return (
            [b.new_empty((m, b.shape[1])) for b in self.bufs],
            [b.new_empty((m, b.shape[1])) for b in self.bufs],
        )

    def lookup(
        self, rows: Tensor, best: list[Tensor], tmp: list[Tensor]
    ) -> tuple[Tensor, Tensor | None]:
        """Max (and int64 pixel arg-max) of the 4 windows ``rows`` (4, b) -> (b, C) each."""
        for t, buf in zip(best, self.bufs, strict=True):
            torch.index_select(buf, 0, rows[0], out=t)
        for r in rows[1:]:
            for t, buf in zip(tmp, self.bufs, strict=True):
                torch.index_select(buf, 0, r, out=t)
            _combine(best, tmp, best)
        if self.mode == "key":
            return _decode(best[0], self.dtype)
        if self.mode == "pair":
            return best[0], best[1]
        return best[0], None


def _pool_bins(
    rois: Tensor, scale: float, ph: int, pw: int, height: int, width: int
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Batch index and clipped [h_lo, h_hi) x [w_lo, w_hi) of every bin, each (K*PH*PW,)."""
    dtype, device = rois.dtype, rois.device
    s = torch.tensor(scale, dtype=dtype, device=device)  # the kernel multiplies in T, not double
    batch = rois[:, 0].long()  # C++ int conversion truncates
    x1, y1, x2, y2 = (_round_half_away(rois[:, i] * s).long() for i in range(1, 5))
    roi_w = (x2 - x1 + 1).clamp_(min=1)  # malformed RoIs are forced to 1x1
    roi_h = (y2 - y1 + 1).clamp_(min=1)
    h_lo, h_hi = _bin_edges(y1, _divide(roi_h.to(dtype), ph), ph, height)  # (K, PH)
    w_lo, w_hi = _bin_edges(x1, _divide(roi_w.to(dtype), pw), pw, width)  # (K, PW)
    k = rois.shape[0]
    shape = (k, ph, pw)
    return (
        batch[:, None, None].expand(shape).reshape(-1),
        h_lo[:, :, None].expand(shape).reshape(-1),
        h_hi[:, :, None].expand(shape).reshape(-1),
        w_lo[:, None, :].expand(shape).reshape(-1),
        w_hi[:, None, :].expand(shape).reshape(-1),
    )


def _roi_chunks(k: int, bins_per_roi: int, c: int, device: torch.device) -> range:
    """Start RoIs of chunks whose (bins, C) scratch holds about _CHUNK_ELEMENTS elements."""
    limit = _CHUNK_ELEMENTS.get(device.type, _CHUNK_ELEMENTS_DEFAULT)
    return range(0, k, max(1, limit // max(bins_per_roi * c, 1)))


class _RoIPoolFunction(torch.autograd.Function):
    """Forward: sparse-table max per bin; backward: each bin's gradient to its arg-max pixel."""

    @staticmethod
    def forward(ctx, input: Tensor, rois: Tensor, scale: float, ph: int, pw: int) -> Tensor:
        n, c, height, width = input.shape
        k = rois.shape[0]
        batch, h_lo, h_hi, w_lo, w_hi = _pool_bins(rois, scale, ph, pw, height, width)
        empty = (h_hi <= h_lo) | (w_hi <= w_lo)  # (B,) bins outside the map: output 0
        # an empty bin reads the valid 1x1 window at (0, 0), then is overwritten
        h_lo, h_hi = h_lo.masked_fill(empty, 0), h_hi.masked_fill(empty, 1)
        w_lo, w_hi = w_lo.masked_fill(empty, 0), w_hi.masked_fill(empty, 1)
        li = int(_level(h_hi - h_lo).max())
        lj = int(_level(w_hi - w_lo).max())
        with_index = ctx.needs_input_grad[0]
        mode = "value" if not with_index else "pair" if input.dtype == torch.float64 else "key"
        table = _RectMaxTable(_channels_last(input), li, lj, mode)
        rows = table.rows(batch, h_lo, h_hi, w_lo, w_hi)  # (4, B)
        result = input.new_empty((k, c, ph, pw))
        # (B, C) index of each bin's arg-max in the (N*H*W) pixel table; an empty bin points at
        # an extra row N*H*W that backward discards (torchvision: -1)
        arg = input.new_empty((k * ph * pw, c), dtype=torch.int64) if with_index else None
        # RoI chunks through small reused buffers: fresh multi-megabyte temporaries cost more
        # in page faults than the arithmetic
        bins = ph * pw
        starts = _roi_chunks(k, bins, c, input.device)
        best, tmp = table.scratch(min(k, starts.step) * bins)
        for k0 in starts:
            k1 = min(k, k0 + starts.step)
            s0, s1 = k0 * bins, k1 * bins
            b = s1 - s0
            values, pix = table.lookup(rows[:, s0:s1], [t[:b] for t in best], [t[:b] for t in tmp])
            e = empty[s0:s1, None]
            values.masked_fill_(e, 0)
            result[k0:k1].permute(0, 2, 3, 1).copy_(values.view(k1 - k0, ph, pw, c))
            if with_index:
                arg[s0:s1].copy_(pix).masked_fill_(e, n * height * width)
        if with_index:
            ctx.save_for_backward(arg)
            ctx.input_shape = (n, c, height, width)
        return result

    @staticmethod
    def backward(ctx, grad: Tensor):
        (arg,) = ctx.saved_tensors
        n, c, height, width = ctx.input_shape
        k, _, ph, pw = grad.shape
        bins = ph * pw
        grad_table = grad.new_zeros((n * height * width + 1, c))  # + the empty-bin row
        starts = _roi_chunks(k, bins, c, grad.device)
        for k0 in starts:
            k1 = min(k, k0 + starts.step)
            g = grad[k0:k1].permute(0, 2, 3, 1).reshape(-1, c)  # (b, C) in bin order
            # every bin sends its gradient to its arg-max pixel (accumulating over bins, RoIs)
            grad_table.scatter_add_(0, arg[k0 * bins : k1 * bins], g)
        grad_input = grad_table[:-1].view(n, height, width, c).permute(0, 3, 1, 2)
        return grad_input, None, None, None, None


def _channels_last(input: Tensor) -> Tensor:
    """Tensor[N, C, H, W] -> contiguous Tensor[N, H, W, C] (a view if already channels-last)."""
    return input.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)


def roi_pool(
    input: Tensor,
    boxes: Tensor | list[Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
) -> Tensor:
    """RoI max pooling, torchvision.ops.roi_pool's signature and semantics.

    Args:
        input: Tensor[N, C, H, W] feature map, floating point.
        boxes: Tensor[K, 5] of (batch index, x1, y1, x2, y2), or a list of Tensor[L_i, 4] xyxy
            boxes, one per image; same dtype as ``input``.
        output_size: int or (height, width) of the output bins.
        spatial_scale: maps box coordinates to feature-map coordinates (e.g. 1/16).

    Returns:
        Tensor[K, C, PH, PW].
    """
    op = "roi_pool"
    input = _check_feature_map(input, op)
    ph, pw = _pair_output_size(output_size, op)
    scale = _check_spatial_scale(spatial_scale, op)
    rois = _as_rois(boxes, input, op)
    n, c, height, width = input.shape
    k = rois.shape[0]
    if k == 0 or c == 0 or height == 0 or width == 0:
        return _zeros_like_output(input, k, ph, pw)
    return _RoIPoolFunction.apply(input, rois.detach(), scale, ph, pw)


class RoIPool(nn.Module):
    """Module form of :func:`roi_pool`."""

    def __init__(self, output_size: int | tuple[int, int], spatial_scale: float):
        super().__init__()
        self.output_size = _pair_output_size(output_size, "RoIPool")
        self.spatial_scale = _check_spatial_scale(spatial_scale, "RoIPool")

    def forward(self, input: Tensor, rois: Tensor | list[Tensor]) -> Tensor:
        return roi_pool(input, rois, self.output_size, self.spatial_scale)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, spatial_scale={self.spatial_scale}"
