"""DeepLab v1, v2 and v3: atrous convolution for semantic segmentation.

- v1-LargeFOV (Chen et al., 2014, arXiv:1412.7062): VGG-16 made dense. pool4 and pool5 keep
  stride 1, conv5 is dilated by 2 to see what it saw before, fc6 becomes a 3x3 conv with
  dilation 12 and 1024 channels (Table 2's "LargeFOV": the 7x7x4096 fc6 subsampled), fc7 a 1x1
  1024 conv, fc8 a 1x1 conv to the classes. Output stride 8; logits are bilinearly upsampled.
- v2 (arXiv:1606.00915): an atrous ResNet-101 (or -50) at output stride 8 and ASPP-L: four 3x3
  branches at rates 6/12/18/24, each predicting the classes, summed.
- v3 (arXiv:1706.05587): an atrous ResNet-50/101 at output stride 16 or 8 and ASPP: a 1x1 branch,
  three 3x3 branches at rates 6/12/18 (stride 16; doubled to 12/24/36 at stride 8, because the
  feature map is twice as large and the same rates would see half the context), and image
  pooling (global average -> 1x1 conv -> broadcast back), each 256 channels with BN,
  concatenated and fused by a 1x1 conv; an optional FCN head on layer3 (``aux_loss``).

Attribute names are torchvision's (``backbone.layer4``, ``classifier.0.convs.1``,
``classifier.4``, ``aux_classifier``), so its ``deeplabv3_resnet50/101`` state dicts load with
no renames (``visionzoo.interop.torchvision.from_torchvision``). The backbones are the zoo's
ResNet (``replace_stride_with_dilation``) and VGG layers, so ImageNet weights of those load
into ``backbone`` / ``features`` unchanged.

Departures from the papers, each marked where it happens:

- No dense CRF post-processing (v1/v2) and no multi-scale input fusion (v2's MSC) or
  multi-scale/flip test-time augmentation (v3): those are inference procedures, not layers.
- v1: fc6/fc7 are initialised randomly, not from VGG-16's subsampled fc weights; pools are
  DeepLab's released 3x3 kernels (pad 1, ``ceil_mode`` as Caffe), VGG-16's conv layers keep
  torchvision's indices.
- v2/v3: the ResNet is torchvision's (v1.5: stride in the 3x3 conv, PyTorch BN), not the MSRA
  Caffe ResNet of the papers; BN is not frozen here (a training recipe matter).
- v3: torchvision's head, for checkpoint parity: a 3x3 conv + BN + ReLU between the ASPP
  fusion and the final 1x1 conv (``head_conv=False`` removes it, as in the paper) and dropout
  0.5 after the fusion (``dropout``). Multi-grid is off by default as in torchvision
  (``multi_grid=(1, 2, 4)`` gives the paper's block4 unit rates).
- Logits are upsampled with ``align_corners=False`` (torchvision); Caffe's interpolation
  aligned corners.

Shape glossary: N batch, C channels, H/W input height/width, K classes, s the output stride
(8 or 16): backbone maps are ``Tensor[N, C, ~H/s, ~W/s]``; every model returns
``Tensor[N, K, H, W]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ModelArgumentError
from ...registry import register_model
from .._checks import check_bool
from ..classification._base import check_choice, check_positive_int
from ..classification.resnet import Bottleneck, ResNet
from ..classification.vgg import VGG_CONFIGS, _make_features
from ..outputs import AuxOutput

__all__ = [
    "ASPP",
    "ASPPConv",
    "ASPPPooling",
    "ASPPL",
    "DeepLabV3Head",
    "FCNHead",
    "DeepLabV1",
    "DeepLabV2",
    "DeepLabV3",
    "deeplabv1_largefov",
    "deeplabv2_resnet50",
    "deeplabv2_resnet101",
    "deeplabv3_resnet50",
    "deeplabv3_resnet101",
]

OUTPUT_STRIDES = (8, 16)
_RESNET_LAYERS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
# layer2, layer3, layer4: which strides become dilations for each output stride.
_DILATE = {8: (False, True, True), 16: (False, False, True)}


def _check_prob(name: str, value: object, *, model: str) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or math.isnan(float(value)) or not 0.0 <= float(value) < 1.0:
        raise ModelArgumentError(f"{model}: {name} must be a probability in [0, 1), got {value!r}")


def _check_ints(
    name: str, value: object, *, model: str, length: int | None = None
) -> tuple[int, ...]:
    """A non-empty sequence of positive ints (of ``length`` if given), as a tuple."""
    ok = (
        isinstance(value, Sequence)
        and not isinstance(value, (str, bytes))
        and len(value) > 0
        and (length is None or len(value) == length)
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    )
    if not ok:
        what = f"{length} positive integers" if length else "a non-empty list of positive integers"
        raise ModelArgumentError(f"{model}: {name} must be {what}, got {value!r}")
    return tuple(int(v) for v in value)


def _upsample(logits: Tensor, size: Sequence[int]) -> Tensor:
    # Departure (v1/v2): align_corners=False as torchvision; Caffe's Interp aligned corners.
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def _dilated_resnet(depth: int, in_chans: int, output_stride: int, model: str) -> ResNet:
    """The zoo's ResNet-50/101 with layer strides replaced by dilation (output stride 8/16)."""
    check_choice("output_stride", output_stride, OUTPUT_STRIDES, model=model)
    # Departure: torchvision's ResNet v1.5, not the MSRA Caffe ResNet of the papers.
    backbone = ResNet(
        Bottleneck,
        _RESNET_LAYERS[depth],
        num_classes=1,
        in_chans=in_chans,
        replace_stride_with_dilation=_DILATE[output_stride],
    )
    # A segmentation backbone has no classifier: no parameters, no state-dict keys (as
    # torchvision's IntermediateLayerGetter, which drops avgpool and fc).
    backbone.fc = nn.Identity()
    return backbone


