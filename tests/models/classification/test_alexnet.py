"""AlexNet (NeurIPS 2012): torchvision parity, the paper's switches, the Classifier interface."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from tests.conftest import TOLERANCES
from visionzoo.errors import ModelArgumentError
from visionzoo.interop.torchvision import from_torchvision
from visionzoo.models.classification import alexnet as A
from visionzoo.registry import create_model, get_model_entry, list_models

PUBLISHED_PARAMS = 61_100_840  # torchvision's AlexNet at 1000 classes


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def fill_random(model: nn.Module) -> nn.Module:
    """He-uniform weights and random biases, so outputs are O(1) and a wrong mapping shows."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                bound = (6.0 / m.weight[0].numel()) ** 0.5
                m.weight.uniform_(-bound, bound)
                m.bias.uniform_(-0.1, 0.1)
    return model


@pytest.fixture(scope="module")
def reference() -> nn.Module:
    torch.manual_seed(0)
    # Built on the meta device and filled once: 3x cheaper than PyTorch's default init.
    with torch.device("meta"):
        model = torchvision.models.alexnet(weights=None)
    return fill_random(model.to_empty(device="cpu")).eval()


@pytest.fixture(scope="module")
def ours(reference) -> A.AlexNet:
    return from_torchvision("alexnet", reference)


def with_weights(reference: nn.Module, **kwargs) -> A.AlexNet:
    """A switched AlexNet holding ``reference``'s weights (same keys whatever the switches)."""
    with torch.device("meta"):
        model = A.AlexNet(**kwargs)
    model.load_state_dict(reference.state_dict(), assign=True)  # strict: every key must fit
    return model.eval()


# --- parity with torchvision ---------------------------------------------------------------------


def test_parity_with_torchvision(reference, ours):
    assert isinstance(ours, A.AlexNet)
    assert set(ours.state_dict()) == set(reference.state_dict())
    assert n_params(ours) == n_params(reference) == PUBLISHED_PARAMS
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    assert got.shape == expected.shape == (2, 1000)
    assert expected.std() > 0.1  # large enough for the absolute tolerance to mean something
    assert (got - expected).abs().max().item() <= TOLERANCES["parity_fp32"]


def test_registered():
    assert "alexnet" in list_models("classification")
    entry = get_model_entry("alexnet")
    assert entry.family == "alexnet" and entry.model_class is A.AlexNet
    assert {"lrn", "overlapping_pool", "act_layer", "dropout"} <= set(entry.arguments())


# --- switches ------------------------------------------------------------------------------------


def test_lrn_switch_places_lrn_after_conv1_and_conv2(reference, ours):
    assert not any(isinstance(m, nn.LocalResponseNorm) for m in ours.modules())
    model = with_weights(reference, lrn=True)  # same keys: torchvision weights load
    lrns = [m for m in model.modules() if isinstance(m, nn.LocalResponseNorm)]
    assert len(lrns) == 2
    for i in (1, 4):  # after the activation of conv1 (features.0) and conv2 (features.3)
        act_norm = model.features[i]
        assert isinstance(act_norm[0], nn.ReLU) and isinstance(act_norm[1], nn.LocalResponseNorm)
        assert isinstance(model.features[i + 1], nn.MaxPool2d)
    assert (lrns[0].size, lrns[0].k, lrns[0].beta) == (5, 2.0, 0.75)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (model(x) - ours(x)).abs().max().item() > 1e-3


def test_lrn_is_the_papers_formula():
    # §3.3: b_i = a_i / (k + alpha * sum_{j=max(0,i-n/2)}^{min(C-1,i+n/2)} a_j^2) ** beta
    a = torch.randn(2, 9, 4, 5) * 30  # large activations so the normaliser matters
    k, n, alpha, beta = 2.0, 5, 1e-4, 0.75
    sq = a.pow(2)
    expected = torch.empty_like(a)
    for i in range(a.shape[1]):
        lo, hi = max(0, i - n // 2), min(a.shape[1] - 1, i + n // 2)
        expected[:, i] = a[:, i] / (k + alpha * sq[:, lo : hi + 1].sum(1)) ** beta
    got = A.paper_lrn()(a)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5)
    # Passing the paper's alpha straight to PyTorch (which divides it by n) is measurably wrong.
    caffe_style = nn.LocalResponseNorm(n, alpha=alpha, beta=beta, k=k)(a)
    assert not torch.allclose(caffe_style, expected, rtol=1e-2, atol=1e-3)


