"""Box coder, matcher and balanced sampler (Faster R-CNN §3.1.2-3.1.3), against torchvision."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.models.detection import _utils as tv_utils

from visionzoo.models.detection.box_coder import (
    DEFAULT_BBOX_XFORM_CLIP,
    BalancedPositiveNegativeSampler,
    BoxCoder,
    Matcher,
)


def random_boxes(n: int, dtype=torch.float32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=dtype) * 200
    wh = torch.rand(n, 2, generator=g, dtype=dtype) * 100 + 1
    return torch.cat([xy, xy + wh], dim=1)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_encode_decode_invert(weights):
    coder = BoxCoder(weights)
    ref = random_boxes(50, torch.float64, seed=1)
    gt = random_boxes(50, torch.float64, seed=2)
    deltas = coder.encode(gt, ref)
    assert deltas.shape == (50, 4)
    back = coder.decode(deltas, ref)
    assert back.shape == (50, 4)
    torch.testing.assert_close(back, gt, rtol=0, atol=1e-9)
    # a box coded against itself is the zero delta
    assert coder.encode(ref, ref).abs().max() == 0


def test_encode_is_the_papers_parametrisation():
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    ref = torch.tensor([[0.0, 0.0, 10.0, 20.0]])  # centre (5, 10), size 10 x 20
    gt = torch.tensor([[2.0, 4.0, 22.0, 24.0]])  # centre (12, 14), size 20 x 20
    d = coder.encode(gt, ref)[0]
    expected = torch.tensor([10 * 7 / 10, 10 * 4 / 20, 5 * math.log(2.0), 5 * math.log(1.0)])
    torch.testing.assert_close(d, expected)


def test_decode_clamps_log_scale_and_handles_several_classes():
    coder = BoxCoder()
    ref = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    deltas = torch.tensor([[0.0, 0.0, 50.0, 50.0, 0.0, 0.0, 0.0, 0.0]])  # two "classes"
    out = coder.decode(deltas, ref).view(1, 2, 4)
    assert torch.isfinite(out).all()
    size = out[0, 0, 2] - out[0, 0, 0]
    torch.testing.assert_close(size, torch.tensor(16 * math.exp(DEFAULT_BBOX_XFORM_CLIP)))
    torch.testing.assert_close(out[0, 1], ref[0])


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_box_coder_matches_torchvision_bitwise(weights):
    ours, ref_coder = BoxCoder(weights), tv_utils.BoxCoder(weights)
    ref = random_boxes(64, seed=3)
    gt = random_boxes(64, seed=4)
    assert torch.equal(ours.encode(gt, ref), ref_coder.encode_single(gt, ref))
    deltas = torch.randn(64, 12, generator=torch.Generator().manual_seed(5))
    assert torch.equal(ours.decode(deltas, ref), ref_coder.decode_single(deltas, ref))


def test_matcher_thresholds():
    m = Matcher(0.7, 0.3)
    iou = torch.tensor([[0.8, 0.5, 0.1, 0.0], [0.2, 0.6, 0.29, 0.75]])  # (M=2, K=4)
    assert m(iou).tolist() == [0, Matcher.BETWEEN_THRESHOLDS, Matcher.BELOW_LOW_THRESHOLD, 1]


def test_matcher_low_quality_matches_include_ties():
    m = Matcher(0.7, 0.3, allow_low_quality_matches=True)
    # gt 0's best IoU (0.5) is reached by predictions 0 and 2 (a tie); gt 1's by prediction 1.
    iou = torch.tensor([[0.5, 0.1, 0.5, 0.2], [0.1, 0.4, 0.3, 0.1]])
    matches = m(iou)
    assert matches.tolist() == [0, 1, 0, Matcher.BELOW_LOW_THRESHOLD]
    without = Matcher(0.7, 0.3)(iou)
    assert without.tolist() == [-2, -2, -2, -1]


def test_matcher_matches_torchvision_on_random_quality():
    g = torch.Generator().manual_seed(0)
    iou = torch.rand(5, 300, generator=g) ** 3
    for low_quality in (False, True):
        ours = Matcher(0.7, 0.3, low_quality)(iou.clone())
        ref = tv_utils.Matcher(0.7, 0.3, low_quality)(iou.clone())
        assert torch.equal(ours, ref)


def test_matcher_edge_cases():
    m = Matcher(0.7, 0.3, allow_low_quality_matches=True)
    assert m(torch.zeros(0, 5)).tolist() == [-1] * 5  # no ground truth: all background
    assert m(torch.zeros(3, 0)).numel() == 0
    # A ground truth that overlaps nothing promotes nobody (departure from torchvision).
    iou = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.9, 0.2]])
    assert m(iou).tolist() == [-1, 1, -1]
    with pytest.raises(ValueError, match="low_threshold"):
        Matcher(0.3, 0.7)


def test_sampler_respects_size_and_fraction():
    sampler = BalancedPositiveNegativeSampler(256, 0.5)
    labels = torch.zeros(5000)
    labels[:400] = 1
    labels[400:500] = -1
    pos, neg = sampler([labels])
    assert pos[0].sum() == 128 and neg[0].sum() == 128
    assert (labels[pos[0]] == 1).all() and (labels[neg[0]] == 0).all()
    assert not (pos[0] & neg[0]).any()
    # few positives: negatives fill the batch
    labels = torch.zeros(5000)
    labels[:10] = 1
    pos, neg = sampler([labels])
    assert pos[0].sum() == 10 and neg[0].sum() == 246
    # RoI head setting: 512 at 25%
    labels = torch.cat([torch.ones(1000), torch.zeros(1000)]).long()
    pos, neg = BalancedPositiveNegativeSampler(512, 0.25)([labels])
    assert pos[0].sum() == 128 and neg[0].sum() == 384
    # too few of everything
    pos, neg = sampler([torch.tensor([1.0, 0.0, -1.0])])
    assert pos[0].tolist() == [True, False, False] and neg[0].tolist() == [False, True, False]


def test_sampler_draws_the_same_examples_as_torchvision():
    g = torch.Generator().manual_seed(1)
    labels = [(torch.rand(3000, generator=g) * 3).long() - 1 for _ in range(2)]  # -1, 0, 1
    torch.manual_seed(7)
    ours = BalancedPositiveNegativeSampler(256, 0.5)(labels)
    torch.manual_seed(7)
    ref = tv_utils.BalancedPositiveNegativeSampler(256, 0.5)(labels)
    for a, b in zip(ours[0] + ours[1], ref[0] + ref[1], strict=True):
        assert torch.equal(a, b.bool())
