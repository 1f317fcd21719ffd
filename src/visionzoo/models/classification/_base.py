"""The interface every classifier shares (DESIGN.md §3)."""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor, nn

from ...errors import ModelArgumentError


class Classifier(nn.Module, ABC):
    """Base class: ``forward = forward_head(forward_features(x))``.

    Subclasses implement ``forward_features(x)`` (the last feature map or token sequence),
    ``forward_head(features, pre_logits=False)`` (pooling, dropout, classifier) and
    ``reset_classifier(num_classes)``, and set ``num_classes`` and ``num_features`` (channels
    entering the classifier). Models with auxiliary heads override ``forward``.
    """

    num_classes: int
    num_features: int

    @abstractmethod
    def forward_features(self, x: Tensor) -> Tensor:
        """Tensor[N, 3, H, W] -> the last feature map (or token sequence)."""

    @abstractmethod
    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Features -> Tensor[N, K] logits (pooled features when ``pre_logits``)."""

    @abstractmethod
    def reset_classifier(self, num_classes: int) -> None:
        """Replace the final classifier with a freshly initialised one of ``num_classes``."""

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def check_positive_int(name: str, value: object, *, model: str) -> None:
    """Raise ModelArgumentError unless ``value`` is an int > 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ModelArgumentError(f"{model}: {name} must be a positive integer, got {value!r}")


def check_choice(name: str, value: object, choices: tuple, *, model: str) -> None:
    """Raise ModelArgumentError unless ``value`` is one of ``choices``."""
    if value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise ModelArgumentError(f"{model}: {name} must be one of {valid}, got {value!r}")
