"""CLIP's modified ResNet image encoder — Radford et al., arXiv:2103.00020, §2.4.

"We make several modifications to the original version [of ResNet-50]. We incorporate the
ResNet-D improvements from He et al. (2019) and the antialiased rect-2 blur pooling from Zhang
(2019). We also replace the global average pooling layer with an attention pooling mechanism.
The attention pooling is implemented as a single layer of 'transformer-style' multi-head QKV
attention where the query is conditioned on the global average-pooled representation of the
image." Concretely (OpenAI's released code, which open_clip keeps):

* **Stem**: three 3x3 convolutions (the first with stride 2; widths W/2, W/2, W) with BN +
  ReLU, then a 2x2 average pool instead of the 3x3 max pool (ResNet-D's deep stem).
* **Anti-aliased downsampling**: every convolution has stride 1; a bottleneck that downsamples
  runs a ``s x s`` average pool after its 3x3 convolution, and its shortcut an average pool
  before the 1x1 projection (ResNet-D's shortcut; the "blur" is the 2x2 box filter).
* **Attention pooling** (:class:`AttentionPool2d`): the C5 map's ``h*w`` positions plus their
  mean form ``h*w + 1`` tokens with a learned position embedding; one multi-head attention
  layer whose single query is the mean token gives the image feature, and its output
  projection ``c_proj`` maps it into the joint space (so the image tower needs no separate
  projection).

The bottleneck's 3x3 convolution carries the stride in torchvision's v1.5 sense — here the
pooling after it. Stage widths W, 2W, 4W, 8W with expansion 4 (RN50: W = 64, C5 width 2048);
attention heads = 32W / 64.

Departures, each marked where it happens: the attention pool computes only the one query that
is read out (OpenAI runs the full (h*w+1)^2 attention and keeps row 0: same output); its
position embedding is resampled bicubically when the input is not the training size
(OpenAI's code only runs at the training size); initialisation follows OpenAI's code (the
attention pool's projections N(0, C^-0.5), each residual branch's last BN scale zero, PyTorch's
defaults otherwise).

Attribute names are OpenAI's / open_clip's (``conv1..3``, ``bn1..3``, ``layerN.M.{conv1..3,
bn1..3, downsample.0, downsample.1}``, ``attnpool.{positional_embedding, q_proj, k_proj,
v_proj, c_proj}``), so their state dicts load with no renames.

Shape glossary: N batch, C channels, H x W image, h x w = H/32 x W/32 final grid, W stem width,
E output (joint embedding) width, T = h*w + 1 pooling tokens, H_a heads, d head width.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ModelArgumentError
from ...layers.transformer import resize_pos_embed
from .._checks import check_positive_int

__all__ = ["CLIPBottleneck", "AttentionPool2d", "ModifiedResNet"]


class CLIPBottleneck(nn.Module):
    """ResNet bottleneck (1x1, 3x3, 1x1; expansion 4) whose downsampling is an average pool
    after the 3x3 convolution (and before the shortcut's 1x1 projection).

    ``forward``: Tensor[N, C_in, H, W] -> Tensor[N, 4 planes, H/s, W/s].
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = nn.ReLU(inplace=True)
        # Anti-aliased stride: a box-filter average pool instead of a strided convolution.
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.act3 = nn.ReLU(inplace=True)
        self.stride = stride
        self.downsample: nn.Module | None = None
        if stride > 1 or inplanes != planes * self.expansion:
            # ResNet-D shortcut: average pool, then a stride-1 1x1 projection. The children
            # "0" and "1" keep OpenAI's state-dict keys (its pool is the parameter-free "-1").
            self.downsample = nn.Sequential(
                OrderedDict(
                    [
                        ("pool", nn.AvgPool2d(stride) if stride > 1 else nn.Identity()),
                        ("0", nn.Conv2d(inplanes, planes * self.expansion, 1, bias=False)),
                        ("1", nn.BatchNorm2d(planes * self.expansion)),
                    ]
                )
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.avgpool(out)  # (N, planes, H, W) -> (N, planes, H/s, W/s)
        out = self.bn3(self.conv3(out))
        return self.act3(out + identity)


class AttentionPool2d(nn.Module):
    """Multi-head QKV attention pooling of a feature map, queried by its mean.

    Args:
        spatial_dim: the side of the training-size grid (h = w = image_size / 32).
        embed_dim: C.
        num_heads: H_a (must divide C).
        output_dim: E of ``c_proj`` (default C).

    ``forward``: Tensor[N, C, h, w] -> Tensor[N, E].
    """

    def __init__(
        self, spatial_dim: int, embed_dim: int, num_heads: int, output_dim: int | None = None
    ) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ModelArgumentError(
                f"AttentionPool2d: width {embed_dim} is not divisible by {num_heads} heads"
            )
        self.spatial_dim = spatial_dim
        self.num_heads = num_heads
        # (T, C): one row per grid position plus the mean token first.
        self.positional_embedding = nn.Parameter(
            torch.randn(spatial_dim**2 + 1, embed_dim) / embed_dim**0.5
        )
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim or embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)  # (N, C, h, w) -> (N, h*w, C)
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)  # (N, T, C), mean token first
        pos = self.positional_embedding
        if (h, w) != (self.spatial_dim, self.spatial_dim):
            # Departure: resample the grid part for another input size (OpenAI: fixed size).
            grid = (self.spatial_dim, self.spatial_dim)
            pos = resize_pos_embed(pos[None], (h, w), grid, num_prefix_tokens=1)[0]
        x = x + pos.to(x.dtype)
        heads, d = self.num_heads, c // self.num_heads
        # Departure (same output): only the mean token's query is computed, as only its
        # output is read.
        q = self.q_proj(x[:, :1]).reshape(n, 1, heads, d).transpose(1, 2)  # (N, H_a, 1, d)
        k = self.k_proj(x).reshape(n, -1, heads, d).transpose(1, 2)  # (N, H_a, T, d)
        v = self.v_proj(x).reshape(n, -1, heads, d).transpose(1, 2)  # (N, H_a, T, d)
        out = F.scaled_dot_product_attention(q, k, v)  # (N, H_a, 1, d)
        out = out.transpose(1, 2).reshape(n, c)  # (N, 1, H_a, d) -> (N, C)
        return self.c_proj(out)  # (N, E)


