"""GoogLeNet (Inception v1): Szegedy et al., "Going Deeper with Convolutions", arXiv:1409.4842.

Twenty-two weighted layers built from *Inception modules*: each module runs 1x1, 3x3 and 5x5
convolutions and a 3x3 max-pool side by side on the same input and concatenates their outputs,
so one layer sees several receptive fields at once. Two ideas keep that affordable and trainable:

* **1x1 reductions** (``reduce=True``, the paper's Fig. 2b): a 1x1 conv + ReLU shrinks the
  channels before the 3x3 and 5x5 convs, and a 1x1 "pool projection" follows the max-pool. A 5x5
  conv 512->64 alone has 5*5*512*64 = 819,200 weights; a 1x1 reduction to 24 channels first costs
  512*24 + 5*5*24*64 = 12,288 + 38,400 = 50,688. ``reduce=False`` builds the naive module
  (Fig. 2a): the convs act directly on the input and the max-pool passes all input channels
  through, so every module *adds* its input width to its output and the network widens stage by
  stage (see ``docs/classification_googlenet.md`` for the widths and the cost).
* **Two auxiliary classifiers** (``aux_logits=True``) on the outputs of 4a and 4d (Sec. 5):
  5x5/3 average pool, 1x1 conv 128 + ReLU, fc 1024 + ReLU, dropout 0.7, fc K. In training mode
  the model returns ``AuxOutput(logits, aux=(aux1, aux2))``; the task weights their losses (0.3
  in the paper). In eval mode only the logits are computed and returned.

Layer widths follow Table 1. Attribute names follow torchvision's ``GoogLeNet`` so its state
dicts load with no renames (``interop.torchvision.from_torchvision("googlenet", ...)``).

Departures from the paper, each marked where it happens:

* ``batch_norm=True`` (default) puts BatchNorm (eps=0.001) after every conv, with bias-free
  convs, as torchvision's ``BasicConv2d``; the paper predates BatchNorm. ``batch_norm=False``
  is the paper's conv + bias + ReLU.
* The paper's Fig. 3 has LocalResponseNorm after the first max-pool and after conv3; it is off
  by default (BN does its job, torchvision has none) and ``lrn=True`` puts it back.
* ``torchvision_compat=True`` reproduces what torchvision (and the weights it ships) computes:
  a 3x3 conv in the "5x5" branch (pytorch/vision#906), a 2x2 instead of 3x3 max-pool between
  stages 4 and 5, and an adaptive 4x4 average pool instead of 5x5/3 in the auxiliary heads.
* ``transform_input=True`` re-normalises ImageNet mean/std-normalised input to the [-1, 1]
  scaling that the original (TensorFlow-ported) weights expect, as torchvision does.
* The paper's fixed 7x7/1 average pool before the classifier is an adaptive average pool, and
  the auxiliary heads end in an adaptive 4x4 pool, so any input of at least
  :attr:`GoogLeNet.min_input_size` pixels works (224 gives the paper's shapes exactly).

Shape glossary: N batch, C channels, H x W spatial size, K classes.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ModelArgumentError
from ...registry import register_model
from ..outputs import AuxOutput
from ._base import Classifier, check_choice, check_positive_int

__all__ = ["BasicConv2d", "Inception", "InceptionAux", "GoogLeNet", "conv_branch", "googlenet"]

# Table 1, one row per Inception module: name, input-independent widths
# (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj).
_TABLE1: tuple[tuple[str, int, int, int, int, int, int], ...] = (
    ("inception3a", 64, 96, 128, 16, 32, 32),
    ("inception3b", 128, 128, 192, 32, 96, 64),
    ("inception4a", 192, 96, 208, 16, 48, 64),
    ("inception4b", 160, 112, 224, 24, 64, 64),
    ("inception4c", 128, 128, 256, 24, 64, 64),
    ("inception4d", 112, 144, 288, 32, 64, 64),
    ("inception4e", 256, 160, 320, 32, 128, 128),
    ("inception5a", 256, 160, 320, 32, 128, 128),
    ("inception5b", 384, 192, 384, 48, 128, 128),
)

# ImageNet mean/std, used by ``transform_input`` to map normalised input to [-1, 1].
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class BasicConv2d(nn.Module):
    """Conv -> [BN] -> ReLU. Tensor[N, C_in, H, W] -> Tensor[N, C_out, H', W'].

    With ``batch_norm`` the conv has no bias (BN's shift replaces it) and BN uses eps=0.001, as
    torchvision's BasicConv2d (a departure: the paper has no BN). Without it, conv + bias + ReLU
    as in the paper.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        *,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding, bias=not batch_norm
        )
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001) if batch_norm else None
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.act(x)


ConvBlock = Callable[..., nn.Module]


