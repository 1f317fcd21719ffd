"""Shared test settings.

Tolerances live in one table (house style): tests look them up by what they compare.
"""

from __future__ import annotations

import os

import pytest
import torch

# Under pytest-xdist each worker gets one intra-op thread: the workers already fill the cores,
# and oversubscribed OpenMP threads make CPU tests several times slower.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

TOLERANCES: dict[str, float] = {
    # Reference model (torchvision/timm) vs ours with converted weights, eval mode, float32.
    "parity_fp32": 1e-4,
    # visionzoo.ops vs torchvision.ops (RoI pool/align forward and backward), float32.
    "ops_fp32": 1e-5,
    # Profiler counts vs published figures (relative).
    "published_macs_rel": 0.03,
}


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield
