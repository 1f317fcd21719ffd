"""What a task's data builder hands the trainer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch.utils.data import Dataset


@dataclass
class DataBundle:
    """Train and validation datasets plus what the trainer and task need to use them.

    Datasets yield samples whose images are ``uint8`` tensors ``[3, H, W]`` (already augmented
    and resized): the float conversion and normalisation (``mean``/``std`` in 0-1 units) happen on
    the device, in the task, as the last step. ``eval_transform`` maps a PIL image to the same
    ``uint8`` tensor the validation set yields (``predict`` uses it). ``collate_fn`` is None for
    the default collation. ``skipped`` counts unreadable files dropped with ``data.skip_bad``.
    """

    train: Dataset
    val: Dataset
    num_classes: int
    class_names: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    eval_transform: Callable[[Any], Any]
    collate_fn: Callable[[list[Any]], Any] | None = None
    skipped: dict[str, int] = field(default_factory=dict)
