"""VGG — Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
Recognition", arXiv:1409.1556.

The idea: depth from stacks of 3x3 convolutions (stride 1, padding 1). Two stacked 3x3 convs see
a 5x5 window and three see 7x7, with fewer parameters and more non-linearities than one large
kernel (§2.3). Five stages separated by 2x2/2 max pooling, then FC-4096, FC-4096, FC-K with
dropout 0.5 on the first two. Configurations A, B, D, E of Table 1 are VGG-11/13/16/19.

Switches: ``batch_norm`` (a BN after every conv, as torchvision's ``*_bn`` models) and
``dropout``. Layer indices follow torchvision's VGG so its checkpoints load unchanged.

Departures from the paper (each also marked where it happens):

* ``batch_norm=True`` is not in the paper (BN came later, arXiv:1502.03167).
* An adaptive average pool to 7x7 before the classifier (torchvision) accepts inputs >= 32x32;
  the paper instead converts the FC layers to convolutions for dense evaluation at test time.
  At 224x224 the pool is the identity.
* Initialisation follows torchvision (Kaiming-normal convs, N(0, 0.01) linear layers), not the
  paper's training of deeper nets from a shallower one or Glorot initialisation.
* The A-LRN and C (1x1 conv) configurations of Table 1 are not built.

Shapes: N batch, C channels, H x W spatial size, K classes.
"""

from __future__ import annotations

from itertools import islice

import torch
from torch import Tensor, nn

from ...errors import ModelArgumentError
from ...registry import register_model
from .._checks import check_bool, check_dropout
from ._base import Classifier, check_positive_int

__all__ = [
    "VGG",
    "VGG_CONFIGS",
    "vgg11",
    "vgg11_bn",
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
]

# Table 1: conv widths per stage; "M" is a 2x2/2 max pool. Depth = convs + 3 FC layers.
VGG_CONFIGS: dict[int, tuple[int | str, ...]] = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),  # A
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),  # B
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    19: (64, 64, "M", 128, 128, "M", *(256,) * 4, "M", *(512,) * 4, "M", *(512,) * 4, "M"),
}


def _linear(in_features: int, out_features: int) -> nn.Linear:
    # Skips PyTorch's default initialisation, which _init_weights overwrites anyway: filling
    # FC6's 103M weights twice made construction twice as slow.
    return nn.utils.skip_init(
        nn.Linear, in_features, out_features, device=torch.get_default_device()
    )


def _make_features(config: tuple[int | str, ...], in_chans: int, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = in_chans
    for v in config:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))  # (N, C, H, W) -> (N, C, H/2, W/2)
            continue
        layers.append(nn.Conv2d(channels, int(v), kernel_size=3, padding=1))
        if batch_norm:
            # Departure: BN is not in the paper. Kept with a conv bias, as torchvision does, so
            # its *_bn checkpoints load (the bias is redundant before BN).
            layers.append(nn.BatchNorm2d(int(v)))
        layers.append(nn.ReLU(inplace=True))
        channels = int(v)
    return nn.Sequential(*layers)


