"""MobileNet v1 (arXiv:1704.04861) and v2 (arXiv:1801.04381): published sizes and costs,
torchvision parity for v2, the papers' switches, the Classifier interface."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models._utils import _make_divisible as tv_make_divisible

from tests.conftest import TOLERANCES
from visionzoo.errors import ModelArgumentError
from visionzoo.interop.torchvision import from_torchvision
from visionzoo.models.classification import mobilenet as M
from visionzoo.registry import create_model, get_model_entry, list_models

V2_PARAMS = 3_504_872  # torchvision's mobilenet_v2, 1000 classes


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def macs(model: nn.Module, size: int = 224) -> float:
    """Multiply-adds of one image (FlopCounterMode counts conv/matmul FLOPs = 2 x MACs)."""
    with torch.device("meta"), FlopCounterMode(display=False) as counter:
        model.eval()(torch.empty(1, 3, size, size))
    return counter.get_total_flops() / 2


def meta_model(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):  # counting parameters and MACs needs shapes only
        return create_model(name, **kwargs)


def fill_random(model: nn.Module) -> nn.Module:
    """Random BN statistics and affine parameters so that eval-mode BN is really tested."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
    return model


def with_weights(reference: nn.Module, **kwargs) -> M.MobileNetV2:
    """A switched MobileNetV2 with ``reference``'s weights (strict load: every key must fit)."""
    model = M.MobileNetV2(**kwargs)
    model.load_state_dict(reference.state_dict())
    return model.eval()


@pytest.fixture(scope="module")
def v2_reference() -> nn.Module:
    torch.manual_seed(0)
    return fill_random(torchvision.models.mobilenet_v2(weights=None)).eval()


def rel_err(value: float, target: float) -> float:
    return abs(value - target) / target


# --- MobileNet v1: the paper's figures -----------------------------------------------------------


def v1_params_formula(alpha: float = 1.0, num_classes: int = 1000) -> int:
    """Parameters of v1 counted from Table 1 by hand: convs without bias, BN weight + bias."""
    c = M.make_divisible(32 * alpha)
    total = 3 * 9 * c + 2 * c  # stem
    for width, _ in M.MOBILENET_V1_LAYOUT:
        out = M.make_divisible(width * alpha)
        total += 9 * c + 2 * c  # depthwise 3x3 + BN
        total += c * out + 2 * out  # pointwise 1x1 + BN
        c = out
    return total + c * num_classes + num_classes


def test_v1_params_and_macs_match_the_paper():
    model = meta_model("mobilenet_v1")
    assert n_params(model) == v1_params_formula() == 4_231_976
    assert rel_err(n_params(model), 4.2e6) < 0.01  # Table 8: 4.2M
    # Table 8: 569M mult-adds.
    assert rel_err(macs(model), 569e6) <= TOLERANCES["published_macs_rel"]


@pytest.mark.parametrize(
    ("alpha", "paper_params_m", "paper_macs_m"),
    [(0.75, 2.6, 325), (0.5, 1.3, 149), (0.25, 0.5, 41)],  # Table 6
)
def test_v1_width_multiplier_table6(alpha, paper_params_m, paper_macs_m):
    model = meta_model("mobilenet_v1", width_mult=alpha)
    assert n_params(model) == v1_params_formula(alpha)
    assert round(n_params(model) / 1e6, 1) == paper_params_m  # the paper's precision
    assert rel_err(macs(model), paper_macs_m * 1e6) <= TOLERANCES["published_macs_rel"]


@pytest.mark.parametrize(("size", "paper_macs_m"), [(192, 418), (160, 290), (128, 186)])
def test_v1_resolution_multiplier_is_the_input_size(size, paper_macs_m):
    # Table 7: rho = 0.857, 0.714, 0.571 are inputs of 192, 160, 128.
    model = meta_model("mobilenet_v1")
    assert rel_err(macs(model, size), paper_macs_m * 1e6) <= TOLERANCES["published_macs_rel"]


def test_v1_full_convolution_baseline_table4():
    full = meta_model("mobilenet_v1", depthwise_separable=False)
    sep = meta_model("mobilenet_v1")
    assert rel_err(n_params(full), 29.3e6) < 0.01  # Table 4: Conv MobileNet, 29.3M
    assert rel_err(macs(full), 4866e6) <= TOLERANCES["published_macs_rel"]  # 4866M
    assert not any(isinstance(m, M.DepthwiseSeparableConv) for m in full.modules())
    assert all(m.groups == 1 for m in full.modules() if isinstance(m, nn.Conv2d))
    assert macs(full) / macs(sep) > 8  # §3.1: "8 to 9 times less computation"


