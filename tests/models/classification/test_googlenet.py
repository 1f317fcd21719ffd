"""GoogLeNet: torchvision parity, the Inception arithmetic, and every switch."""

from __future__ import annotations

import copy
from functools import partial

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from tests.conftest import TOLERANCES
from visionzoo.errors import ModelArgumentError
from visionzoo.interop.torchvision import from_torchvision
from visionzoo.models.classification.googlenet import (
    BasicConv2d,
    GoogLeNet,
    Inception,
    InceptionAux,
    conv_branch,
    googlenet,
)
from visionzoo.models.outputs import AuxOutput
from visionzoo.registry import create_model, get_model_entry

PARITY = TOLERANCES["parity_fp32"]


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def conv_weights(m: nn.Module) -> int:
    return sum(c.weight.numel() for c in m.modules() if isinstance(c, nn.Conv2d))


def macs(m: nn.Module, x: torch.Tensor) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        m(x)
    return counter.get_total_flops() // 2


def tv_reference(aux_logits: bool, **kwargs) -> nn.Module:
    """torchvision GoogLeNet with random weights and random BN running statistics."""
    ref = torchvision.models.googlenet(
        weights=None, aux_logits=aux_logits, init_weights=True, **kwargs
    )
    g = torch.Generator().manual_seed(1)
    for m in ref.modules():
        if isinstance(m, nn.Conv2d):
            # He-scaled weights carry the input's signal to the logits; with torchvision's
            # std-0.01 init the logits would be mostly BN shifts, blind to input-side bugs.
            fan_in = m.weight[0].numel()
            m.weight.data.copy_(torch.randn(m.weight.shape, generator=g) * (2 / fan_in) ** 0.5)
        elif isinstance(m, nn.BatchNorm2d):
            # Non-trivial statistics and affine terms, so a BN mismatch cannot hide.
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return ref.eval()


@pytest.fixture(scope="module")
def tv_aux() -> nn.Module:
    return tv_reference(True)


@pytest.mark.parametrize("aux_logits", [True, False])
def test_parity_with_torchvision_eval(aux_logits: bool, tv_aux: nn.Module):
    ref = tv_aux if aux_logits else tv_reference(False)
    ours = from_torchvision("googlenet", ref)
    assert isinstance(ours, GoogLeNet) and not ours.training
    assert ours.aux_logits is aux_logits and ours.torchvision_compat
    assert n_params(ours) == n_params(ref) == (13_004_888 if aux_logits else 6_624_904)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want, got = ref(x), ours(x)
    assert got.shape == (2, 1000)
    assert (got - want).abs().max().item() <= PARITY


def test_parity_transform_input(tv_aux: nn.Module):
    tv_aux.transform_input = True
    try:
        ours = from_torchvision("googlenet", tv_aux)
        assert ours.transform_input
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            want, got = tv_aux(x), ours(x)
        plain = from_torchvision("googlenet", tv_aux, transform_input=False)
        with torch.no_grad():
            untransformed = plain(x)
    finally:
        tv_aux.transform_input = False
    assert (got - want).abs().max().item() <= PARITY
    # The flag really changes the computation (so the match above is not vacuous).
    assert (untransformed - want).abs().max().item() > 100 * PARITY


def test_parity_training_mode_aux_heads(tv_aux: nn.Module):
    """Training mode (batch statistics, dropout off): logits and both aux heads match."""
    ref = copy.deepcopy(tv_aux)
    for m in ref.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    ours = from_torchvision("googlenet", ref, dropout=0.0, dropout_aux=0.0)
    ref.train()
    ours.train()
    x = torch.randn(2, 3, 64, 64)
    want = ref(x)  # torchvision: (logits, aux_logits2, aux_logits1)
    got = ours(x)
    assert isinstance(got, AuxOutput) and len(got.aux) == 2
    assert (got.logits - want.logits).abs().max().item() <= PARITY
    assert (got.aux[0] - want.aux_logits1).abs().max().item() <= PARITY
    assert (got.aux[1] - want.aux_logits2).abs().max().item() <= PARITY


