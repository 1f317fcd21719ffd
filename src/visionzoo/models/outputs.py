"""Output containers shared by model families."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor


class AuxOutput(NamedTuple):
    """Training-mode output of a model with auxiliary heads.

    ``logits`` is the main head's output; ``aux`` holds the auxiliary heads' outputs (GoogLeNet's
    two side classifiers, DeiT's distillation head, U-Net deep supervision...). The task, not
    the model, weights their losses.
    """

    logits: Tensor
    aux: tuple[Tensor, ...]