def test_v1_layout():
    model = meta_model("mobilenet_v1")
    blocks = [m for m in model.features if isinstance(m, M.DepthwiseSeparableConv)]
    assert len(blocks) == 13
    for block in blocks:
        dw, pw = block.dw[0], block.pw[0]
        assert dw.kernel_size == (3, 3) and dw.groups == dw.in_channels == dw.out_channels
        assert pw.kernel_size == (1, 1) and pw.groups == 1
        assert isinstance(block.dw[1], nn.BatchNorm2d) and isinstance(block.pw[2], nn.ReLU)
    assert [b.dw[0].stride[0] for b in blocks].count(2) == 4  # plus the stem: /32
    feats = model.forward_features(torch.empty(1, 3, 224, 224, device="meta"))
    assert feats.shape == (1, 1024, 7, 7)  # the 13th block has stride 1 (Table 1 typo)
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == 27  # stem + 2 x 13


def test_v1_act_layer_switch():
    relu6 = meta_model("mobilenet_v1", act_layer=nn.ReLU6)
    assert sum(type(m) is nn.ReLU6 for m in relu6.modules()) == 27
    assert not any(type(m) is nn.ReLU for m in relu6.modules())
    by_name = meta_model("mobilenet_v1", act_layer="relu6")
    assert sum(type(m) is nn.ReLU6 for m in by_name.modules()) == 27


# --- MobileNet v2: parity with torchvision -------------------------------------------------------


def check_v2_parity(reference: nn.Module, ours: nn.Module) -> None:
    assert isinstance(ours, M.MobileNetV2)
    assert list(ours.state_dict()) == list(reference.state_dict())  # same keys, same order
    assert n_params(ours) == n_params(reference)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    assert got.shape == expected.shape
    assert expected.std() > 1e-2
    assert (got - expected).abs().max().item() <= TOLERANCES["parity_fp32"]


def test_v2_parity_with_torchvision(v2_reference):
    ours = from_torchvision("mobilenet_v2", v2_reference)
    check_v2_parity(v2_reference, ours)
    assert n_params(ours) == V2_PARAMS


def test_v2_parity_half_width():
    reference = fill_random(torchvision.models.mobilenet_v2(weights=None, width_mult=0.5)).eval()
    ours = from_torchvision("mobilenet_v2", reference, width_mult=0.5)
    check_v2_parity(reference, ours)


def test_v2_wide_layout_matches_torchvision():
    with torch.device("meta"):
        reference = torchvision.models.mobilenet_v2(weights=None, width_mult=1.4)
    ours = meta_model("mobilenet_v2", width_mult=1.4)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }
    assert ours.num_features == 1792  # 1280 * 1.4


def test_make_divisible_is_torchvision_rule():
    values = [c * a for c in (16, 24, 32, 64, 96, 160, 320, 1280) for a in (0.1, 0.35, 0.75, 1.3)]
    values += [1, 3.2, 11, 12, 20, 99.9]
    assert [M.make_divisible(v) for v in values] == [tv_make_divisible(v, 8) for v in values]
    assert M.make_divisible(11) == 16  # 8 would lose more than 10%


def test_v2_registered():
    assert {"mobilenet_v1", "mobilenet_v2"} <= set(list_models("classification"))
    args = set(get_model_entry("mobilenet_v2").arguments())
    assert {"width_mult", "linear_bottleneck", "residual", "act_layer", "dropout"} <= args
    args = set(get_model_entry("mobilenet_v1").arguments())
    assert {"width_mult", "depthwise_separable", "act_layer"} <= args


# --- MobileNet v2: switches ----------------------------------------------------------------------


def blocks(model: nn.Module) -> list[M.InvertedResidual]:
    return [m for m in model.modules() if isinstance(m, M.InvertedResidual)]


def test_v2_linear_bottleneck_switch(v2_reference):
    linear = with_weights(v2_reference)
    nonlinear = with_weights(v2_reference, linear_bottleneck=False)  # same keys
    assert all(isinstance(b.conv[-1], nn.BatchNorm2d) for b in blocks(linear))
    assert all(isinstance(b.conv[-1], nn.ReLU6) for b in blocks(nonlinear))
    assert all(isinstance(b.conv[-2], nn.BatchNorm2d) for b in blocks(nonlinear))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (linear(x) - nonlinear(x)).abs().max().item() > 1e-3
        # The projection of the non-linear bottleneck never goes negative.
        assert nonlinear.features[1](nonlinear.features[0](x)).min() >= 0


