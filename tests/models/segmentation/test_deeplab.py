"""DeepLab v1/v2/v3: torchvision parity for v3 (with the aux head), the papers' switches,
and DeepLab-LargeFOV's parameter count against Table 2 of arXiv:1412.7062."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import visionzoo as vz
from tests.conftest import TOLERANCES
from visionzoo.errors import ModelArgumentError
from visionzoo.interop.torchvision import from_torchvision
from visionzoo.models.outputs import AuxOutput
from visionzoo.models.segmentation import deeplab as D


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def randomise_bn(model: nn.Module, x: torch.Tensor) -> None:
    """Random BN affine parameters, and running statistics measured on ``x``.

    Neither stays at the 0/1 defaults that would hide a wrong mapping; measured statistics
    (rather than drawn ones) keep a 101-layer network's activations in range.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for m in bns:
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0.0, 0.1)
            m.momentum = 1.0  # running stats := this batch's
        model.train()
        model(x)
        model.eval()
        for m in bns:
            m.momentum = 0.1


def _conv_geometry(model: nn.Module) -> dict[str, tuple]:
    return {
        name: (m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation)
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d)
    }


# --- parity with torchvision ---------------------------------------------------------------


@pytest.mark.parametrize("depth", [50, 101])
def test_deeplabv3_parity_with_torchvision_including_aux(depth):
    name = f"deeplabv3_resnet{depth}"
    reference = getattr(torchvision.models.segmentation, name)(
        weights=None, weights_backbone=None, aux_loss=True
    )
    randomise_bn(reference, torch.randn(2, 3, 41, 41))
    ours = from_torchvision(name, reference)
    assert isinstance(ours, D.DeepLabV3) and ours.aux_classifier is not None
    assert not ours.training
    # A small input leaves the ASPP's off-centre taps in the padding, so check every conv's
    # geometry (stride, padding, dilation: backbone and heads) against the reference too.
    assert _conv_geometry(ours) == _conv_geometry(reference)
    x = torch.randn(1, 3, 41, 41)
    with torch.no_grad():
        expected = reference(x)
        got = ours(x)
        got_main, got_aux = ours.forward_with_aux(x)
    tol = TOLERANCES["parity_fp32"]
    assert isinstance(got, torch.Tensor) and got.shape == expected["out"].shape == (1, 21, 41, 41)
    assert (got - expected["out"]).abs().max().item() <= tol
    assert torch.equal(got, got_main)
    assert (got_aux - expected["aux"]).abs().max().item() <= tol
    assert n_params(ours) == n_params(reference)
    # Same names: the state dicts have the same keys, no renames.
    assert set(ours.state_dict()) == set(reference.state_dict())


def test_from_torchvision_without_aux_head():
    reference = torchvision.models.segmentation.deeplabv3_resnet50(
        weights=None, weights_backbone=None, num_classes=5
    )
    ours = from_torchvision("deeplabv3_resnet50", reference)
    assert ours.aux_classifier is None and ours.num_classes == 5
    assert n_params(ours) == n_params(reference)


# --- v3 switches (structure on the meta device: no memory, no compute) ---------------------