def conv_branch(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    reduce_channels: int | None = None,
    conv_block: ConvBlock = BasicConv2d,
) -> nn.Sequential:
    """One convolutional branch of an Inception module.

    ``[1x1 conv in->reduce_channels + ReLU] -> kxk conv ->out_channels + ReLU`` with "same"
    padding, Tensor[N, in, H, W] -> Tensor[N, out, H, W]. ``reduce_channels=None`` omits the 1x1
    reduction (the naive module, Fig. 2a): the kxk conv then sees all input channels, which is
    what makes the naive module expensive.
    """
    layers: list[nn.Module] = []
    if reduce_channels is not None:
        layers.append(conv_block(in_channels, reduce_channels, kernel_size=1))
        in_channels = reduce_channels
    layers.append(
        conv_block(in_channels, out_channels, kernel_size=kernel_size, padding=kernel_size // 2)
    )
    return nn.Sequential(*layers)


class Inception(nn.Module):
    """Inception module: four parallel branches concatenated along channels.

    Tensor[N, in_channels, H, W] -> Tensor[N, out_channels, H, W]. With ``reduce`` (Fig. 2b):
    ``branch1`` 1x1; ``branch2`` 1x1 reduce -> 3x3; ``branch3`` 1x1 reduce -> 5x5 (``kernel_5x5``);
    ``branch4`` 3x3/1 max-pool -> 1x1 pool projection; out = ch1x1 + ch3x3 + ch5x5 + pool_proj.
    Without it (Fig. 2a) the reductions and the projection are absent, ``branch4`` is the bare
    max-pool, and out = ch1x1 + ch3x3 + ch5x5 + in_channels.
    """

    def __init__(
        self,
        in_channels: int,
        ch1x1: int,
        ch3x3red: int,
        ch3x3: int,
        ch5x5red: int,
        ch5x5: int,
        pool_proj: int,
        *,
        reduce: bool = True,
        kernel_5x5: int = 5,
        conv_block: ConvBlock = BasicConv2d,
    ) -> None:
        super().__init__()
        self.branch1 = conv_block(in_channels, ch1x1, kernel_size=1)
        self.branch2 = conv_branch(in_channels, ch3x3, 3, ch3x3red if reduce else None, conv_block)
        self.branch3 = conv_branch(
            in_channels, ch5x5, kernel_5x5, ch5x5red if reduce else None, conv_block
        )
        # 3x3/1 max-pool with padding 1 keeps H x W (ceil_mode as torchvision; no effect at s=1).
        pool = nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True)
        if reduce:
            self.branch4 = nn.Sequential(pool, conv_block(in_channels, pool_proj, kernel_size=1))
            self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj
        else:
            # Fig. 2a: the pooled input goes straight into the concatenation, all its channels.
            self.branch4 = nn.Sequential(pool)
            self.out_channels = ch1x1 + ch3x3 + ch5x5 + in_channels

    def forward(self, x: Tensor) -> Tensor:
        branches = (self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x))
        return torch.cat(branches, dim=1)  # (N, out_channels, H, W)


