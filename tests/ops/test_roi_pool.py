"""roi_pool against torchvision.ops.roi_pool: forward, backward, gradcheck, edge cases."""

from __future__ import annotations

import importlib

import pytest
import torch
import torchvision.ops as tvops

from tests.conftest import TOLERANCES
from visionzoo import ops
from visionzoo.errors import OpArgumentError

# the module, not the function that visionzoo.ops re-exports under the same name
roi_pool_module = importlib.import_module("visionzoo.ops.roi_pool")

TOL = TOLERANCES["ops_fp32"]


@pytest.fixture(autouse=True)
def _one_thread():
    # small ops: OpenMP threads on a busy machine cost more than they save
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def random_rois(k: int, n_img: int, extent: float, seed: int, dtype=torch.float32) -> torch.Tensor:
    """(K, 5) RoIs of every size, many partly or wholly outside [0, extent)."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(k, 2, generator=g, dtype=torch.float64) * extent * 1.3 - 0.15 * extent
    size = torch.rand(k, 2, generator=g, dtype=torch.float64) * extent * 0.7
    batch = torch.randint(0, n_img, (k, 1), generator=g).double()
    return torch.cat([batch, centre - size / 2, centre + size / 2], 1).to(dtype)


# torchvision's fixed RoIs on a 10x10 map (test_ops.py), plus malformed and outside ones
FIXED_ROIS = torch.tensor(
    [
        [0, 0, 0, 9, 9],
        [0, 0, 5, 4, 9],
        [0, 5, 5, 9, 9],
        [1, 0, 0, 9, 9],
        [1, 6, 6, 2, 2],  # x2 < x1: forced to 1x1
        [0, 12, 12, 20, 20],  # outside the map: empty bins output 0
        [1, -4.5, -3.5, 2.5, 1.5],  # rounds half away from zero
    ],
    dtype=torch.float32,
)


def _compare(x, rois, output_size, scale, dtype=torch.float32):
    x = x.to(dtype)
    rois = rois.to(dtype)
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    ours = ops.roi_pool(a, rois, output_size, scale)
    theirs = tvops.roi_pool(b, rois, output_size, scale)
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    assert ours.is_contiguous()
    torch.testing.assert_close(ours, theirs, rtol=0, atol=TOL)
    grad = torch.randn(theirs.shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
    ours.backward(grad)
    theirs.backward(grad)
    torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=TOL)


@pytest.mark.parametrize("output_size", [(5, 5), (2, 3), 1, (7, 4)])
def test_fixed_rois_match_torchvision(output_size):
    x = torch.randn(2, 3, 10, 10, generator=torch.Generator().manual_seed(0))
    _compare(x, FIXED_ROIS, output_size, 1.0)


@pytest.mark.parametrize("scale", [1.0, 0.5, 0.25, 1 / 16])
def test_random_rois_match_torchvision(scale):
    x = torch.randn(2, 5, 13, 17, generator=torch.Generator().manual_seed(2))
    rois = random_rois(200, 2, 17 / scale, seed=3)
    _compare(x, rois, (3, 4), scale)
    _compare(x, rois, 7, scale, dtype=torch.float64)


def test_ties_pick_the_first_maximum_like_torchvision():
    # integer-valued map: bins hold many equal maxima; the gradient goes to the first in
    # row-major order, exactly as in torchvision
    g = torch.Generator().manual_seed(4)
    x = torch.randint(0, 3, (2, 4, 12, 12), generator=g).float()
    for dtype in (torch.float32, torch.float64):
        _compare(x, random_rois(100, 2, 12, seed=5), (3, 3), 1.0, dtype)


def test_chunked_rois_match_torchvision(monkeypatch):
    # many small RoI chunks through the reused scratch buffers, forward and backward
    monkeypatch.setitem(roi_pool_module._CHUNK_ELEMENTS, "cpu", 50)
    x = torch.randn(2, 3, 11, 13, generator=torch.Generator().manual_seed(8))
    _compare(x, random_rois(40, 2, 13, seed=9), (2, 3), 1.0)


def test_list_of_boxes_equals_tensor_form_and_channels_last():
    x = torch.randn(2, 3, 9, 11, generator=torch.Generator().manual_seed(6))
    rois = random_rois(20, 2, 11, seed=7)
    rois = rois[torch.argsort(rois[:, 0], stable=True)]
    per_image = [rois[rois[:, 0] == i, 1:] for i in range(2)]
    want = ops.roi_pool(x, rois, 3)
    assert torch.equal(ops.roi_pool(x, per_image, 3), want)
    assert torch.equal(ops.roi_pool(x.contiguous(memory_format=torch.channels_last), rois, 3), want)
    module = ops.RoIPool(3, spatial_scale=1.0)
    assert torch.equal(module(x, per_image), want)
    assert "output_size=(3, 3)" in repr(module)


def test_gradcheck_float64():
    x = torch.randn(2, 2, 6, 7, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor(
        [[0, 0.4, 1.2, 5.1, 4.9], [1, 2.0, 0.0, 6.5, 5.5], [0, -2.0, -1.0, 3.0, 2.0]],
        dtype=torch.float64,
    )
    assert torch.autograd.gradcheck(lambda t: ops.roi_pool(t, rois, (2, 3), 1.0), (x,))


def test_empty_inputs():
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    out = ops.roi_pool(x, torch.zeros(0, 5), (2, 2))
    assert out.shape == (0, 3, 2, 2) and out.dtype == torch.float32
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    assert ops.roi_pool(x, [torch.zeros(0, 4), torch.zeros(0, 4)], 2).shape == (0, 3, 2, 2)
    # every bin outside the map: zeros, like torchvision
    far = torch.tensor([[0.0, 100.0, 100.0, 120.0, 120.0]])
    assert torch.equal(ops.roi_pool(x, far, 2), tvops.roi_pool(x, far, 2))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda x: ops.roi_pool(x, torch.zeros(3, 4), 2), r"boxes must be a Tensor\[K, 5\]"),
        (lambda x: ops.roi_pool(x, [torch.zeros(3, 5)], 2), r"boxes\[0\] must be a Tensor\[L, 4\]"),
        (lambda x: ops.roi_pool(x, torch.zeros(3, 5, dtype=torch.float64), 2), r"same dtype as input"),
        (lambda x: ops.roi_pool(x, torch.tensor([[2.0, 0, 0, 1, 1]]), 2), r"batch index\) must lie in \[0, 1\]"),
        (lambda x: ops.roi_pool(x[0], torch.zeros(1, 5), 2), r"input must be a Tensor\[N, C, H, W\]"),
        (lambda x: ops.roi_pool(x.long(), torch.zeros(1, 5), 2), r"input must be a floating-point"),
        (lambda x: ops.roi_pool(x, torch.zeros(1, 5), (2, 0)), r"output_size must be a positive int"),
        (lambda x: ops.roi_pool(x, torch.zeros(1, 5), 2, spatial_scale=0), r"spatial_scale must be"),
        (lambda x: ops.roi_pool(x, [torch.zeros(1, 4)] * 3, 2), r"list of 3 tensors but input holds only 2"),
    ],
)  # fmt: skip
def test_errors_name_the_argument(call, match):
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(OpArgumentError, match=match):
        call(x)
