"""visionzoo.analysis.profile: counts against independent arithmetic, meta vs real tensors."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import visionzoo
from tests.conftest import TOLERANCES
from visionzoo.analysis.profile import OTHER_ROW, Profile, profile
from visionzoo.errors import ModelArgumentError


class ConvLinear(nn.Module):
    """conv (valid, stride 1) -> flatten -> linear: every MAC is easy to count by hand."""

    def __init__(self, cin: int = 3, cout: int = 5, k: int = 3, size: int = 10, out: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k)
        self.act = nn.ReLU()
        self.fc = nn.Linear(cout * (size - k + 1) ** 2, out)

    def forward(self, x):
        return self.fc(torch.flatten(self.act(self.conv(x)), 1))


def _conv_linear_macs(cin=3, cout=5, k=3, size=10, out=7, batch=1):
    hout = wout = size - k + 1
    conv = k * k * cin * cout * hout * wout
    linear = (cout * hout * wout) * out
    return batch * (conv + linear)


@pytest.mark.parametrize("use_meta", [True, False])
@pytest.mark.parametrize("batch", [1, 3])
def test_hand_built_net_counts(use_meta, batch):
    net = ConvLinear()
    p = profile(net, (3, 10, 10), batch_size=batch, use_meta=use_meta)
    assert p.counted_on == ("meta" if use_meta else "cpu")
    assert p.macs == _conv_linear_macs(batch=batch)
    assert p.flops == 2 * p.macs
    assert p.params == sum(t.numel() for t in net.parameters())
    assert p.trainable_params == p.params
    assert p.output_shape == (batch, 7)
    assert p.output_stride is None  # no forward_features
    assert [r.name for r in p.rows] == ["conv", "act", "fc"]
    assert p.rows[0].macs == batch * 3 * 3 * 3 * 5 * 8 * 8
    assert p.rows[0].output_shape == (batch, 5, 8, 8)
    assert p.rows[1].macs == 0


def test_trainable_and_tied_parameters():
    net = ConvLinear()
    net.conv.weight.requires_grad_(False)
    p = profile(net, (3, 10, 10))
    assert p.trainable_params == p.params - net.conv.weight.numel()

    tied = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    tied[1].weight = tied[0].weight
    assert profile(tied, (1, 1, 4)).params == 16 + 4 + 4


def test_meta_profiling_leaves_the_model_alone():
    net = ConvLinear().train()
    net.act.eval()  # mixed per-module modes must come back as they were
    before = {k: v.clone() for k, v in net.state_dict().items()}
    for use_meta in (True, False):
        profile(net, (3, 10, 10), use_meta=use_meta)
        assert net.training and net.conv.training and not net.act.training
        assert all(t.device.type == "cpu" for t in net.state_dict().values())
        assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
        assert "forward_features" not in vars(net)


def test_meta_and_real_devices_agree_on_a_registry_model():
    meta = profile("resnet18", (3, 64, 64))
    real = profile(visionzoo.create_model("resnet18"), (3, 64, 64), use_meta=False)
    assert (meta.counted_on, real.counted_on) == ("meta", "cpu")
    assert meta.macs == real.macs > 0
    assert meta.params == real.params == 11_689_512
    assert meta.output_shape == real.output_shape == (1, 1000)
    assert [(r.name, r.params, r.macs, r.output_shape) for r in meta.rows] == [
        (r.name, r.params, r.macs, r.output_shape) for r in real.rows
    ]


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "googlenet"])
def test_stage_rows_sum_to_totals(name):
    p = profile(name, (3, 64, 64))
    assert sum(r.macs for r in p.rows) == p.macs
    assert sum(r.params for r in p.rows) == p.params
    assert all(r.name != OTHER_ROW for r in p.rows)  # these models do all work in children


class TokenNet(nn.Module):
    """Root-level ops and parameters plus an nn.ModuleList that is never called itself."""

    def __init__(self, dim: int = 8, depth: int = 2):
        super().__init__()
        self.embed = nn.Linear(4, dim)
        self.token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(nn.Linear(dim, dim) for _ in range(depth))
        self.proj = nn.Parameter(torch.zeros(dim, 3))

    def forward(self, x):  # x: (N, 1, L, 4) so that input_size (C, H, W) = (1, L, 4)
        t = self.embed(x.flatten(1, 2))  # (N, L, dim)
        t = torch.cat([self.token.expand(t.shape[0], -1, -1), t], 1)  # (N, L+1, dim)
        for block in self.blocks:
            t = block(t)
        return t[:, 0] @ self.proj  # matmul in the root's own forward


def test_other_row_and_uncalled_containers():
    net = TokenNet()
    p = profile(net, (1, 5, 4))
    L, dim = 5, 8
    expected = {"embed": L * 4 * dim, "blocks": 2 * (L + 1) * dim * dim, OTHER_ROW: dim * 3}
    assert {r.name: r.macs for r in p.rows} == expected
    assert p.macs == sum(expected.values())
    assert {r.name: r.params for r in p.rows}[OTHER_ROW] == dim + dim * 3
    assert sum(r.params for r in p.rows) == p.params
    blocks = next(r for r in p.rows if r.name == "blocks")
    assert blocks.output_shape is None  # a ModuleList is iterated, not called


class Attention(nn.Module):
    def forward(self, x):  # x: (N, H, L, E)
        return F.scaled_dot_product_attention(x, x, x)


@pytest.mark.parametrize("use_meta", [True, False])
def test_attention_is_counted_on_every_device(use_meta):
    # CPU's fused attention kernel is invisible to FlopCounterMode; the profiler must still
    # count QK^T and AV: N*H*L*L*E each.
    n_heads, length, dim = 2, 6, 4
    p = profile(Attention(), (n_heads, length, dim), batch_size=3, use_meta=use_meta)
    assert p.macs == 2 * 3 * n_heads * length * length * dim


def test_multihead_attention_fast_path_is_counted():
    class MHA(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x):  # (N, 1, L, D)
            t = x.flatten(1, 2)
            return self.attn(t, t, t, need_weights=False)[0]

    net = MHA()
    meta = profile(net, (1, 5, 8))
    real = profile(net, (1, 5, 8), use_meta=False)
    L, D = 5, 8
    # in-projection (3 D x D), QK^T and AV (L x L x D over all heads), out-projection (D x D).
    assert meta.macs == real.macs == 3 * L * D * D + 2 * L * L * D + L * D * D


class NeedsValues(nn.Module):
    """A data-dependent branch: meta tensors have no values, so this must run for real."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = x.flatten(1)
        if x.abs().sum().item() >= 0:
            x = self.fc(x)
        return x


