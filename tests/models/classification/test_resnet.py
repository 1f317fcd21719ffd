"""ResNet (arXiv:1512.03385): torchvision parity, the paper's switches, published MACs."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from tests.conftest import TOLERANCES
from visionzoo.errors import ModelArgumentError
from visionzoo.interop.torchvision import from_torchvision
from visionzoo.models.classification import resnet as R
from visionzoo.registry import create_model, get_model_entry

DEPTHS = (18, 34, 50, 101, 152)
# Paper, Table 1 ("FLOPs" there are multiply-adds), v1: stride on the first 1x1.
PAPER_GMACS_V1 = {18: 1.8, 34: 3.6, 50: 3.8, 101: 7.6, 152: 11.3}
# torchvision's published figure for its (v1.5) resnet50.
TORCHVISION_GMACS_RESNET50 = 4.09


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def macs(model: nn.Module, x: torch.Tensor) -> int:
    # FlopCounterMode counts conv/matmul FLOPs = 2 * multiply-adds.
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2


def randomise_bn(model: nn.Module) -> None:
    """Random BN statistics and affine params so that 0/1 defaults cannot hide a wrong mapping."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)


def assert_parity(name: str, reference: nn.Module, x: torch.Tensor, **kwargs) -> R.ResNet:
    reference.eval()
    randomise_bn(reference)
    ours = from_torchvision(name, reference, **kwargs)
    assert isinstance(ours, R.ResNet)
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= TOLERANCES["parity_fp32"]
    assert n_params(ours) == n_params(reference)
    return ours


# --- parity with torchvision -------------------------------------------------------------


@pytest.mark.parametrize("depth", DEPTHS)
def test_parity_with_torchvision(depth):
    reference = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    ours = assert_parity(f"resnet{depth}", reference, torch.randn(1, 3, 64, 64))
    if depth == 50:
        assert n_params(ours) == 25_557_032


def test_parity_dilated_resnet50():
    dil = [False, True, True]
    reference = torchvision.models.resnet50(weights=None, replace_stride_with_dilation=dil)
    x = torch.randn(1, 3, 64, 64)
    ours = assert_parity("resnet50", reference, x, replace_stride_with_dilation=dil)
    assert ours.layer4[0].conv2.dilation == (2, 2) and ours.layer4[1].conv2.dilation == (4, 4)


def test_parity_resnext50_via_groups_and_width():
    # torchvision's ResNeXt is its ResNet with groups/width_per_group: ours must agree.
    reference = torchvision.models.resnext50_32x4d(weights=None)
    assert_parity("resnet50", reference, torch.randn(1, 3, 64, 64), groups=32, width_per_group=4)


# --- the paper's switches ----------------------------------------------------------------


def _projection_params(model: nn.Module) -> int:
    return sum(
        n_params(m.downsample)
        for m in model.modules()
        if isinstance(m, (R.BasicBlock, R.Bottleneck)) and m.downsample is not None
    )


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_plain_network_has_no_shortcuts(name):
    resnet = create_model(name, num_classes=10)
    plain = create_model(name, num_classes=10, shortcut=False)
    assert _projection_params(resnet) > 0
    assert n_params(plain) == n_params(resnet) - _projection_params(resnet)
    assert all(
        m.downsample is None for m in plain.modules() if isinstance(m, (R.BasicBlock, R.Bottleneck))
    )

    def block_equals_branch(model: nn.Module) -> list[bool]:
        # A block's output vs relu(last BN of its branch): equal iff nothing is added. The
        # hooks clone because the block adds its shortcut in place into the BN output.
        captured: dict[str, torch.Tensor] = {}
        hooks = []
        blocks = [model.layer1[0], model.layer2[0], model.layer3[1]]  # identity and projection
        for i, block in enumerate(blocks):
            norm = block.residual_norm()
            hooks.append(
                norm.register_forward_hook(
                    lambda m, a, o, i=i: captured.__setitem__(f"n{i}", o.clone())
                )
            )
            hooks.append(
                block.register_forward_hook(
                    lambda m, a, o, i=i: captured.__setitem__(f"b{i}", o.clone())
                )
            )
        randomise_bn(model)
        with torch.no_grad():
            model.eval()(torch.randn(1, 3, 32, 32))
        for h in hooks:
            h.remove()
        return [
            torch.allclose(captured[f"b{i}"], torch.relu(captured[f"n{i}"]))
            for i in range(len(blocks))
        ]

    assert block_equals_branch(plain) == [True, True, True]
    assert block_equals_branch(resnet) == [False, False, False]