def test_training_returns_aux_output_and_backprops():
    m = googlenet(num_classes=7).train()
    x = torch.randn(2, 3, 32, 32)
    out = m(x)
    assert isinstance(out, AuxOutput)
    assert out.logits.shape == (2, 7)
    assert [a.shape for a in out.aux] == [(2, 7), (2, 7)]
    loss = out.logits.sum() + 0.3 * (out.aux[0].sum() + out.aux[1].sum())
    loss.backward()
    assert m.aux1.fc2.weight.grad is not None and m.aux2.conv.conv.weight.grad is not None
    assert m.conv1.conv.weight.grad.abs().sum() > 0
    # Eval mode: logits only; without aux heads, training mode gives logits only too.
    assert m.eval()(x).shape == (2, 7)
    plain = googlenet(num_classes=7, aux_logits=False).train()
    assert isinstance(plain(x), torch.Tensor)
    assert plain.aux1 is None and not any(k.startswith("aux") for k in plain.state_dict())


def test_paper_shapes_at_224():
    m = googlenet(num_classes=10).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        feats = m.forward_features(x)
        assert feats.shape == (1, 1024, 7, 7) and m.num_features == 1024
        assert m.forward_head(feats, pre_logits=True).shape == (1, 1024)
        assert m.forward_head(feats).shape == (1, 10)
        # The aux heads' 5x5/3 pool maps the 14x14 4a output to 4x4, as Sec. 5 says.
        x4a = m._stem(x)
        assert x4a.shape == (1, 512, 14, 14)
        pooled = nn.functional.avg_pool2d(x4a, 5, 3)
        assert pooled.shape[-2:] == (4, 4)


def test_builder_parameter_counts():
    assert n_params(googlenet(torchvision_compat=True)) == 13_004_888
    assert n_params(googlenet(torchvision_compat=True, aux_logits=False)) == 6_624_904
    # The paper's true 5x5 branches: 16 extra weights per (reduce, out) pair, 380,928 in all.
    assert n_params(googlenet(aux_logits=False)) == 7_005_832
    assert n_params(googlenet()) == 13_385_816


def test_inception_arithmetic_of_the_notes():
    """5x5 conv 512->64: 819,200 weights; with a 1x1 reduction to 24 first: 50,688."""
    plain_conv = partial(BasicConv2d, batch_norm=False)
    naive = conv_branch(512, 64, 5, reduce_channels=None, conv_block=plain_conv)
    reduced = conv_branch(512, 64, 5, reduce_channels=24, conv_block=plain_conv)
    assert conv_weights(naive) == 819_200
    assert [conv_weights(layer) for layer in reduced] == [12_288, 38_400]
    assert conv_weights(reduced) == 50_688
    # The same holds inside the module the network uses (4b has 24 5x5-reduce, 64 5x5).
    module = Inception(512, 160, 112, 224, 24, 64, 64)
    assert conv_weights(module.branch3) == 50_688
    assert module.branch3[1].conv.kernel_size == (5, 5)


def test_naive_module_widens_and_costs_more():
    kw = {"num_classes": 10, "aux_logits": False}
    reduced, naive = googlenet(**kw).eval(), googlenet(reduce=False, **kw).eval()
    # Fig. 2a: the pool branch passes all input channels through, so widths accumulate.
    widths = [getattr(naive, f"inception{s}").out_channels for s in ("3a", "3b", "4a", "5b")]
    assert widths == [64 + 128 + 32 + 192, 416 + 128 + 192 + 96, 832 + 192 + 208 + 48, 4944]
    assert naive.num_features == 4944 and naive.fc.in_features == 4944
    assert isinstance(naive.inception3a.branch4[-1], nn.MaxPool2d)
    assert len(naive.inception3a.branch2) == 1  # no 1x1 reduction
    assert n_params(naive) > 10 * n_params(reduced)
    x = torch.randn(1, 3, 32, 32)
    assert macs(naive, x) > 5 * macs(reduced, x)  # 7.9x, at 32x32 as at 224x224
    with torch.no_grad():
        assert naive(x).shape == (1, 10)


def test_torchvision_compat_changes_5x5_branch_and_pool4():
    paper, compat = (
        googlenet(aux_logits=False),
        googlenet(aux_logits=False, torchvision_compat=True),
    )
    for name in ("inception3a", "inception4e", "inception5b"):
        assert getattr(paper, name).branch3[1].conv.kernel_size == (5, 5)
        assert getattr(compat, name).branch3[1].conv.kernel_size == (3, 3)
    assert paper.maxpool4.kernel_size == 3 and compat.maxpool4.kernel_size == 2
    assert googlenet(torchvision_compat=True).aux1.paper_pool is False
    assert googlenet().aux1.paper_pool is True


