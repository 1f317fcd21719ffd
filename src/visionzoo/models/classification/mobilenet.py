"""MobileNet v1 and v2.

* v1 — Howard et al., "MobileNets: Efficient Convolutional Neural Networks for Mobile Vision
  Applications", arXiv:1704.04861.
* v2 — Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks",
  arXiv:1801.04381.

**v1** factorises each 3x3 convolution into a 3x3 depthwise conv (one filter per channel) and a
1x1 pointwise conv, each followed by BN and an activation: a cost of
``Dk^2 * M * F^2 + M * N * F^2`` mult-adds instead of ``Dk^2 * M * N * F^2`` (§3.1), 8-9x less
for 3x3 kernels. Switches:

* ``depthwise_separable``: False builds the paper's "Conv MobileNet" baseline of Table 4, where
  each depthwise + pointwise pair is one standard 3x3 conv (+ BN + activation) with the same
  stride and output width, so the saving can be measured.
* ``width_mult`` (alpha, §3.3): every layer's width is ``make_divisible(alpha * c, 8)``, i.e.
  alpha * c rounded to the nearest multiple of 8, never below 8 and never more than 10% below
  alpha * c. At the paper's alphas (1, 0.75, 0.5, 0.25) every width is already a multiple of 8,
  so the rounding changes nothing there.
* Resolution multiplier rho (§3.3) is simply the input size: rho = 0.714 is a 160x160 input
  (224 * rho), 0.857 is 192 and 0.571 is 128. The model pools adaptively, so any size >= 32 runs.
* ``act_layer``: ReLU (paper) or ReLU6 (TF-slim's implementation), or any activation factory.

**v2** stacks inverted residual blocks: a 1x1 expansion by ``t`` (+ BN + ReLU6), a 3x3 depthwise
conv (+ BN + ReLU6), and a *linear* 1x1 projection (+ BN, no activation), with a shortcut
between the thin bottlenecks when the stride is 1 and the widths agree. Switches:

* ``linear_bottleneck``: False adds the activation after the projection's BN (the ablation of
  Fig. 6a; the paper shows the non-linear bottleneck hurts).
* ``residual``: False removes every shortcut (the ablation of Fig. 6b) — the blocks keep their
  inverted (thin -> wide -> thin) layout; only the addition goes away.
* ``width_mult``: torchvision's rounding, ``make_divisible(alpha * c, 8)`` for every layer except
  the last 1x1 conv, which keeps ``make_divisible(1280 * max(1, alpha), 8)`` channels (§4).
* ``act_layer``: ReLU6 (paper) or ReLU, or any activation factory.
* ``dropout``: 0.2 before the classifier (torchvision).

The v2 layout and attribute names are torchvision's (``features.N.conv...``, ``classifier.1``) so
its checkpoints load unchanged.

Departures from the papers (each also marked where it happens):

* v1, Table 1 lists the second-to-last depthwise conv with stride 2, but its input and output are
  both 7x7: it is stride 1 here, as in every released implementation.
* v1 and v2 pool adaptively to 1x1 (the papers: a fixed 7x7 average pool at 224x224).
* v1's classifier is a linear layer with optional dropout (default 0, the paper uses "less
  regularization" and names none; Keras uses 1e-3).
* v2 skips the 1x1 expansion when t = 1 (first block), as TF-slim and torchvision do.

Shapes: N batch, C channels, H x W spatial size, K classes.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ...errors import ModelArgumentError
from ...registry import register_model
from .._checks import act_factory, check_bool, check_dropout
from ._base import Classifier, check_positive_int

__all__ = [
    "make_divisible",
    "ConvBNAct",
    "DepthwiseSeparableConv",
    "InvertedResidual",
    "MobileNetV1",
    "MobileNetV2",
    "MOBILENET_V1_LAYOUT",
    "MOBILENET_V2_SETTING",
    "mobilenet_v1",
    "mobilenet_v2",
]

# v1, Table 1: (output width, stride) of the 13 depthwise-separable blocks after the stem
# (3x3 conv, 32 channels, stride 2). The 13th block's stride is 1 (see the module docstring).
MOBILENET_V1_LAYOUT: tuple[tuple[int, int], ...] = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    *((512, 1),) * 5,
    (1024, 2),
    (1024, 1),  # Departure: Table 1 prints "s2" here, a typo (7x7 in, 7x7 out).
)

# v2, Table 2: expansion t, output width c, repeats n, first stride s.
MOBILENET_V2_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


# --- helpers -------------------------------------------------------------------------------------


def make_divisible(value: float, divisor: int = 8) -> int:
    """``value`` rounded to the nearest multiple of ``divisor`` (at least ``divisor``), bumped up
    one step if rounding lost more than 10% — the TF-slim / torchvision channel rule."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def _check_width(value: object, *, model: str) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(float(value)) or float(value) <= 0:
        raise ModelArgumentError(
            f"{model}: width_mult must be a positive number (e.g. 1.0, 0.75, 0.5), got {value!r}"
        )