def test_stride_in_1x1_moves_the_stride_keeps_params_changes_macs():
    v15 = create_model("resnet50", num_classes=10)
    v1 = create_model("resnet50", num_classes=10, stride_in_1x1=True)
    for layer in (v15.layer2, v15.layer3, v15.layer4):
        assert layer[0].conv1.stride == (1, 1) and layer[0].conv2.stride == (2, 2)
    for layer in (v1.layer2, v1.layer3, v1.layer4):
        assert layer[0].conv1.stride == (2, 2) and layer[0].conv2.stride == (1, 1)
    # The first block of layer1 has stride 1 either way.
    assert v1.layer1[0].conv1.stride == v1.layer1[0].conv2.stride == (1, 1)
    assert n_params(v1) == n_params(v15)
    x = torch.randn(1, 3, 64, 64)
    assert v1(x).shape == v15(x).shape == (1, 10)
    # The strided 1x1 shrinks the map before the 3x3, so v1 costs less.
    assert macs(v1, x) < macs(v15, x)


def test_published_macs_at_224():
    # Counting on the meta device: shapes only, no arithmetic, so 224x224 is instant.
    measured = {}
    with torch.device("meta"):
        x = torch.empty(1, 3, 224, 224)
        for depth in DEPTHS:
            model = create_model(f"resnet{depth}", stride_in_1x1=True)
            measured[depth] = macs(model, x) / 1e9
        v15 = macs(create_model("resnet50"), x) / 1e9
    for depth, expected in PAPER_GMACS_V1.items():
        rel = abs(measured[depth] - expected) / expected
        assert rel <= TOLERANCES["published_macs_rel"], (depth, measured[depth], expected)
    assert abs(v15 - TORCHVISION_GMACS_RESNET50) / TORCHVISION_GMACS_RESNET50 <= 0.01, v15


def test_option_a_shortcuts_are_parameter_free_zero_padding():
    a = create_model("resnet34", num_classes=10, shortcut_type="A")
    b = create_model("resnet34", num_classes=10)
    plain = create_model("resnet34", num_classes=10, shortcut=False)
    shortcuts = [
        m.downsample
        for m in a.modules()
        if isinstance(m, R.BasicBlock) and m.downsample is not None
    ]
    assert len(shortcuts) == 3  # first block of layers 2-4
    assert all(isinstance(s, R.ZeroPadShortcut) and n_params(s) == 0 for s in shortcuts)
    assert not any(k.split(".")[2] == "downsample" for k in a.state_dict() if k.count(".") > 2)
    assert n_params(a) == n_params(plain) < n_params(b)
    assert a(torch.randn(2, 3, 32, 32)).shape == (2, 10)

    # Bottleneck layer1 widens 64 -> 256 without striding; layer2 also subsamples.
    a50 = create_model("resnet50", num_classes=10, shortcut_type="A")
    assert _projection_params(a50) == 0
    x = torch.randn(2, 256, 7, 7)
    y = a50.layer2[0].downsample(x)
    assert y.shape == (2, 512, 4, 4)
    assert torch.equal(y[:, :256], x[:, :, ::2, ::2])
    assert torch.count_nonzero(y[:, 256:]) == 0