def test_aux_head_pools_as_the_paper_or_as_torchvision():
    x = torch.randn(2, 8, 14, 14)
    paper = InceptionAux(8, 5, dropout=0.0, paper_pool=True).eval()
    tv = InceptionAux(8, 5, dropout=0.0, paper_pool=False).eval()
    with torch.no_grad():  # weights large enough that pooling differences reach the logits
        for p in paper.parameters():
            p.normal_(0.0, 0.2)
    tv.load_state_dict(paper.state_dict())

    def by_hand(pooled: torch.Tensor) -> torch.Tensor:
        h = torch.flatten(paper.conv(pooled), 1)
        return paper.fc2(torch.relu(paper.fc1(h)))

    with torch.no_grad():
        want_paper = by_hand(nn.functional.avg_pool2d(x, 5, 3))  # Sec. 5: 5x5/3 -> 4x4
        want_tv = by_hand(nn.functional.adaptive_avg_pool2d(x, 4))
        assert (paper(x) - want_paper).abs().max().item() <= PARITY
        assert (tv(x) - want_tv).abs().max().item() <= PARITY
        assert (want_paper - want_tv).abs().max().item() > 100 * PARITY
        # Small maps (under 5x5) still work: the adaptive pool takes over.
        assert paper(torch.randn(2, 8, 2, 2)).shape == (2, 5)


def test_batch_norm_off_is_conv_bias_relu():
    m = googlenet(num_classes=5, batch_norm=False, lrn=True)
    assert not any(isinstance(x, nn.BatchNorm2d) for x in m.modules())
    convs = [x for x in m.modules() if isinstance(x, nn.Conv2d)]
    assert convs and all(c.bias is not None for c in convs)
    assert sum(isinstance(x, nn.LocalResponseNorm) for x in m.modules()) == 2
    with_bn = googlenet(num_classes=5)
    assert not any(isinstance(x, nn.LocalResponseNorm) for x in with_bn.modules())
    assert all(c.bias is None for c in with_bn.modules() if isinstance(c, nn.Conv2d))
    with torch.no_grad():
        assert m.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 5)


@pytest.mark.parametrize("compat", [False, True])
def test_minimum_input_size_and_channels(compat: bool):
    m = googlenet(num_classes=3, in_chans=1, torchvision_compat=compat).eval()
    s = m.min_input_size
    with torch.no_grad():
        assert m(torch.randn(1, 1, s, s)).shape == (1, 3)
        assert m(torch.randn(1, 1, s + 17, s + 40)).shape == (1, 3)
    with pytest.raises(RuntimeError), torch.no_grad():
        m(torch.randn(1, 1, s - 1, s - 1))


def test_reset_classifier_resets_main_and_aux_heads():
    m = googlenet(num_classes=10)
    fc1_before = m.aux1.fc1.weight.clone()
    m.reset_classifier(4)
    assert m.num_classes == 4
    assert m.fc.out_features == 4 and m.aux1.fc2.out_features == 4 and m.aux2.fc2.out_features == 4
    assert torch.equal(m.aux1.fc1.weight, fc1_before)  # only the last layer is replaced
    out = m.train()(torch.randn(2, 3, 64, 64))
    assert out.logits.shape == (2, 4) and all(a.shape == (2, 4) for a in out.aux)
    plain = googlenet(num_classes=10, aux_logits=False)
    plain.reset_classifier(3)
    assert plain.fc.out_features == 3
    with pytest.raises(ModelArgumentError, match="num_classes"):
        m.reset_classifier(0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dropout": 1.5}, r"dropout must be a probability in \[0, 1\), got 1.5"),
        ({"dropout_aux": -0.1}, r"dropout_aux must be a probability"),
        ({"num_classes": 0}, r"num_classes must be a positive integer, got 0"),
        ({"in_chans": 2.0}, r"in_chans must be a positive integer"),
        ({"reduce": "no"}, r"reduce must be one of True, False, got 'no'"),
        ({"in_chans": 1, "transform_input": True}, r"transform_input .* in_chans=3"),
        ({"bottleneck": True}, r"bottleneck.*valid arguments: .*aux_logits"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict, match: str):
    with pytest.raises(ModelArgumentError, match=match):
        create_model("googlenet", **kwargs)


def test_registry_entry():
    entry = get_model_entry("googlenet")
    assert entry.task == "classification" and entry.family == "googlenet"
    assert entry.paper == "arXiv:1409.4842" and entry.model_class is GoogLeNet
    assert {"aux_logits", "reduce", "batch_norm", "torchvision_compat"} <= set(entry.arguments())
    assert isinstance(create_model("googlenet", num_classes=3, aux_logits=False), GoogLeNet)