def _init_weights(model: nn.Module) -> None:
    # Neither paper specifies an initialisation; this is torchvision's MobileNetV2 scheme.
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


# --- blocks --------------------------------------------------------------------------------------


class ConvBNAct(nn.Sequential):
    """Conv (no bias) -> BatchNorm -> activation, indexed 0/1/2 like torchvision's
    ``Conv2dNormActivation``. ``act=None`` leaves the activation out."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        act: Callable[[], nn.Module] | None = None,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_chs,
                out_chs,
                kernel_size,
                stride,
                (kernel_size - 1) // 2,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(out_chs),
        ]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)


class DepthwiseSeparableConv(nn.Module):
    """v1 block (Fig. 3 right): 3x3 depthwise conv + BN + act, then 1x1 pointwise conv + BN + act.

    Tensor[N, in_chs, H, W] -> Tensor[N, out_chs, H/stride, W/stride].
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int, act: Callable[[], nn.Module]):
        super().__init__()
        self.dw = ConvBNAct(in_chs, in_chs, 3, stride, groups=in_chs, act=act)  # filter
        self.pw = ConvBNAct(in_chs, out_chs, 1, act=act)  # combine

    def forward(self, x: Tensor) -> Tensor:
        return self.pw(self.dw(x))


class InvertedResidual(nn.Module):
    """v2 bottleneck block (Table 1), torchvision's attribute names.

    ``conv``: [1x1 expand + BN + act] (skipped when t = 1), 3x3 depthwise + BN + act,
    1x1 project, BN [, act when ``linear_bottleneck`` is False]. The shortcut adds the input when
    ``residual`` is on, the stride is 1 and ``in_chs == out_chs``.

    Tensor[N, in_chs, H, W] -> Tensor[N, out_chs, H/stride, W/stride].
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int,
        expand_ratio: int,
        act: Callable[[], nn.Module],
        *,
        linear_bottleneck: bool = True,
        residual: bool = True,
    ) -> None:
        super().__init__()
        self.stride = stride
        self.use_res_connect = residual and stride == 1 and in_chs == out_chs
        hidden = int(round(in_chs * expand_ratio))
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            # Departure: t = 1 has no expansion conv (TF-slim, torchvision); Table 1 would apply
            # a 1x1 conv of unchanged width there.
            layers.append(ConvBNAct(in_chs, hidden, 1, act=act))  # (N, t*Cin, H, W)
        layers += [
            ConvBNAct(hidden, hidden, 3, stride, groups=hidden, act=act),  # (N, t*Cin, H/s, W/s)
            nn.Conv2d(hidden, out_chs, 1, bias=False),  # (N, Cout, H/s, W/s)
            nn.BatchNorm2d(out_chs),
        ]
        if not linear_bottleneck:
            # Ablation (Fig. 6a): a non-linearity on the bottleneck destroys information in the
            # low-dimensional projection. It has no parameters, so the keys stay torchvision's.
            layers.append(act())
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


# --- models --------------------------------------------------------------------------------------


class MobileNetV1(Classifier):
    """MobileNet v1 (Table 1) with width multiplier and the full-convolution baseline.

    Args:
        num_classes: K, the size of the last layer.
        in_chans: channels of the input image.
        width_mult: alpha; every width is ``make_divisible(alpha * c, 8)``.
        depthwise_separable: True (paper's MobileNet) or False (Table 4's "Conv MobileNet").
        act_layer: activation factory, ``nn.ReLU`` (paper) or ``nn.ReLU6``, or "relu"/"relu6".
        dropout: dropout before the classifier, in [0, 1).

    The resolution multiplier rho is the input size: pass a 160x160 image for rho = 0.714.
    ``forward``: Tensor[N, in_chans, H, W] -> Tensor[N, K].
    """

    def __init__(
        self,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        width_mult: float = 1.0,
        depthwise_separable: bool = True,
        act_layer: Callable[..., nn.Module] | str = nn.ReLU,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        check_positive_int("num_classes", num_classes, model=name)
        check_positive_int("in_chans", in_chans, model=name)
        _check_width(width_mult, model=name)
        check_bool("depthwise_separable", depthwise_separable, model=name)
        check_dropout(dropout, model=name)
        act = act_factory(act_layer, model=name)

        self.width_mult = float(width_mult)
        self.depthwise_separable = depthwise_separable
        self.num_classes = num_classes

        chs = make_divisible(32 * width_mult)
        layers: list[nn.Module] = [ConvBNAct(in_chans, chs, 3, 2, act=act)]  # (N, 32a, H/2, W/2)
        for width, stride in MOBILENET_V1_LAYOUT:
            out = make_divisible(width * width_mult)
            if depthwise_separable:
                layers.append(DepthwiseSeparableConv(chs, out, stride, act))
            else:
                # Table 4 baseline: one standard 3x3 conv in place of the dw + pw pair.
                layers.append(ConvBNAct(chs, out, 3, stride, act=act))
            chs = out
        self.features = nn.Sequential(*layers)  # (N, 1024a, H/32, W/32)
        self.num_features = chs
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(chs, num_classes))
        _init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        """Tensor[N, C, H, W] -> Tensor[N, num_features, H/32, W/32]."""
        return self.features(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Tensor[N, num_features, h, w] -> Tensor[N, K] (pooled Tensor[N, num_features])."""
        # Departure: adaptive pooling instead of the paper's fixed 7x7 average pool.
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)  # (N, num_features)
        return x if pre_logits else self.classifier(x)

    def reset_classifier(self, num_classes: int) -> None:
        check_positive_int("num_classes", num_classes, model=type(self).__name__)
        self.num_classes = num_classes
        head = nn.Linear(self.num_features, num_classes)
        _init_weights(head)
        self.classifier[-1] = head


