"""Anchors of the Region Proposal Network (Faster R-CNN, Ren et al., arXiv:1506.01497, §3.1.1).

At every position of a feature map of stride s, k = |sizes| x |aspect ratios| reference boxes
("anchors") are centred; the RPN predicts an objectness score and a box delta for each. The
paper uses one map (stride 16) with sizes 128/256/512 and ratios 1:2, 1:1, 2:1 (k = 9); with an
FPN (arXiv:1612.03144) each pyramid level gets its own size (32 on P2 ... 512 on P6) and the
three ratios (k = 3 per level).

Conventions are torchvision's, so that a converted torchvision model sees the same anchors:

* an anchor of size s and ratio r = h / w has ``w = s / sqrt(r)``, ``h = s * sqrt(r)`` (equal
  area s^2), and its zero-centred corners ``(-w/2, -h/2, w/2, h/2)`` are rounded to integers;
* the anchors of grid cell (i, j) are centred at ``(j * stride_w, i * stride_h)`` — the cell's
  top-left corner, not its centre — with ``stride = padded image size // feature size``;
* order: level by level; inside a level row-major over cells, and per cell ratio-major over
  (ratio, size) — the channel order of the RPN head's outputs.

Shape glossary: L feature levels, A anchors per cell, H x W a level's grid, K anchors in all.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["AnchorGenerator", "cell_anchors"]


def cell_anchors(
    sizes: Sequence[float],
    aspect_ratios: Sequence[float],
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Zero-centred anchors of one cell -> Tensor[A, 4] xyxy, A = len(ratios) * len(sizes)."""
    scales = torch.as_tensor(sizes, dtype=dtype, device=device)
    ratios = torch.as_tensor(aspect_ratios, dtype=dtype, device=device)
    h_ratios = torch.sqrt(ratios)  # r = h / w with w * h = s^2
    w_ratios = 1 / h_ratios
    ws = (w_ratios[:, None] * scales[None, :]).view(-1)  # (R, S) -> (A,), ratio-major
    hs = (h_ratios[:, None] * scales[None, :]).view(-1)
    return (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round()


class AnchorGenerator(nn.Module):
    """Anchors for a list of feature maps.

    Args:
        sizes: per level, the anchor sizes (square-root areas) in input pixels.
        aspect_ratios: per level, the ratios h / w; one sequence is used for every level.

    ``forward(image_list, feature_maps)`` -> Tensor[K, 4] xyxy in the padded batch's pixel
    coordinates, shared by every image of the batch (K = sum over levels of H * W * A).
    """

    def __init__(
        self,
        sizes: Sequence[Sequence[float]] = ((128.0, 256.0, 512.0),),
        aspect_ratios: Sequence[float] | Sequence[Sequence[float]] = (0.5, 1.0, 2.0),
    ) -> None:
        super().__init__()
        self.sizes = tuple(tuple(float(s) for s in level) for level in sizes)
        if aspect_ratios and not isinstance(aspect_ratios[0], (list, tuple)):
            aspect_ratios = (aspect_ratios,) * len(self.sizes)  # type: ignore[assignment]
        self.aspect_ratios = tuple(tuple(float(r) for r in level) for level in aspect_ratios)  # type: ignore[union-attr]
        if len(self.aspect_ratios) != len(self.sizes):
            raise ValueError(
                f"AnchorGenerator: {len(self.sizes)} levels of sizes but "
                f"{len(self.aspect_ratios)} levels of aspect ratios"
            )
        # (grid sizes, strides, dtype, device) -> anchors; batches of one size reuse them.
        self._cache: dict[tuple, Tensor] = {}

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}, aspect_ratios={self.aspect_ratios}"

    def num_anchors_per_location(self) -> list[int]:
        """A per level."""
        return [len(s) * len(r) for s, r in zip(self.sizes, self.aspect_ratios, strict=True)]

    def grid_anchors(
        self,
        grid_sizes: Sequence[tuple[int, int]],
        strides: Sequence[tuple[int, int]],
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> list[Tensor]:
        """Anchors of every level: Tensor[H * W * A, 4] each."""
        if len(grid_sizes) != len(self.sizes):
            raise ValueError(
                f"AnchorGenerator: {len(grid_sizes)} feature maps but anchors for "
                f"{len(self.sizes)} levels (sizes={self.sizes})"
            )
        out = []
        for (gh, gw), (sh, sw), sizes, ratios in zip(
            grid_sizes, strides, self.sizes, self.aspect_ratios, strict=True
        ):
            base = cell_anchors(sizes, ratios, dtype, device)  # (A, 4)
            xs = torch.arange(gw, dtype=torch.int32, device=device) * sw  # cell corners
            ys = torch.arange(gh, dtype=torch.int32, device=device) * sh
            shift_y, shift_x = torch.meshgrid(ys, xs, indexing="ij")  # (H, W) each
            shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
            shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)  # (H*W, 4)
            # (H*W, 1, 4) + (1, A, 4) -> (H*W*A, 4): every cell offsets every base anchor
            out.append((shifts.view(-1, 1, 4) + base.view(1, -1, 4)).reshape(-1, 4))
        return out

    def forward(self, image_list, feature_maps: Sequence[Tensor]) -> Tensor:
        """Anchors for a padded batch (``image_list.tensors`` Tensor[N, 3, H, W]) -> Tensor[K, 4]."""
        image_h, image_w = image_list.tensors.shape[-2:]
        grid_sizes = [(int(f.shape[-2]), int(f.shape[-1])) for f in feature_maps]
        strides = [(int(image_h) // gh, int(image_w) // gw) for gh, gw in grid_sizes]
        dtype, device = feature_maps[0].dtype, feature_maps[0].device
        key = (tuple(grid_sizes), tuple(strides), dtype, str(device))
        anchors = self._cache.get(key)
        if anchors is None:
            anchors = torch.cat(self.grid_anchors(grid_sizes, strides, dtype, device))
            if len(self._cache) >= 16:  # a bounded cache: multi-scale training varies sizes
                self._cache.clear()
            self._cache[key] = anchors
        return anchors
