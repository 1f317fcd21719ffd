"""Transformer building blocks shared by the vision transformers (ViT/DeiT) and, later, the
image and text towers of CLIP and BLIP.

* :class:`PatchEmbed` — ViT's patch embedding (arXiv:2010.11929, §3.1): a PxP convolution with
  stride P cuts the image into non-overlapping patches and projects each linearly to D
  dimensions (a strided conv is the same linear map as "flatten the patch, multiply by E").
* :class:`Attention` — multi-head self-attention (arXiv:1706.03762, §3.2.2) through
  ``F.scaled_dot_product_attention``, which dispatches to the fused flash / memory-efficient
  kernels. q, k and v come from one ``Linear(D, 3D)`` named ``qkv`` (timm's layout; rows ordered
  [q; k; v], heads contiguous inside each, which is also ``nn.MultiheadAttention``'s
  ``in_proj_weight`` layout). An optional ``attn_mask`` and/or ``is_causal`` flag make it usable
  for text (CLIP's causal text encoder, padded captions). Setting ``capture_attn = True`` on a
  module (opt-in, for attention rollout and other visualisations) makes it compute the attention
  matrix explicitly and keep it in ``attn_probs``; the default path never builds that matrix.
* :class:`Mlp` — two linear layers with GELU between (the paper's "MLP block").
* :class:`Block` — the pre-norm encoder block of ViT (Eq. 2-3):
  ``x = x + DropPath(Attn(LN(x)))``, ``x = x + DropPath(MLP(LN(x)))``.
* :class:`DropPath` — stochastic depth (arXiv:1603.09382): drops a residual branch per sample.
* :func:`resize_pos_embed` — bicubic resampling of a learned absolute position embedding to
  another patch grid, prefix ([CLS], [distill]) tokens kept, as timm's
  ``resample_abs_pos_embed`` (antialias on, align_corners off) so that results match.

Shape glossary: N batch, L tokens, D embedding width, H heads, d = D / H head width,
h x w patch grid, P patch size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ModelArgumentError

__all__ = [
    "PatchEmbed",
    "Attention",
    "Mlp",
    "Block",
    "DropPath",
    "drop_path",
    "resize_pos_embed",
    "LayerNorm6",
]

# ViT's LayerNorm: eps 1e-6 (the JAX original, timm and torchvision), not PyTorch's 1e-5.
LayerNorm6: Callable[[int], nn.Module] = partial(nn.LayerNorm, eps=1e-6)


def _check_prob(name: str, value: object, *, model: str) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or math.isnan(float(value)) or not 0.0 <= float(value) < 1.0:
        raise ModelArgumentError(f"{model}: {name} must be a probability in [0, 1), got {value!r}")
    return float(value)


# --- stochastic depth ----------------------------------------------------------------------------


def drop_path(x: Tensor, p: float, training: bool, scale_by_keep: bool = True) -> Tensor:
    """Zero whole samples of a residual branch with probability ``p`` (stochastic depth).

    Kept samples are scaled by 1 / (1 - p) so the expected value is unchanged and evaluation
    needs no rescaling (the "inverted" form, as dropout). ``x``: Tensor[N, ...].
    """
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)  # (N, 1, ..., 1)
    if scale_by_keep:
        mask.div_(keep)
    return x * mask


class DropPath(nn.Module):
    """Module form of :func:`drop_path`; the identity in eval mode or when ``p == 0``."""

    def __init__(self, p: float = 0.0, scale_by_keep: bool = True) -> None:
        super().__init__()
        self.p = _check_prob("drop_path", p, model="DropPath")
        self.scale_by_keep = scale_by_keep

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.p, self.training, self.scale_by_keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


# --- patch embedding -----------------------------------------------------------------------------


class PatchEmbed(nn.Module):
    """Image -> sequence of patch embeddings by a PxP stride-P convolution.

    ``forward``: Tensor[N, C, H, W] -> Tensor[N, h*w, D] with h = H/P, w = W/P (row-major order,
    as the paper's raster scan). H and W must be multiples of P: the strided conv would otherwise
    silently drop the last rows/columns, so a clear error is raised instead.
    """

    def __init__(
        self, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768, bias: bool = True
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.proj = nn.Conv2d(
            in_chans, embed_dim, kernel_size=patch_size, stride=patch_size, bias=bias
        )

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """The (h, w) patch grid of an H x W input; raises ModelArgumentError if P does not
        divide both."""
        p = self.patch_size
        if height % p or width % p:
            raise ModelArgumentError(
                f"input size {height}x{width} is not a multiple of the patch size {p}; "
                f"resize or crop the images to multiples of {p} (e.g. "
                f"{max(p, height // p * p)}x{max(p, width // p * p)})"
            )
        return height // p, width // p

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ModelArgumentError(
                f"expected images Tensor[N, {self.in_chans}, H, W], got shape {tuple(x.shape)}"
            )
        self.grid_size(x.shape[-2], x.shape[-1])
        x = self.proj(x)  # (N, C, H, W) -> (N, D, h, w)
        return x.flatten(2).transpose(1, 2)  # (N, D, h*w) -> (N, h*w, D)


def resize_pos_embed(
    pos_embed: Tensor,
    new_grid: Sequence[int],
    old_grid: Sequence[int] | None = None,
    num_prefix_tokens: int = 1,
    mode: str = "bicubic",
    antialias: bool = True,
) -> Tensor:
    """Resample a learned position embedding Tensor[1, prefix + h*w, D] to another grid.

    The prefix tokens ([CLS], [distill]) have no position and are kept as they are; the
    ``h x w`` grid part is treated as a D-channel image and interpolated to ``new_grid`` (the
    paper's §3.2 "2D interpolation of the pre-trained position embeddings"). ``old_grid``
    defaults to the square grid the token count implies. Interpolation runs in float32 and the
    result is cast back, so it is safe under autocast. Same settings as timm's
    ``resample_abs_pos_embed`` (bicubic, antialias, align_corners=False).
    """
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1:
        raise ModelArgumentError(
            f"pos_embed must be Tensor[1, L, D], got shape {tuple(pos_embed.shape)}"
        )
    num_grid = pos_embed.shape[1] - num_prefix_tokens
    if old_grid is None:
        side = math.isqrt(max(num_grid, 0))
        if side * side != num_grid:
            raise ModelArgumentError(
                f"pos_embed has {num_grid} grid tokens after {num_prefix_tokens} prefix "
                "token(s), not a square grid; pass old_grid=(h, w)"
            )
        old_grid = (side, side)
    old_h, old_w = int(old_grid[0]), int(old_grid[1])
    new_h, new_w = int(new_grid[0]), int(new_grid[1])
    if old_h * old_w != num_grid:
        raise ModelArgumentError(
            f"old_grid {old_h}x{old_w} does not match the {num_grid} grid tokens of pos_embed"
        )
    if (old_h, old_w) == (new_h, new_w):
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    dim = pos_embed.shape[-1]
    grid = grid.float().reshape(1, old_h, old_w, dim).permute(0, 3, 1, 2)  # (1, D, h, w)
    grid = F.interpolate(
        grid, size=(new_h, new_w), mode=mode, align_corners=False, antialias=antialias
    )
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_h * new_w, dim).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1)  # (1, prefix + h'*w', D)


# --- attention, MLP, block -----------------------------------------------------------------------


def _merge_causal(attn_mask: Tensor, length_q: int, length_k: int) -> Tensor:
    # SDPA refuses attn_mask together with is_causal, so fold the causal mask into attn_mask.
    causal = torch.ones(length_q, length_k, dtype=torch.bool, device=attn_mask.device).tril()
    if attn_mask.dtype == torch.bool:
        return attn_mask & causal
    return attn_mask.masked_fill(~causal, float("-inf"))


class Attention(nn.Module):
    """Multi-head self-attention.

    Args:
        dim: D, the token width (a multiple of ``num_heads``).
        num_heads: H.
        qkv_bias: bias in the qkv projection (ViT: yes; some variants: no).
        attn_drop: dropout on the attention weights (inside SDPA, training mode only).
        proj_drop: dropout after the output projection.

    ``forward(x, attn_mask=None, is_causal=False)``: Tensor[N, L, D] -> Tensor[N, L, D].
    ``attn_mask`` is broadcastable to (N, H, L, L): bool (True = may attend) or additive float
    (e.g. a padding mask Tensor[N, 1, 1, L]). ``is_causal`` lets token i see tokens <= i only;
    both may be given.

    Attention capture (opt-in, e.g. ``visionzoo.analysis.explain.attention_rollout``): while
    ``capture_attn`` is True, forward computes ``softmax(q k^T / sqrt(d) + mask)`` explicitly
    instead of through SDPA and stores it, before attention dropout, in ``attn_probs``
    (Tensor[N, H, L, L], still in the autograd graph). The result is the same function up to
    float rounding; the explicit path is slower and materialises the L x L matrix, which is why
    it is not the default.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ModelArgumentError(
                f"Attention: embedding width {dim} is not divisible by num_heads {num_heads}"
            )
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.attn_drop = _check_prob("attn_drop", attn_drop, model="Attention")
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        # Plain attributes, not buffers: they never enter the state dict.
        self.capture_attn = False
        self.attn_probs: Tensor | None = None

    def _explicit_attention(
        self, q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None, is_causal: bool
    ) -> Tensor:
        # The SDPA reference semantics written out, keeping the probabilities (capture_attn).
        length_q, length_k = q.shape[-2], k.shape[-2]
        scores = (q * self.head_dim**-0.5) @ k.transpose(-2, -1)  # (N, H, L, L)
        if is_causal:
            causal = torch.ones(length_q, length_k, dtype=torch.bool, device=q.device).tril()
            scores = scores.masked_fill(~causal, float("-inf"))
        if attn_mask is not None:
            if attn_mask.dtype == torch.bool:
                scores = scores.masked_fill(~attn_mask, float("-inf"))
            else:
                scores = scores + attn_mask
        probs = scores.softmax(dim=-1)  # (N, H, L, L), rows sum to 1
        self.attn_probs = probs
        if self.training and self.attn_drop > 0:
            probs = F.dropout(probs, self.attn_drop)
        return probs @ v  # (N, H, L, d)

    def forward(
        self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False
    ) -> Tensor:
        n, length, dim = x.shape
        qkv = self.qkv(x).reshape(n, length, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (N, L, 3, H, d) -> 3 x (N, H, L, d)
        if attn_mask is not None and is_causal:
            attn_mask, is_causal = _merge_causal(attn_mask, length, length), False
        if self.capture_attn:
            x = self._explicit_attention(q, k, v, attn_mask, is_causal)
        else:
            x = F.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=attn_mask,
                dropout_p=self.attn_drop if self.training else 0.0,
                is_causal=is_causal,
            )  # softmax(q k^T / sqrt(d)) v: (N, H, L, d)
        x = x.transpose(1, 2).reshape(n, length, dim)  # (N, H, L, d) -> (N, L, D)
        return self.proj_drop(self.proj(x))


class Mlp(nn.Module):
    """``fc2(drop(act(fc1(x))))`` then dropout: Tensor[..., D] -> Tensor[..., out or D]."""

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer encoder block (ViT Eq. 2-3).

    Args:
        dim: D.
        num_heads: H.
        mlp_ratio: MLP hidden width / D (4 in ViT).
        qkv_bias: bias in the qkv projection.
        proj_drop: dropout after the attention projection and after each MLP layer (the ViT
            paper's "dropout after every dense layer except the qkv-projections").
        attn_drop: dropout on the attention weights.
        drop_path: stochastic-depth probability of both residual branches.
        act_layer: MLP activation (GELU; CLIP uses a "QuickGELU").
        norm_layer: LayerNorm factory (eps 1e-6 by default, as ViT).

    ``forward(x, attn_mask=None, is_causal=False)``: Tensor[N, L, D] -> Tensor[N, L, D].
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        norm_layer: Callable[[int], nn.Module] = LayerNorm6,
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=proj_drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(
        self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False
    ) -> Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x), attn_mask=attn_mask, is_causal=is_causal))
        return x + self.drop_path2(self.mlp(self.norm2(x)))