def test_overlapping_pool_switch(reference, ours):
    pools = [m for m in ours.features if isinstance(m, nn.MaxPool2d)]
    assert [(p.kernel_size, p.stride) for p in pools] == [(3, 2)] * 3
    plain = with_weights(reference, overlapping_pool=False)
    pools = [m for m in plain.features if isinstance(m, nn.MaxPool2d)]
    assert [(p.kernel_size, p.stride) for p in pools] == [(2, 2)] * 3
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        fa, fb = ours.forward_features(x), plain.forward_features(x)
    # Both poolings give the paper's 55 -> 27 -> 13 -> 6 maps at 224, with different values.
    assert fa.shape == fb.shape == (1, 256, 6, 6)
    assert (fa - fb).abs().max().item() > 1e-4


def test_act_layer_switch(reference, ours):
    tanh = with_weights(reference, act_layer=nn.Tanh)
    assert sum(isinstance(m, nn.Tanh) for m in tanh.modules()) == 7  # 5 convs + FC6 + FC7
    assert not any(isinstance(m, nn.ReLU) for m in tanh.modules())
    with torch.device("meta"):
        by_name = A.AlexNet(act_layer="tanh")
    assert sum(isinstance(m, nn.Tanh) for m in by_name.modules()) == 7
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (tanh(x) - ours(x)).abs().max().item() > 1e-4


def test_dropout_switch(reference):
    model = with_weights(reference, dropout=0.0).train()
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.0, 0.0]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), model.eval()(x), atol=1e-6)
        heavy = with_weights(reference, dropout=0.9).train()
        assert [m.p for m in heavy.modules() if isinstance(m, nn.Dropout)] == [0.9, 0.9]
        assert not torch.allclose(heavy(x), heavy.eval()(x), atol=1e-6)


# --- the Classifier interface --------------------------------------------------------------------


def test_features_then_head_is_forward(ours):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = ours.forward_features(x)
        assert feats.shape == (2, 256, 1, 1)
        assert torch.equal(ours.forward_head(feats), ours(x))
        assert ours.forward_head(feats, pre_logits=True).shape == (2, ours.num_features)
    assert ours.num_features == 4096 and ours.num_classes == 1000


def test_reset_classifier_and_backward():
    model = A.AlexNet(num_classes=7, in_chans=1, dropout=0.0)
    model.reset_classifier(5)
    assert model.num_classes == 5
    x = torch.randn(2, 1, 96, 80)  # one channel, non-square, non-224
    out = model(x)
    assert out.shape == (2, 5)
    out.logsumexp(1).sum().backward()
    assert model.features[0].weight.grad is not None
    assert model.features[0].weight.grad.abs().sum() > 0
    assert model.classifier[-1].weight.grad.shape == (5, 4096)


@pytest.mark.parametrize("size", [(63, 63), (100, 150)])
def test_other_input_sizes(ours, size):
    with torch.no_grad():
        assert ours(torch.randn(1, 3, *size)).shape == (1, 1000)


# --- bad arguments -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
        ({"dropout": "high"}, "dropout"),
        ({"num_classes": 0}, "num_classes"),
        ({"in_chans": 2.5}, "in_chans"),
        ({"lrn": "yes"}, "lrn"),
        ({"overlapping_pool": 1}, "overlapping_pool"),
        ({"act_layer": "swish"}, "act_layer.*'relu'"),
        ({"act_layer": 3}, "act_layer"),
        ({"act_layer": torch.relu}, "act_layer"),  # a function, not a module factory
        ({"depth": 8}, "depth.*valid arguments"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ModelArgumentError, match=match):
        create_model("alexnet", **kwargs)


def test_reset_classifier_rejects_bad_size(ours):
    with pytest.raises(ModelArgumentError, match="num_classes"):
        ours.reset_classifier(-1)
