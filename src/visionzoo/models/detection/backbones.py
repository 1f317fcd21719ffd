"""Feature extractors for Faster R-CNN (arXiv:1506.01497), built on the zoo's classifiers.

* **VGG-16 conv5** (the paper, §4.1): the 13 conv layers of VGG-16 up to conv5_3 + ReLU (pool5
  dropped), stride 16, 512 channels. conv1-conv2 are frozen by default (``trainable_layers=3``:
  "we fine-tune conv3_1 and up", following Fast R-CNN §4.5). The 4096-d fc6/fc7 of the RoI head
  live in :mod:`.roi_heads`.
* **ResNet-50-C4** (ResNet paper, arXiv:1512.03385, App. A): stem + layer1..layer3, stride 16,
  1024 channels; layer4 becomes the RoI head (:class:`~.roi_heads.ResNetC5Head`).
* **ResNet-50-FPN** (Lin et al., arXiv:1612.03144): layer1..layer4 (C2..C5) feed a feature
  pyramid — 1x1 lateral convs, nearest-neighbour top-down upsampling and addition, a 3x3 conv
  per level — giving P2..P5 at strides 4..32 with 256 channels, plus P6 = P5 subsampled by 2
  (``LastLevelMaxPool``) for the RPN only. torchvision's ``resnet_fpn_backbone`` layout and
  names (``body``, ``fpn.inner_blocks.i.0``, ``fpn.layer_blocks.i.0``).
* **MobileNet v2** (arXiv:1801.04381) with a small FPN, for CPU training on small images: the
  stride-8, -16 and -32 outputs (after ``features[6]``, ``[13]`` and ``[18]``) feed an FPN of
  ``fpn_channels`` channels, plus the pooled level. Not in the paper (see faster_rcnn.py for why
  this layout).

ResNet backbones use :class:`FrozenBatchNorm2d` (batch statistics and affine parameters fixed,
as in the ResNet paper's detectors and torchvision's pretrained detectors) unless
``norm_layer="bn"``; ``trainable_layers`` freezes the earliest stages as torchvision does.

The trunks are the zoo's classification models with their classifier removed, under
``body``: ImageNet weights of those models (e.g. converted with
``visionzoo.interop.torchvision``) load into them (see ``FasterRCNN.load_backbone_weights``).

Shape glossary: N images, C channels, H x W input size; a stride-s map is H/s x W/s.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ModelArgumentError
from ..classification.mobilenet import MobileNetV2
from ..classification.resnet import Bottleneck, ResNet
from ..classification.vgg import VGG_CONFIGS, _make_features

__all__ = [
    "FrozenBatchNorm2d",
    "freeze_batchnorm",
    "FeaturePyramidNetwork",
    "LastLevelMaxPool",
    "Backbone",
    "NORM_LAYERS",
    "resnet50_fpn_backbone",
    "resnet50_c4_backbone",
    "vgg16_conv5_backbone",
    "mobilenet_v2_fpn_backbone",
]

NORM_LAYERS = ("frozen_bn", "bn")


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters (all buffers, no parameters).

    ``y = x * scale + shift`` with ``scale = weight / sqrt(running_var + eps)`` and
    ``shift = bias - running_mean * scale`` (torchvision's arithmetic, so converted weights give
    the same outputs). Detection batches are one or two large images per GPU: batch statistics
    would be noise, so the ImageNet ones are kept. Loads BatchNorm2d state dicts (their
    ``num_batches_tracked`` is dropped).
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        scale = (
            self.weight.reshape(1, -1, 1, 1)
            * (self.running_var.reshape(1, -1, 1, 1) + self.eps).rsqrt()
        )
        shift = self.bias.reshape(1, -1, 1, 1) - self.running_mean.reshape(1, -1, 1, 1) * scale
        return x * scale + shift

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def freeze_batchnorm(module: nn.Module, eps: float | None = None) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` inside ``module`` by a :class:`FrozenBatchNorm2d`
    holding its current statistics and affine parameters (in place; returns ``module``)."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, child.eps if eps is None else eps)
            frozen = frozen.to(device=child.running_mean.device)
            with torch.no_grad():
                if child.affine:
                    frozen.weight.copy_(child.weight)
                    frozen.bias.copy_(child.bias)
                if child.track_running_stats:
                    frozen.running_mean.copy_(child.running_mean)
                    frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child, eps)
    return module


def _norm_factory(norm_layer: str, eps: float, model: str) -> Callable[[int], nn.Module]:
    if norm_layer not in NORM_LAYERS:
        valid = ", ".join(repr(n) for n in NORM_LAYERS)
        raise ModelArgumentError(f"{model}: norm_layer must be one of {valid}, got {norm_layer!r}")
    if norm_layer == "frozen_bn":
        return lambda c: FrozenBatchNorm2d(c, eps=eps)
    return lambda c: nn.BatchNorm2d(c, eps=eps)


def _check_trainable(value: object, maximum: int, model: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise ModelArgumentError(
            f"{model}: trainable_layers must be an integer in [0, {maximum}], got {value!r}"
        )
    return value


# ----------------------------------------------------------------------------------------- FPN


class LastLevelMaxPool(nn.Module):
    """P6 = P5 subsampled by 2 (a 1x1 max pool of stride 2), used by the RPN only (FPN §4.1)."""

    def forward(self, results: list[Tensor], names: list[str]) -> tuple[list[Tensor], list[str]]:
        return [*results, F.max_pool2d(results[-1], kernel_size=1, stride=2)], [*names, "pool"]


class FeaturePyramidNetwork(nn.Module):
    """FPN top-down pathway with lateral connections (arXiv:1612.03144, §3, Fig. 3).

    ``inner_blocks[i]``: 1x1 conv C_i -> ``out_channels`` (lateral); ``layer_blocks[i]``: 3x3
    conv on the merged map (reduces upsampling aliasing). No normalisation or activation, as in
    the paper. ``forward``: ordered dict of Tensor[N, C_i, H_i, W_i] (finest first) -> ordered
    dict of Tensor[N, out_channels, H_i, W_i] under the same keys (+ "pool" with the extra
    block).
    """

    def __init__(
        self,
        in_channels_list: Sequence[int],
        out_channels: int,
        extra_blocks: nn.Module | None = None,
    ) -> None:
        super().__init__()
        # Each conv sits in a one-element Sequential: torchvision's key layout (``.0.weight``).
        self.inner_blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, out_channels, 1)) for c in in_channels_list
        )
        self.layer_blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(out_channels, out_channels, 3, padding=1))
            for _ in in_channels_list
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)  # Detectron's / torchvision's init
                nn.init.zeros_(m.bias)
        self.extra_blocks = extra_blocks

    def forward(self, x: Mapping[str, Tensor]) -> OrderedDict[str, Tensor]:
        names = list(x.keys())
        feats = list(x.values())
        last = self.inner_blocks[-1](feats[-1])
        results = [self.layer_blocks[-1](last)]
        for idx in range(len(feats) - 2, -1, -1):
            lateral = self.inner_blocks[idx](feats[idx])
            top_down = F.interpolate(last, size=lateral.shape[-2:], mode="nearest")  # x2
            last = lateral + top_down
            results.insert(0, self.layer_blocks[idx](last))
        if self.extra_blocks is not None:
            results, names = self.extra_blocks(results, names)
        return OrderedDict(zip(names, results, strict=True))


class Backbone(nn.Module):
    """A trunk (``body``) whose named children run in order, the outputs of ``return_layers``
    collected (``{child name: output key}``), optionally followed by an FPN.

    ``forward``: Tensor[N, 3, H, W] -> ordered dict of feature maps, each with
    ``out_channels`` channels.
    """

    def __init__(
        self,
        body: nn.Module,
        return_layers: Mapping[str, str],
        out_channels: int,
        fpn: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.body = body
        if fpn is not None:
            self.fpn = fpn
        self.return_layers = dict(return_layers)
        self.out_channels = out_channels
        missing = set(self.return_layers) - {n for n, _ in body.named_children()}
        if missing:
            raise ValueError(f"Backbone: return_layers {sorted(missing)} are not children of body")

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        out: OrderedDict[str, Tensor] = OrderedDict()
        for name, module in self.body.named_children():
            x = module(x)
            if name in self.return_layers:
                out[self.return_layers[name]] = x
                if len(out) == len(self.return_layers):
                    break
        fpn = getattr(self, "fpn", None)
        return fpn(out) if fpn is not None else out


def _freeze_resnet(body: nn.Module, trainable_layers: int) -> None:
    # torchvision's rule: train the last ``trainable_layers`` of layer4, layer3, layer2, layer1,
    # conv1 (+ bn1 with all five); every other parameter is frozen.
    train = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    if trainable_layers == 5:
        train.append("bn1")
    for name, p in body.named_parameters():
        if not any(name.startswith(layer) for layer in train):
            p.requires_grad_(False)


def _resnet50(norm: Callable[[int], nn.Module]) -> ResNet:
    resnet = ResNet(Bottleneck, (3, 4, 6, 3), norm_layer=norm)
    # The classifier is not part of a detector (torchvision's IntermediateLayerGetter drops it).
    del resnet.fc
    del resnet.avgpool
    return resnet


def resnet50_fpn_backbone(
    *,
    norm_layer: str = "frozen_bn",
    norm_eps: float = 1e-5,
    trainable_layers: int = 3,
    fpn_channels: int = 256,
    model: str = "fasterrcnn_resnet50_fpn",
) -> Backbone:
    """ResNet-50 + FPN: ordered dict "0".."3" (P2..P5, strides 4..32) and "pool" (P6)."""
    _check_trainable(trainable_layers, 5, model)
    body = _resnet50(_norm_factory(norm_layer, norm_eps, model))
    _freeze_resnet(body, trainable_layers)
    fpn = FeaturePyramidNetwork([256, 512, 1024, 2048], fpn_channels, LastLevelMaxPool())
    layers = {f"layer{i + 1}": str(i) for i in range(4)}
    return Backbone(body, layers, fpn_channels, fpn)


def resnet50_c4_backbone(
    *,
    norm_layer: str = "frozen_bn",
    norm_eps: float = 1e-5,
    trainable_layers: int = 3,
    model: str = "fasterrcnn_resnet50_c4",
) -> tuple[Backbone, nn.Sequential]:
    """ResNet-50 up to layer3 (stride 16, 1024 channels) as the backbone, and layer4 for the
    RoI head. ``trainable_layers`` counts layer4 (in the head) too, as for the FPN model."""
    _check_trainable(trainable_layers, 5, model)
    body = _resnet50(_norm_factory(norm_layer, norm_eps, model))
    _freeze_resnet(body, trainable_layers)
    layer4 = body.layer4
    del body.layer4
    return Backbone(body, {"layer3": "0"}, 1024), layer4


# VGG-16's conv stages as (first, last) index in ``features``: conv1 = 0..3, ..., conv5 = 24..29.
_VGG16_STAGES = ((0, 3), (5, 8), (10, 15), (17, 22), (24, 29))


def vgg16_conv5_backbone(*, trainable_layers: int = 3, model: str = "fasterrcnn_vgg16") -> Backbone:
    """VGG-16 conv1_1..conv5_3 (+ ReLU), pool5 dropped: stride 16, 512 channels."""
    _check_trainable(trainable_layers, 5, model)
    features = _make_features(VGG_CONFIGS[16], 3, batch_norm=False)
    body = nn.Sequential(*list(features)[:30])  # indices kept: ImageNet "features.N" load
    for m in body.modules():
        if isinstance(m, nn.Conv2d):
            # VGG's (torchvision's) initialisation; the paper starts from ImageNet weights.
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    frozen_stages = _VGG16_STAGES[: 5 - trainable_layers]
    for first, last in frozen_stages:
        for layer in body[first : last + 1]:
            for p in layer.parameters():
                p.requires_grad_(False)
    return Backbone(body, {"29": "0"}, 512)


def mobilenet_v2_fpn_backbone(
    *,
    width_mult: float = 1.0,
    fpn_channels: int = 64,
    frozen_bn: bool = False,
    model: str = "fasterrcnn_mobilenet_v2",
) -> Backbone:
    """MobileNet v2 ``features`` with an FPN on the stride-8/16/32 outputs: ordered dict
    "0".."2" (strides 8, 16, 32) and "pool" (stride 64)."""
    net = MobileNetV2(width_mult=width_mult)
    body = net.features  # children "0".."18"; ImageNet "features.N" keys load under body.N
    if frozen_bn:
        freeze_batchnorm(body)
    # Output widths of blocks 6 (32a), 13 (96a) and 18 (the 1280 conv), read off the layers.
    widths = []
    for idx in (6, 13, 18):
        convs = [m for m in body[idx].modules() if isinstance(m, nn.Conv2d)]
        widths.append(convs[-1].out_channels)
    fpn = FeaturePyramidNetwork(widths, fpn_channels, LastLevelMaxPool())
    return Backbone(body, {"6": "0", "13": "1", "18": "2"}, fpn_channels, fpn)
