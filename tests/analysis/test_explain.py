"""Attention rollout (arXiv:2005.00928) and Grad-CAM (arXiv:1610.02391) against independent
computations, the default Grad-CAM layer, pictures, `visionzoo explain` end to end, errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from visionzoo.analysis.explain import (
    attention_rollout,
    default_gradcam_layer,
    explain,
    grad_cam,
    overlay,
    rollout_attentions,
)
from visionzoo.cli.main import main
from visionzoo.data.transforms import eval_transform, normalize
from visionzoo.engine.config import DataConfig, load_config
from visionzoo.engine.trainer import Trainer
from visionzoo.errors import ConfigError
from visionzoo.layers import Attention
from visionzoo.models.classification.vit import VisionTransformer
from visionzoo.registry import create_model

TOL = 1e-5  # float32 rollout vs a float64 loop over a few 16-wide layers


def tiny_vit(**kwargs) -> VisionTransformer:
    kw = dict(num_classes=3, img_size=16, patch_size=4, embed_dim=16, depth=3, num_heads=2)
    return VisionTransformer(**{**kw, **kwargs}).eval()


# --- the opt-in attention capture of the shared layer ----------------------------------------


@pytest.mark.parametrize("mask", ["none", "bool", "float", "causal", "bool+causal"])
def test_captured_attention_is_the_sdpa_function(mask):
    attn = Attention(16, num_heads=4).eval()
    x = torch.randn(2, 5, 16)
    kwargs = {}
    if "bool" in mask:
        kwargs["attn_mask"] = torch.tensor([True, True, True, False, True])[None, None, None]
    if mask == "float":
        kwargs["attn_mask"] = torch.randn(2, 1, 5, 5)
    if "causal" in mask:
        kwargs["is_causal"] = True
    ref = attn(x, **kwargs)
    attn.capture_attn = True
    got = attn(x, **kwargs)
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-5)
    probs = attn.attn_probs
    assert probs.shape == (2, 4, 5, 5)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 4, 5))
    if "bool" in mask:
        assert (probs[..., 3] == 0).all()
    if "causal" in mask:
        assert (probs.triu(1) == 0).all()
    assert set(attn.state_dict()) == {"qkv.weight", "qkv.bias", "proj.weight", "proj.bias"}


# --- attention rollout -----------------------------------------------------------------------


def hand_rollout(model: VisionTransformer, x: torch.Tensor, fusion="mean", discard=0.0):
    """Attention matrices recomputed from each block's qkv weights, rolled out in float64 numpy
    loops, one image and one layer at a time."""
    dim, heads = model.embed_dim, model.blocks[0].attn.num_heads
    d = dim // heads
    prefix = model.num_prefix_tokens
    with torch.no_grad():
        tokens = model.patch_embed(x)  # (N, h*w, D)
        extra = [
            t.expand(x.shape[0], -1, -1)
            for t in (model.cls_token, model.dist_token)
            if t is not None
        ]
        tokens = torch.cat([*extra, tokens], dim=1) + model.pos_embed
        layers = []
        for blk in model.blocks:
            h = blk.norm1(tokens).double().numpy()
            w = blk.attn.qkv.weight.double().numpy()
            b = blk.attn.qkv.bias.double().numpy()
            qkv = h @ w.T + b  # (N, L, 3D)
            mats = np.zeros((x.shape[0], heads, tokens.shape[1], tokens.shape[1]))
            for n in range(x.shape[0]):
                for i in range(heads):
                    q = qkv[n, :, i * d : (i + 1) * d]
                    k = qkv[n, :, dim + i * d : dim + (i + 1) * d]
                    s = q @ k.T / math.sqrt(d)
                    e = np.exp(s - s.max(axis=1, keepdims=True))
                    mats[n, i] = e / e.sum(axis=1, keepdims=True)
            layers.append(mats)
            tokens = blk(tokens)
    length = tokens.shape[1]
    maps = []
    for n in range(x.shape[0]):
        r = np.eye(length)
        for mats in layers:
            fused = {"mean": mats[n].mean(0), "max": mats[n].max(0), "min": mats[n].min(0)}[fusion]
            if discard:
                flat = fused.flatten()
                flat[np.argsort(flat)[: int(flat.size * discard)]] = 0.0
                fused = flat.reshape(length, length)
            a = fused + np.eye(length)
            a = a / a.sum(axis=1, keepdims=True)
            r = a @ r
        row = r[0, prefix:] if model.class_token else r[prefix:, prefix:].mean(0)
        maps.append(row.reshape(model.grid_size))
    return torch.from_numpy(np.stack(maps)).float()


@pytest.mark.parametrize(
    ("kwargs", "fusion", "discard"),
    [
        ({}, "mean", 0.0),
        ({"distilled": True}, "mean", 0.0),
        ({"class_token": False}, "mean", 0.0),
        ({}, "max", 0.5),
        ({"distilled": True}, "min", 0.2),
    ],
    ids=["vit", "deit-distilled", "gap", "max-discard", "distilled-min-discard"],
)
def test_rollout_matches_hand_computation(kwargs, fusion, discard):
    model = tiny_vit(**kwargs)
    with torch.no_grad():  # O(1) tokens so the attention is far from uniform
        model.pos_embed.normal_()
        for blk in model.blocks:
            blk.attn.qkv.weight.normal_(0, 0.5)
    x = torch.randn(2, 3, 16, 16)
    got = attention_rollout(model, x, discard_ratio=discard, head_fusion=fusion)
    want = hand_rollout(model, x, fusion, discard)
    assert got.shape == (2, 4, 4)
    torch.testing.assert_close(got, want, atol=TOL, rtol=TOL)
    assert got.std() > 1e-3  # the map is not trivially flat


def test_rollout_of_identity_attention_is_uniform():
    # Every token attends only to itself: nothing flows from the patches into [CLS].
    eye = torch.eye(17).expand(2, 3, 17, 17)
    cam = rollout_attentions([eye] * 4, (4, 4), num_prefix_tokens=1)
    assert torch.equal(cam, torch.zeros(2, 4, 4))
    # Average pooling head: each patch row keeps only itself, so the mean is 1/16 everywhere.
    cam = rollout_attentions([torch.eye(16).expand(1, 2, 16, 16)] * 3, (4, 4), 0, False)
    torch.testing.assert_close(cam, torch.full((1, 4, 4), 1 / 16))


def test_rollout_of_uniform_attention_is_uniform():
    # Zero q and k: softmax of zeros, every token attends to all L = 17 tokens equally. Each
    # layer is 0.5 U + 0.5 I, so three layers give (1 - 0.5^3) / L to every patch.
    model = tiny_vit()
    with torch.no_grad():
        for blk in model.blocks:
            blk.attn.qkv.weight[:32].zero_()
            blk.attn.qkv.bias[:32].zero_()
    cam = attention_rollout(model, torch.randn(1, 3, 16, 16))
    torch.testing.assert_close(cam, torch.full((1, 4, 4), (1 - 0.5**3) / 17))


def test_rollout_other_size_and_model_state_restored():
    model = tiny_vit(distilled=True).train()
    cam = attention_rollout(model, torch.randn(1, 3, 24, 32))
    assert cam.shape == (1, 6, 8)
    assert model.training  # mode restored
    assert all(not b.attn.capture_attn and b.attn.attn_probs is None for b in model.blocks)


# --- Grad-CAM --------------------------------------------------------------------------------


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 3, padding=1), nn.ReLU()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)  # (N, 6, 1, 1): 4-D, but nothing to localise
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def hand_grad_cam(model: TinyCNN, x, target=None):
    act = model.features(x)  # (N, 6, h, w)
    logits = model.fc(act.mean((2, 3)))
    idx = logits.argmax(1) if target is None else torch.full((x.shape[0],), target)
    cams = []
    for n in range(x.shape[0]):
        (g,) = torch.autograd.grad(logits[n, idx[n]], act, retain_graph=True)
        alpha = g[n].mean((1, 2))  # (6,)
        cam = torch.relu(sum(alpha[k] * act[n, k] for k in range(act.shape[1])))
        cams.append(cam / cam.max() if cam.max() > 0 else cam)
    return torch.stack(cams).detach()


@pytest.mark.parametrize("target", [None, 2])
def test_grad_cam_matches_hand_computation(target):
    model = TinyCNN()
    x = torch.randn(3, 3, 8, 8)
    assert default_gradcam_layer(model, x) == "features"  # the 1x1 pool is passed over
    got = grad_cam(model, x, target=target)
    torch.testing.assert_close(got, hand_grad_cam(model, x, target), atol=1e-6, rtol=1e-5)
    assert got.shape == (3, 8, 8) and got.min() >= 0 and got.amax((1, 2)).le(1).all()
    # The same map through the layer given by module and by its dotted name (the last ReLU).
    torch.testing.assert_close(grad_cam(model, x, target, layer=model.features[3]), got)
    torch.testing.assert_close(grad_cam(model, x, target, layer="features.3"), got)


def test_grad_cam_of_frozen_model_and_no_grad_context():
    model = TinyCNN()
    x = torch.randn(1, 3, 8, 8)
    want = hand_grad_cam(model, x)
    model.requires_grad_(False)
    with torch.no_grad():
        torch.testing.assert_close(grad_cam(model, x), want)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "kwargs", "layer"),
    [
        ("resnet18", {}, "layer4"),
        ("vgg11", {}, "features"),
        ("googlenet", {"aux_logits": True}, "inception5b"),
        ("mobilenet_v2", {}, "features"),
    ],
)
def test_default_gradcam_layer_of_zoo_cnns(name, kwargs, layer):
    model = create_model(name, num_classes=5, **kwargs).train()
    x = torch.randn(1, 3, 64, 64)
    assert default_gradcam_layer(model, x) == layer
    cam = grad_cam(model, x)  # GoogLeNet: eval mode, so the main head, not AuxOutput
    assert cam.shape == (1, 2, 2) and torch.isfinite(cam).all()
    assert model.training


def test_grad_cam_errors():
    model = create_model("resnet18", num_classes=5)
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(
        ConfigError,
        match=r"layer 'layer5' is not a module .*did you mean layer4.*valid names include conv1, bn1",
    ):
        grad_cam(model, x, layer="layer5")
    with pytest.raises(
        ConfigError, match=r"layer 'fc' gives output \(1, 5\); Grad-CAM needs .*4-D"
    ):
        grad_cam(model, x, layer="fc")
    with pytest.raises(ConfigError, match=r"target=7 is not a class index of this model \(0..4\)"):
        grad_cam(model, x, target=7)
    with pytest.raises(ConfigError, match="produces no 4-D feature map .*use method 'rollout'"):
        grad_cam(tiny_vit(), torch.randn(1, 3, 16, 16))
    with pytest.raises(ConfigError, match="has no self-attention layers: use method 'gradcam'"):
        attention_rollout(model, x)
    with pytest.raises(ConfigError, match=r"head_fusion='avg' is not valid.*mean, max, min"):
        attention_rollout(tiny_vit(), torch.randn(1, 3, 16, 16), head_fusion="avg")
    with pytest.raises(ConfigError, match=r"discard_ratio must be a number in \[0, 1\), got 1.0"):
        attention_rollout(tiny_vit(), torch.randn(1, 3, 16, 16), discard_ratio=1.0)


# --- pictures and explain() ------------------------------------------------------------------


def test_overlay_colours_the_hot_region_and_adds_a_caption():
    image = Image.new("RGB", (64, 48), (128, 128, 128))
    heat = torch.zeros(4, 4)
    heat[0, 0] = 1.0
    plain = overlay(image, heat, alpha=1.0)
    assert plain.size == (64, 48)
    hot, cold = plain.getpixel((2, 2)), plain.getpixel((60, 44))
    assert hot[0] > 100 and hot[2] < 60  # jet: red at 1
    assert cold[2] > 100 and cold[0] < 60  # jet: blue at 0
    captioned = overlay(image, heat, "circle", 0.875, note="attention rollout")
    assert captioned.width >= 64 and captioned.height > 48 + 20
    with pytest.raises(ConfigError, match="unknown matplotlib colour map 'nope'"):
        overlay(image, heat, cmap="nope")


def test_explain_uses_the_runs_eval_transform_and_normalisation():
    model = create_model("resnet18", num_classes=3).eval()
    data = {"image_size": 32, "mean": [0.2, 0.3, 0.4], "std": [0.5, 0.6, 0.7]}
    model.visionzoo_config = {"data": data}
    model.class_names = ["circle", "square", "triangle"]
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))
    picture, facts = explain(model, image)
    cfg = DataConfig(**data)
    x = normalize(eval_transform(cfg)(image)[None], cfg.mean, cfg.std)
    with torch.no_grad():
        probs = model(x).softmax(1)[0]
    pred = int(probs.argmax())
    assert facts["method"] == "gradcam" and facts["layer"] == "layer4"
    assert facts["prediction"] == {
        "label": model.class_names[pred],
        "index": pred,
        "prob": pytest.approx(float(probs[pred]), abs=1e-6),
    }
    assert facts["target"]["index"] == pred and facts["map_size"] == [1, 1]
    assert picture.width == 256 and picture.height > 256  # 32 px crop scaled x8, caption band

    vit = tiny_vit()
    picture, facts = explain(vit, image)  # no config: the model's own 16 px, ImageNet stats
    assert facts["method"] == "rollout" and facts["map_size"] == [4, 4] and "layer" not in facts
    with pytest.raises(ConfigError, match="attention rollout is class-agnostic"):
        explain(vit, image, target=1)
    with pytest.raises(ConfigError, match=r"method='cam' is not valid.*auto, rollout, gradcam"):
        explain(vit, image, "cam")


# --- the command ------------------------------------------------------------------------------


TINY = [
    "data=shapes",
    "data.image_size=32",
    "data.train_size=32",
    "data.val_size=16",
    "data.batch_size=16",
    "trainer.epochs=1",  # 2 optimiser steps
    "trainer.progress=false",
    "trainer.tensorboard=false",
    "trainer.plots=false",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    dirs = {}
    for model in ("vit_micro_patch4_32", "resnet18"):
        cfg = load_config(
            None,
            [f"model={model}", *TINY, f"trainer.output_dir={out}", f"trainer.run_name={model}"],
        )
        trainer = Trainer(cfg)
        trainer.fit()
        dirs[model] = trainer.run_dir
    return dirs


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(1)
    paths = []
    for name, shape in (("a.png", (40, 50, 3)), ("b.jpg", (32, 32, 3))):
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(folder / name)
        paths.append(str(folder / name))
    return paths


def test_cli_explain_vit_writes_rollout_pngs(runs, images, tmp_path, capsys):
    out = tmp_path / "ex"
    assert (
        main(
            [
                "explain",
                str(runs["vit_micro_patch4_32"]),
                *images,
                "--out",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    results = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in results] == images
    for r in results:
        assert r["method"] == "rollout" and r["map_size"] == [8, 8]
        assert r["output"].startswith(str(out)) and Image.open(r["output"]).width == 256
        assert {"label", "index", "prob"} <= r["prediction"].keys()


def test_cli_explain_cnn_gradcam_layer_and_target(runs, images, tmp_path, capsys):
    run = str(runs["resnet18"])
    out = tmp_path / "ex"
    argv = ["explain", run, images[0], "--out", str(out), "--layer", "layer3", "--target", "1"]
    assert main(argv) == 0
    [r] = json.loads(capsys.readouterr().out)
    assert r["method"] == "gradcam" and r["layer"] == "layer3" and r["target"]["index"] == 1
    assert r["map_size"] == [2, 2] and (out / "a.png").is_file()
    # A class by name, the checkpoint file itself instead of the run folder.
    name = r["target"]["label"]
    ckpt = str(runs["resnet18"] / "checkpoints" / "best.pt")
    assert main(["explain", ckpt, images[1], "--out", str(out), "--target", name]) == 0
    [r] = json.loads(capsys.readouterr().out)
    assert r["target"] == {**r["target"], "label": name, "index": 1} and r["layer"] == "layer4"


@pytest.mark.parametrize(
    ("model", "extra", "message"),
    [
        (
            "resnet18",
            ["--layer", "layer9"],
            "layer 'layer9' is not a module of ResNet (did you mean layer4",
        ),
        ("resnet18", ["--method", "rollout"], "use method 'gradcam' (--method gradcam) for CNNs"),
        (
            "resnet18",
            ["--method", "gradcams"],
            "--method 'gradcams' is not valid (did you mean gradcam?)",
        ),
        (
            "resnet18",
            ["--target", "dodecagon"],
            "--target 'dodecagon' is not a class of this model",
        ),
        ("resnet18", ["--target", "99"], "--target 99 is not a class index of this model"),
        ("vit_micro_patch4_32", ["--layer", "blocks.0"], "layer applies to Grad-CAM only"),
        ("vit_micro_patch4_32", ["--method", "gradcam"], "produces no 4-D feature map"),
    ],
)
def test_cli_explain_errors_exit_2(runs, images, tmp_path, capsys, model, extra, message):
    assert main(["explain", str(runs[model]), images[0], "--out", str(tmp_path), *extra]) == 2
    assert message in capsys.readouterr().err


def test_cli_explain_missing_run(tmp_path, capsys):
    assert main(["explain", str(tmp_path / "nope"), "x.png"]) == 2
    assert "does not exist" in capsys.readouterr().err