# --- v3 blocks -----------------------------------------------------------------------------


class ASPPConv(nn.Sequential):
    """3x3 atrous conv + BN + ReLU: Tensor[N, C_in, h, w] -> Tensor[N, C_out, h, w]."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int) -> None:
        super().__init__(
            nn.Conv2d(
                in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False
            ),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )


class ASPPPooling(nn.Sequential):
    """Image-level features (v3 §3.3): global average -> 1x1 conv + BN + ReLU -> broadcast.

    Tensor[N, C_in, h, w] -> Tensor[N, C_out, h, w], constant over space. BN sees one value per
    image and channel, so training needs a batch of at least 2.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        for module in self:
            x = module(x)  # ends (N, C_out, 1, 1)
        # The paper upsamples bilinearly; from one pixel that is a broadcast (no copy here).
        return x.expand(-1, -1, h, w)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (v3): parallel branches, concatenated, fused by 1x1.

    Branches: a 1x1 conv, one 3x3 atrous conv per rate, and (``image_pooling``) the image-level
    branch; each gives ``out_channels``. ``project`` fuses the concatenation (1x1 conv + BN +
    ReLU, then dropout: torchvision's, not in the paper).
    Tensor[N, C_in, h, w] -> Tensor[N, out_channels, h, w].
    """

    def __init__(
        self,
        in_channels: int,
        atrous_rates: Sequence[int],
        out_channels: int = 256,
        *,
        image_pooling: bool = True,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        branches: list[nn.Module] = [
            nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(),
            )
        ]
        branches += [ASPPConv(in_channels, out_channels, r) for r in atrous_rates]
        if image_pooling:
            branches.append(ASPPPooling(in_channels, out_channels))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(
            nn.Conv2d(len(branches) * out_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            nn.Dropout(dropout),  # departure: torchvision's, not in the paper
        )

    def forward(self, x: Tensor) -> Tensor:
        # (N, C_in, h, w) -> B x (N, 256, h, w) -> (N, B * 256, h, w) -> (N, 256, h, w)
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))


class DeepLabV3Head(nn.Sequential):
    """ASPP, then (``head_conv``) 3x3 conv + BN + ReLU, then a 1x1 conv to the classes.

    Indices as torchvision's ``DeepLabHead`` (``classifier.4`` is the final conv); without
    ``head_conv`` (the paper) the final conv is ``classifier.1``.
    Tensor[N, C_in, h, w] -> Tensor[N, K, h, w].
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        atrous_rates: Sequence[int],
        *,
        image_pooling: bool = True,
        head_conv: bool = True,
        dropout: float = 0.5,
    ) -> None:
        layers: list[nn.Module] = [
            ASPP(in_channels, atrous_rates, 256, image_pooling=image_pooling, dropout=dropout)
        ]
        if head_conv:
            # Departure (torchvision): the paper goes from the ASPP fusion to the 1x1 logits.
            layers += [
                nn.Conv2d(256, 256, 3, padding=1, bias=False),
                nn.BatchNorm2d(256),
                nn.ReLU(),
            ]
        layers.append(nn.Conv2d(256, num_classes, 1))
        super().__init__(*layers)


