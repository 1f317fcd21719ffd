"""U-Net: Convolutional Networks for Biomedical Image Segmentation (Ronneberger et al., 2015,
arXiv:1505.04597).

A contracting path (two 3x3 convs + ReLU per level, then 2x2 max pooling that halves H and W
and doubles the channels, 64 -> 1024) and a symmetric expanding path (a 2x2 "up-convolution"
that doubles H and W and halves the channels, concatenation with the feature map of the same
level of the contracting path, two 3x3 convs), ending in a 1x1 conv to the classes. The
skip connections carry the high-resolution detail that the bottleneck has lost.

Two builders:

- ``unet_original``: the paper's network. Unpadded ("valid") 3x3 convs lose a 1-pixel border
  each, so a 1x572x572 tile gives 388x388 logits, and the contracting path's maps are
  centre-cropped before concatenation (568->392, 280->200, 136->104, 64->56). The walk-through
  is generated from this module by :func:`unet_shape_walkthrough`.
- ``unet``: the padded variant used in practice: 3x3 convs with padding 1, so the logits have the
  input's size for any H, W >= 2**depth. Odd sizes (37x45) lose a pixel at a pooling; the
  decoder then zero-pads its up-sampled map to the skip's size (transposed conv) or interpolates
  straight to it (``bilinear``).

Switches: ``skip_connections`` (False: a plain encoder-decoder, no concatenation),
``deep_supervision`` (a 1x1 head on every decoder level but the last; in training mode
``forward`` returns ``AuxOutput(logits, aux)``; the task weights the auxiliary losses),
``bilinear`` (bilinear x2 + 1x1 conv instead of the 2x2 up-convolution), ``batch_norm``,
``padding``, ``base_channels`` (64 in the paper), ``depth`` (4 poolings in the paper),
``dropout`` (at the end of the contracting path).

Departures from the paper, each marked where it happens:

- ``batch_norm`` (default on for ``unet``) is not in the paper (BN came later).
- The paper places drop-out "at the end of the contracting path" without a rate; we apply
  ``dropout`` (default 0: off) to the bottleneck's output.
- ``bilinear`` and deep supervision are not in the paper (common later practice).
- The paper's overlap-tile strategy, mirrored borders and weighted loss (border weight map)
  belong to data and task code, not the model.

Shape glossary: N batch, C channels, H/W height/width, K classes. With ``padding`` the logits
are ``Tensor[N, K, H, W]``; without it they are smaller (572 -> 388).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ModelArgumentError
from ...registry import register_model
from .._checks import check_bool
from ..classification._base import check_positive_int
from ..outputs import AuxOutput

__all__ = [
    "DoubleConv",
    "CenterFit",
    "SkipMerge",
    "Up",
    "UNet",
    "ShapeRow",
    "unet_original",
    "unet",
    "unet_shape_walkthrough",
    "format_shape_walkthrough",
]

_MODEL = "UNet"


class DoubleConv(nn.Sequential):
    """(conv 3x3 [+ BN] + ReLU) x 2: Tensor[N, C_in, H, W] -> Tensor[N, C_out, H', W'].

    ``padding=False`` (paper): H' = H - 4. ``padding=True``: H' = H.
    """

    def __init__(self, in_ch: int, out_ch: int, *, padding: bool, batch_norm: bool) -> None:
        layers: list[nn.Module] = []
        for c_in in (in_ch, out_ch):
            # A BN right after the conv has its own shift, so the conv bias would be redundant.
            layers.append(
                nn.Conv2d(c_in, out_ch, 3, padding=1 if padding else 0, bias=not batch_norm)
            )
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_ch))  # departure: not in the paper
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class CenterFit(nn.Module):
    """Centre-crop and/or zero-pad Tensor[N, C, h, w] to Tensor[N, C, *size].

    The paper crops the contracting path's map to the expanding path's size ("cropping is
    necessary due to the loss of border pixels in every convolution"); the padded variant pads
    the up-sampled map to the skip's size when a pooling floored an odd size. An odd difference
    puts the extra pixel at the bottom/right.
    """

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        h, w = x.shape[-2:]
        th, tw = size
        if th < h or tw < w:  # crop
            top, left = max(h - th, 0) // 2, max(w - tw, 0) // 2
            x = x[..., top : top + min(h, th), left : left + min(w, tw)]
            h, w = x.shape[-2:]
        if th > h or tw > w:  # pad: (left, right, top, bottom)
            dh, dw = th - h, tw - w
            x = F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))
        return x


class SkipMerge(nn.Module):
    """Join a decoder map with the encoder map of the same level.

    ``forward(skip, up)``: with ``concat`` the result is ``cat([skip, up], dim=1)``
    (Tensor[N, C_skip + C_up, h, w]); without it, ``up`` alone (a plain encoder-decoder). Sizes
    are matched first: ``mode="crop"`` (paper) centre-crops the skip to the up-sampled size;
    ``mode="pad"`` brings the up-sampled map to the skip's size, so the logits keep the input's
    size whatever the pooling floored.
    """

    def __init__(self, mode: str, concat: bool) -> None:
        super().__init__()
        self.mode = mode
        self.concat = concat
        self.fit = CenterFit()

    def forward(self, skip: Tensor, up: Tensor) -> Tensor:
        if self.mode == "pad":
            if up.shape[-2:] != skip.shape[-2:]:
                up = self.fit(up, tuple(skip.shape[-2:]))
            return torch.cat([skip, up], dim=1) if self.concat else up
        if not self.concat:
            return up  # nothing to crop: the skip is not used
        if skip.shape[-2:] != up.shape[-2:]:
            skip = self.fit(skip, tuple(up.shape[-2:]))
        return torch.cat([skip, up], dim=1)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, concat={self.concat}"


class Up(nn.Module):
    """Up-sample x2 and halve the channels: Tensor[N, C, h, w] -> Tensor[N, C/2, 2h, 2w].

    Paper: a 2x2 transposed convolution, stride 2 ("up-convolution"). ``bilinear``
    (departure): a 1x1 conv that halves the channels, then bilinear interpolation, to ``size``
    when given (the skip's size) else x2. The 1x1 conv runs before the interpolation, at a
    quarter of the pixels; the two commute because bilinear weights sum to one.
    """

    def __init__(self, in_ch: int, out_ch: int, *, bilinear: bool) -> None:
        super().__init__()
        self.bilinear = bilinear
        if bilinear:
            self.conv = nn.Conv2d(in_ch, out_ch, kernel_size=1)
        else:
            self.conv = nn.ConvTranspose2d(in_ch, out_ch, kernel_size=2, stride=2)

    def forward(self, x: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        x = self.conv(x)
        if self.bilinear:
            target = size if size is not None else (2 * x.shape[-2], 2 * x.shape[-1])
            x = F.interpolate(x, size=target, mode="bilinear", align_corners=False)
        return x


class UNet(nn.Module):
    """U-Net (arXiv:1505.04597) with the paper's switches.

    Args:
        num_classes: K, channels of the logits.
        in_chans: channels of the input image (1 in the paper's grey-scale cell images).
        base_channels: channels of the first level (64); level i has ``base * 2**i``.
        depth: number of 2x2 poolings (4 in the paper: 64 -> 1024 channels).
        padding: True pads the 3x3 convs (same-size logits); False is the paper's valid
            convolutions with crop-and-concatenate.
        skip_connections: False drops the concatenations (plain encoder-decoder; the decoder
            convs then read only the up-sampled map).
        deep_supervision: a 1x1 head on every decoder level but the last; in training mode
            ``forward`` returns ``AuxOutput(logits, aux)`` with the ``depth - 1`` auxiliary
            logits, coarsest first, bilinearly resized to the logits' size.
        bilinear: bilinear up-sampling + 1x1 conv instead of the 2x2 transposed conv.
        batch_norm: BN after every 3x3 conv (departure: not in the paper).
        dropout: drop-out probability on the bottleneck output (paper: "drop-out layers at the
            end of the contracting path", rate not given); 0 disables it.

    ``forward``: Tensor[N, in_chans, H, W] -> Tensor[N, K, H', W'] (H' = H with ``padding``).
    """

    def __init__(
        self,
        num_classes: int = 2,
        in_chans: int = 3,
        *,
        base_channels: int = 64,
        depth: int = 4,
        padding: bool = True,
        skip_connections: bool = True,
        deep_supervision: bool = False,
        bilinear: bool = False,
        batch_norm: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_positive_int("num_classes", num_classes, model=_MODEL)
        check_positive_int("in_chans", in_chans, model=_MODEL)
        check_positive_int("base_channels", base_channels, model=_MODEL)
        check_positive_int("depth", depth, model=_MODEL)
        for name, value in (
            ("padding", padding),
            ("skip_connections", skip_connections),
            ("deep_supervision", deep_supervision),
            ("bilinear", bilinear),
            ("batch_norm", batch_norm),
        ):
            check_bool(name, value, model=_MODEL)
        ok = isinstance(dropout, (int, float)) and not isinstance(dropout, bool)
        if not ok or math.isnan(float(dropout)) or not 0.0 <= float(dropout) < 1.0:
            raise ModelArgumentError(
                f"{_MODEL}: dropout must be a probability in [0, 1), got {dropout!r}"
            )
        if deep_supervision and depth < 2:
            raise ModelArgumentError(
                f"{_MODEL}: deep_supervision needs depth >= 2 (a decoder level besides the "
                f"last), got depth={depth}"
            )

        self.num_classes = num_classes
        self.in_chans = in_chans
        self.depth = depth
        self.padding = padding
        self.skip_connections = skip_connections
        self.deep_supervision = deep_supervision
        self.bilinear = bilinear

        widths = [base_channels * 2**i for i in range(depth + 1)]  # 64, 128, ..., 1024
        conv = dict(padding=padding, batch_norm=batch_norm)
        # Contracting path: level i maps widths[i-1] -> widths[i]; each output is a skip.
        self.encoder = nn.ModuleList(
            DoubleConv(c_in, c_out, **conv)
            for c_in, c_out in zip([in_chans, *widths[:-2]], widths[:-1], strict=True)
        )
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)  # (N, C, H, W) -> (N, C, H/2, W/2)
        self.bottleneck = DoubleConv(widths[-2], widths[-1], **conv)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        # Expanding path, deepest level first: up halves widths[i+1] -> widths[i], the merge
        # concatenates the skip (widths[i]), two convs bring it back to widths[i].
        mode = "pad" if padding else "crop"
        self.ups = nn.ModuleList()
        self.merges = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for i in reversed(range(depth)):
            self.ups.append(Up(widths[i + 1], widths[i], bilinear=bilinear))
            self.merges.append(SkipMerge(mode, concat=skip_connections))
            c_in = 2 * widths[i] if skip_connections else widths[i]
            self.decoder.append(DoubleConv(c_in, widths[i], **conv))
        self.head = nn.Conv2d(widths[0], num_classes, kernel_size=1)
        # Deep supervision (not in the paper): decoder levels 1..depth-1, coarsest first.
        self.aux_heads = (
            nn.ModuleList(
                nn.Conv2d(widths[i], num_classes, kernel_size=1) for i in range(depth - 1, 0, -1)
            )
            if deep_supervision
            else None
        )
        self._init_weights()

    def _init_weights(self) -> None:
        # Paper §3: Gaussian with std sqrt(2/N), N = inputs of one neuron (k*k*C_in), i.e.
        # Kaiming-normal with fan_in.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor | AuxOutput:
        if self.padding:
            h, w = x.shape[-2:]
            if min(h, w) < 2**self.depth:
                raise ValueError(
                    f"{_MODEL}: input {h}x{w} is smaller than 2**depth = {2**self.depth} "
                    "pixels; use a larger input or a smaller depth"
                )
        skips: list[Tensor] = []
        for block in self.encoder:
            x = block(x)  # (N, C_i, H_i, W_i)
            skips.append(x)
            x = self.pool(x)  # (N, C_i, H_i / 2, W_i / 2), floored
        x = self.dropout(self.bottleneck(x))  # (N, base * 2**depth, h, w)

        want_aux = self.aux_heads is not None and self.training
        aux: list[Tensor] = []
        for i, (up, merge, block) in enumerate(
            zip(self.ups, self.merges, self.decoder, strict=True)
        ):
            skip = skips[-1 - i]
            # The padded bilinear variant interpolates straight to the skip's size.
            size = tuple(skip.shape[-2:]) if (self.padding and self.bilinear) else None
            x = up(x, size)  # (N, C_i, ~2h, ~2w)
            x = block(merge(skip, x))  # (N, 2 C_i or C_i, h', w') -> (N, C_i, h'', w'')
            if want_aux and i < self.depth - 1:
                aux.append(self.aux_heads[i](x))
        logits = self.head(x)  # (N, K, H', W')
        if want_aux:
            size = logits.shape[-2:]
            aux_out = tuple(
                F.interpolate(a, size=size, mode="bilinear", align_corners=False) for a in aux
            )
            return AuxOutput(logits, aux_out)
        return logits


_PAPER = "arXiv:1505.04597"


@register_model(
    task="segmentation",
    family="unet",
    paper=_PAPER,
    input_size=(1, 572, 572),
    model_class=UNet,
)
def unet_original(*, num_classes: int = 2, in_chans: int = 1, **kwargs: Any) -> UNet:
    """The paper's U-Net: valid convs, crop-and-concat, no BN; 1x572x572 -> 2x388x388.

    31,030,658 parameters with 2 classes.
    """
    kwargs.setdefault("padding", False)
    kwargs.setdefault("batch_norm", False)
    return UNet(num_classes, in_chans, **kwargs)


@register_model(
    task="segmentation",
    family="unet",
    paper=_PAPER,
    input_size=(3, 256, 256),
    model_class=UNet,
)
def unet(*, num_classes: int = 2, in_chans: int = 3, **kwargs: Any) -> UNet:
    """Padded U-Net with BN (common practice): logits have the input's size, any H, W.

    31,037,698 parameters with 3 input channels and 2 classes.
    """
    return UNet(num_classes, in_chans, **kwargs)


# --- the shape walk-through (docs/segmentation.md) ------------------------------------------


class ShapeRow(NamedTuple):
    """One step of :func:`unet_shape_walkthrough`: shapes are (C, H, W) of one image."""

    module: str
    op: str
    input: tuple[int, ...]
    output: tuple[int, ...]


def _describe(module: nn.Module) -> str:
    if isinstance(module, nn.Conv2d):
        k = module.kernel_size[0]
        pad = "valid" if module.padding == (0, 0) else f"pad {module.padding[0]}"
        return f"conv {k}x{k} ({pad})"
    if isinstance(module, nn.ConvTranspose2d):
        return f"up-conv {module.kernel_size[0]}x{module.kernel_size[1]}, stride 2"
    if isinstance(module, nn.MaxPool2d):
        return "max-pool 2x2, stride 2"
    return type(module).__name__


def unet_shape_walkthrough(
    input_size: int | tuple[int, int] = 572,
    *,
    builder: Callable[..., UNet] | None = None,
    **kwargs: Any,
) -> list[ShapeRow]:
    """Every shape change of a U-Net on one image, in execution order.

    Builds the model on the meta device (no memory, no compute) and records, with forward
    hooks, each 3x3/1x1 conv, pooling, up-convolution, skip crop and concatenation. Defaults
    to the paper's ``unet_original`` (1 channel, 64 base channels, 2 classes) at 572x572; other
    builders and arguments are passed through. Crop rows have ``op`` starting with "crop".
    """
    builder = unet_original if builder is None else builder
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    with torch.device("meta"):
        model = builder(**kwargs).eval()
    names = {m: n for n, m in model.named_modules()}
    rows: list[ShapeRow] = []

    def shape(t: Tensor) -> tuple[int, ...]:
        return tuple(t.shape[1:])

    def record(module: nn.Module, args: tuple, out: Tensor) -> None:
        name = names[module]
        if isinstance(module, CenterFit):
            x = args[0]
            verb = "crop" if out.shape[-1] < x.shape[-1] else "pad"
            what = "skip" if verb == "crop" else "up-sampled map"
            rows.append(
                ShapeRow(
                    name, f"{verb} {what} to {out.shape[-2]}x{out.shape[-1]}", shape(x), shape(out)
                )
            )
        elif isinstance(module, Up):
            if module.bilinear:
                rows.append(ShapeRow(name, "bilinear up-sampling", shape(args[0]), shape(out)))
        elif isinstance(module, SkipMerge):
            if module.concat:
                skip, up = args
                rows.append(
                    ShapeRow(
                        name,
                        f"concat skip ({skip.shape[1]} ch) + up ({up.shape[1]} ch)",
                        (up.shape[1], *out.shape[-2:]),
                        shape(out),
                    )
                )
        else:
            rows.append(ShapeRow(name, _describe(module), shape(args[0]), shape(out)))

    kinds = (nn.Conv2d, nn.ConvTranspose2d, nn.MaxPool2d, CenterFit, Up, SkipMerge)
    handles = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, kinds)]
    try:
        with torch.no_grad():
            model(torch.empty(1, model.in_chans, h, w, device="meta"))
    finally:
        for handle in handles:
            handle.remove()
    return rows


def format_shape_walkthrough(rows: list[ShapeRow]) -> str:
    """A Markdown table of :func:`unet_shape_walkthrough`'s rows."""

    def fmt(s: tuple[int, ...]) -> str:
        return "x".join(str(v) for v in s)

    lines = ["| # | module | operation | input (CxHxW) | output (CxHxW) |", "|---|---|---|---|---|"]
    for i, r in enumerate(rows, 1):
        lines.append(f"| {i} | `{r.module}` | {r.op} | {fmt(r.input)} | {fmt(r.output)} |")
    return "\n".join(lines)
