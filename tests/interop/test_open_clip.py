"""interop.open_clip.from_open_clip: open_clip CLIP models with random weights, converted, give
the same image and text features (and zero-shot classifier); errors name what does not fit."""

from __future__ import annotations

import logging

import open_clip
import pytest
import torch
from open_clip.zero_shot_classifier import build_zero_shot_classifier
from torch import nn

from tests.conftest import TOLERANCES
from visionzoo.data.tokenizers import clip_bpe_tokenizer
from visionzoo.errors import ModelArgumentError
from visionzoo.interop import open_clip as oci
from visionzoo.models.multimodal.clip import CLIP, zero_shot_classifier
from visionzoo.models.multimodal.modified_resnet import ModifiedResNet
from visionzoo.models.multimodal.text import QuickGELU

TOL = TOLERANCES["parity_fp32"]
TEXTS = [
    "a photo of a cat.",
    "Two dogs, 3 balls!",
    "a very long caption " + " ".join(f"word{i}" for i in range(80)),  # truncated at 77
]


def random_open_clip(name: str, **kwargs) -> nn.Module:
    """open_clip's model with its random init, and non-trivial norms, BN statistics, biases
    and temperature (its init leaves LayerNorm at 1/0, attention biases at 0)."""
    logging.getLogger().setLevel(logging.ERROR)  # "No pretrained weights loaded" warning
    torch.manual_seed(0)
    model = open_clip.create_model(name, pretrained=None, **kwargs)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.2)
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.2)
                module.running_var.uniform_(0.5, 1.5)
            if isinstance(module, nn.MultiheadAttention):
                module.in_proj_bias.normal_(0.0, 0.1)
                module.out_proj.bias.normal_(0.0, 0.1)
        model.logit_scale.fill_(3.0)
    return model.eval()


def assert_close(got: torch.Tensor, expected: torch.Tensor, min_std: float = 0.1) -> None:
    assert got.shape == expected.shape and expected.std() > min_std  # not a trivial output
    assert (got - expected).abs().max().item() <= TOL


def check_parity(
    reference: nn.Module, ours: CLIP, image_size: int, context: int, forward: bool = False
) -> None:
    images = torch.randn(2, 3, image_size, image_size)
    ids = open_clip.tokenize(TEXTS, context_length=context)
    with torch.no_grad():
        assert_close(ours.encode_image(images), reference.encode_image(images))
        assert_close(ours.encode_text(ids), reference.encode_text(ids))
        if forward:
            got, expected = ours(images, ids), reference(images, ids)
            # (normalised image features, normalised text features, exp(logit_scale))
            for g, e in zip(got, expected, strict=True):
                assert g.shape == e.shape and (g - e).abs().max().item() <= TOL


@pytest.fixture(scope="module")
def vit_b_32() -> tuple[nn.Module, CLIP]:
    reference = random_open_clip("ViT-B-32")
    return reference, oci.from_open_clip("ViT-B-32", reference)


def test_vit_b_32_parity(vit_b_32):
    reference, ours = vit_b_32
    assert isinstance(ours, CLIP) and not ours.training and ours.vision_type == "vit"
    assert sum(p.numel() for p in ours.parameters()) == sum(
        p.numel() for p in reference.parameters()
    )
    check_parity(reference, ours, 224, 77)


def test_zero_shot_classifier_equals_open_clips(vit_b_32):
    reference, ours = vit_b_32
    names, templates = ["cat", "dog"], ["a photo of a {}.", "a drawing of a {}."]
    with torch.no_grad():
        expected = build_zero_shot_classifier(
            reference,
            open_clip.get_tokenizer("ViT-B-32"),
            names,
            templates,
            num_classes_per_batch=2,
            use_tqdm=False,
        )  # (E, K)
    # Our tokenizer, built from open_clip's merges file.
    tok = clip_bpe_tokenizer(open_clip.tokenizer.default_bpe())
    # Rows are unit vectors of 512 entries: std ~ 512 ** -0.5.
    assert_close(zero_shot_classifier(ours, tok, names, templates), expected.t(), min_std=0.02)


def test_rn50_parity():
    reference = random_open_clip("RN50")
    ours = oci.from_open_clip("RN50", reference.state_dict())  # a state dict works too
    assert isinstance(ours.visual, ModifiedResNet) and ours.embed_dim == 1024
    assert sum(p.numel() for p in ours.parameters()) == sum(
        p.numel() for p in reference.parameters()
    )
    check_parity(reference, ours, 224, 77)


def test_vit_b_16_quickgelu_at_another_size_and_context():
    # Image size and context length are read off the weights; QuickGELU from the name.
    reference = random_open_clip("ViT-B-16-quickgelu", force_image_size=64, force_context_length=20)
    ours = oci.from_open_clip("ViT-B-16-quickgelu", reference)
    assert (ours.image_size, ours.context_length) == (64, 20)
    assert isinstance(ours.visual.blocks[0].mlp.act, QuickGELU)
    check_parity(reference, ours, 64, 20, forward=True)
    assert ours.scale().item() == pytest.approx(reference.logit_scale.exp().item())


def test_errors():
    assert oci.supported_models() == sorted(oci.SPECS)
    assert {"ViT-B-32", "ViT-B-16", "RN50"} <= set(oci.supported_models())
    with pytest.raises(
        ModelArgumentError, match=r"no open_clip converter for 'ViT-B-33' \(did you mean"
    ):
        oci.from_open_clip("ViT-B-33", {})
    with pytest.raises(ModelArgumentError, match="have no 'token_embedding.weight'"):
        oci.from_open_clip("ViT-B-32", {"logit_scale": torch.tensor(1.0)})
    with pytest.raises(ModelArgumentError, match="expected an open_clip model or its state dict"):
        oci.from_open_clip("ViT-B-32", [1, 2])
    # ResNet weights under a ViT name: the keys that do not fit are named.
    with torch.device("meta"):
        rn50 = open_clip.create_model("RN50", pretrained=None, device="meta")
    sd = {k: torch.zeros(v.shape) for k, v in rn50.state_dict().items()}
    with pytest.raises(ModelArgumentError, match=r"do not fit visionzoo clip_vit_b_32: missing \["):
        oci.from_open_clip("ViT-B-32", sd)