class InceptionAux(nn.Module):
    """Auxiliary classifier (Sec. 5). Tensor[N, in_channels, H, W] -> Tensor[N, K].

    5x5/3 average pool (14x14 -> 4x4 at 224 input), 1x1 conv 128 + ReLU, fc 1024 + ReLU,
    dropout, fc K. With ``paper_pool=False`` (torchvision) the pool is an adaptive 4x4 average.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        dropout: float = 0.7,
        paper_pool: bool = True,
        conv_block: ConvBlock = BasicConv2d,
    ) -> None:
        super().__init__()
        self.paper_pool = paper_pool
        self.conv = conv_block(in_channels, 128, kernel_size=1)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.dropout = nn.Dropout(p=dropout)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        # (N, C, 14, 14) at 224 input. Maps under 5x5 (inputs under ~80 px) skip the 5x5 pool,
        # which could not run on them; the adaptive pool below then does all the pooling.
        if self.paper_pool and min(x.shape[-2:]) >= 5:
            x = F.avg_pool2d(x, kernel_size=5, stride=3)
        # Departure: the adaptive pool lets fc1 (which needs 4x4) accept any input size. After
        # the paper's pool at 224 input it is the identity; with paper_pool=False it is the
        # whole pooling step, as torchvision's head.
        x = F.adaptive_avg_pool2d(x, (4, 4))  # (N, C, 4, 4)
        x = torch.flatten(self.conv(x), 1)  # (N, 128 * 16)
        x = F.relu(self.fc1(x), inplace=True)  # (N, 1024)
        return self.fc2(self.dropout(x))  # (N, K)


def _check_prob(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise ModelArgumentError(
            f"googlenet: {name} must be a probability in [0, 1), got {value!r}"
        )


def _fresh_linear(old: nn.Linear, out_features: int) -> nn.Linear:
    """A newly initialised Linear like ``old`` (same inputs, device, dtype), ``out_features`` wide."""
    w = old.weight
    layer = nn.Linear(old.in_features, out_features, device=w.device, dtype=w.dtype)
    nn.init.normal_(layer.weight, mean=0.0, std=0.01)  # as _init_weights
    nn.init.zeros_(layer.bias)
    return layer


class GoogLeNet(Classifier):
    """GoogLeNet (Inception v1), Table 1 of arXiv:1409.4842, every idea a switch.

    Args:
        num_classes: K, width of the classifier (and of the auxiliary heads).
        in_chans: input channels.
        aux_logits: build the two auxiliary classifiers (after 4a and 4d).
        reduce: 1x1 reductions and pool projections (Fig. 2b); False = naive module (Fig. 2a).
        batch_norm: BN after every conv (torchvision); False = the paper's conv + bias + ReLU.
        lrn: LocalResponseNorm after the first max-pool and after conv3 (paper Fig. 3).
        torchvision_compat: compute what torchvision's GoogLeNet computes (3x3 "5x5" branch, 2x2
            max-pool 4, adaptive aux pool) so its weights give the same outputs.
        transform_input: map ImageNet-normalised input to [-1, 1] first (torchvision's flag).
        dropout: before the final fc (0.4 in the paper; torchvision's default is 0.2).
        dropout_aux: in the auxiliary heads (0.7 in the paper).

    ``forward(Tensor[N, in_chans, H, W])`` returns Tensor[N, K] logits, or in training mode with
    ``aux_logits`` an ``AuxOutput(logits, aux=(aux1, aux2))`` of Tensor[N, K] each.
    """

    # Smallest H = W the forward pass accepts (set in __init__; depends on torchvision_compat).
    min_input_size: int

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        *,
        aux_logits: bool = True,
        reduce: bool = True,
        batch_norm: bool = True,
        lrn: bool = False,
        torchvision_compat: bool = False,
        transform_input: bool = False,
        dropout: float = 0.4,
        dropout_aux: float = 0.7,
    ) -> None:
        super().__init__()
        check_positive_int("num_classes", num_classes, model="googlenet")
        check_positive_int("in_chans", in_chans, model="googlenet")
        for name, flag in (
            ("aux_logits", aux_logits),
            ("reduce", reduce),
            ("batch_norm", batch_norm),
            ("lrn", lrn),
            ("torchvision_compat", torchvision_compat),
            ("transform_input", transform_input),
        ):
            check_choice(name, flag, (True, False), model="googlenet")
        _check_prob("dropout", dropout)
        _check_prob("dropout_aux", dropout_aux)
        if transform_input and in_chans != 3:
            raise ModelArgumentError(
                f"googlenet: transform_input re-normalises RGB input and needs in_chans=3, "
                f"got in_chans={in_chans}"
            )

        self.num_classes = num_classes
        self.aux_logits = bool(aux_logits)
        self.transform_input = bool(transform_input)
        self.torchvision_compat = bool(torchvision_compat)
        conv_block = partial(BasicConv2d, batch_norm=batch_norm)
        # Departure (torchvision_compat): torchvision's "5x5" branch is a 3x3 conv
        # (pytorch/vision#906); its weights were trained that way.
        kernel_5x5 = 3 if torchvision_compat else 5
        inception = partial(Inception, reduce=reduce, kernel_5x5=kernel_5x5, conv_block=conv_block)

        # transform_input: x_c * std_c / 0.5 + (mean_c - 0.5) / 0.5. Non-persistent, so state
        # dicts stay identical to torchvision's.
        std = torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1)
        mean = torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1)
        self.register_buffer("_input_scale", std / 0.5, persistent=False)
        self.register_buffer("_input_shift", (mean - 0.5) / 0.5, persistent=False)

        # Stem; Caffe pools round up (ceil_mode), which gives Table 1's 112 -> 56 -> 28 -> 14.
        self.conv1 = conv_block(in_chans, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        # Departure (optional): Fig. 3's LRN (size 5, alpha 1e-4, beta 0.75 as the Caffe model).
        self.lrn1 = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75) if lrn else nn.Identity()
        self.conv2 = conv_block(64, 64, kernel_size=1)
        self.conv3 = conv_block(64, 192, kernel_size=3, padding=1)
        self.lrn2 = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75) if lrn else nn.Identity()
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)

        width = 192
        modules: dict[str, Inception] = {}
        for name, *widths in _TABLE1:
            modules[name] = inception(width, *widths)
            width = modules[name].out_channels
        # Naive modules (reduce=False) widen stage by stage, so widths are read off the modules.
        self.inception3a = modules["inception3a"]
        self.inception3b = modules["inception3b"]
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = modules["inception4a"]
        self.inception4b = modules["inception4b"]
        self.inception4c = modules["inception4c"]
        self.inception4d = modules["inception4d"]
        self.inception4e = modules["inception4e"]
        # Departure (torchvision_compat): torchvision pools 2x2/2 here; Table 1 says 3x3/2.
        # Both give 14 -> 7 at 224 input.
        self.maxpool4 = nn.MaxPool2d(2 if torchvision_compat else 3, stride=2, ceil_mode=True)
        self.inception5a = modules["inception5a"]
        self.inception5b = modules["inception5b"]

        self.aux1: InceptionAux | None = None
        self.aux2: InceptionAux | None = None
        if aux_logits:
            aux = partial(
                InceptionAux,
                num_classes=num_classes,
                dropout=dropout_aux,
                # Departure (torchvision_compat): adaptive 4x4 pool instead of 5x5/3.
                paper_pool=not torchvision_compat,
                conv_block=conv_block,
            )
            self.aux1 = aux(self.inception4a.out_channels)
            self.aux2 = aux(self.inception4d.out_channels)

        self.num_features = width  # 1024 with reductions
        # Departure: adaptive instead of the paper's fixed 7x7/1 average pool (any input size).
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(width, num_classes)
        # Smallest H = W that survives the ceil-mode pools (measured): torchvision's 2x2 pool 4
        # accepts a 1x1 map, the paper's 3x3 one needs 2x2.
        self.min_input_size = 15 if torchvision_compat else 31

        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's scheme (the paper gives none): N(0, 0.01^2) weights. torchvision calls
        # trunc_normal_(std=0.01, a=-2, b=2); bounds at 200 sigma never bind, and normal_ is
        # several times faster to build.
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.normal_(m.weight, mean=0.0, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _stem(self, x: Tensor) -> Tensor:
        if self.transform_input:
            x = x * self._input_scale + self._input_shift
        # (N, 3, 224, 224)
        x = self.lrn1(self.maxpool1(self.conv1(x)))  # (N, 64, 56, 56)
        x = self.maxpool2(self.lrn2(self.conv3(self.conv2(x))))  # (N, 192, 28, 28)
        x = self.maxpool3(self.inception3b(self.inception3a(x)))  # (N, 480, 14, 14)
        return self.inception4a(x)  # (N, 512, 14, 14)

    def _stage4_to_5(self, x: Tensor) -> Tensor:
        # (N, 512, 14, 14) from 4a; returns 4d's output (N, 528, 14, 14)
        return self.inception4d(self.inception4c(self.inception4b(x)))

    def _top(self, x: Tensor) -> Tensor:
        # (N, 528, 14, 14) -> (N, 832, 7, 7) -> (N, 1024, 7, 7)
        x = self.maxpool4(self.inception4e(x))
        return self.inception5b(self.inception5a(x))

    def forward_features(self, x: Tensor) -> Tensor:
        """Tensor[N, in_chans, H, W] -> Tensor[N, num_features, H/32, W/32] (inception5b)."""
        return self._top(self._stage4_to_5(self._stem(x)))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Tensor[N, num_features, h, w] -> Tensor[N, K] (Tensor[N, num_features] if pre_logits)."""
        x = torch.flatten(self.avgpool(x), 1)  # (N, 1024)
        x = self.dropout(x)
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor | AuxOutput:
        if not (self.training and self.aux1 is not None and self.aux2 is not None):
            return self.forward_head(self.forward_features(x))
        x = self._stem(x)
        aux1 = self.aux1(x)  # (N, K) from 4a
        x = self._stage4_to_5(x)
        aux2 = self.aux2(x)  # (N, K) from 4d
        logits = self.forward_head(self._top(x))
        return AuxOutput(logits, (aux1, aux2))

    def reset_classifier(self, num_classes: int) -> None:
        """New final fc with ``num_classes`` outputs; the aux heads' final fc (fc2) too.

        The auxiliary heads predict the same K classes as the main head, so their last layer is
        replaced as well; their earlier layers (conv, fc1) keep their weights.
        """
        check_positive_int("num_classes", num_classes, model="googlenet")
        self.num_classes = num_classes
        self.fc = _fresh_linear(self.fc, num_classes)
        for head in (self.aux1, self.aux2):
            if head is not None:
                head.fc2 = _fresh_linear(head.fc2, num_classes)


@register_model(
    task="classification", family="googlenet", paper="arXiv:1409.4842", model_class=GoogLeNet
)
def googlenet(**kwargs) -> GoogLeNet:
    """GoogLeNet (Inception v1), Table 1. Switches: see :class:`GoogLeNet`.

    ``googlenet(torchvision_compat=True)`` has torchvision's 13,004,888 parameters (6,624,904
    with ``aux_logits=False``); the paper's true 5x5 branches add 380,928.
    """
    return GoogLeNet(**kwargs)
