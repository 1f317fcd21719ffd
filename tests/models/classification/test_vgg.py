"""VGG (arXiv:1409.1556): torchvision parity, the paper's layout and switches, the interface."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from tests.conftest import TOLERANCES
from visionzoo.errors import ModelArgumentError
from visionzoo.interop.torchvision import from_torchvision
from visionzoo.models.classification import vgg as V
from visionzoo.registry import create_model, get_model_entry, list_models

# torchvision's published parameter counts (1000 classes).
PUBLISHED_PARAMS = {
    "vgg11": 132_863_336,
    "vgg11_bn": 132_868_840,
    "vgg13": 133_047_848,
    "vgg13_bn": 133_053_736,
    "vgg16": 138_357_544,
    "vgg16_bn": 138_365_992,
    "vgg19": 143_667_240,
    "vgg19_bn": 143_678_248,
}
CONVS = {11: 8, 13: 10, 16: 13, 19: 16}  # Table 1: weight layers = convs + 3 FC


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def fill_random(model: nn.Module) -> nn.Module:
    """He-uniform weights, random biases and random BN statistics and affine parameters, so that
    outputs are O(1), eval-mode BN is really exercised and a wrong mapping shows."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                bound = (6.0 / m.weight[0].numel()) ** 0.5
                m.weight.uniform_(-bound, bound)
                m.bias.uniform_(-0.1, 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
                m.num_batches_tracked.zero_()
    return model


def random_reference(name: str) -> nn.Module:
    # Built on the meta device and filled once: far cheaper than torchvision's double init of
    # the 103M-weight FC6.
    with torch.device("meta"):
        model = getattr(torchvision.models, name)(weights=None)
    return fill_random(model.to_empty(device="cpu")).eval()


def with_weights(reference: nn.Module, **kwargs) -> V.VGG:
    """A switched VGG sharing ``reference``'s weights (strict load: every key must fit)."""
    with torch.device("meta"):
        model = V.VGG(**kwargs)
    model.load_state_dict(reference.state_dict(), assign=True)
    return model.eval()


@pytest.fixture(scope="module")
def vgg11_pair() -> tuple[nn.Module, V.VGG]:
    torch.manual_seed(0)
    reference = random_reference("vgg11")
    return reference, from_torchvision("vgg11", reference)


# --- parity with torchvision ---------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_layout_matches_torchvision(name):
    with torch.device("meta"):
        reference = getattr(torchvision.models, name)(weights=None)
        ours = create_model(name)
    assert isinstance(ours, V.VGG)
    ours_shapes = {k: v.shape for k, v in ours.state_dict().items()}
    assert ours_shapes == {k: v.shape for k, v in reference.state_dict().items()}
    assert n_params(ours) == n_params(reference) == PUBLISHED_PARAMS[name]


def check_parity(reference: nn.Module, ours: nn.Module) -> None:
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    assert got.shape == expected.shape == (1, 1000)
    assert expected.std() > 0.1  # large enough for the absolute tolerance to mean something
    assert (got - expected).abs().max().item() <= TOLERANCES["parity_fp32"]
    assert n_params(ours) == n_params(reference)


def test_parity_vgg11(vgg11_pair):
    check_parity(*vgg11_pair)


@pytest.mark.parametrize("name", ["vgg11_bn", "vgg16"])
def test_parity_with_torchvision(name):
    reference = random_reference(name)
    ours = from_torchvision(name, reference)
    assert ours.batch_norm == name.endswith("_bn")
    check_parity(reference, ours)


def test_registered():
    assert set(PUBLISHED_PARAMS) <= set(list_models("classification"))
    entry = get_model_entry("vgg16_bn")
    assert entry.family == "vgg" and entry.model_class is V.VGG
    assert {"batch_norm", "dropout", "num_classes", "in_chans"} <= set(entry.arguments())


# --- the paper's layout and the switches ---------------------------------------------------------


@pytest.mark.parametrize("depth", sorted(CONVS))
def test_table1_layout(depth):
    with torch.device("meta"):
        model = V.VGG(depth=depth)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(convs) == CONVS[depth] and len(convs) + len(linears) == depth
    assert all((c.kernel_size, c.stride, c.padding) == ((3, 3), (1, 1), (1, 1)) for c in convs)
    pools = [m for m in model.modules() if isinstance(m, nn.MaxPool2d)]
    assert [(p.kernel_size, p.stride) for p in pools] == [(2, 2)] * 5
    assert [lin.out_features for lin in linears] == [4096, 4096, 1000]
    # 224 -> 7 after five poolings, so the adaptive pool is the identity there.
    assert model.forward_features(torch.empty(1, 3, 224, 224)).shape == (1, 512, 7, 7)


def test_batch_norm_switch():
    with torch.device("meta"):
        bn = create_model("vgg11", batch_norm=True)
        plain = create_model("vgg11_bn", batch_norm=False)
        ref_plain = create_model("vgg11")
    assert sum(isinstance(m, nn.BatchNorm2d) for m in bn.modules()) == 8
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    assert set(plain.state_dict()) == set(ref_plain.state_dict())


def test_dropout_switch(vgg11_pair):
    reference, _ = vgg11_pair
    x = torch.randn(1, 3, 32, 32)
    off = with_weights(reference, depth=11, dropout=0.0).train()
    assert [m.p for m in off.modules() if isinstance(m, nn.Dropout)] == [0.0, 0.0]
    heavy = with_weights(reference, depth=11, dropout=0.9).train()
    assert [m.p for m in heavy.modules() if isinstance(m, nn.Dropout)] == [0.9, 0.9]
    with torch.no_grad():
        assert torch.allclose(off(x), off.eval()(x), atol=1e-6)
        assert not torch.allclose(heavy(x), heavy.eval()(x), atol=1e-6)


# --- the Classifier interface --------------------------------------------------------------------


def test_features_then_head_is_forward(vgg11_pair):
    _, ours = vgg11_pair
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = ours.forward_features(x)
        assert feats.shape == (1, 512, 2, 2)
        assert torch.equal(ours.forward_head(feats), ours(x))
        assert ours.forward_head(feats, pre_logits=True).shape == (1, ours.num_features)
    assert ours.num_features == 4096 and ours.num_classes == 1000


@pytest.mark.parametrize("size", [(32, 32), (48, 80)])
def test_other_input_sizes(vgg11_pair, size):
    _, ours = vgg11_pair
    with torch.no_grad():
        assert ours(torch.randn(1, 3, *size)).shape == (1, 1000)


def test_reset_classifier_and_backward(vgg11_pair):
    model = with_weights(vgg11_pair[0], depth=11, dropout=0.0).train()  # a copy we may change
    model.reset_classifier(3)
    assert model.num_classes == 3
    out = model(torch.randn(2, 3, 32, 40))
    assert out.shape == (2, 3)
    out.logsumexp(1).sum().backward()
    assert model.features[0].weight.grad.abs().sum() > 0
    assert model.classifier[-1].weight.grad.shape == (3, 4096)


def test_in_chans():
    with torch.device("meta"):  # shapes only: the layout is what in_chans changes
        model = create_model("vgg13_bn", in_chans=1, num_classes=5)
        assert model(torch.empty(2, 1, 64, 64)).shape == (2, 5)
    assert model.features[0].weight.shape == (64, 1, 3, 3)


# --- bad arguments -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"depth": 12}, "depth must be one of 11, 13, 16, 19"),
        ({"depth": "16"}, "depth"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.5}, "dropout"),
        ({"batch_norm": "true"}, "batch_norm"),
        ({"num_classes": 0}, "num_classes"),
        ({"in_chans": -3}, "in_chans"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ModelArgumentError, match=match):
        V.VGG(**kwargs)


def test_builder_rejects_bad_arguments(vgg11_pair):
    with pytest.raises(ModelArgumentError, match="dropout"):
        create_model("vgg16", dropout=1.5)
    with pytest.raises(ModelArgumentError, match="depth"):
        create_model("vgg11", depth=13)  # the depth is the builder's name
    with pytest.raises(ModelArgumentError, match="num_classes"):
        vgg11_pair[1].reset_classifier(0)