def _meta(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return vz.create_model(name, **kwargs)


def _aspp_rates(model: D.DeepLabV3) -> list[int]:
    return [b[0].dilation[0] for b in model.classifier[0].convs if isinstance(b, D.ASPPConv)]


def _stages(model: nn.Module, size: int = 64) -> list[tuple[int, ...]]:
    with torch.no_grad():
        return [
            tuple(t.shape)
            for t in model.backbone.forward_stages(torch.empty(1, 3, size, size, device="meta"))
        ]


def test_output_stride_sets_dilation_and_aspp_rates():
    os8 = _meta("deeplabv3_resnet50")
    os16 = _meta("deeplabv3_resnet50", output_stride=16)
    assert _aspp_rates(os8) == [12, 24, 36] and _aspp_rates(os16) == [6, 12, 18]
    # Feature maps: stride 8 keeps layer3/4 at H/8; stride 16 keeps layer4 at H/16.
    assert [s[-1] for s in _stages(os8)] == [16, 8, 8, 8]
    assert [s[-1] for s in _stages(os16)] == [16, 8, 4, 4]
    assert os8.backbone.layer4[2].conv2.dilation == (4, 4)
    assert os16.backbone.layer4[2].conv2.dilation == (2, 2)
    assert _aspp_rates(_meta("deeplabv3_resnet50", atrous_rates=(3, 5, 7, 9))) == [3, 5, 7, 9]


def test_image_pooling_head_conv_and_multi_grid_switches():
    full = _meta("deeplabv3_resnet50")
    aspp = full.classifier[0]
    assert isinstance(aspp.convs[-1], D.ASPPPooling) and len(aspp.convs) == 5
    assert aspp.project[0].in_channels == 5 * 256
    no_pool = _meta("deeplabv3_resnet50", image_pooling=False).classifier[0]
    assert not any(isinstance(b, D.ASPPPooling) for b in no_pool.convs)
    assert no_pool.project[0].in_channels == 4 * 256
    paper_head = _meta("deeplabv3_resnet50", head_conv=False).classifier
    assert len(paper_head) == 2 and paper_head[1].in_channels == 256
    grid = _meta("deeplabv3_resnet50", output_stride=16, multi_grid=(1, 2, 4))
    assert [b.conv2.dilation[0] for b in grid.backbone.layer4] == [2, 4, 8]  # rate 2 x units
    assert [b.conv2.padding[0] for b in grid.backbone.layer4] == [2, 4, 8]


def test_image_pooling_branch_is_constant_over_space():
    pool = D.ASPPPooling(8, 4).eval()
    out = pool(torch.randn(2, 8, 5, 7))
    assert out.shape == (2, 4, 5, 7)
    assert torch.equal(out, out[:, :, :1, :1].expand_as(out))


def test_aux_loss_training_returns_aux_output():
    model = vz.create_model("deeplabv3_resnet50", num_classes=3, aux_loss=True).train()
    x = torch.randn(2, 3, 33, 33)
    out = model(x)
    assert isinstance(out, AuxOutput) and len(out.aux) == 1
    assert out.logits.shape == out.aux[0].shape == (2, 3, 33, 33)
    (out.logits.mean() + 0.4 * out.aux[0].mean()).backward()
    assert model.aux_classifier[0].weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        assert isinstance(model(x), torch.Tensor)


# --- v2 -----------------------------------------------------------------------------------


def test_deeplabv2_aspp_l_sums_four_class_branches():
    model = _meta("deeplabv2_resnet101")
    head = model.classifier
    assert [c.dilation[0] for c in head.convs] == [6, 12, 18, 24]
    assert all(c.in_channels == 2048 and c.out_channels == 21 for c in head.convs)
    assert [s[-1] for s in _stages(model)] == [16, 8, 8, 8]  # output stride 8
    assert [
        c.dilation[0] for c in _meta("deeplabv2_resnet50", output_stride=16).classifier.convs
    ] == [3, 6, 9, 12]
    aspp_l = D.ASPPL(6, 3, (1, 2))
    x = torch.randn(1, 6, 9, 9)
    assert torch.allclose(aspp_l(x), aspp_l.convs[0](x) + aspp_l.convs[1](x))


def test_deeplabv2_forward_shape():
    model = _meta("deeplabv2_resnet50", num_classes=4).eval()
    with torch.no_grad():
        out = model(torch.empty(1, 3, 41, 35, device="meta"))
    assert out.shape == (1, 4, 41, 35)


# --- v1-LargeFOV --------------------------------------------------------------------------

# arXiv:1412.7062 Table 2: (fc6 kernel, rate, fc6/fc7 channels) -> parameters in millions.
TABLE2 = {
    "DeepLab-CRF-7x7": ((7, 4, 4096), 134.3),
    "DeepLab-CRF": ((4, 4, 4096), 65.1),
    "DeepLab-CRF-4x4": ((4, 8, 4096), 65.1),
    "DeepLab-CRF-LargeFOV": ((3, 12, 1024), 20.5),
}


@pytest.mark.parametrize("variant", list(TABLE2))
def test_deeplabv1_parameter_counts_match_table2(variant):
    (kernel, rate, channels), millions = TABLE2[variant]
    model = _meta("deeplabv1_largefov", fc6_kernel=kernel, fc6_dilation=rate, fc_channels=channels)
    assert round(n_params(model) / 1e6, 1) == millions
    if variant == "DeepLab-CRF-LargeFOV":
        assert n_params(model) == 20_505_429


def test_deeplabv1_is_dense_vgg16_with_output_stride_8():
    model = vz.create_model("deeplabv1_largefov").eval()
    # torchvision's VGG-16 conv weights fit `features` unchanged: same keys and shapes.
    with torch.device("meta"):
        vgg = torchvision.models.vgg16(weights=None)
    shapes = {k: v.shape for k, v in vgg.features.state_dict().items()}
    assert {k: v.shape for k, v in model.features.state_dict().items()} == shapes
    pools = [m for m in model.features if isinstance(m, nn.MaxPool2d)]
    assert [p.stride for p in pools] == [2, 2, 2, 1, 1]
    conv5 = [m for m in model.features[24:] if isinstance(m, nn.Conv2d)]
    assert [c.dilation for c in conv5] == [(2, 2)] * 3
    fc6 = model.classifier[0]
    assert fc6.kernel_size == (3, 3) and fc6.dilation == (12, 12) and fc6.out_channels == 1024
    x = torch.randn(1, 3, 65, 65)
    with torch.no_grad():
        assert model.features(x).shape == (1, 512, 9, 9)  # 65 -> 33 -> 17 -> 9
        assert model(x).shape == (1, 21, 65, 65)


# --- registry and errors ------------------------------------------------------------------


def test_registry_entries():
    names = set(vz.list_models(task="segmentation"))
    expected = {
        "deeplabv1_largefov",
        "deeplabv2_resnet50",
        "deeplabv2_resnet101",
        "deeplabv3_resnet50",
        "deeplabv3_resnet101",
    }
    assert expected <= names
    assert vz.get_model_entry("deeplabv3_resnet101").paper == "arXiv:1706.05587"
    assert vz.get_model_entry("deeplabv1_largefov").family == "deeplab"


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("deeplabv3_resnet50", {"output_stride": 4}, "output_stride must be one of 8, 16"),
        ("deeplabv3_resnet50", {"aux_loss": "yes"}, "aux_loss must be True or False"),
        ("deeplabv3_resnet50", {"atrous_rates": (6, 0)}, "atrous_rates must be a non-empty"),
        ("deeplabv3_resnet50", {"multi_grid": (1, 2)}, "multi_grid must be 3 positive integers"),
        ("deeplabv3_resnet50", {"image_pooling": None}, "image_pooling must be True or False"),
        ("deeplabv2_resnet101", {"output_stride": 32}, "output_stride must be one of 8, 16"),
        ("deeplabv1_largefov", {"fc6_kernel": 4, "fc6_dilation": 3}, "must be even"),
        ("deeplabv1_largefov", {"dropout": -0.1}, "dropout must be a probability"),
        ("deeplabv3_resnet101", {"num_classes": 0}, "num_classes must be a positive integer"),
        ("deeplabv3_resnet50", {"outputstride": 8}, "valid arguments: .*output_stride"),
    ],
)
def test_invalid_arguments_are_named(name, kwargs, match):
    with pytest.raises(ModelArgumentError, match=match):
        _meta(name, **kwargs)
