"""Float32 islands under mixed precision (visionzoo.layers.precision)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from visionzoo.layers.precision import full_precision, similarities, unit_rows


def test_full_precision_upcasts_half_types_only():
    x = torch.randn(3, 4)
    assert full_precision(x.half()).dtype == torch.float32
    assert full_precision(x.bfloat16()).dtype == torch.float32
    assert full_precision(x) is x
    assert full_precision(x.double()).dtype == torch.float64


def test_unit_rows_and_similarities_stay_float32_under_autocast():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(8, 32, generator=g), torch.randn(5, 32, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ua, ub = unit_rows(a.bfloat16()), unit_rows(b.bfloat16())
        got = similarities(ua, ub)
        rounded = ua @ ub.t()  # what autocast alone would do: a bf16 matmul
    assert ua.dtype == got.dtype == torch.float32
    assert rounded.dtype == torch.bfloat16
    want = F.normalize(a.bfloat16().float(), dim=-1) @ F.normalize(b.bfloat16().float(), dim=-1).t()
    assert (got - want).abs().max() < 1e-6
    assert (rounded.float() - want).abs().max() > 1e-4
    assert unit_rows(a.double()).dtype == torch.float64