class FCNHead(nn.Sequential):
    """Auxiliary head on layer3 (torchvision's FCNHead; PSPNet-style deep supervision).

    3x3 conv to C_in/4 + BN + ReLU, dropout 0.1, 1x1 conv to the classes:
    Tensor[N, C_in, h, w] -> Tensor[N, K, h, w].
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        inter = in_channels // 4
        super().__init__(
            nn.Conv2d(in_channels, inter, 3, padding=1, bias=False),
            nn.BatchNorm2d(inter),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Conv2d(inter, num_classes, 1),
        )


# --- v2 block ------------------------------------------------------------------------------


class ASPPL(nn.Module):
    """ASPP-L (v2 Fig. 4): one 3x3 atrous conv per rate straight to the classes, summed.

    Tensor[N, C_in, h, w] -> Tensor[N, K, h, w]. With ResNet-101 each branch is a single conv
    (the released model); the VGG-16 variant's fc6/fc7 per branch is not built.
    """

    def __init__(self, in_channels: int, num_classes: int, atrous_rates: Sequence[int]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=r, dilation=r) for r in atrous_rates
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.convs[0](x)
        for conv in self.convs[1:]:
            out = out + conv(x)  # fusion by sum (v2 §3.3)
        return out


# --- models --------------------------------------------------------------------------------


class DeepLabV1(nn.Module):
    """DeepLab v1 (arXiv:1412.7062) on VGG-16; the defaults build DeepLab-LargeFOV.

    Args:
        num_classes: K (21 for Pascal VOC: 20 classes + background).
        in_chans: input image channels.
        fc6_kernel, fc6_dilation, fc_channels: the fc6 conv and the fc6/fc7 width. Table 2's
            variants: LargeFOV 3/12/1024 (default); "DeepLab-CRF-7x7" 7/4/4096;
            "DeepLab-CRF" 4/4/4096; "DeepLab-CRF-4x4" 4/8/4096. ``fc6_dilation * (fc6_kernel -
            1)`` must be even (same-size padding).
        dropout: dropout after fc6 and fc7 (0.5 in the released model).

    ``forward``: Tensor[N, in_chans, H, W] -> Tensor[N, K, H, W] (output stride 8, then
    bilinear upsampling).
    """

    def __init__(
        self,
        num_classes: int = 21,
        in_chans: int = 3,
        *,
        fc6_kernel: int = 3,
        fc6_dilation: int = 12,
        fc_channels: int = 1024,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        model = "DeepLabV1"
        for name, value in (
            ("num_classes", num_classes),
            ("in_chans", in_chans),
            ("fc6_kernel", fc6_kernel),
            ("fc6_dilation", fc6_dilation),
            ("fc_channels", fc_channels),
        ):
            check_positive_int(name, value, model=model)
        _check_prob("dropout", dropout, model=model)
        if (fc6_dilation * (fc6_kernel - 1)) % 2:
            raise ModelArgumentError(
                f"{model}: fc6_dilation * (fc6_kernel - 1) must be even so that fc6 keeps the "
                f"size, got fc6_kernel={fc6_kernel}, fc6_dilation={fc6_dilation}"
            )
        self.num_classes = num_classes

        # VGG-16's 13 convs with torchvision's indices (its ImageNet weights load unchanged).
        self.features = _make_features(VGG_CONFIGS[16], in_chans, batch_norm=False)
        pools = [i for i, m in enumerate(self.features) if isinstance(m, nn.MaxPool2d)]
        for n, i in enumerate(pools):
            # Departure from VGG's 2x2/2 (DeepLab's released nets): 3x3 pools, pad 1, Caffe's
            # ceil rounding; pool4 and pool5 keep stride 1 ("skip subsampling", §3.1), so the
            # output stride is 8: H -> ceil(H/2) -> ceil(H/4) -> ceil(H/8).
            stride = 2 if n < 3 else 1
            self.features[i] = nn.MaxPool2d(3, stride=stride, padding=1, ceil_mode=True)
        for m in list(self.features)[pools[3] + 1 : pools[4]]:
            if isinstance(m, nn.Conv2d):
                # conv5 after the un-strided pool4: dilation 2 keeps its field of view (§3.1).
                m.dilation, m.padding = (2, 2), (2, 2)
        pad = fc6_dilation * (fc6_kernel - 1) // 2
        self.classifier = nn.Sequential(
            # fc6/fc7/fc8 as convolutions; indices as VGG's classifier (fc8 = classifier.6).
            nn.Conv2d(512, fc_channels, fc6_kernel, padding=pad, dilation=fc6_dilation),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Conv2d(fc_channels, fc_channels, 1),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Conv2d(fc_channels, num_classes, 1),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # Departure: random fc6/fc7 (the paper subsamples VGG's fc weights); conv
                # layers as torchvision's VGG init.
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        # fc8: Gaussian std 0.01 as the released model.
        nn.init.normal_(self.classifier[-1].weight, 0.0, 0.01)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        x = self.features(x)  # (N, 512, ~H/8, ~W/8)
        return _upsample(self.classifier(x), size)  # (N, K, H/8, W/8) -> (N, K, H, W)


class DeepLabV2(nn.Module):
    """DeepLab v2 (arXiv:1606.00915): atrous ResNet + ASPP-L.

    Args:
        num_classes: K (21 for Pascal VOC).
        in_chans: input image channels.
        backbone_depth: 50 or 101 (the paper's ResNet-101).
        output_stride: 8 (paper) or 16.
        atrous_rates: ASPP-L rates; default (6, 12, 18, 24) at stride 8 (paper), halved to
            (3, 6, 9, 12) at stride 16 so each branch sees the same context.

    ``forward``: Tensor[N, in_chans, H, W] -> Tensor[N, K, H, W].
    """

    def __init__(
        self,
        num_classes: int = 21,
        in_chans: int = 3,
        *,
        backbone_depth: int = 101,
        output_stride: int = 8,
        atrous_rates: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        model = "DeepLabV2"
        check_positive_int("num_classes", num_classes, model=model)
        check_positive_int("in_chans", in_chans, model=model)
        check_choice("backbone_depth", backbone_depth, tuple(_RESNET_LAYERS), model=model)
        check_choice("output_stride", output_stride, OUTPUT_STRIDES, model=model)
        if atrous_rates is None:
            atrous_rates = tuple(r * 8 // output_stride for r in (6, 12, 18, 24))
        self.atrous_rates = _check_ints("atrous_rates", atrous_rates, model=model)
        self.num_classes = num_classes
        self.output_stride = output_stride
        self.backbone = _dilated_resnet(backbone_depth, in_chans, output_stride, model)
        self.classifier = ASPPL(2048, num_classes, self.atrous_rates)
        for conv in self.classifier.convs:
            # Gaussian std 0.01, zero bias: the released model's initialisation of the branches.
            nn.init.normal_(conv.weight, 0.0, 0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        features = self.backbone.forward_stages(x)[-1]  # (N, 2048, H/s, W/s)
        return _upsample(self.classifier(features), size)


class DeepLabV3(nn.Module):
    """DeepLab v3 (arXiv:1706.05587): atrous ResNet + ASPP with image pooling.

    Args:
        num_classes: K (21 for Pascal VOC).
        in_chans: input image channels.
        backbone_depth: 50 or 101.
        output_stride: 16 or 8 (default 8, torchvision's and the paper's evaluation setting).
        atrous_rates: the three 3x3 branches' rates; default (12, 24, 36) at stride 8,
            (6, 12, 18) at stride 16.
        image_pooling: the image-level branch of ASPP.
        aux_loss: an FCN head on layer3; in training mode ``forward`` returns
            ``AuxOutput(logits, (aux_logits,))`` (the task weights the auxiliary loss).
        multi_grid: unit rates of layer4's three blocks (paper §3.2), multiplied by layer4's
            dilation (2 at stride 16, 4 at stride 8); None keeps torchvision's rates (the
            first block at the previous stage's dilation, the others at layer4's).
        head_conv: torchvision's extra 3x3 conv + BN + ReLU before the logits (False: the
            paper's head).
        dropout: dropout after the ASPP fusion (torchvision's 0.5).

    ``forward``: Tensor[N, in_chans, H, W] -> Tensor[N, K, H, W];
    ``forward_with_aux`` returns ``(logits, aux_logits or None)`` in either mode.
    """

    def __init__(
        self,
        num_classes: int = 21,
        in_chans: int = 3,
        *,
        backbone_depth: int = 50,
        output_stride: int = 8,
        atrous_rates: Sequence[int] | None = None,
        image_pooling: bool = True,
        aux_loss: bool = False,
        multi_grid: Sequence[int] | None = None,
        head_conv: bool = True,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        model = "DeepLabV3"
        check_positive_int("num_classes", num_classes, model=model)
        check_positive_int("in_chans", in_chans, model=model)
        check_choice("backbone_depth", backbone_depth, tuple(_RESNET_LAYERS), model=model)
        check_choice("output_stride", output_stride, OUTPUT_STRIDES, model=model)
        for name, value in (
            ("image_pooling", image_pooling),
            ("aux_loss", aux_loss),
            ("head_conv", head_conv),
        ):
            check_bool(name, value, model=model)
        _check_prob("dropout", dropout, model=model)
        if atrous_rates is None:
            # Paper §4.1: rates (6, 12, 18) at stride 16, doubled at stride 8.
            atrous_rates = tuple(r * 16 // output_stride for r in (6, 12, 18))
        self.atrous_rates = _check_ints("atrous_rates", atrous_rates, model=model)
        self.num_classes = num_classes
        self.output_stride = output_stride

        self.backbone = _dilated_resnet(backbone_depth, in_chans, output_stride, model)
        if multi_grid is not None:
            grid = _check_ints("multi_grid", multi_grid, model=model, length=3)
            base = self.backbone.dilation  # layer4's rate: 2 at stride 16, 4 at stride 8
            for block, unit in zip(self.backbone.layer4, grid, strict=True):
                rate = base * unit
                block.conv2.dilation, block.conv2.padding = (rate, rate), (rate, rate)
        self.classifier = DeepLabV3Head(
            2048,
            num_classes,
            self.atrous_rates,
            image_pooling=image_pooling,
            head_conv=head_conv,
            dropout=dropout,
        )
        # Departure (torchvision): heads keep PyTorch's default initialisation.
        self.aux_classifier = FCNHead(1024, num_classes) if aux_loss else None

    def _features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        stages = self.backbone.forward_stages(x)
        return stages[2], stages[3]  # layer3 (N, 1024, H/s, W/s), layer4 (N, 2048, H/s, W/s)

    def forward_with_aux(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(logits, aux_logits)``, both Tensor[N, K, H, W], in train or eval mode;
        ``aux_logits`` is None without ``aux_loss``. (torchvision's eval output with aux.)"""
        size = x.shape[-2:]
        c3, c4 = self._features(x)
        logits = _upsample(self.classifier(c4), size)
        if self.aux_classifier is None:
            return logits, None
        return logits, _upsample(self.aux_classifier(c3), size)

    def forward(self, x: Tensor) -> Tensor | AuxOutput:
        if self.training and self.aux_classifier is not None:
            logits, aux = self.forward_with_aux(x)
            return AuxOutput(logits, (aux,))
        size = x.shape[-2:]
        return _upsample(self.classifier(self._features(x)[1]), size)


# --- builders ------------------------------------------------------------------------------

_V1, _V2, _V3 = "arXiv:1412.7062", "arXiv:1606.00915", "arXiv:1706.05587"


@register_model(
    task="segmentation",
    family="deeplab",
    paper=_V1,
    input_size=(3, 321, 321),
    model_class=DeepLabV1,
)
def deeplabv1_largefov(*, num_classes: int = 21, in_chans: int = 3, **kwargs: Any) -> DeepLabV1:
    """DeepLab-LargeFOV: VGG-16, fc6 3x3 rate 12 with 1024 channels; 20,505,429 parameters
    at 21 classes (the paper's Table 2: 20.5M)."""
    return DeepLabV1(num_classes, in_chans, **kwargs)


@register_model(
    task="segmentation",
    family="deeplab",
    paper=_V2,
    input_size=(3, 321, 321),
    model_class=DeepLabV2,
)
def deeplabv2_resnet101(*, num_classes: int = 21, in_chans: int = 3, **kwargs: Any) -> DeepLabV2:
    """DeepLab v2: atrous ResNet-101 (stride 8) + ASPP-L rates 6/12/18/24."""
    return DeepLabV2(num_classes, in_chans, backbone_depth=101, **kwargs)


@register_model(
    task="segmentation",
    family="deeplab",
    paper=_V2,
    input_size=(3, 321, 321),
    model_class=DeepLabV2,
)
def deeplabv2_resnet50(*, num_classes: int = 21, in_chans: int = 3, **kwargs: Any) -> DeepLabV2:
    """DeepLab v2 on an atrous ResNet-50 (the paper reports ResNet-101 and VGG-16)."""
    return DeepLabV2(num_classes, in_chans, backbone_depth=50, **kwargs)


@register_model(
    task="segmentation",
    family="deeplab",
    paper=_V3,
    input_size=(3, 513, 513),
    model_class=DeepLabV3,
)
def deeplabv3_resnet50(*, num_classes: int = 21, in_chans: int = 3, **kwargs: Any) -> DeepLabV3:
    """DeepLab v3 on an atrous ResNet-50 (torchvision's ``deeplabv3_resnet50`` layout)."""
    return DeepLabV3(num_classes, in_chans, backbone_depth=50, **kwargs)


@register_model(
    task="segmentation",
    family="deeplab",
    paper=_V3,
    input_size=(3, 513, 513),
    model_class=DeepLabV3,
)
def deeplabv3_resnet101(*, num_classes: int = 21, in_chans: int = 3, **kwargs: Any) -> DeepLabV3:
    """DeepLab v3 on an atrous ResNet-101 (the paper's backbone)."""
    return DeepLabV3(num_classes, in_chans, backbone_depth=101, **kwargs)