class VGG(Classifier):
    """VGG-11/13/16/19 (configurations A/B/D/E), optionally with batch normalisation.

    Args:
        depth: 11, 13, 16 or 19 weight layers.
        num_classes: K, the size of the last layer.
        in_chans: channels of the input image.
        batch_norm: BatchNorm after every convolution (not in the paper; torchvision ``*_bn``).
        dropout: dropout probability after FC6 and FC7, in [0, 1).

    ``forward``: Tensor[N, in_chans, H, W] (H, W >= 32) -> Tensor[N, K].
    """

    def __init__(
        self,
        *,
        depth: int = 16,
        num_classes: int = 1000,
        in_chans: int = 3,
        batch_norm: bool = False,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if isinstance(depth, bool) or depth not in VGG_CONFIGS:
            valid = ", ".join(str(d) for d in VGG_CONFIGS)
            raise ModelArgumentError(f"{name}: depth must be one of {valid}, got {depth!r}")
        check_positive_int("num_classes", num_classes, model=name)
        check_positive_int("in_chans", in_chans, model=name)
        check_bool("batch_norm", batch_norm, model=name)
        check_dropout(dropout, model=name)

        self.depth = depth
        self.batch_norm = batch_norm
        self.num_classes = num_classes
        self.num_features = 4096

        self.features = _make_features(
            VGG_CONFIGS[depth], in_chans, batch_norm
        )  # (N, 512, H/32, W/32)
        # Departure: adaptive pooling (torchvision) instead of the paper's dense evaluation.
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            _linear(512 * 7 * 7, 4096),  # FC6
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            _linear(4096, 4096),  # FC7
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            _linear(4096, num_classes),  # FC8
        )
        self._init_weights()

    def _init_weights(self) -> None:
        # Departure: torchvision's initialisation (see the module docstring).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """Tensor[N, C, H, W] -> Tensor[N, 512, H/32, W/32]."""
        return self.features(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Tensor[N, 512, h, w] -> Tensor[N, K] (Tensor[N, 4096] FC7 output if pre_logits)."""
        x = torch.flatten(self.avgpool(x), 1)  # (N, 512 * 7 * 7)
        for layer in islice(self.classifier, len(self.classifier) - 1):
            x = layer(x)
        return x if pre_logits else self.classifier[-1](x)

    def reset_classifier(self, num_classes: int) -> None:
        check_positive_int("num_classes", num_classes, model=type(self).__name__)
        self.num_classes = num_classes
        head = nn.Linear(self.num_features, num_classes)
        nn.init.normal_(head.weight, 0.0, 0.01)
        nn.init.zeros_(head.bias)
        self.classifier[-1] = head


# --- builders ------------------------------------------------------------------------------------

_PAPER = "arXiv:1409.1556"


def _vgg(depth: int, batch_norm: bool, kwargs: dict) -> VGG:
    # batch_norm stays overridable so an ablation can toggle it on any depth.
    kwargs.setdefault("batch_norm", batch_norm)
    return VGG(depth=depth, **kwargs)


@register_model(task="classification", family="vgg", paper=_PAPER, model_class=VGG)
def vgg11(**kwargs) -> VGG:
    """VGG-11 (configuration A), 132,863,336 parameters."""
    return _vgg(11, False, kwargs)


@register_model(task="classification", family="vgg", paper=_PAPER, model_class=VGG)
def vgg11_bn(**kwargs) -> VGG:
    """VGG-11 with batch normalisation, 132,868,840 parameters."""
    return _vgg(11, True, kwargs)


@register_model(task="classification", family="vgg", paper=_PAPER, model_class=VGG)
def vgg13(**kwargs) -> VGG:
    """VGG-13 (configuration B), 133,047,848 parameters."""
    return _vgg(13, False, kwargs)


@register_model(task="classification", family="vgg", paper=_PAPER, model_class=VGG)
def vgg13_bn(**kwargs) -> VGG:
    """VGG-13 with batch normalisation, 133,053,736 parameters."""
    return _vgg(13, True, kwargs)


@register_model(task="classification", family="vgg", paper=_PAPER, model_class=VGG)
def vgg16(**kwargs) -> VGG:
    """VGG-16 (configuration D), 138,357,544 parameters."""
    return _vgg(16, False, kwargs)


@register_model(task="classification", family="vgg", paper=_PAPER, model_class=VGG)
def vgg16_bn(**kwargs) -> VGG:
    """VGG-16 with batch normalisation, 138,365,992 parameters."""
    return _vgg(16, True, kwargs)


@register_model(task="classification", family="vgg", paper=_PAPER, model_class=VGG)
def vgg19(**kwargs) -> VGG:
    """VGG-19 (configuration E), 143,667,240 parameters."""
    return _vgg(19, False, kwargs)


@register_model(task="classification", family="vgg", paper=_PAPER, model_class=VGG)
def vgg19_bn(**kwargs) -> VGG:
    """VGG-19 with batch normalisation, 143,678,248 parameters."""
    return _vgg(19, True, kwargs)
