"""AlexNet — Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep Convolutional
Neural Networks", NeurIPS 2012 (no arXiv id).

We build torchvision's single-tower variant (from Krizhevsky's "One weird trick", arXiv:1404.5997)
so that torchvision checkpoints load without renaming. The paper's ideas are switches:

* ``act_layer``: ReLU (the paper's point, §3.1) or the saturating tanh it compares against.
* ``dropout``: dropout probability in the first two fully-connected layers (§4.2).
* ``overlapping_pool``: 3x3 stride-2 max pooling (§3.4) or the 2x2 stride-2 pooling it beats.
* ``lrn``: local response normalisation after conv1 and conv2 (§3.3), off as in torchvision.

Departures from the paper (each also marked where it happens):

* One tower of 64-192-384-256-256 channels instead of two GPU halves of 48+48, 128+128,
  192+192, 192+192, 128+128 with cross-GPU connections only at conv3 and the FC layers.
* conv1 has padding 2 so a 224x224 input gives 55x55 maps (the paper's 224 only works with 227).
* An adaptive average pool to 6x6 before the classifier lets any input >= 63x63 through; at
  224x224 it is the identity.
* Dropout acts on the inputs of FC6 and FC7 (torchvision) rather than on their outputs.
* PyTorch's default initialisation, not the paper's N(0, 0.01) weights with some biases at 1.

Shapes: N batch, C channels, H x W spatial size, K classes.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import islice

import torch
from torch import Tensor, nn

from ...registry import register_model
from .._checks import act_factory, check_bool, check_dropout
from ._base import Classifier, check_positive_int

__all__ = ["AlexNet", "alexnet", "LRN_SIZE", "LRN_K", "LRN_ALPHA", "LRN_BETA"]

# §3.3: "k = 2, n = 5, alpha = 1e-4, and beta = 0.75".
LRN_SIZE = 5
LRN_K = 2.0
LRN_ALPHA = 1e-4
LRN_BETA = 0.75


# --- helpers -------------------------------------------------------------------------------------


def paper_lrn() -> nn.LocalResponseNorm:
    """Local response normalisation with the paper's constants (§3.3).

    The paper divides by ``(k + alpha * sum_{j} a_j^2) ** beta`` over ``n`` adjacent channels;
    PyTorch's ``LocalResponseNorm`` uses ``alpha / n`` in that place, so we pass ``n * alpha``
    to obtain the paper's normalisation exactly (Caffe-derived ports pass ``alpha`` unchanged and
    normalise ``n`` times more weakly).
    """
    return nn.LocalResponseNorm(LRN_SIZE, alpha=LRN_SIZE * LRN_ALPHA, beta=LRN_BETA, k=LRN_K)


# --- model ---------------------------------------------------------------------------------------


class AlexNet(Classifier):
    """AlexNet (torchvision's single-tower layout) with the paper's ideas as switches.

    Args:
        num_classes: K, the size of the last layer.
        in_chans: channels of the input image.
        dropout: dropout probability before FC6 and FC7, in [0, 1).
        overlapping_pool: 3x3/2 max pooling (paper) if True, else non-overlapping 2x2/2. Both give
            the same map sizes at 224x224 (55 -> 27 -> 13 -> 6).
        lrn: local response normalisation (k=2, n=5, alpha=1e-4, beta=0.75) after the activation
            of conv1 and conv2, before their pooling, as in the paper.
        act_layer: activation factory (``nn.ReLU``, ``nn.Tanh``...) or one of "relu", "relu6",
            "tanh".

    ``forward``: Tensor[N, in_chans, H, W] (H, W >= 63 with overlapping pooling) -> Tensor[N, K].
    """

    def __init__(
        self,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        dropout: float = 0.5,
        overlapping_pool: bool = True,
        lrn: bool = False,
        act_layer: Callable[..., nn.Module] | str = nn.ReLU,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        check_positive_int("num_classes", num_classes, model=name)
        check_positive_int("in_chans", in_chans, model=name)
        check_dropout(dropout, model=name)
        check_bool("overlapping_pool", overlapping_pool, model=name)
        check_bool("lrn", lrn, model=name)
        act = act_factory(act_layer, model=name)

        self.num_classes = num_classes
        self.num_features = 4096
        self.overlapping_pool = overlapping_pool
        self.lrn = lrn

        def pool() -> nn.MaxPool2d:
            # §3.4: overlapping pooling (z=3, s=2) cut top-1 error by 0.4% against z=s=2.
            return nn.MaxPool2d(3, 2) if overlapping_pool else nn.MaxPool2d(2, 2)

        def act_norm() -> nn.Module:
            # LRN follows the ReLU of conv1 and conv2 (§3.3). It is nested with the activation
            # so that the convolutions keep torchvision's indices (features.0, .3, .6, .8, .10)
            # and the same weights load with lrn on or off.
            return nn.Sequential(act(), paper_lrn()) if lrn else act()

        # Indices match torchvision's AlexNet.features.
        self.features = nn.Sequential(
            # Departure: padding 2 (torchvision) so 224 -> 55; the paper needs 227 for that.
            nn.Conv2d(in_chans, 64, kernel_size=11, stride=4, padding=2),  # (N, 64, 55, 55)
            act_norm(),
            pool(),  # (N, 64, 27, 27)
            nn.Conv2d(64, 192, kernel_size=5, padding=2),  # (N, 192, 27, 27)
            act_norm(),
            pool(),  # (N, 192, 13, 13)
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            act(),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            act(),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),  # (N, 256, 13, 13)
            act(),
            pool(),  # (N, 256, 6, 6)
        )
        # Departure: the paper has a fixed 224 input; the adaptive pool accepts any size.
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        # Departure: dropout on the inputs of FC6 and FC7 (torchvision); the paper drops the
        # outputs of FC6 and FC7, i.e. the inputs of FC7 and FC8.
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(256 * 6 * 6, 4096),  # FC6
            act(),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),  # FC7
            act(),
            nn.Linear(4096, num_classes),  # FC8
        )

    def forward_features(self, x: Tensor) -> Tensor:
        """Tensor[N, C, H, W] -> Tensor[N, 256, h, w] (6x6 at 224x224)."""
        return self.features(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Tensor[N, 256, h, w] -> Tensor[N, K] (Tensor[N, 4096] FC7 output if pre_logits)."""
        x = torch.flatten(self.avgpool(x), 1)  # (N, 256 * 6 * 6)
        for layer in islice(self.classifier, len(self.classifier) - 1):
            x = layer(x)
        return x if pre_logits else self.classifier[-1](x)

    def reset_classifier(self, num_classes: int) -> None:
        check_positive_int("num_classes", num_classes, model=type(self).__name__)
        self.num_classes = num_classes
        self.classifier[-1] = nn.Linear(self.num_features, num_classes)


# --- builders ------------------------------------------------------------------------------------


@register_model(
    task="classification",
    family="alexnet",
    paper="NeurIPS 2012 (Krizhevsky et al.); torchvision variant arXiv:1404.5997",
    model_class=AlexNet,
)
def alexnet(**kwargs) -> AlexNet:
    """AlexNet, 61,100,840 parameters at 1000 classes."""
    return AlexNet(**kwargs)
