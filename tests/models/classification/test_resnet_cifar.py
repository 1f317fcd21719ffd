"""The CIFAR-10 ResNets of the paper's Section 4.2 (resnet20 ... resnet110)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import visionzoo as vz
from visionzoo.errors import ModelArgumentError
from visionzoo.models.classification.resnet import BasicBlock, ZeroPadShortcut

# Table 6 of arXiv:1512.03385 (parameters, in millions, rounded as printed).
PAPER_PARAMS_M = {20: 0.27, 32: 0.46, 44: 0.66, 56: 0.85, 110: 1.7}


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("depth", sorted(PAPER_PARAMS_M))
def test_parameter_counts_match_table6(depth):
    m = vz.create_model(f"resnet{depth}")
    assert round(n_params(m) / 1e6, 2 if depth < 100 else 1) == PAPER_PARAMS_M[depth]
    # 6n + 2 weighted layers: one stem conv, 2 convs per block, the classifier.
    convs = [mod for mod in m.modules() if isinstance(mod, nn.Conv2d)]
    assert len(convs) + 1 == depth


def test_shapes_and_interface():
    m = vz.create_model("resnet20", num_classes=7, in_chans=1).eval()
    x = torch.randn(2, 1, 40, 36)
    feats = m.forward_features(x)
    assert feats.shape == (2, 64, 10, 9)  # maps of H, H/2, H/4
    assert torch.equal(m(x), m.forward_head(feats))
    assert m.forward_head(feats, pre_logits=True).shape == (2, 64)
    m.reset_classifier(3)
    assert m(x).shape == (2, 3)


def test_option_a_is_parameter_free_and_plain_net_has_no_additions():
    res = vz.create_model("resnet20")
    plain = vz.create_model("resnet20", shortcut=False)
    assert n_params(res) == n_params(plain)
    assert sum(isinstance(mod, ZeroPadShortcut) for mod in res.modules()) == 2
    assert all(not b.shortcut for b in plain.modules() if isinstance(b, BasicBlock))
    # Option B adds the two 1x1 projections (16->32, 32->64) with their BN.
    proj = vz.create_model("resnet20", shortcut_type="B")
    assert n_params(proj) - n_params(res) == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)


def test_plain_and_residual_differ_in_output():
    torch.manual_seed(0)
    res = vz.create_model("resnet20").eval()
    plain = vz.create_model("resnet20", shortcut=False).eval()
    plain.load_state_dict(res.state_dict())  # same weights, only the additions differ
    x = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(res(x), plain(x))


def test_trains():
    m = vz.create_model("resnet20", num_classes=4)
    loss = nn.functional.cross_entropy(m(torch.randn(4, 3, 16, 16)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert all(p.grad is not None for p in m.parameters())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"shortcut_type": "C"}, "shortcut_type must be one of 'A', 'B'"),
        ({"widths": (16, 32)}, "widths must list 3 channel counts"),
        ({"shortcut": "no"}, "shortcut must be True or False"),
        ({"num_classes": 0}, "num_classes must be a positive integer"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ModelArgumentError, match=match):
        vz.create_model("resnet20", **kwargs)


def test_bad_depth():
    from visionzoo.models.classification.resnet import CifarResNet

    with pytest.raises(ModelArgumentError, match="depth must be 6n\\+2"):
        CifarResNet(21)
