"""ResNet: Deep Residual Learning for Image Recognition (He et al., 2015, arXiv:1512.03385).

A residual block computes ``relu(F(x) + shortcut(x))``: the stacked layers learn a residual
``F`` around an identity path, which lets 50-152-layer networks train where the equally deep
plain network (``shortcut=False``) degrades. ResNet-18/34 stack BasicBlocks (two 3x3 convs);
ResNet-50/101/152 stack Bottlenecks (1x1 reduce, 3x3, 1x1 expand x4).

Shape glossary: N batch, C channels, H/W input height/width. The stem divides H and W by 4,
layers 2-4 each by 2 (unless their stride is replaced by dilation), so ``forward_features``
returns ``Tensor[N, 512 * expansion, H/32, W/32]`` by default.

Attribute names are torchvision's (``conv1, bn1, layer1..4, downsample.0/.1, fc``), so its
state dicts load with no renames. Departures from the paper, each marked where it happens:

- ``stride_in_1x1=False`` (default, "ResNet v1.5" as in torchvision): a downsampling
  Bottleneck strides its 3x3 conv; the paper (v1, ``stride_in_1x1=True``) strides the first
  1x1, which skips three quarters of its input. Same parameters, ~6% more MACs for ResNet-50 (4.09 vs 3.86 G).
- Option A shortcuts subsample with ``x[:, :, ::s, ::s]`` and zero-pad channels at the end; the
  paper only says "zero-padding", this is the common CIFAR-style reading.
- Convolutions use Kaiming-normal init with ``mode="fan_out"`` (torchvision); the paper cites
  He et al. [13], whose analysis holds for either fan.
- Beyond the paper: ``zero_init_residual`` (Goyal et al., arXiv:1706.02677), ``groups`` /
  ``width_per_group`` (ResNeXt arXiv:1611.05431, Wide ResNet arXiv:1605.07146) and
  ``replace_stride_with_dilation`` (DeepLab, arXiv:1606.00915), all with torchvision semantics.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ModelArgumentError
from ...registry import register_model
from .._checks import check_bool
from ._base import Classifier, check_choice, check_positive_int

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ZeroPadShortcut",
    "ResNet",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "CifarResNet",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
]

_MODEL = "ResNet"
SHORTCUT_TYPES = ("A", "B", "C")
NormLayer = Callable[[int], nn.Module]


def _conv3x3(
    in_ch: int, out_ch: int, stride: int = 1, groups: int = 1, dilation: int = 1
) -> nn.Conv2d:
    # padding = dilation keeps H, W (divided by stride) for any dilation.
    return nn.Conv2d(
        in_ch,
        out_ch,
        kernel_size=3,
        stride=stride,
        padding=dilation,
        groups=groups,
        dilation=dilation,
        bias=False,  # the following BN has its own shift
    )


def _conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)


class ZeroPadShortcut(nn.Module):
    """The paper's option A shortcut: parameter-free identity that matches shapes.

    Tensor[N, C_in, H, W] -> Tensor[N, C_out, ceil(H/s), ceil(W/s)] with channels C_in..C_out
    zero. Departure (the paper only says "zero-padding"): subsampling keeps every s-th pixel
    and the new channels are appended after the existing ones (the CIFAR-style reading).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ModelArgumentError(
                f"{_MODEL}: option A shortcuts can only widen ({in_channels} -> {out_channels})"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            # Same output size as a k=1 stride-s conv and a k=3 pad=1 stride-s conv.
            x = x[:, :, :: self.stride, :: self.stride]
        extra = self.out_channels - self.in_channels
        if extra:
            # F.pad pads from the last dim backwards: (W, W, H, H, C_front, C_back).
            x = F.pad(x, (0, 0, 0, 0, 0, extra))
        return x

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34): Tensor[N, C_in, H, W] -> Tensor[N, planes, H/s, W/s]."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        norm_layer: NormLayer = nn.BatchNorm2d,
        *,
        shortcut: bool = True,
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__()
        # ResNet validates these with argument names; this guards direct construction.
        if groups != 1 or base_width != 64:
            raise ModelArgumentError(
                f"{_MODEL}: BasicBlock supports only groups=1 and width_per_group=64"
            )
        if dilation > 1:
            raise ModelArgumentError(f"{_MODEL}: BasicBlock does not support dilation")
        if downsample is not None and not shortcut:
            raise ModelArgumentError(f"{_MODEL}: a plain block (shortcut=False) has no downsample")
        # stride_in_1x1 has no meaning here (the block has no 1x1); accepted so that one
        # switch value serves every depth.
        del stride_in_1x1
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.stride = stride
        self.shortcut = shortcut

    def residual_norm(self) -> nn.Module:
        """The last norm layer of the residual branch (zeroed by ``zero_init_residual``)."""
        return self.bn2

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut:
            out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (ResNet-50/101/152).

    Tensor[N, C_in, H, W] -> Tensor[N, 4 * planes, H/s, W/s]; the inner width is
    ``int(planes * base_width / 64) * groups`` (torchvision's ResNeXt/wide rule).
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        norm_layer: NormLayer = nn.BatchNorm2d,
        *,
        shortcut: bool = True,
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__()
        if downsample is not None and not shortcut:
            raise ModelArgumentError(f"{_MODEL}: a plain block (shortcut=False) has no downsample")
        width = int(planes * (base_width / 64.0)) * groups
        # Departure (v1.5, torchvision default): the stride sits on the 3x3 conv. The paper (v1,
        # stride_in_1x1=True) puts it on the first 1x1, which then reads only 1 pixel in s*s.
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = _conv1x1(inplanes, width, stride_1x1)
        self.bn1 = norm_layer(width)
        self.conv2 = _conv3x3(width, width, stride_3x3, groups, dilation)
        self.bn2 = norm_layer(width)
        self.conv3 = _conv1x1(width, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride
        self.shortcut = shortcut

    def residual_norm(self) -> nn.Module:
        """The last norm layer of the residual branch (zeroed by ``zero_init_residual``)."""
        return self.bn3

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.shortcut:
            out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)


class ResNet(Classifier):
    """ResNet of ``block`` with ``layers[i]`` blocks in stage i+1 (arXiv:1512.03385).

    Args:
        block: ``BasicBlock`` or ``Bottleneck`` (chosen by the builders).
        layers: four positive block counts, e.g. ``(3, 4, 6, 3)`` for ResNet-50.
        num_classes: size of the final fully connected layer.
        in_chans: input image channels.
        shortcut: False builds the paper's plain network: no shortcut additions and no
            projection convs, just the residual branches stacked.
        shortcut_type: "A" zero-padding identity (parameter-free), "B" projection only where
            the shape changes (paper's ImageNet default, torchvision), "C" projection on every
            block.
        stride_in_1x1: Bottleneck only: True strides the first 1x1 (paper, v1); False strides
            the 3x3 (v1.5, torchvision).
        zero_init_residual: zero the last BN gamma of each residual branch so that every block
            starts as the identity.
        groups, width_per_group: grouped/wider 3x3 convs in Bottleneck (ResNeXt, Wide ResNet);
            BasicBlock allows only 1 and 64.
        replace_stride_with_dilation: for layers 2-4, keep the resolution and dilate instead
            (output stride 16 or 8); the dilation grows from one dilated stage to the next.
        norm_layer: ``channels -> nn.Module``; default ``nn.BatchNorm2d``.
    """

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: Sequence[int],
        num_classes: int = 1000,
        in_chans: int = 3,
        *,
        shortcut: bool = True,
        shortcut_type: str = "B",
        stride_in_1x1: bool = False,
        zero_init_residual: bool = False,
        groups: int = 1,
        width_per_group: int = 64,
        replace_stride_with_dilation: Sequence[bool] | None = (False, False, False),
        norm_layer: NormLayer | None = None,
    ) -> None:
        super().__init__()
        if not (isinstance(block, type) and issubclass(block, (BasicBlock, Bottleneck))):
            raise ModelArgumentError(
                f"{_MODEL}: block must be BasicBlock or Bottleneck (or a subclass), got {block!r}"
            )
        if (
            isinstance(layers, (str, bytes))
            or not isinstance(layers, Sequence)
            or len(layers) != 4
            or any(isinstance(n, bool) or not isinstance(n, int) or n <= 0 for n in layers)
        ):
            raise ModelArgumentError(
                f"{_MODEL}: layers must be 4 positive integers (blocks in layer1..layer4), "
                f"got {layers!r}"
            )
        check_positive_int("num_classes", num_classes, model=_MODEL)
        check_positive_int("in_chans", in_chans, model=_MODEL)
        check_positive_int("groups", groups, model=_MODEL)
        check_positive_int("width_per_group", width_per_group, model=_MODEL)
        check_choice("shortcut_type", shortcut_type, SHORTCUT_TYPES, model=_MODEL)
        for name, value in (
            ("shortcut", shortcut),
            ("stride_in_1x1", stride_in_1x1),
            ("zero_init_residual", zero_init_residual),
        ):
            check_bool(name, value, model=_MODEL)
        if replace_stride_with_dilation is None:
            replace_stride_with_dilation = (False, False, False)
        if (
            isinstance(replace_stride_with_dilation, (str, bytes))
            or not isinstance(replace_stride_with_dilation, Sequence)
            or len(replace_stride_with_dilation) != 3
            or not all(isinstance(d, bool) for d in replace_stride_with_dilation)
        ):
            raise ModelArgumentError(
                f"{_MODEL}: replace_stride_with_dilation must be 3 booleans (layer2, layer3, "
                f"layer4), got {replace_stride_with_dilation!r}"
            )
        if issubclass(block, BasicBlock):
            if groups != 1:
                raise ModelArgumentError(
                    f"{_MODEL}: groups must be 1 with BasicBlock (resnet18/34), got {groups}; "
                    "grouped convs need Bottleneck (resnet50/101/152)"
                )
            if width_per_group != 64:
                raise ModelArgumentError(
                    f"{_MODEL}: width_per_group must be 64 with BasicBlock (resnet18/34), got "
                    f"{width_per_group}; wider blocks need Bottleneck (resnet50/101/152)"
                )
            if any(replace_stride_with_dilation):
                # torchvision's BasicBlock has no dilated form either.
                raise ModelArgumentError(
                    f"{_MODEL}: replace_stride_with_dilation needs Bottleneck (resnet50/101/152);"
                    f" BasicBlock supports only (False, False, False), got "
                    f"{tuple(replace_stride_with_dilation)}"
                )
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        if not callable(norm_layer):
            raise ModelArgumentError(
                f"{_MODEL}: norm_layer must be a callable channels -> nn.Module, got {norm_layer!r}"
            )

        self.num_classes = num_classes
        self.num_features = 512 * block.expansion
        self.shortcut = shortcut
        self.shortcut_type = shortcut_type
        self.stride_in_1x1 = stride_in_1x1
        self._block = block
        self._norm_layer = norm_layer
        self.groups = groups
        self.base_width = width_per_group
        # Running state of _make_layer, as in torchvision: channels entering the next stage
        # and the dilation reached so far.
        self.inplanes = 64
        self.dilation = 1

        # Stem: (N, in_chans, H, W) -> (N, 64, H/4, W/4).
        self.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        dil = replace_stride_with_dilation
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2, dilate=dil[0])
        self.layer3 = self._make_layer(256, layers[2], stride=2, dilate=dil[1])
        self.layer4 = self._make_layer(512, layers[3], stride=2, dilate=dil[2])
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(self.num_features, num_classes)

        # Channels and total stride of each stage's output, for detection/segmentation necks.
        self.feature_info: list[dict[str, Any]] = []
        reduction = 4
        for i, (planes, dilate) in enumerate(
            zip((64, 128, 256, 512), (False, *dil), strict=True), 1
        ):
            if i > 1 and not dilate:
                reduction *= 2
            self.feature_info.append(
                {"module": f"layer{i}", "num_chs": planes * block.expansion, "reduction": reduction}
            )

        self._init_weights(zero_init_residual)

    def _make_layer(
        self, planes: int, blocks: int, stride: int = 1, dilate: bool = False
    ) -> nn.Sequential:
        block, norm_layer = self._block, self._norm_layer
        out_ch = planes * block.expansion
        previous_dilation = self.dilation
        if dilate:
            # Atrous: keep the resolution, and let the 3x3 convs from the second block on see
            # as far as the stride would have made them (torchvision semantics).
            self.dilation *= stride
            stride = 1

        def shortcut(in_ch: int, s: int) -> nn.Module | None:
            if not self.shortcut:
                return None  # plain network: nothing to add, so nothing to project
            changes_shape = s != 1 or in_ch != out_ch
            if self.shortcut_type == "C" or (self.shortcut_type == "B" and changes_shape):
                return nn.Sequential(_conv1x1(in_ch, out_ch, s), norm_layer(out_ch))
            if self.shortcut_type == "A" and changes_shape:
                return ZeroPadShortcut(in_ch, out_ch, s)
            return None

        common = dict(
            groups=self.groups,
            base_width=self.base_width,
            norm_layer=norm_layer,
            shortcut=self.shortcut,
            stride_in_1x1=self.stride_in_1x1,
        )
        # The first block changes stride/channels and keeps the previous stage's dilation.
        layers = [
            block(
                self.inplanes,
                planes,
                stride,
                shortcut(self.inplanes, stride),
                dilation=previous_dilation,
                **common,
            )
        ]
        self.inplanes = out_ch
        for _ in range(1, blocks):
            layers.append(
                block(out_ch, planes, 1, shortcut(out_ch, 1), dilation=self.dilation, **common)
            )
        return nn.Sequential(*layers)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # Departure: fan_out (torchvision); He et al. [13] allow either fan.
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            # Not in the paper (Goyal et al., arXiv:1706.02677): each block starts as identity
            # (or as relu(shortcut)), which eases early training of deep nets.
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    weight = getattr(m.residual_norm(), "weight", None)
                    if isinstance(weight, Tensor):
                        nn.init.zeros_(weight)

    def _stem(self, x: Tensor) -> Tensor:
        # (N, in_chans, H, W) -> (N, 64, H/2, W/2) -> (N, 64, H/4, W/4)
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        """Outputs of layer1..layer4; shapes as in ``feature_info``.

        Default: [N, 64e, H/4, W/4], [N, 128e, H/8, W/8], [N, 256e, H/16, W/16],
        [N, 512e, H/32, W/32] with e the block expansion (1 or 4).
        """
        x = self._stem(x)
        outs = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            outs.append(x)
        return outs

    def forward_features(self, x: Tensor) -> Tensor:
        """Tensor[N, in_chans, H, W] -> layer4's map Tensor[N, num_features, H/32, W/32]."""
        x = self._stem(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Tensor[N, num_features, h, w] -> Tensor[N, num_classes] (Tensor[N, num_features]
        pooled features when ``pre_logits``)."""
        x = torch.flatten(self.avgpool(x), 1)  # (N, C, h, w) -> (N, C, 1, 1) -> (N, C)
        return x if pre_logits else self.fc(x)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace ``fc`` with a freshly initialised ``num_features -> num_classes`` layer."""
        check_positive_int("num_classes", num_classes, model=_MODEL)
        device = self.fc.weight.device
        self.fc = nn.Linear(self.num_features, num_classes, device=device)
        self.num_classes = num_classes


_PAPER = "arXiv:1512.03385"


@register_model(task="classification", family="resnet", paper=_PAPER, model_class=ResNet)
def resnet18(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """ResNet-18: BasicBlock x (2, 2, 2, 2); 11.7M parameters, 1.8 GMACs at 224x224."""
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, in_chans, **kwargs)


@register_model(task="classification", family="resnet", paper=_PAPER, model_class=ResNet)
def resnet34(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """ResNet-34: BasicBlock x (3, 4, 6, 3); 21.8M parameters, 3.7 GMACs at 224x224."""
    return ResNet(BasicBlock, (3, 4, 6, 3), num_classes, in_chans, **kwargs)


@register_model(task="classification", family="resnet", paper=_PAPER, model_class=ResNet)
def resnet50(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """ResNet-50: Bottleneck x (3, 4, 6, 3); 25.6M parameters, 4.1 GMACs (v1.5) at 224x224."""
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes, in_chans, **kwargs)


@register_model(task="classification", family="resnet", paper=_PAPER, model_class=ResNet)
def resnet101(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """ResNet-101: Bottleneck x (3, 4, 23, 3); 44.5M parameters, 7.8 GMACs (v1.5) at 224x224."""
    return ResNet(Bottleneck, (3, 4, 23, 3), num_classes, in_chans, **kwargs)


@register_model(task="classification", family="resnet", paper=_PAPER, model_class=ResNet)
def resnet152(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """ResNet-152: Bottleneck x (3, 8, 36, 3); 60.2M parameters, 11.6 GMACs (v1.5) at 224x224."""
    return ResNet(Bottleneck, (3, 8, 36, 3), num_classes, in_chans, **kwargs)


# --- CIFAR-10 networks of the paper's Section 4.2 ------------------------------------------------


class CifarResNet(Classifier):
    """The thin 6n+2-layer networks of the paper's CIFAR-10 study (Section 4.2, Table 6).

    A 3x3 conv with 16 filters, then three stages of n BasicBlocks on maps of H, H/2 and H/4
    with 16, 32 and 64 filters (``widths``), global average pooling and a linear classifier.
    There is no strided stem and no max-pool, so small inputs (32-64 px) keep their detail; the
    paper's degradation experiment (Fig. 6: plain-20..56 get worse with depth, ResNet-20..110
    better) is ``shortcut=False`` against ``shortcut=True`` on these. Shortcuts are option A
    (parameter-free zero-padding) as in the paper's CIFAR nets; "B" adds 1x1 projections where
    shapes change.

    ``forward_features``: Tensor[N, in_chans, H, W] -> Tensor[N, widths[2], H/4, W/4].
    """

    def __init__(
        self,
        depth: int,
        num_classes: int = 10,
        in_chans: int = 3,
        *,
        widths: Sequence[int] = (16, 32, 64),
        shortcut: bool = True,
        shortcut_type: str = "A",
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        name = f"resnet{depth}"
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ModelArgumentError(
                f"CifarResNet: depth must be 6n+2 with n >= 1 (8, 20, 32, ...), got {depth!r}"
            )
        check_positive_int("num_classes", num_classes, model=name)
        check_positive_int("in_chans", in_chans, model=name)
        check_bool("shortcut", shortcut, model=name)
        check_bool("zero_init_residual", zero_init_residual, model=name)
        check_choice("shortcut_type", shortcut_type, ("A", "B"), model=name)
        widths = tuple(widths)
        if len(widths) != 3:
            raise ModelArgumentError(f"{name}: widths must list 3 channel counts, got {widths!r}")
        for w in widths:
            check_positive_int("widths", w, model=name)
        n = (depth - 2) // 6
        self.depth, self.num_classes, self.num_features = depth, num_classes, widths[2]
        self.conv1 = _conv3x3(in_chans, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        stages = []
        in_ch = widths[0]
        for i, out_ch in enumerate(widths):
            blocks = []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                down = None
                if shortcut and (stride != 1 or in_ch != out_ch):
                    if shortcut_type == "A":
                        down = ZeroPadShortcut(in_ch, out_ch, stride)
                    else:
                        down = nn.Sequential(
                            _conv1x1(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch)
                        )
                blocks.append(BasicBlock(in_ch, out_ch, stride, down, shortcut=shortcut))
                in_ch = out_ch
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[2], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))  # (N, 16, H, W)
        return self.layer3(self.layer2(self.layer1(x)))  # (N, 64, H/4, W/4)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = torch.flatten(self.avgpool(x), 1)  # (N, C, h, w) -> (N, C)
        return x if pre_logits else self.fc(x)

    def reset_classifier(self, num_classes: int) -> None:
        check_positive_int("num_classes", num_classes, model=f"resnet{self.depth}")
        self.fc = nn.Linear(self.num_features, num_classes, device=self.fc.weight.device)
        self.num_classes = num_classes


def _cifar_builder(depth: int, params: str) -> Callable[..., CifarResNet]:
    def build(*, num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> CifarResNet:
        return CifarResNet(depth, num_classes, in_chans, **kwargs)

    build.__name__ = build.__qualname__ = f"resnet{depth}"
    build.__doc__ = (
        f"ResNet-{depth} for small images (paper Section 4.2): 3 stages of {(depth - 2) // 6} "
        f"BasicBlocks, 16/32/64 filters, option A shortcuts; {params} parameters (Table 6)."
    )
    return register_model(
        f"resnet{depth}",
        task="classification",
        family="resnet",
        paper=_PAPER,
        input_size=(3, 32, 32),
        model_class=CifarResNet,
    )(build)


resnet20 = _cifar_builder(20, "0.27M")
resnet32 = _cifar_builder(32, "0.46M")
resnet44 = _cifar_builder(44, "0.66M")
resnet56 = _cifar_builder(56, "0.85M")
resnet110 = _cifar_builder(110, "1.7M")