class MobileNetV2(Classifier):
    """MobileNet v2 (Table 2), torchvision's layout and names.

    Args:
        num_classes: K, the size of the last layer.
        in_chans: channels of the input image.
        width_mult: alpha; widths ``make_divisible(alpha * c, 8)``, last conv
            ``make_divisible(1280 * max(1, alpha), 8)``.
        linear_bottleneck: True (paper) keeps the 1x1 projection linear; False adds the
            activation after it.
        residual: True (paper) adds shortcuts between bottlenecks; False removes them all.
        act_layer: activation factory, ``nn.ReLU6`` (paper) or ``nn.ReLU``, or "relu6"/"relu".
        dropout: dropout before the classifier, in [0, 1).

    ``forward``: Tensor[N, in_chans, H, W] -> Tensor[N, K].
    """

    def __init__(
        self,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        width_mult: float = 1.0,
        linear_bottleneck: bool = True,
        residual: bool = True,
        act_layer: Callable[..., nn.Module] | str = nn.ReLU6,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        check_positive_int("num_classes", num_classes, model=name)
        check_positive_int("in_chans", in_chans, model=name)
        _check_width(width_mult, model=name)
        check_bool("linear_bottleneck", linear_bottleneck, model=name)
        check_bool("residual", residual, model=name)
        check_dropout(dropout, model=name)
        act = act_factory(act_layer, model=name)

        self.width_mult = float(width_mult)
        self.linear_bottleneck = linear_bottleneck
        self.residual = residual
        self.num_classes = num_classes

        chs = make_divisible(32 * width_mult)
        layers: list[nn.Module] = [ConvBNAct(in_chans, chs, 3, 2, act=act)]  # (N, 32a, H/2, W/2)
        for t, c, n, s in MOBILENET_V2_SETTING:
            out = make_divisible(c * width_mult)
            for i in range(n):
                layers.append(
                    InvertedResidual(
                        chs,
                        out,
                        s if i == 0 else 1,
                        t,
                        act,
                        linear_bottleneck=linear_bottleneck,
                        residual=residual,
                    )
                )
                chs = out
        # §4: the last conv is not thinned for alpha < 1.
        self.num_features = make_divisible(1280 * max(1.0, width_mult))
        layers.append(ConvBNAct(chs, self.num_features, 1, act=act))  # (N, 1280, H/32, W/32)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout), nn.Linear(self.num_features, num_classes)
        )
        _init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        """Tensor[N, C, H, W] -> Tensor[N, num_features, H/32, W/32]."""
        return self.features(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Tensor[N, num_features, h, w] -> Tensor[N, K] (pooled Tensor[N, num_features])."""
        # Departure: adaptive pooling instead of the paper's fixed 7x7 average pool.
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)  # (N, num_features)
        return x if pre_logits else self.classifier(x)

    def reset_classifier(self, num_classes: int) -> None:
        check_positive_int("num_classes", num_classes, model=type(self).__name__)
        self.num_classes = num_classes
        head = nn.Linear(self.num_features, num_classes)
        _init_weights(head)
        self.classifier[-1] = head


# --- builders ------------------------------------------------------------------------------------


@register_model(
    task="classification", family="mobilenet", paper="arXiv:1704.04861", model_class=MobileNetV1
)
def mobilenet_v1(**kwargs) -> MobileNetV1:
    """MobileNet v1 (alpha = 1), 4,231,976 parameters and 569M mult-adds at 224x224."""
    return MobileNetV1(**kwargs)


@register_model(
    task="classification", family="mobilenet", paper="arXiv:1801.04381", model_class=MobileNetV2
)
def mobilenet_v2(**kwargs) -> MobileNetV2:
    """MobileNet v2 (alpha = 1), 3,504,872 parameters."""
    return MobileNetV2(**kwargs)
