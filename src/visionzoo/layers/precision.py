"""Float32 islands under mixed precision.

Under bf16/fp16 autocast some quantities must not be rounded to 3 significant digits: sums over
every pixel of a batch (Dice), and unit-vector similarities that a temperature then scales by
10-100 (CLIP, BLIP), where bf16's rounding becomes a logit error of ~0.1, as large as the margins
hard negatives are about.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["full_precision", "unit_rows", "similarities"]


def full_precision(x: Tensor) -> Tensor:
    """``x`` in float32 when it is float16 or bfloat16; any other dtype (float64) unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def unit_rows(x: Tensor) -> Tensor:
    """L2-normalised last dimension, computed in (at least) float32."""
    return F.normalize(full_precision(x), dim=-1)


def similarities(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b.T`` (Tensor[N, E] x Tensor[M, E] -> Tensor[N, M]) in at least float32, with
    autocast off so that it does not round the inputs back down."""
    with torch.autocast(a.device.type, enabled=False):
        return full_precision(a) @ full_precision(b).t()