def test_option_c_projects_every_shortcut():
    b = create_model("resnet18", num_classes=10)
    c = create_model("resnet18", num_classes=10, shortcut_type="C")
    blocks = [m for m in c.modules() if isinstance(m, R.BasicBlock)]
    assert all(isinstance(m.downsample, nn.Sequential) for m in blocks) and len(blocks) == 8
    assert n_params(c) > n_params(b)
    assert c(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize(("name", "last"), [("resnet18", "bn2"), ("resnet50", "bn3")])
def test_zero_init_residual(name, last):
    model = create_model(name, num_classes=10, zero_init_residual=True)
    default = create_model(name, num_classes=10)
    for m in model.modules():
        if isinstance(m, (R.BasicBlock, R.Bottleneck)):
            assert torch.count_nonzero(getattr(m, last).weight) == 0
            assert torch.all(m.bn1.weight == 1)
            if m.downsample is not None:
                assert torch.all(m.downsample[1].weight == 1)
    assert torch.all(model.bn1.weight == 1)
    for m in default.modules():
        if isinstance(m, (R.BasicBlock, R.Bottleneck)):
            assert torch.all(getattr(m, last).weight == 1)


def test_forward_stages_and_feature_info():
    model = create_model("resnet50", num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        stages = model.forward_stages(x)
        features = model.forward_features(x)
    assert [tuple(s.shape) for s in stages] == [
        (1, 256, 16, 16),
        (1, 512, 8, 8),
        (1, 1024, 4, 4),
        (1, 2048, 2, 2),
    ]
    assert torch.equal(stages[-1], features)
    for info, s in zip(model.feature_info, stages, strict=True):
        assert info["num_chs"] == s.shape[1] and 64 // info["reduction"] == s.shape[-1]
    assert [i["module"] for i in model.feature_info] == ["layer1", "layer2", "layer3", "layer4"]

    # Output stride 8 (DeepLab): layers 3-4 keep layer2's resolution.
    os8 = create_model("resnet50", replace_stride_with_dilation=(False, True, True))
    assert [i["reduction"] for i in os8.feature_info] == [4, 8, 8, 8]
    with torch.no_grad():
        shapes = [tuple(s.shape[-2:]) for s in os8.eval().forward_stages(x)]
    assert shapes == [(16, 16), (8, 8), (8, 8), (8, 8)]

    basic = create_model("resnet18")
    assert [i["num_chs"] for i in basic.feature_info] == [64, 128, 256, 512]
    assert basic.num_features == 512 and model.num_features == 2048


def test_forward_head_and_backward():
    model = create_model("resnet18", num_classes=7)
    x = torch.randn(2, 3, 32, 32)  # the smallest advertised input
    feats = model.forward_features(x)
    assert feats.shape == (2, 512, 1, 1)
    assert model.forward_head(feats, pre_logits=True).shape == (2, 512)
    logits = model(x)
    assert logits.shape == (2, 7)
    logits.logsumexp(dim=1).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.conv1.weight.grad.abs().sum() > 0


def test_in_chans_and_odd_input_size():
    model = create_model("resnet18", num_classes=5, in_chans=1)
    assert model.conv1.weight.shape == (64, 1, 7, 7)
    assert model(torch.randn(1, 1, 45, 33)).shape == (1, 5)


def test_reset_classifier():
    model = create_model("resnet50")
    model.reset_classifier(10)
    assert model.num_classes == 10 and model.fc.out_features == 10
    assert model.fc.in_features == model.num_features == 2048
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ModelArgumentError, match="num_classes"):
        model.reset_classifier(0)


def test_registry_entries():
    for depth in DEPTHS:
        entry = get_model_entry(f"resnet{depth}")
        assert (entry.task, entry.family, entry.paper) == (
            "classification",
            "resnet",
            "arXiv:1512.03385",
        )
        assert entry.model_class is R.ResNet
        assert {"shortcut", "shortcut_type", "stride_in_1x1"} <= set(entry.arguments())
    with pytest.raises(TypeError):
        R.resnet50(10)  # builders are keyword-only


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("resnet50", {"shortcut_type": "D"}, "shortcut_type"),
        ("resnet50", {"num_classes": 0}, "num_classes"),
        ("resnet18", {"num_classes": -3}, "num_classes"),
        ("resnet18", {"in_chans": 0}, "in_chans"),
        ("resnet18", {"groups": 32}, "groups"),
        ("resnet34", {"width_per_group": 128}, "width_per_group"),
        ("resnet18", {"replace_stride_with_dilation": [False, True, True]}, "Bottleneck"),
        ("resnet50", {"replace_stride_with_dilation": [True, True]}, "replace_stride"),
        ("resnet50", {"shortcut": "false"}, "shortcut"),
        ("resnet50", {"norm_layer": "bn"}, "norm_layer"),
        ("resnet50", {"skip": True}, "valid arguments"),
    ],
)
def test_argument_errors(name, kwargs, match):
    with pytest.raises(ModelArgumentError, match=match):
        create_model(name, **kwargs)


@pytest.mark.parametrize("layers", [(2, 2, 2), (2, 0, 2, 2), (2, 2.0, 2, 2), "2222"])
def test_bad_layers(layers):
    with pytest.raises(ModelArgumentError, match="layers"):
        R.ResNet(R.Bottleneck, layers)


def test_bad_block():
    with pytest.raises(ModelArgumentError, match="block"):
        R.ResNet(nn.Conv2d, (2, 2, 2, 2))