def test_v2_residual_switch(v2_reference):
    with_res = with_weights(v2_reference)
    plain = with_weights(v2_reference, residual=False)
    # Table 2: stride-1 repeats with unchanged width (24:1, 32:2, 64:3, 96:2, 160:2).
    assert sum(b.use_res_connect for b in blocks(with_res)) == 10
    assert not any(b.use_res_connect for b in blocks(plain))
    x = torch.randn(1, 24, 16, 16)
    a, b = with_res.features[3], plain.features[3]  # second 24-channel block, stride 1
    with torch.no_grad():
        assert torch.allclose(a(x), x + a.conv(x))
        assert torch.allclose(b(x), b.conv(x))
        img = torch.randn(1, 3, 64, 64)
        assert (with_res(img) - plain(img)).abs().max().item() > 1e-3


def test_v2_act_layer_switch():
    default = meta_model("mobilenet_v2")
    relu = meta_model("mobilenet_v2", act_layer=nn.ReLU)
    # stem + last conv + 1 for the t=1 block + 2 for each of the 16 others
    assert sum(type(m) is nn.ReLU6 for m in default.modules()) == 35
    assert sum(type(m) is nn.ReLU for m in relu.modules()) == 35
    assert not any(type(m) is nn.ReLU6 for m in relu.modules())


def test_v2_macs_match_the_paper():
    # Table 4: 300M mult-adds at 224x224 for alpha = 1 and 585M for alpha = 1.4; the released
    # TF-slim checkpoints list 59M for alpha = 0.35 and 97M for alpha = 0.5.
    assert rel_err(macs(meta_model("mobilenet_v2")), 300e6) <= TOLERANCES["published_macs_rel"]
    for alpha, paper in ((0.35, 59e6), (0.5, 97e6), (1.4, 585e6)):
        model = meta_model("mobilenet_v2", width_mult=alpha)
        assert rel_err(macs(model), paper) <= TOLERANCES["published_macs_rel"]


def test_v2_width_multiplier():
    half = meta_model("mobilenet_v2", width_mult=0.5)
    assert n_params(half) < 0.6 * V2_PARAMS
    assert half.features[0][0].out_channels == 16
    assert half.num_features == 1280  # §4: the last conv is not thinned


def test_v2_dropout_default():
    model = meta_model("mobilenet_v2")
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.2]


# --- the Classifier interface, both versions -----------------------------------------------------


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2"])
def test_features_then_head_is_forward(name):
    model = create_model(name, width_mult=0.25).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, model.num_features, 2, 2)
        assert torch.equal(model.forward_head(feats), model(x))
        assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2"])
def test_reset_classifier_in_chans_sizes_and_backward(name):
    model = create_model(name, width_mult=0.25, in_chans=1, num_classes=10)
    model.reset_classifier(4)
    assert model.num_classes == 4
    for size in [(32, 32), (57, 83), (96, 96)]:
        assert model(torch.randn(2, 1, *size)).shape == (2, 4)
    model(torch.randn(2, 1, 48, 48)).logsumexp(1).sum().backward()
    assert model.features[0][0].weight.grad.abs().sum() > 0
    assert model.classifier[-1].weight.grad.shape == (4, model.num_features)


# --- bad arguments -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2"])
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"width_mult": 0}, "width_mult must be a positive number"),
        ({"width_mult": -0.5}, "width_mult"),
        ({"width_mult": float("nan")}, "width_mult"),
        ({"width_mult": "wide"}, "width_mult"),
        ({"dropout": 1.0}, "dropout"),
        ({"act_layer": "gelu"}, "act_layer.*'relu6'"),
        ({"act_layer": nn.Linear}, "act_layer"),  # needs arguments
        ({"num_classes": 0}, "num_classes"),
        ({"in_chans": 0}, "in_chans"),
        ({"depthwise_separable_typo": True}, "valid arguments"),
    ],
)
def test_bad_arguments(name, kwargs, match):
    with pytest.raises(ModelArgumentError, match=match):
        create_model(name, **kwargs)


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("mobilenet_v1", {"depthwise_separable": 0}, "depthwise_separable"),
        ("mobilenet_v2", {"linear_bottleneck": "no"}, "linear_bottleneck"),
        ("mobilenet_v2", {"residual": None}, "residual"),
        ("mobilenet_v2", {"depthwise_separable": False}, "valid arguments"),
    ],
)
def test_bad_switches(name, kwargs, match):
    with pytest.raises(ModelArgumentError, match=match):
        create_model(name, **kwargs)
