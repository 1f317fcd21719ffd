"""Segmentation losses against independent computations: soft Dice (binary, multiclass,
multi-label), BCE with logits, BCE + Dice, cross-entropy with ignore_index=255."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from visionzoo.losses import (
    BCEDiceLoss,
    BCEWithLogitsLoss,
    DiceLoss,
    SegmentationCrossEntropy,
    bce_with_logits_loss,
    segmentation_cross_entropy,
    soft_dice_loss,
)

IGNORE = 255


def _multiclass(n=2, k=4, h=9, w=11, ignore_frac=0.2, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, h, w, generator=g, dtype=torch.float64)
    target = torch.randint(0, k, (n, h, w), generator=g)
    target[torch.rand(n, h, w, generator=g) < ignore_frac] = IGNORE
    return logits, target


def _binary(n=2, h=9, w=11, ignore_frac=0.2, seed=1):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 1, h, w, generator=g, dtype=torch.float64)
    target = (torch.rand(n, h, w, generator=g) < 0.3).long()
    target[torch.rand(n, h, w, generator=g) < ignore_frac] = IGNORE
    return logits, target


def _dice_loop(probs: np.ndarray, target: np.ndarray, k: int, smooth: float, per_image: bool):
    """Independent reference: explicit loops over images and classes, pixels by masking."""
    n = probs.shape[0]
    groups = [[i] for i in range(n)] if per_image else [list(range(n))]
    dices = []
    for group in groups:
        for c in range(k):
            inter = card = 0.0
            for i in group:
                valid = target[i] != IGNORE
                p = probs[i, c][valid]
                t = (target[i][valid] == c).astype(np.float64)
                inter += float((p * t).sum())
                card += float(p.sum() + t.sum())
            dices.append((2 * inter + smooth) / (card + smooth))
    return 1.0 - float(np.mean(dices))


@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("smooth", [1.0, 0.0])
def test_multiclass_dice_matches_loop(smooth, per_image):
    logits, target = _multiclass()
    got = soft_dice_loss(logits, target, smooth=smooth, ignore_index=IGNORE, per_image=per_image)
    probs = logits.softmax(1).numpy()
    expected = _dice_loop(probs, target.numpy(), 4, smooth, per_image)
    assert got.item() == pytest.approx(expected, rel=1e-10)
    module = DiceLoss(smooth=smooth, ignore_index=IGNORE, per_image=per_image)
    assert module(logits, target).item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("squeeze", [False, True])
def test_binary_dice_matches_loop(squeeze):
    logits, target = _binary()
    p, t = torch.sigmoid(logits)[:, 0].numpy(), target.numpy()
    valid = t != IGNORE
    fg = (t == 1).astype(np.float64)
    inter = float((p * fg)[valid].sum())
    card = float(p[valid].sum() + fg[valid].sum())
    expected = 1.0 - (2 * inter + 1.0) / (card + 1.0)
    x = logits[:, 0] if squeeze else logits
    got = soft_dice_loss(x, target, ignore_index=IGNORE)
    assert got.item() == pytest.approx(expected, rel=1e-10)


def test_multilabel_dice_is_a_sigmoid_dice_per_channel():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, 5, 6, generator=g, dtype=torch.float64)
    target = (torch.rand(2, 3, 5, 6, generator=g) < 0.5).double()
    got = soft_dice_loss(logits, target, smooth=1.0)
    p = torch.sigmoid(logits)
    per_channel = [
        (2 * (p[:, c] * target[:, c]).sum() + 1) / (p[:, c].sum() + target[:, c].sum() + 1)
        for c in range(3)
    ]
    assert got.item() == pytest.approx(1 - torch.stack(per_channel).mean().item(), rel=1e-10)


def test_dice_ignores_pixels_and_their_gradients():
    logits, target = _multiclass()
    logits.requires_grad_(True)
    loss = soft_dice_loss(logits, target, ignore_index=IGNORE)
    loss.backward()
    ignored = (target == IGNORE).unsqueeze(1).expand_as(logits)
    assert torch.isfinite(logits.grad).all()
    assert logits.grad[ignored].abs().max() == 0 and logits.grad[~ignored].abs().max() > 0
    # Whatever the model says at ignored pixels, the loss is the same.
    changed = logits.detach().clone()
    changed[ignored] = 100.0
    assert soft_dice_loss(changed, target, ignore_index=IGNORE).item() == pytest.approx(loss.item())


def test_dice_of_a_perfect_prediction_is_zero_and_of_the_opposite_near_one():
    target = torch.tensor([[[0, 1, 2], [2, 1, 0]]])
    perfect = F.one_hot(target, 3).movedim(-1, 1).double() * 50
    assert soft_dice_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-12)
    wrong = F.one_hot((target + 1) % 3, 3).movedim(-1, 1).double() * 50
    # Each class: 0 overlap, 4 pixels of cardinality: Dice = 1/5 with smooth 1.
    assert soft_dice_loss(wrong, target).item() == pytest.approx(0.8, rel=1e-9)


def test_all_ignored_batches_give_finite_zero_gradients():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    target = torch.full((1, 4, 4), IGNORE)
    for loss in (
        soft_dice_loss(logits, target, ignore_index=IGNORE),
        segmentation_cross_entropy(logits, target),
    ):
        assert torch.isfinite(loss)
        (grad,) = torch.autograd.grad(loss, logits)
        assert torch.isfinite(grad).all() and grad.abs().max() == 0
    b_logits = torch.randn(1, 1, 4, 4, requires_grad=True)
    loss = bce_with_logits_loss(b_logits, target, ignore_index=IGNORE)
    assert loss.item() == 0.0
    (grad,) = torch.autograd.grad(loss, b_logits)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("pos_weight", [None, 3.0])
def test_bce_with_logits_matches_torch_on_valid_pixels(pos_weight):
    logits, target = _binary()
    valid = target != IGNORE
    pw = None if pos_weight is None else torch.tensor(pos_weight, dtype=torch.float64)
    expected = F.binary_cross_entropy_with_logits(
        logits[:, 0][valid], target[valid].double(), pos_weight=pw
    )
    got = bce_with_logits_loss(logits, target, ignore_index=IGNORE, pos_weight=pos_weight)
    assert got.item() == pytest.approx(expected.item(), rel=1e-10)
    module = BCEWithLogitsLoss(ignore_index=IGNORE, pos_weight=pos_weight)
    assert module(logits[:, 0], target).item() == pytest.approx(expected.item(), rel=1e-10)
    # No ignore index: the plain mean.
    t = (target == 1).double()
    plain = F.binary_cross_entropy_with_logits(logits[:, 0], t, pos_weight=pw)
    assert bce_with_logits_loss(logits, t, pos_weight=pos_weight).item() == pytest.approx(
        plain.item(), rel=1e-10
    )


def test_bce_dice_is_the_weighted_sum():
    logits, target = _binary()
    logits.requires_grad_(True)
    loss_fn = BCEDiceLoss(bce_weight=0.3, dice_weight=2.0, ignore_index=IGNORE)
    parts = loss_fn.parts(logits, target)
    bce = bce_with_logits_loss(logits, target, ignore_index=IGNORE)
    dice = soft_dice_loss(logits, target, ignore_index=IGNORE)
    assert parts["bce"].item() == pytest.approx(bce.item())
    assert parts["dice"].item() == pytest.approx(dice.item())
    total = loss_fn(logits, target)
    assert total.item() == pytest.approx(0.3 * bce.item() + 2.0 * dice.item())
    total.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_bce_dice_rejects_multiclass_logits_and_bad_weights():
    logits, target = _multiclass()
    with pytest.raises(ValueError, match="binary: logits must have 1 channel"):
        BCEDiceLoss()(logits, target)
    with pytest.raises(ValueError, match="not both 0"):
        BCEDiceLoss(bce_weight=0.0, dice_weight=0.0)
    with pytest.raises(ValueError, match="smooth must be >= 0"):
        DiceLoss(smooth=-1.0)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"label_smoothing": 0.1}, {"weight": "w"}, {"weight": "w", "label_smoothing": 0.2}],
)
def test_cross_entropy_matches_torch_with_ignore_255(kwargs):
    logits, target = _multiclass(k=5)
    if kwargs.get("weight") == "w":
        kwargs = {**kwargs, "weight": torch.rand(5, dtype=torch.float64) + 0.2}
    expected = F.cross_entropy(logits, target, ignore_index=255, **kwargs)
    assert segmentation_cross_entropy(logits, target, **kwargs).item() == pytest.approx(
        expected.item(), rel=1e-9
    )
    assert SegmentationCrossEntropy(**kwargs)(logits, target).item() == pytest.approx(
        expected.item(), rel=1e-9
    )


def test_cross_entropy_against_a_per_pixel_loop():
    logits, target = _multiclass(n=1, k=3, h=4, w=5)
    logp = logits.log_softmax(1)
    terms = [
        -logp[0, target[0, i, j], i, j].item()
        for i in range(4)
        for j in range(5)
        if target[0, i, j] != IGNORE
    ]
    assert segmentation_cross_entropy(logits, target).item() == pytest.approx(np.mean(terms))


def test_cross_entropy_module_weight_is_a_buffer_and_shapes_are_checked():
    loss = SegmentationCrossEntropy(weight=torch.ones(3))
    assert "weight" in dict(loss.named_buffers())
    with pytest.raises(ValueError, match=r"need targets \[N, H, W\]"):
        loss(torch.randn(2, 3, 4, 4), torch.zeros(2, 3, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="multiclass logits"):
        soft_dice_loss(torch.randn(2, 3, 4, 4), torch.zeros(2, 5, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="binary logits"):
        bce_with_logits_loss(torch.randn(2, 1, 4, 4), torch.zeros(2, 5, 4))


def test_dice_of_half_precision_logits_is_computed_in_float32():
    logits, target = _multiclass()
    full = soft_dice_loss(logits.float(), target, ignore_index=IGNORE)
    half = soft_dice_loss(logits.bfloat16(), target, ignore_index=IGNORE)
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(full.item(), abs=5e-3)
