"""interop.timm.from_timm: what it reads off the weights, what it refuses, and the shared
converter machinery (interop._common) it uses with interop.torchvision."""

from __future__ import annotations

import math

import pytest
import timm
import torch
from torch import nn

from tests.conftest import TOLERANCES
from visionzoo.errors import ModelArgumentError
from visionzoo.interop import timm as ti
from visionzoo.interop import torchvision as tvi
from visionzoo.models.classification.vit import VisionTransformer

TOL = TOLERANCES["parity_fp32"]


def random_timm(name: str, **kwargs) -> nn.Module:
    """A timm model with O(1) random weights (built on meta, filled once)."""
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False, **kwargs)
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname:
                p.uniform_(0.5, 1.5) if pname.endswith("weight") else p.normal_(0.0, 0.1)
            elif p.ndim >= 2 and pname.endswith("weight"):
                bound = math.sqrt(3.0 / p[0].numel())
                p.uniform_(-bound, bound)
            else:
                p.normal_(0.0, 0.5 if p.ndim == 3 else 0.1)
    return model.eval()


def assert_same_outputs(reference: nn.Module, ours: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        expected = reference(x)
        got = ours(x)
    assert got.shape == expected.shape and expected.std() > 0.1
    assert (got - expected).abs().max().item() <= TOL


def test_supported_models():
    names = ti.supported_models()
    assert "deit_base_distilled_patch16_224" in names and "vit_base_patch16_384" in names
    assert names == sorted(ti.SPECS)


def test_infers_classes_channels_and_size_from_a_state_dict():
    reference = random_timm("vit_tiny_patch16_224", num_classes=10, in_chans=1, img_size=48)
    state_dict = reference.state_dict()
    assert ti.convert_state_dict("vit_tiny_patch16_224", state_dict).keys() == state_dict.keys()
    ours = ti.from_timm("vit_tiny_patch16_224", state_dict)
    assert isinstance(ours, VisionTransformer) and not ours.training
    assert (ours.num_classes, ours.patch_embed.in_chans, ours.img_size) == (10, 1, 48)
    assert_same_outputs(reference, ours, torch.randn(2, 1, 48, 48))


@pytest.mark.parametrize(
    ("timm_kwargs", "inferred"),
    [
        (
            {"class_token": False, "global_pool": "avg", "fc_norm": False},
            {"class_token": False, "num_prefix_tokens": 0},
        ),
        ({"pos_embed": "none"}, {"pos_embed_type": "none", "pos_embed": None}),
    ],
)
def test_infers_the_switches(timm_kwargs, inferred):
    reference = random_timm("vit_tiny_patch16_224", img_size=32, **timm_kwargs)
    ours = ti.from_timm("vit_tiny_patch16_224", reference)
    for attr, value in inferred.items():
        assert getattr(ours, attr) == value
    assert_same_outputs(reference, ours, torch.randn(2, 3, 32, 32))


def test_qkv_bias_inferred():
    reference = random_timm("vit_tiny_patch16_224", img_size=32, qkv_bias=False)
    ours = ti.from_timm("vit_tiny_patch16_224", reference)
    assert ours.blocks[0].attn.qkv.bias is None
    assert_same_outputs(reference, ours, torch.randn(1, 3, 32, 32))


def test_384_variant_maps_to_our_224_builder():
    # timm's *_384 models are the same network with a 24x24 position grid.
    reference = random_timm("vit_tiny_patch16_384", dynamic_img_size=True)
    ours = ti.from_timm("vit_tiny_patch16_384", reference)
    assert ours.img_size == 384 and ours.grid_size == (24, 24)
    assert_same_outputs(reference, ours, torch.randn(1, 3, 96, 96))


def test_refuses_what_we_do_not_build():
    # timm's default average pooling puts a LayerNorm after the pool (fc_norm): not ours.
    reference = random_timm(
        "vit_tiny_patch16_224", img_size=32, class_token=False, global_pool="avg"
    )
    with pytest.raises(ModelArgumentError, match=r"missing \['norm.bias', .*unexpected.*fc_norm"):
        ti.from_timm("vit_tiny_patch16_224", reference)


def test_errors_name_the_problem():
    with pytest.raises(
        ModelArgumentError, match=r"no timm converter for 'deit_tiny_patch16'.*mean"
    ):
        ti.from_timm("deit_tiny_patch16", {})
    with pytest.raises(ModelArgumentError, match="have no 'head.weight'; is this a timm"):
        ti.from_timm("vit_tiny_patch16_224", {"cls_token": torch.zeros(1, 1, 192)})
    small = random_timm("vit_tiny_patch16_224", img_size=32).state_dict()
    with pytest.raises(ModelArgumentError, match="do not fit visionzoo vit_small_patch16_224"):
        ti.from_timm("vit_small_patch16_224", small)  # a ViT-Ti is not a ViT-S
    with pytest.raises(ModelArgumentError, match="dist_token"):
        ti.from_timm("deit_tiny_distilled_patch16_224", small)
    with pytest.raises(ModelArgumentError, match="depth"):
        ti.from_timm("vit_tiny_patch16_224", small, depth=6)


def test_torchvision_converter_shares_the_machinery():
    # The refactor into interop._common keeps torchvision's public API.
    assert tvi.TvSpec is ti.SPECS["vit_tiny_patch16_224"].__class__
    assert {"vit_b_16", "vit_b_32", "resnet50"} <= set(tvi.supported_models())
    with pytest.raises(ModelArgumentError, match="no torchvision converter for 'vit_b16'"):
        tvi.from_torchvision("vit_b16", {})
    key = "encoder.layers.encoder_layer_3.self_attention.in_proj_weight"
    value = torch.zeros(3, 1)
    converted = tvi.convert_state_dict("vit_b_16", {key: value, "heads.head.bias": value})
    assert list(converted) == ["blocks.3.attn.qkv.weight", "head.bias"]
    assert converted["blocks.3.attn.qkv.weight"] is value
