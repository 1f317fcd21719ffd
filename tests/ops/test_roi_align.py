"""roi_align against torchvision.ops.roi_align: forward, backward, gradcheck, edge cases."""

from __future__ import annotations

import importlib

import pytest
import torch
import torchvision.ops as tvops

from tests.conftest import TOLERANCES
from tests.ops.test_roi_pool import FIXED_ROIS, random_rois
from visionzoo import ops
from visionzoo.errors import OpArgumentError

# the module, not the function that visionzoo.ops re-exports under the same name
roi_align_module = importlib.import_module("visionzoo.ops.roi_align")

TOL = TOLERANCES["ops_fp32"]


@pytest.fixture(autouse=True)
def _one_thread():
    # small ops: OpenMP threads on a busy machine cost more than they save
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _compare(x, rois, output_size, scale, sampling_ratio, aligned, dtype=torch.float32):
    x = x.to(dtype)
    rois = rois.to(dtype)
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    args = (output_size, scale, sampling_ratio, aligned)
    ours = ops.roi_align(a, rois, *args)
    theirs = tvops.roi_align(b, rois, *args)
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    assert ours.is_contiguous()
    torch.testing.assert_close(ours, theirs, rtol=0, atol=TOL)
    grad = torch.randn(theirs.shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
    ours.backward(grad)
    theirs.backward(grad)
    torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=TOL)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 0, 1, 2, 3])
def test_fixed_rois_match_torchvision(aligned, sampling_ratio):
    x = torch.randn(2, 3, 10, 10, generator=torch.Generator().manual_seed(0))
    _compare(x, FIXED_ROIS, (5, 5), 1.0, sampling_ratio, aligned)
    _compare(x, FIXED_ROIS, (2, 3), 0.5, sampling_ratio, aligned)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
@pytest.mark.parametrize("scale", [1.0, 0.5, 0.25, 1 / 16])
def test_random_rois_match_torchvision(scale, sampling_ratio, aligned):
    # RoIs of every size, many partly or wholly outside the map
    x = torch.randn(2, 5, 13, 17, generator=torch.Generator().manual_seed(2))
    rois = random_rois(150, 2, 17 / scale, seed=3)
    _compare(x, rois, (3, 4), scale, sampling_ratio, aligned)


@pytest.mark.parametrize("aligned", [False, True])
def test_float64_and_inverted_rois_match_torchvision(aligned):
    x = torch.randn(2, 4, 9, 12, generator=torch.Generator().manual_seed(4))
    rois = random_rois(80, 2, 12, seed=5)
    rois[:10, 1:] = rois[:10, [3, 4, 1, 2]]  # x2 < x1, y2 < y1
    for sampling_ratio in (-1, 2):
        _compare(x, rois, 4, 1.0, sampling_ratio, aligned, dtype=torch.float64)
        _compare(x, rois, 4, 1.0, sampling_ratio, aligned)


def test_unmerged_rows_path(monkeypatch):
    # large bins with a fixed sampling ratio touch rows far apart: weights are not merged
    x = torch.randn(1, 3, 40, 40, generator=torch.Generator().manual_seed(6))
    rois = torch.tensor([[0, 0.0, 0.0, 39.0, 39.0], [0, 3.3, 1.7, 30.2, 38.8]])
    _compare(x, rois, (2, 2), 1.0, 2, False)
    # chunked bag construction gives the same result as one chunk
    monkeypatch.setattr(roi_align_module, "_MAX_BAG_ELEMENTS", 64)
    _compare(x, random_rois(30, 1, 40, seed=7), (3, 3), 1.0, -1, True)


def test_list_of_boxes_equals_tensor_form_and_channels_last():
    x = torch.randn(2, 3, 9, 11, generator=torch.Generator().manual_seed(8))
    rois = random_rois(20, 2, 11, seed=9)
    rois = rois[torch.argsort(rois[:, 0], stable=True)]
    per_image = [rois[rois[:, 0] == i, 1:] for i in range(2)]
    want = ops.roi_align(x, rois, 3, 1.0, 2, True)
    assert torch.equal(ops.roi_align(x, per_image, 3, 1.0, 2, True), want)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    assert torch.equal(ops.roi_align(x_cl, rois, 3, 1.0, 2, True), want)
    module = ops.RoIAlign(3, spatial_scale=1.0, sampling_ratio=2, aligned=True)
    assert torch.equal(module(x, per_image), want)
    assert "aligned=True" in repr(module)


@pytest.mark.parametrize(("sampling_ratio", "aligned"), [(-1, False), (-1, True), (2, False)])
def test_gradcheck_float64(sampling_ratio, aligned):
    x = torch.randn(2, 2, 6, 7, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor(
        [[0, 0.4, 1.2, 5.1, 4.9], [1, 2.0, 0.0, 6.5, 5.5], [0, -2.0, -1.0, 3.0, 2.0]],
        dtype=torch.float64,
    )
    assert torch.autograd.gradcheck(
        lambda t: ops.roi_align(t, rois, (2, 3), 1.0, sampling_ratio, aligned), (x,)
    )


def test_boxes_get_no_gradient_like_torchvision():
    x = torch.randn(1, 2, 6, 6)
    rois = torch.tensor([[0, 0.5, 0.5, 4.0, 4.0]], requires_grad=True)
    out = ops.roi_align(x.requires_grad_(), rois, 2)
    out.sum().backward()
    assert rois.grad is None and x.grad is not None


def test_empty_inputs():
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    out = ops.roi_align(x, torch.zeros(0, 5), (2, 2), 0.5, 2, True)
    assert out.shape == (0, 3, 2, 2) and out.dtype == torch.float32
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    assert ops.roi_align(x, [torch.zeros(0, 4)], 2).shape == (0, 3, 2, 2)
    far = torch.tensor([[0.0, 100.0, 100.0, 120.0, 120.0]])
    assert torch.equal(ops.roi_align(x, far, 2), tvops.roi_align(x, far, 2))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda x: ops.roi_align(x, torch.zeros(3, 4), 2), r"boxes must be a Tensor\[K, 5\]"),
        (lambda x: ops.roi_align(x, "boxes", 2), r"boxes must be a Tensor\[K, 5\] or a list"),
        (lambda x: ops.roi_align(x, torch.zeros(3, 5, dtype=torch.float64), 2), r"same dtype as input"),
        (lambda x: ops.roi_align(x, torch.tensor([[-1.0, 0, 0, 1, 1]]), 2), r"batch index\) must lie in"),
        (lambda x: ops.roi_align(x, torch.zeros(1, 5), 2, 1.0, 1.5), r"sampling_ratio must be an int"),
        (lambda x: ops.roi_align(x, torch.zeros(1, 5), 2, 1.0, 2, "yes"), r"aligned must be a bool"),
        (lambda x: ops.roi_align(x, torch.zeros(1, 5), "7"), r"output_size must be a positive int"),
    ],
)  # fmt: skip
def test_errors_name_the_argument(call, match):
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(OpArgumentError, match=match):
        call(x)
