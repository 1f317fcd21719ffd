"""ViT (arXiv:2010.11929) and DeiT (arXiv:2012.12877): timm and torchvision parity, position
embedding interpolation, the switches, the distilled head, the shared transformer layers."""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from timm.layers import resample_abs_pos_embed
from torch import nn

from tests.conftest import TOLERANCES
from visionzoo.errors import ModelArgumentError
from visionzoo.interop.timm import from_timm
from visionzoo.interop.torchvision import convert_state_dict, from_torchvision
from visionzoo.layers import Attention, Block, DropPath, PatchEmbed, drop_path, resize_pos_embed
from visionzoo.models.classification import vit as V
from visionzoo.models.outputs import AuxOutput
from visionzoo.registry import create_model, get_model_entry, list_models

TIMM_NAMES = [
    "vit_tiny_patch16_224",
    "vit_small_patch16_224",
    "vit_small_patch32_224",
    "vit_base_patch16_224",
    "vit_base_patch32_224",
    "vit_large_patch16_224",
    "vit_large_patch32_224",
    "deit_tiny_patch16_224",
    "deit_small_patch16_224",
    "deit_base_patch16_224",
    "deit_tiny_distilled_patch16_224",
    "deit_small_distilled_patch16_224",
    "deit_base_distilled_patch16_224",
]
# Published parameter counts (timm / torchvision model cards, DeiT Table 1 rounded: 5M/22M/86M).
PUBLISHED_PARAMS = {
    "vit_base_patch16_224": 86_567_656,
    "vit_b_16": 86_567_656,
    "vit_b_32": 88_224_232,
    "vit_large_patch16_224": 304_326_632,
    "deit_tiny_patch16_224": 5_717_416,
    "deit_small_patch16_224": 22_050_664,
    "deit_base_distilled_patch16_224": 87_338_192,
}
TOL = TOLERANCES["parity_fp32"]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def fill_random(model: nn.Module) -> nn.Module:
    """Variance-preserving random weights, random LayerNorm affines, O(1) tokens and position
    embeddings, so outputs are O(1) and a wrong mapping (q/k/v order, a missed norm) shows."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if "norm" in name or ".ln" in name or name.startswith("ln"):
                p.uniform_(0.5, 1.5) if leaf == "weight" else p.normal_(0.0, 0.1)
            elif (p.ndim >= 2 and leaf == "weight") or leaf == "in_proj_weight":
                bound = math.sqrt(3.0 / p[0].numel())
                p.uniform_(-bound, bound)
            else:  # biases, [CLS]/[distill] tokens, position embeddings
                p.normal_(0.0, 0.5 if p.ndim == 3 else 0.1)
    return model.eval()


def timm_reference(name: str, **kwargs) -> nn.Module:
    # Built on the meta device and filled once: timm's own init of a ViT-B costs seconds.
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False, **kwargs)
    return fill_random(model.to_empty(device="cpu"))


def tv_reference(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        model = getattr(torchvision.models, name)(weights=None, **kwargs)
    return fill_random(model.to_empty(device="cpu"))


def check_parity(reference: nn.Module, ours: nn.Module, size: int, num_classes: int = 1000):
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    assert got.shape == expected.shape == (1, num_classes)
    assert expected.std() > 0.1  # large enough for the absolute tolerance to mean something
    assert (got - expected).abs().max().item() <= TOL


@pytest.fixture(scope="module")
def tiny_pair() -> tuple[nn.Module, V.VisionTransformer]:
    torch.manual_seed(0)
    reference = timm_reference("vit_tiny_patch16_224", dynamic_img_size=True)
    return reference, from_timm("vit_tiny_patch16_224", reference)


@pytest.fixture(scope="module")
def micro() -> V.VisionTransformer:
    torch.manual_seed(0)
    return fill_random(create_model("deit_micro_distilled_patch4_32", num_classes=5))


# --- parity with timm and torchvision ------------------------------------------------------------


@pytest.mark.parametrize("name", TIMM_NAMES)
def test_layout_matches_timm(name):
    with torch.device("meta"):
        # num_classes given: timm's default config of vit_large_patch32_224 has no head.
        reference = timm.create_model(name, pretrained=False, num_classes=1000)
        ours = create_model(name)
    assert isinstance(ours, V.VisionTransformer)
    ours_shapes = {k: v.shape for k, v in ours.state_dict().items()}
    assert ours_shapes == {k: v.shape for k, v in reference.state_dict().items()}
    assert n_params(ours) == n_params(reference)
    if name in PUBLISHED_PARAMS:
        assert n_params(ours) == PUBLISHED_PARAMS[name]


@pytest.mark.parametrize("name", ["vit_b_16", "vit_b_32"])
def test_layout_matches_torchvision(name):
    with torch.device("meta"):
        reference = getattr(torchvision.models, name)(weights=None)
        ours = create_model(name)
    converted = convert_state_dict(name, reference.state_dict())
    assert {k: v.shape for k, v in converted.items()} == {
        k: v.shape for k, v in ours.state_dict().items()
    }
    assert n_params(ours) == n_params(reference) == PUBLISHED_PARAMS[name]


@pytest.mark.parametrize(
    "name",
    [
        "vit_tiny_patch16_224",
        "vit_small_patch16_224",
        "deit_tiny_patch16_224",
        "deit_tiny_distilled_patch16_224",
    ],
)
def test_parity_with_timm_at_224(name):
    reference = timm_reference(name)
    ours = from_timm(name, reference)
    assert ours.distilled == ("distilled" in name) and ours.img_size == 224
    check_parity(reference, ours, 224)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        # 224-trained weights, run at 64 on both sides: timm resamples the 14x14 embedding at
        # forward time (dynamic_img_size), so do we.
        ("vit_base_patch16_224", {"dynamic_img_size": True}),
        ("deit_base_distilled_patch16_224", {"dynamic_img_size": True}),
        ("deit_small_distilled_patch16_224", {"dynamic_img_size": True}),
        # Built for 64x64: from_timm reads img_size off the 4x4 position grid.
        ("deit_base_patch16_224", {"img_size": 64}),
        ("deit_small_patch16_224", {"img_size": 64}),
    ],
)
def test_parity_with_timm_small_input(name, kwargs):
    reference = timm_reference(name, **kwargs)
    ours = from_timm(name, reference)
    assert ours.img_size == kwargs.get("img_size", 224)
    check_parity(reference, ours, 64)


@pytest.mark.parametrize("name", ["vit_b_16", "vit_b_32"])
def test_parity_with_torchvision(name):
    reference = tv_reference(name, image_size=64)  # torchvision accepts only its image_size
    ours = from_torchvision(name, reference)
    assert ours.img_size == 64 and ours.pos_embed.shape[1] == reference.seq_length
    check_parity(reference, ours, 64)


def test_converted_model_owns_its_weights(tiny_pair):
    reference, ours = tiny_pair
    assert ours.head.weight.data_ptr() != reference.head.weight.data_ptr()
    assert torch.equal(ours.head.weight, reference.head.weight)


# --- position embedding interpolation ------------------------------------------------------------


def test_dynamic_size_matches_timm(tiny_pair):
    # 224-trained weights on 160x160 inputs: both resample 14x14 -> 10x10 (bicubic, antialias).
    reference, ours = tiny_pair
    assert ours.grid_size == (14, 14)
    check_parity(reference, ours, 160)


def test_non_square_input_matches_timm(tiny_pair):
    reference, ours = tiny_pair
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        assert (ours(x) - reference(x)).abs().max().item() <= TOL


def test_trained_at_224_loads_and_runs_at_384(tiny_pair):
    reference, ours224 = tiny_pair
    ours384 = create_model("vit_tiny_patch16_224", img_size=384).eval()
    ours384.load_state_dict(ours224.state_dict())  # 197 -> 577 tokens, resampled on load
    assert ours384.pos_embed.shape == (1, 1 + 24 * 24, 192)
    # The [CLS] entry is kept; the grid is timm's resample of the 224 embedding.
    expected = resample_abs_pos_embed(
        ours224.pos_embed.detach(), new_size=(24, 24), num_prefix_tokens=1
    )
    assert torch.allclose(ours384.pos_embed, expected, atol=1e-6)
    assert torch.equal(ours384.pos_embed[:, 0], ours224.pos_embed[:, 0])
    x = torch.randn(1, 3, 384, 384)
    with torch.no_grad():
        got = ours384(x)
        # Same embedding as resampling on the fly, and as timm at 384.
        assert (got - ours224(x)).abs().max().item() <= TOL
        assert (got - reference(x)).abs().max().item() <= TOL
    # from_timm with an explicit img_size does the same resampling.
    converted = from_timm("vit_tiny_patch16_224", reference, img_size=384)
    assert torch.allclose(converted.pos_embed, ours384.pos_embed)


def test_resize_pos_embed():
    pos = torch.randn(1, 2 + 16, 8)
    assert resize_pos_embed(pos, (4, 4), num_prefix_tokens=2) is pos
    out = resize_pos_embed(pos, (6, 3), old_grid=(4, 4), num_prefix_tokens=2)
    assert out.shape == (1, 2 + 18, 8) and torch.equal(out[:, :2], pos[:, :2])
    ref = F.interpolate(
        pos[:, 2:].reshape(1, 4, 4, 8).permute(0, 3, 1, 2),
        size=(6, 3),
        mode="bicubic",
        antialias=True,  # matters for the 4 -> 3 side
    )
    assert torch.allclose(out[:, 2:], ref.permute(0, 2, 3, 1).reshape(1, 18, 8), atol=1e-6)
    with pytest.raises(ModelArgumentError, match="not a square grid"):
        resize_pos_embed(torch.randn(1, 1 + 15, 8), (4, 4))
    with pytest.raises(ModelArgumentError, match="does not match"):
        resize_pos_embed(pos, (4, 4), old_grid=(3, 3), num_prefix_tokens=2)


# --- the switches --------------------------------------------------------------------------------

SMALL = {"img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2}


@pytest.mark.parametrize(
    ("ours_kwargs", "timm_kwargs"),
    [
        # The appendix's GAP head: the final norm, then the mean of the patch tokens.
        ({"class_token": False}, {"class_token": False, "global_pool": "avg", "fc_norm": False}),
        ({"pos_embed": "none"}, {"pos_embed": "none"}),
        ({"qkv_bias": False}, {"qkv_bias": False}),
    ],
)
def test_switches_match_timm(ours_kwargs, timm_kwargs):
    reference = fill_random(
        timm.models.vision_transformer.VisionTransformer(num_classes=7, **SMALL, **timm_kwargs)
    )
    ours = V.VisionTransformer(num_classes=7, **SMALL, **ours_kwargs).eval()
    ours.load_state_dict(reference.state_dict())  # strict: the switched layouts agree
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = reference(x)
        assert expected.std() > 0.1
        assert (ours(x) - expected).abs().max().item() <= TOL


@pytest.mark.parametrize(
    ("kwargs", "missing"),
    [({"class_token": False}, "cls_token"), ({"pos_embed": "none"}, "pos_embed")],
)
def test_switches_change_the_network(kwargs, missing):
    torch.manual_seed(0)
    base = fill_random(V.VisionTransformer(**SMALL, num_classes=4))
    switched = V.VisionTransformer(**SMALL, num_classes=4, **kwargs).eval()
    state = {k: v for k, v in base.state_dict().items() if k != missing}
    if missing == "cls_token":
        state["pos_embed"] = state["pos_embed"][:, 1:]  # no [CLS] entry either
    switched.load_state_dict(state)  # strict: every other tensor is shared
    assert getattr(switched, missing) is None
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = switched(x)
        assert out.shape == (2, 4)
        assert not torch.allclose(out, base(x), atol=1e-3)
    if kwargs.get("class_token") is False:
        assert switched.num_prefix_tokens == 0
        feats = switched.forward_features(x)
        assert feats.shape == (2, 16, 64)
        pooled = switched.forward_head(feats, pre_logits=True)
        assert torch.allclose(pooled, feats.mean(1))


def test_drop_path_trains():
    model = V.VisionTransformer(**{**SMALL, "depth": 3}, num_classes=3, drop_path_rate=0.3)
    rates = [getattr(b.drop_path1, "p", 0.0) for b in model.blocks]
    assert rates == pytest.approx([0.0, 0.15, 0.3])  # linear rule, first block never dropped
    assert isinstance(model.blocks[0].drop_path1, nn.Identity)
    x = torch.randn(8, 3, 32, 32)
    model.train()
    torch.manual_seed(1)
    a = model(x)
    torch.manual_seed(2)
    b = model(x)
    assert not torch.allclose(a, b)
    a.logsumexp(1).sum().backward()
    assert model.blocks[2].mlp.fc2.weight.grad is not None
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_drop_path_function():
    x = torch.ones(1000, 3, 4)
    torch.manual_seed(0)
    out = drop_path(x, 0.25, training=True)
    per_sample = out.flatten(1)
    # Whole samples are either dropped or scaled by 1 / keep.
    kept = per_sample[per_sample != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1 / 0.75))
    assert (per_sample == per_sample[:, :1]).all()
    assert 0.2 < (per_sample[:, 0] == 0).float().mean() < 0.3
    assert drop_path(x, 0.25, training=False) is x
    assert DropPath(0.5).eval()(x) is x


def test_dropout_switches():
    model = V.VisionTransformer(**SMALL, drop_rate=0.2, attn_drop_rate=0.1)
    drops = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
    # pos_drop, and per block: attention output, both MLP layers.
    assert drops == [0.2] + [0.2, 0.2, 0.2] * 2
    assert [b.attn.attn_drop for b in model.blocks] == [0.1, 0.1]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(model.train()(x), model.eval()(x))


# --- DeiT's distilled head -----------------------------------------------------------------------


def test_distilled_train_and_eval_outputs(micro):
    x = torch.randn(3, 3, 32, 32)
    micro.train()
    out = micro(x)
    assert isinstance(out, AuxOutput) and len(out.aux) == 1
    assert out.logits.shape == out.aux[0].shape == (3, 5)
    assert not torch.allclose(out.logits, out.aux[0])
    micro.eval()
    with torch.no_grad():
        logits = micro(x)
        feats = micro.forward_features(x)
    assert torch.allclose(logits, (out.logits + out.aux[0]).detach() / 2, atol=1e-5)
    assert feats.shape == (3, 2 + 64, 128)
    assert torch.allclose(micro.forward_head(feats), logits)
    pre = micro.forward_head(feats, pre_logits=True)
    assert torch.allclose(pre, (feats[:, 0] + feats[:, 1]) / 2)
    assert micro.num_features == 128 and micro.num_classes == 5


def test_backward_reaches_every_parameter(micro):
    micro.train().zero_grad()
    out = micro(torch.randn(2, 3, 32, 32))
    (F.cross_entropy(out.logits, torch.tensor([0, 1])) + out.aux[0].logsumexp(1).sum()).backward()
    no_grad = [n for n, p in micro.named_parameters() if p.grad is None or not p.grad.any()]
    assert no_grad == []
    micro.zero_grad()
    micro.eval()


def test_reset_classifier():
    model = fill_random(create_model("deit_micro_distilled_patch4_32", num_classes=5))
    model.reset_classifier(3)
    assert model.num_classes == 3
    assert model.head.weight.shape == model.head_dist.weight.shape == (3, 128)
    assert not torch.equal(model.head.weight, model.head_dist.weight)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    with pytest.raises(ModelArgumentError, match="num_classes"):
        model.reset_classifier(0)


def test_in_chans_and_other_sizes():
    model = create_model("vit_micro_patch4_32", in_chans=1, num_classes=2).eval()
    assert model.patch_embed.proj.weight.shape == (128, 1, 4, 4)
    with torch.no_grad():
        assert model(torch.randn(1, 1, 32, 32)).shape == (1, 2)
        assert model(torch.randn(1, 1, 64, 48)).shape == (1, 2)  # resampled to 16x12


# --- registry ------------------------------------------------------------------------------------


def test_registered():
    names = set(list_models("classification"))
    extra = {"vit_b_16", "vit_b_32", "vit_micro_patch4_32", "deit_micro_distilled_patch4_32"}
    assert set(TIMM_NAMES) | extra <= names
    entry = get_model_entry("deit_tiny_distilled_patch16_224")
    assert entry.family == "vit" and entry.paper == "arXiv:2012.12877"
    assert entry.model_class is V.VisionTransformer
    assert get_model_entry("vit_b_16").paper == "arXiv:2010.11929"
    assert get_model_entry("vit_micro_patch4_32").input_size == (3, 32, 32)
    args = set(entry.arguments())
    assert {"class_token", "pos_embed", "drop_rate", "drop_path_rate", "img_size"} <= args


# --- bad arguments -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"img_size": 100}, "img_size 100 must be a multiple of patch_size 16"),
        ({"embed_dim": 100, "num_heads": 3}, "embed_dim 100 must be divisible by num_heads 3"),
        ({"pos_embed": "sincos"}, "pos_embed must be one of 'learned', 'none'"),
        ({"class_token": False, "distilled": True}, "distilled=True needs class_token=True"),
        ({"drop_path_rate": 1.0}, "drop_path_rate"),
        ({"drop_rate": -0.1}, "drop_rate"),
        ({"attn_drop_rate": "0.1"}, "attn_drop_rate"),
        ({"mlp_ratio": 0}, "mlp_ratio"),
        ({"class_token": 1}, "class_token must be True or False"),
        ({"depth": 0}, "depth"),
        ({"patch_size": 2.5}, "patch_size"),
        ({"num_classes": 0}, "num_classes"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ModelArgumentError, match=match):
        V.VisionTransformer(**kwargs)


def test_builder_rejects_bad_arguments():
    with pytest.raises(ModelArgumentError, match="depth"):
        create_model("vit_tiny_patch16_224", depth=6)  # the architecture is the name
    with pytest.raises(ModelArgumentError, match="distilled"):
        create_model("deit_tiny_distilled_patch16_224", distilled=False)
    with pytest.raises(ModelArgumentError, match="valid arguments"):
        create_model("vit_micro_patch4_32", dropout=0.1)


def test_input_size_not_a_multiple_of_the_patch(micro):
    with pytest.raises(ModelArgumentError, match=r"input size 30x32 .* patch size 4"):
        micro(torch.randn(1, 3, 30, 32))
    with pytest.raises(ModelArgumentError, match=r"Tensor\[N, 3, H, W\]"):
        micro(torch.randn(1, 1, 32, 32))


# --- the shared layers ---------------------------------------------------------------------------


def naive_attention(attn: Attention, x, mask=None):
    n, length, dim = x.shape
    q, k, v = attn.qkv(x).chunk(3, dim=-1)  # rows [q; k; v]

    def heads(t):
        return t.reshape(n, length, attn.num_heads, -1).transpose(1, 2)

    scores = heads(q) @ heads(k).transpose(-1, -2) / math.sqrt(attn.head_dim)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    out = scores.softmax(-1) @ heads(v)
    return attn.proj(out.transpose(1, 2).reshape(n, length, dim))


def test_attention_matches_naive_and_masks():
    attn = Attention(16, num_heads=4).eval()
    x = torch.randn(2, 5, 16)
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    pad = torch.tensor([[True] * 5, [True, True, True, False, False]])[:, None, None, :]
    with torch.no_grad():
        assert torch.allclose(attn(x), naive_attention(attn, x), atol=1e-5)
        assert torch.allclose(attn(x, is_causal=True), naive_attention(attn, x, causal), atol=1e-5)
        got = attn(x, attn_mask=pad, is_causal=True)  # both: folded into one mask
        assert torch.allclose(got, naive_attention(attn, x, pad & causal), atol=1e-5)
        additive = torch.zeros(2, 1, 1, 5).masked_fill(~pad, float("-inf"))
        assert torch.allclose(attn(x, attn_mask=additive), naive_attention(attn, x, pad), atol=1e-5)


def test_attention_matches_multihead_attention():
    # torchvision's ViT stores attention as nn.MultiheadAttention: same q/k/v row layout.
    mha = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    attn = Attention(16, num_heads=4).eval()
    with torch.no_grad():
        attn.qkv.weight.copy_(mha.in_proj_weight)
        attn.qkv.bias.normal_()
        mha.in_proj_bias.copy_(attn.qkv.bias)
        attn.proj.load_state_dict(mha.out_proj.state_dict())
        x = torch.randn(2, 6, 16)
        assert torch.allclose(attn(x), mha(x, x, x, need_weights=False)[0], atol=1e-5)


def test_block_and_patch_embed_errors():
    with pytest.raises(ModelArgumentError, match="not divisible by num_heads"):
        Block(10, num_heads=4)
    with pytest.raises(ModelArgumentError, match="attn_drop"):
        Attention(8, 2, attn_drop=1.5)
    embed = PatchEmbed(patch_size=4, in_chans=3, embed_dim=8)
    assert embed(torch.randn(2, 3, 8, 12)).shape == (2, 6, 8)
    assert embed.grid_size(8, 12) == (2, 3)
    with pytest.raises(ModelArgumentError, match="input size 9x12 is not a multiple"):
        embed(torch.randn(1, 3, 9, 12))