def test_falls_back_to_real_tensors():
    p = profile(NeedsValues(), (1, 2, 2), batch_size=2)
    assert p.counted_on == "cpu"
    assert p.macs == 2 * 4 * 2


def test_output_stride_of_resnet18_at_224():
    p = profile("resnet18", (3, 224, 224))
    assert p.output_stride == 32
    assert p.output_shape == (1, 1000)
    assert isinstance(p.output_stride, int)


def test_output_stride_follows_dilation():
    p = profile(
        "resnet50", (3, 64, 64), model_kwargs={"replace_stride_with_dilation": [False, True, True]}
    )
    assert p.output_stride == 8


def test_registry_name_defaults_and_switches():
    entry = visionzoo.get_model_entry("resnet18")
    p = profile("resnet18")
    assert p.input_size == entry.input_size
    assert p.name == "resnet18"
    plain = profile("resnet18", (3, 32, 32), model_kwargs={"shortcut": False})
    default = profile("resnet18", (3, 32, 32))
    assert plain.params < default.params  # no projection shortcuts
    assert visionzoo.profile("resnet18", (3, 32, 32)).macs == default.macs


# Published multiply-adds at 224x224 (GMACs; the papers call them FLOPs or Mult-Adds).
PUBLISHED_GMACS = [
    ("resnet18", {"stride_in_1x1": True}, 1.8),  # arXiv:1512.03385 Table 1
    ("resnet34", {"stride_in_1x1": True}, 3.6),
    ("resnet50", {"stride_in_1x1": True}, 3.8),
    ("resnet101", {"stride_in_1x1": True}, 7.6),
    ("resnet152", {"stride_in_1x1": True}, 11.3),
    ("resnet50", {}, 4.09),  # v1.5, torchvision's documented figure
    ("mobilenet_v1", {}, 0.569),  # arXiv:1704.04861 Table 8
    ("mobilenet_v1", {"width_mult": 0.5}, 0.149),  # Table 6
    ("mobilenet_v2", {}, 0.300),  # arXiv:1801.04381 Table 4
    ("vgg16", {}, 15.47),  # torchvision's documented figure (the paper gives none)
]


@pytest.mark.parametrize(("name", "switches", "gmacs"), PUBLISHED_GMACS)
def test_published_figures(name, switches, gmacs):
    p = profile(name, (3, 224, 224), model_kwargs=switches)
    assert p.gmacs == pytest.approx(gmacs, rel=TOLERANCES["published_macs_rel"])


@pytest.mark.parametrize(
    "size", [(3, 224), (3, 224, 224, 1), (3, 0, 224), (3, -1, 8), (3, 2.5, 8), "3x224x224", 224]
)
def test_bad_input_size(size):
    with pytest.raises(ModelArgumentError, match="input_size"):
        profile(ConvLinear(), size)


def test_bad_batch_size_and_model():
    with pytest.raises(ModelArgumentError, match="batch_size"):
        profile(ConvLinear(), (3, 10, 10), batch_size=0)
    with pytest.raises(ModelArgumentError, match="nn.Module or a registered name"):
        profile(42)
    with pytest.raises(ModelArgumentError, match="model_kwargs"):
        profile(ConvLinear(), (3, 10, 10), model_kwargs={"k": 1})
    with pytest.raises(visionzoo.errors.UnknownModelError, match="did you mean resnet50"):
        profile("resnett50")


def test_input_too_small_is_a_user_error():
    net = nn.Sequential(nn.Conv2d(3, 4, 7))
    with pytest.raises(ModelArgumentError, match=r"Sequential cannot run on an input of size"):
        profile(net, (3, 4, 4))


def test_table_and_dict():
    p = profile(ConvLinear(), (3, 10, 10))
    assert isinstance(p, Profile)
    text = p.table()
    for needle in ("ConvLinear", "1x3x10x10", f"{p.params:,}", "conv", "fc", "1x5x8x8"):
        assert needle in text
    d = json.loads(json.dumps(p.to_dict()))
    assert d["macs"] == p.macs and d["flops"] == 2 * p.macs
    assert [r["name"] for r in d["rows"]] == ["conv", "act", "fc"]
    assert d["input_size"] == [3, 10, 10]
