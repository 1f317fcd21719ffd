"""U-Net (arXiv:1505.04597): the paper's 572 -> 388 shapes, the padded variant on odd sizes,
and the switches (skip connections, deep supervision, bilinear, BN)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import visionzoo as vz
from visionzoo.errors import ModelArgumentError
from visionzoo.models.outputs import AuxOutput
from visionzoo.models.segmentation import unet as U


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- the paper's network: shapes ----------------------------------------------------------


def test_walkthrough_maps_572_to_388_with_the_papers_crops():
    rows = U.unet_shape_walkthrough()  # unet_original, 64 base channels, 1x572x572
    assert rows[0].input == (1, 572, 572)
    assert rows[-1].module == "head" and rows[-1].output == (2, 388, 388)
    crops = [(r.input[1:], r.output[1:]) for r in rows if r.op.startswith("crop")]
    # Deepest first, as the expanding path meets them: 64->56, 136->104, 280->200, 568->392.
    assert crops == [
        ((64, 64), (56, 56)),
        ((136, 136), (104, 104)),
        ((280, 280), (200, 200)),
        ((568, 568), (392, 392)),
    ]
    # Channels double 64 -> 1024 down the contracting path (Fig. 1).
    encoder_out = [r.output[0] for r in rows if r.module.endswith(".2") and "encoder" in r.module]
    assert encoder_out == [64, 128, 256, 512]
    bottom = [r for r in rows if r.module.startswith("bottleneck")][-1]
    assert bottom.output == (1024, 28, 28)
    # Every 3x3 conv is valid: it loses one pixel on each side.
    for r in rows:
        if r.op.startswith("conv 3x3"):
            assert r.output[1:] == (r.input[1] - 2, r.input[2] - 2)
    table = U.format_shape_walkthrough(rows)
    assert table.count("\n") == len(rows) + 1 and "crop skip to 392x392" in table


def test_real_forward_agrees_with_the_walkthrough():
    # A narrow network, run for real at the paper's tile size: same shapes as on meta.
    model = vz.create_model("unet_original", base_channels=4).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1, 572, 572))
    assert out.shape == (1, 2, 388, 388)
    rows = U.unet_shape_walkthrough(base_channels=4)
    assert rows[-1].output == tuple(out.shape[1:])


def test_unet_original_parameter_count():
    with torch.device("meta"):
        model = vz.create_model("unet_original")

    def conv(c_in: int, c_out: int, k: int) -> int:
        return k * k * c_in * c_out + c_out

    w = [64, 128, 256, 512, 1024]
    expected = conv(1, 64, 3) + conv(64, 64, 3)
    for a, b in zip(w[:-1], w[1:], strict=True):
        expected += conv(a, b, 3) + conv(b, b, 3)  # contracting level / bottleneck
        expected += conv(b, a, 2) + conv(2 * a, a, 3) + conv(a, a, 3)  # up-conv + 2 convs
    expected += conv(64, 2, 1)
    assert n_params(model) == expected == 31_030_658
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


# --- the padded variant --------------------------------------------------------------------


@pytest.mark.parametrize("bilinear", [False, True])
@pytest.mark.parametrize("skip_connections", [True, False])
def test_unet_keeps_odd_sizes(bilinear, skip_connections):
    model = vz.create_model(
        "unet",
        base_channels=4,
        num_classes=3,
        bilinear=bilinear,
        skip_connections=skip_connections,
    ).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 37, 45)).shape == (2, 3, 37, 45)
        assert model(torch.randn(1, 3, 16, 17)).shape == (1, 3, 16, 17)


def test_unet_rejects_inputs_smaller_than_its_poolings():
    model = vz.create_model("unet", base_channels=4).eval()
    with pytest.raises(ValueError, match=r"input 15x40 is smaller than 2\*\*depth = 16"):
        model(torch.randn(1, 3, 15, 40))


def test_skip_connections_off_is_a_plain_encoder_decoder():
    with_skips = vz.create_model("unet", base_channels=4)
    plain = vz.create_model("unet", base_channels=4, skip_connections=False)
    # The decoder's first conv reads the concatenation (2C) or the up-sampled map alone (C).
    assert [b[0].in_channels for b in with_skips.decoder] == [64, 32, 16, 8]
    assert [b[0].in_channels for b in plain.decoder] == [32, 16, 8, 4]
    assert all(not m.concat for m in plain.merges) and all(m.concat for m in with_skips.merges)
    assert n_params(plain) < n_params(with_skips)


def test_batch_norm_and_bilinear_switches_change_layers():
    bn = vz.create_model("unet", base_channels=4)
    no_bn = vz.create_model("unet", base_channels=4, batch_norm=False)
    assert any(isinstance(m, nn.BatchNorm2d) for m in bn.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in no_bn.modules())
    assert bn.encoder[0][0].bias is None and no_bn.encoder[0][0].bias is not None
    up = vz.create_model("unet", base_channels=4, bilinear=True)
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in up.modules())
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in bn.modules()) == 4


@pytest.mark.parametrize("name", ["unet", "unet_original"])
def test_deep_supervision_returns_aux_logits_in_training(name):
    model = vz.create_model(name, base_channels=4, num_classes=3, deep_supervision=True)
    size = 37 if name == "unet" else 188  # 188 -> 4x4 logits for the valid-conv net
    x = torch.randn(2, model.in_chans, size, size)
    out = model.train()(x)
    assert isinstance(out, AuxOutput)
    assert len(out.aux) == 3  # decoder levels 1..3 of 4
    for a in out.aux:
        assert a.shape == out.logits.shape
    loss = out.logits.mean() + sum(0.4 * a.mean() for a in out.aux)
    loss.backward()
    for head in model.aux_heads:
        assert head.weight.grad is not None and torch.isfinite(head.weight.grad).all()
        assert head.weight.grad.abs().sum() > 0
    with torch.no_grad():
        eval_out = model.eval()(x)
    assert isinstance(eval_out, torch.Tensor) and eval_out.shape == out.logits.shape


def test_without_deep_supervision_training_returns_a_tensor_and_gradients_flow():
    model = vz.create_model("unet", base_channels=4).train()
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    out = model(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 2, 32, 32)
    out.logsumexp(1).mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_dropout_at_the_end_of_the_contracting_path():
    model = vz.create_model("unet", base_channels=4, dropout=0.5)
    assert isinstance(model.dropout, nn.Dropout) and model.dropout.p == 0.5
    assert isinstance(vz.create_model("unet", base_channels=4).dropout, nn.Identity)


def test_center_fit_crops_and_pads_around_the_centre():
    fit = U.CenterFit()
    x = torch.arange(7 * 6.0).view(1, 1, 7, 6)
    cropped = fit(x, (3, 4))
    assert torch.equal(cropped, x[..., 2:5, 1:5])
    padded = fit(torch.ones(1, 1, 2, 3), (3, 6))
    assert padded.shape == (1, 1, 3, 6)
    # Odd differences put the extra row/column at the bottom/right.
    assert padded[0, 0].tolist() == [[0, 1, 1, 1, 0, 0], [0, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0]]


def test_registry_entries():
    names = vz.list_models(task="segmentation")
    assert {"unet", "unet_original"} <= set(names)
    entry = vz.get_model_entry("unet_original")
    assert entry.family == "unet" and entry.paper == "arXiv:1505.04597"
    assert entry.input_size == (1, 572, 572)
    assert {"skip_connections", "deep_supervision", "bilinear", "batch_norm"} <= set(
        entry.arguments()
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"base_channels": 0}, "base_channels must be a positive integer"),
        ({"depth": -1}, "depth must be a positive integer"),
        ({"bilinear": "yes"}, "bilinear must be True or False"),
        ({"skip_connections": 1}, "skip_connections must be True or False"),
        ({"dropout": 1.0}, r"dropout must be a probability in \[0, 1\)"),
        ({"deep_supervision": True, "depth": 1}, "deep_supervision needs depth >= 2"),
        ({"num_classes": 0}, "num_classes must be a positive integer"),
        ({"skip_conections": False}, "unexpected keyword.*valid arguments: .*skip_connections"),
    ],
)
def test_invalid_arguments_are_named(kwargs, match):
    with pytest.raises(ModelArgumentError, match=match):
        vz.create_model("unet", **kwargs)


def test_docs_hold_the_generated_walkthrough():
    # docs/segmentation.md pastes the walk-through; it must be the code's current output.
    doc = Path(__file__).resolve().parents[3] / "docs" / "segmentation.md"
    assert U.format_shape_walkthrough(U.unet_shape_walkthrough()) in doc.read_text("utf-8")
