"""Transforms: uint8 in/out for every preset, bad config keys, normalize, MixUp/CutMix."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from visionzoo.data.transforms import (
    AUGMENT_PRESETS,
    ToUint8RGB,
    batch_mix,
    eval_transform,
    normalize,
    train_transform,
)
from visionzoo.engine.config import DataConfig
from visionzoo.errors import ConfigError


def _pil(w: int = 40, h: int = 30, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)


@pytest.mark.parametrize("augment", AUGMENT_PRESETS)
@pytest.mark.parametrize("source", ["pil", "tensor"])
def test_train_presets_give_uint8_chw(augment, source):
    cfg = DataConfig(image_size=24, augment=augment)
    tf = train_transform(cfg)
    img = _pil() if source == "pil" else torch.randint(0, 256, (3, 30, 40), dtype=torch.uint8)
    for _ in range(3):  # random ops: several draws
        out = tf(img)
        assert type(out) is torch.Tensor
        assert out.dtype == torch.uint8
        assert out.shape == (3, 24, 24)


def test_none_preset_is_deterministic_and_equals_eval():
    cfg = DataConfig(image_size=16, augment="none")
    img = _pil(50, 20)
    a, b = train_transform(cfg)(img), train_transform(cfg)(img)
    assert torch.equal(a, b)
    assert torch.equal(a, eval_transform(cfg)(img))


def test_eval_resizes_shorter_side_then_center_crops():
    cfg = DataConfig(image_size=10)
    x = torch.zeros(3, 10, 30, dtype=torch.uint8)
    x[:, :, 10:20] = 200  # the centre third is bright
    out = eval_transform(cfg)(x)
    # Shorter side already 10: no resize, the centre crop keeps exactly the bright band.
    assert out.shape == (3, 10, 10)
    assert torch.equal(out, torch.full((3, 10, 10), 200, dtype=torch.uint8))


def test_light_preset_parts_follow_config():
    tf = train_transform(DataConfig(image_size=32, augment="light", hflip=True))
    kinds = [type(t) for t in tf.transforms]
    assert kinds == [ToUint8RGB, v2.RandomResizedCrop, v2.RandomHorizontalFlip]
    assert tf.transforms[1].scale == (0.35, 1.0)
    tf = train_transform(
        DataConfig(augment="light", hflip=True), crop_scale=(0.7, 1.0), hflip=False
    )
    assert [type(t) for t in tf.transforms] == [ToUint8RGB, v2.RandomResizedCrop]
    assert tf.transforms[1].scale == (0.7, 1.0)
    tf = train_transform(DataConfig(augment="randaugment", hflip=False))
    assert isinstance(tf.transforms[-1], v2.RandAugment)
    tf = train_transform(DataConfig(augment="trivialaugment", hflip=False))
    assert isinstance(tf.transforms[-1], v2.TrivialAugmentWide)


def test_unknown_augment_names_key_and_valid_values():
    with pytest.raises(ConfigError, match=r"data\.augment='lite'.*did you mean light.*none, light"):
        train_transform(DataConfig(augment="lite"))


@pytest.mark.parametrize("size", [0, -3])
def test_bad_image_size(size):
    with pytest.raises(ConfigError, match=r"data\.image_size must be a positive integer"):
        eval_transform(DataConfig(image_size=size))


@pytest.mark.parametrize(
    ("channels", "expect"),
    [(1, [7, 7, 7]), (2, [7, 7, 7]), (3, [7, 8, 9]), (4, [7, 8, 9])],
)
def test_to_uint8_rgb_channel_rules(channels, expect):
    x = torch.stack([torch.full((2, 2), v, dtype=torch.uint8) for v in (7, 8, 9, 250)][:channels])
    out = ToUint8RGB()(x)
    assert out.shape == (3, 2, 2)
    assert out[:, 0, 0].tolist() == expect
    assert out.is_contiguous()


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "1"])
def test_eval_accepts_any_pil_mode(mode):
    out = eval_transform(DataConfig(image_size=12))(_pil(mode=mode))
    assert out.dtype == torch.uint8
    assert out.shape == (3, 12, 12)


def test_to_uint8_rgb_rejects_float_and_bad_shapes():
    with pytest.raises(TypeError, match="uint8"):
        ToUint8RGB()(torch.rand(3, 4, 4))
    with pytest.raises(TypeError, match=r"\[C, H, W\]"):
        ToUint8RGB()(torch.zeros(5, 4, 4, dtype=torch.uint8))
    with pytest.raises(TypeError, match="PIL image or a uint8 tensor"):
        ToUint8RGB()(np.zeros((4, 4, 3), dtype=np.uint8))


def test_normalize_matches_independent_computation():
    x = torch.randint(0, 256, (2, 3, 5, 7), dtype=torch.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    out = normalize(x, mean, std)
    ref = np.empty((2, 3, 5, 7))
    xn = x.numpy().astype(np.float64)
    for c in range(3):
        ref[:, c] = (xn[:, c] / 255.0 - mean[c]) / std[c]
    assert out.dtype == torch.float32
    assert np.allclose(out.numpy(), ref, atol=1e-5)
    # Unbatched images work too, and the input is not modified.
    assert torch.allclose(normalize(x[0], mean, std), out[0])
    assert x.dtype == torch.uint8


def test_normalize_keeps_channels_last():
    x = torch.randint(0, 256, (2, 3, 4, 6), dtype=torch.uint8)
    x = x.contiguous(memory_format=torch.channels_last)
    out = normalize(x, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(out, (x.float() / 255 - 0.5) / 0.25)


def test_normalize_rejects_non_uint8():
    with pytest.raises(TypeError, match="uint8"):
        normalize(torch.rand(1, 3, 2, 2), (0, 0, 0), (1, 1, 1))


def test_batch_mix_off_by_default():
    assert batch_mix(DataConfig(), num_classes=5) is None


def test_mixup_soft_labels_sum_to_one_and_images_are_convex():
    mix = batch_mix(DataConfig(mixup_alpha=0.4), num_classes=5)
    images = torch.rand(6, 3, 8, 8)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    out, soft = mix(images, labels)
    assert soft.shape == (6, 5)
    assert torch.allclose(soft.sum(1), torch.ones(6))
    # Each image is lam * itself + (1 - lam) * its predecessor, lam read off the labels.
    lam = soft[1, 1].item()  # sample 1 is class 1, its predecessor class 0
    assert torch.allclose(out, lam * images + (1 - lam) * images.roll(1, 0), atol=1e-6)


def test_cutmix_soft_labels_and_pasted_box():
    torch.manual_seed(3)
    mix = batch_mix(DataConfig(cutmix_alpha=1.0), num_classes=3)
    images = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, 8, 8).clone()
    out, soft = mix(images, torch.tensor([0, 1, 2, 0]))
    assert torch.allclose(soft.sum(1), torch.ones(4))
    # Pixels are either the sample's own or its predecessor's, and the label weights match.
    own = (out == images).float().mean((1, 2, 3))
    pasted = (out == images.roll(1, 0)).float().mean((1, 2, 3))
    assert torch.allclose(own + pasted, torch.ones(4))
    assert torch.allclose(soft[1, 1], own[1])


def test_both_alphas_pick_one_per_batch():
    mix = batch_mix(DataConfig(mixup_alpha=0.2, cutmix_alpha=1.0), num_classes=4)
    assert isinstance(mix.op, v2.RandomChoice)
    out, soft = mix(torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3]))
    assert out.shape == (4, 3, 8, 8)
    assert torch.allclose(soft.sum(1), torch.ones(4))


def test_batch_mix_errors():
    with pytest.raises(ConfigError, match=r"data\.cutmix_alpha must be >= 0"):
        batch_mix(DataConfig(cutmix_alpha=-1.0), num_classes=3)
    mix = batch_mix(DataConfig(mixup_alpha=1.0), num_classes=3)
    with pytest.raises(TypeError, match="float images"):
        mix(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.tensor([0, 1]))