class ModifiedResNet(nn.Module):
    """CLIP's ResNet image tower: deep stem, anti-aliased bottleneck stages, attention pool.

    Args:
        layers: bottlenecks per stage, e.g. (3, 4, 6, 3) for RN50.
        output_dim: E, the joint embedding width.
        heads: attention-pool heads (CLIP: 32 W / 64).
        image_size: the training image size (the attention pool's position embedding is
            (image_size / 32)^2 + 1 rows); other multiples of 32 also run.
        width: W, the stem width (64 for RN50).

    ``forward``: Tensor[N, 3, H, W] -> Tensor[N, E] (unnormalised image features);
    ``forward_features``: -> Tensor[N, 32 W, H/32, W/32], the C5 map before pooling.
    """

    def __init__(
        self,
        *,
        layers: Sequence[int] = (3, 4, 6, 3),
        output_dim: int = 1024,
        heads: int = 32,
        image_size: int = 224,
        width: int = 64,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if (
            isinstance(layers, (str, bytes))
            or not isinstance(layers, Sequence)
            or len(layers) != 4
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in layers)
        ):
            raise ModelArgumentError(
                f"{name}: layers must be 4 positive integers (blocks per stage), got {layers!r}"
            )
        for arg, value in (
            ("output_dim", output_dim),
            ("heads", heads),
            ("image_size", image_size),
            ("width", width),
        ):
            check_positive_int(arg, value, model=name)
        if image_size % 32:
            raise ModelArgumentError(
                f"{name}: image_size must be a multiple of 32, got {image_size}"
            )
        if width % 2:
            raise ModelArgumentError(
                f"{name}: width must be even (the stem starts at W/2), got {width}"
            )
        if (width * 32) % heads:
            raise ModelArgumentError(
                f"{name}: the final width {width * 32} is not divisible by heads {heads}"
            )
        self.output_dim = output_dim
        self.image_size = image_size
        self.width = width

        # Deep stem (ResNet-D): three 3x3 convolutions, then a 2x2 average pool.
        self.conv1 = nn.Conv2d(3, width // 2, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width // 2, width // 2, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(width // 2, width, kernel_size=3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.act3 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(2)

        inplanes = width
        stages = []
        for i, blocks in enumerate(layers):
            planes, stride = width * 2**i, 1 if i == 0 else 2
            stage = [CLIPBottleneck(inplanes, planes, stride)]
            inplanes = planes * CLIPBottleneck.expansion
            stage += [CLIPBottleneck(inplanes, planes) for _ in range(1, blocks)]
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.num_features = width * 32  # C5 width
        self.attnpool = AttentionPool2d(image_size // 32, self.num_features, heads, output_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        # OpenAI's initialisation.
        std = self.attnpool.c_proj.in_features**-0.5
        for lin in (
            self.attnpool.q_proj,
            self.attnpool.k_proj,
            self.attnpool.v_proj,
            self.attnpool.c_proj,
        ):
            nn.init.normal_(lin.weight, std=std)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in stage:
                # Zero-initialised last BN: each residual branch starts as the identity.
                nn.init.zeros_(block.bn3.weight)

    def stem(self, x: Tensor) -> Tensor:
        x = self.act1(self.bn1(self.conv1(x)))  # (N, 3, H, W) -> (N, W/2, H/2, W/2)
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.act3(self.bn3(self.conv3(x)))  # (N, W, H/2, W/2)
        return self.avgpool(x)  # (N, W, H/4, W/4)

    def forward_features(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ModelArgumentError(f"expected images Tensor[N, 3, H, W], got {tuple(x.shape)}")
        if x.shape[-2] % 32 or x.shape[-1] % 32:
            raise ModelArgumentError(
                f"input size {x.shape[-2]}x{x.shape[-1]} is not a multiple of 32 (the "
                "ResNet's total stride)"
            )
        x = self.stem(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)  # (N, 32 W, H/32, W/32)

    def forward(self, x: Tensor) -> Tensor:
        return self.attnpool(self.forward_features(x))  # (N, E)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        # A checkpoint of another training size carries another pooling grid: resample it.
        key = prefix + "attnpool.positional_embedding"
        theirs = state_dict.get(key)
        ours = self.attnpool.positional_embedding
        if isinstance(theirs, Tensor) and theirs.ndim == 2 and theirs.shape != ours.shape:
            side = self.attnpool.spatial_dim
            if theirs.shape[1] == ours.shape[1]:
                state_dict[key] = resize_pos_embed(theirs[None], (side, side), num_prefix_tokens=1)[
                    0
                ]
        super()._load_from_state_dict(state_dict, prefix, *args)
