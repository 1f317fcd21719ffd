"""Exponential moving average (EMA) of a model's weights.

After every optimiser step, each floating-point parameter and buffer ``e`` of the EMA copy
moves towards the training model's ``w``::

    e <- d * e + (1 - d) * w          (computed as e.lerp_(w, 1 - d))

Floating buffers (BatchNorm running mean/var) are averaged like parameters; non-floating
buffers (``num_batches_tracked``) are copied. With ``warmup=True`` the decay used at the
``n``-th update (``n = 0, 1, ...``) is ``min(decay, (1 + n) / (10 + n))``, the warmup of
TensorFlow's ``ExponentialMovingAverage(num_updates=...)``: the first updates follow the
model closely (d = 0.1, 0.18, 0.25, ...) so the average is not dominated by the random
initialisation when the run is short relative to ``1 / (1 - decay)`` steps.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import CheckpointError, ConfigError
from ..tasks.base import unwrap

__all__ = ["ModelEma"]


class ModelEma:
    """An EMA copy of ``model`` (DDP / torch.compile wrappers are unwrapped first).

    ``module`` is the averaged model, in eval mode with ``requires_grad=False``: evaluate it
    directly. ``updates`` counts the calls to :meth:`update`.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"trainer.ema_decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.updates = 0
        self.module = copy.deepcopy(unwrap(model)).eval()
        self.module.requires_grad_(False)

    def current_decay(self) -> float:
        """The decay the next :meth:`update` will use."""
        if not self.warmup:
            return self.decay
        n = self.updates
        return min(self.decay, (1.0 + n) / (10.0 + n))

    def _tensors(self, model: nn.Module) -> tuple[list[Tensor], list[Tensor]]:
        """Matching (ema, model) tensors: parameters then buffers, by name."""
        src = unwrap(model)
        src_t = dict(src.named_parameters())
        src_t.update(src.named_buffers())
        ema_t = dict(self.module.named_parameters())
        ema_t.update(self.module.named_buffers())
        if src_t.keys() != ema_t.keys():
            missing = sorted(ema_t.keys() - src_t.keys())[:5]
            extra = sorted(src_t.keys() - ema_t.keys())[:5]
            raise ValueError(
                f"ModelEma.update: the model's tensors differ from the EMA copy's "
                f"(missing {missing}, unexpected {extra}); was the model changed after the EMA "
                "was created?"
            )
        names = list(ema_t)
        return [ema_t[n] for n in names], [src_t[n] for n in names]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the current weights of ``model`` into the average (call after optimizer.step)."""
        d = self.current_decay()
        ema_t, src_t = self._tensors(model)
        ema_f: list[Tensor] = []
        src_f: list[Tensor] = []
        for e, s in zip(ema_t, src_t, strict=True):
            if s.device != e.device:
                s = s.to(e.device, non_blocking=True)
            if e.is_floating_point():
                ema_f.append(e)
                src_f.append(s.to(e.dtype))
            else:
                e.copy_(s)
        if ema_f:
            # One fused kernel per (device, dtype) group instead of a Python loop of kernels.
            torch._foreach_lerp_(ema_f, src_f, 1.0 - d)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        """``{"module": EMA state dict, "updates": int, "decay": float, "warmup": bool}``."""
        return {
            "module": self.module.state_dict(),
            "updates": self.updates,
            "decay": self.decay,
            "warmup": self.warmup,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the averaged weights and the update count (strict).

        ``decay`` and ``warmup`` stay those given to the constructor (the run's config).
        """
        if not isinstance(state, dict) or not isinstance(state.get("module"), dict):
            raise CheckpointError(
                "EMA state must be a dict with a 'module' state dict (from ModelEma.state_dict)"
            )
        try:
            self.module.load_state_dict(state["module"], strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"EMA weights do not match the model: {e}") from None
        self.updates = int(state.get("updates", 0))
