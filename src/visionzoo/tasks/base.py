"""The seam between the task-agnostic trainer and what differs per task (DESIGN.md §3)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ..data.bundle import DataBundle


@runtime_checkable
class Task(Protocol):
    """Per-task behaviour the trainer calls. Built as ``TaskClass(cfg: RunConfig)``.

    - ``build_data()``: the DataBundle (datasets already hold their transforms).
    - ``model_kwargs(bundle)``: builder arguments the data decides (e.g. ``num_classes``).
    - ``training_step(model, batch)``: the batch is already on the model's device; returns
      ``{"loss": scalar, **named_parts}`` (parts detached or not; the trainer logs their values).
    - ``evaluate(model, loader)``: ``{"val/<metric>": float}``; runs under the trainer's
      autocast and ``torch.no_grad``; moves batches itself with :func:`to_device`.
    - ``predict(model, images)``: PIL images -> JSON-serialisable results, one per image.
    - ``render(image, prediction)``: what a person looks at (PIL image).
    - ``monitor``: the metric that picks ``best.pt`` and ``monitor_mode`` ("max" or "min").
    """

    name: str
    monitor: str
    monitor_mode: str

    def build_data(self) -> DataBundle: ...

    def model_kwargs(self, bundle: DataBundle) -> dict[str, Any]: ...

    def training_step(self, model: nn.Module, batch: Any) -> dict[str, Tensor]: ...

    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]: ...

    def predict(self, model: nn.Module, images: Sequence[Image.Image]) -> list[dict[str, Any]]: ...

    def render(self, image: Image.Image, prediction: dict[str, Any]) -> Image.Image: ...


def to_device(batch: Any, device: torch.device, channels_last: bool = False) -> Any:
    """Move tensors nested in tuples, lists and dicts to ``device`` (non-blocking).

    4-D tensors are made channels_last when asked, so convolutions see NHWC inputs.
    """
    if isinstance(batch, Tensor):
        out = batch.to(device, non_blocking=True)
        if channels_last and out.dim() == 4:
            out = out.contiguous(memory_format=torch.channels_last)
        return out
    if isinstance(batch, Mapping):
        return {k: to_device(v, device, channels_last) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # NamedTuple
        return type(batch)(*(to_device(v, device, channels_last) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device, channels_last) for v in batch)
    return batch


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for parameter-less models)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP and torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model
