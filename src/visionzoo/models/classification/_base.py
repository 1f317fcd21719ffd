"""The interface every classifier shares (DESIGN.md §3)."""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor, nn

from .._checks import check_choice, check_positive_int

__all__ = ["Classifier", "check_choice", "check_positive_int"]


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
