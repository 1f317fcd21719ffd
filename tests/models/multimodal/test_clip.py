"""CLIP: builders, towers, temperature, causal text encoder and end-of-text pooling, zero-shot
and retrieval helpers, argument errors. (Parity with open_clip: tests/interop/test_open_clip.py.)"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import visionzoo as vz
from visionzoo.data.tokenizers import train_tokenizer
from visionzoo.errors import ModelArgumentError
from visionzoo.losses.contrastive import clip_loss
from visionzoo.models.multimodal.clip import (
    CLIP,
    CLIPOutput,
    retrieval_scores,
    zero_shot_classifier,
    zero_shot_predict,
)
from visionzoo.models.multimodal.modified_resnet import ModifiedResNet
from visionzoo.models.multimodal.text import QuickGELU, TextTransformer
from visionzoo.registry import get_model_entry

# Parameter counts of open_clip's ViT-B-32, ViT-B-16 and RN50 (checked against the open_clip
# models themselves in the interop test).
PUBLISHED_PARAMS = {
    "clip_vit_b_32": 151_277_313,
    "clip_vit_b_16": 149_620_737,
    "clip_rn50": 102_007_137,
}


def tiny_vit(**kwargs) -> CLIP:
    args = dict(
        embed_dim=16,
        image_size=32,
        vision_layers=2,
        vision_width=32,
        vision_patch_size=8,
        vision_heads=2,
        context_length=12,
        vocab_size=50,
        text_width=32,
        text_heads=2,
        text_layers=2,
    )
    args.update(kwargs)
    return CLIP(**args)


def tiny_text(**kwargs) -> TextTransformer:
    args = dict(vocab_size=50, context_length=12, width=32, layers=2, heads=2, output_dim=16)
    return TextTransformer(**{**args, "eot_token_id": 49, **kwargs})


def tokens(n: int, length: int = 12, eot: int = 49, vocab: int = 40, seed: int = 0) -> torch.Tensor:
    """Rows of random ids < vocab ending with eot at varying positions, padded with 0."""
    g = torch.Generator().manual_seed(seed)
    out = torch.zeros(n, length, dtype=torch.long)
    for i in range(n):
        m = 2 + (i * 3) % (length - 2)
        out[i, :m] = torch.randint(3, vocab, (m,), generator=g)
        out[i, m] = eot
    return out


def test_registry_entries_and_sizes():
    names = vz.list_models(task="image-text")
    assert {
        "clip_vit_b_32",
        "clip_vit_b_16",
        "clip_rn50",
        "clip_tiny",
        "clip_tiny_vit",
        "clip_tiny_rn",
    } <= set(names)
    for name, count in PUBLISHED_PARAMS.items():
        entry = get_model_entry(name)
        assert (entry.family, entry.paper, entry.model_class) == ("clip", "arXiv:2103.00020", CLIP)
        with torch.device("meta"):
            model = vz.create_model(name)
        assert sum(p.numel() for p in model.parameters()) == count
    assert get_model_entry("clip_tiny").input_size == (3, 32, 32)
    assert get_model_entry("clip_tiny_vit").input_size == (3, 64, 64)
    # The toys' architecture arguments are defaults, not fixed by the name.
    with torch.device("meta"):
        narrow = vz.create_model("clip_tiny_vit", vision_width=128)
        tiny_rn = vz.create_model("clip_tiny_rn")
    assert narrow.visual.width == 128 and narrow.visual.blocks[0].attn.num_heads == 2
    assert isinstance(tiny_rn.visual, ModifiedResNet) and tiny_rn.visual.attnpool.num_heads == 16
    assert sum(p.numel() for p in tiny_rn.parameters()) == 6_178_353
    with torch.device("meta"):
        rn50 = vz.create_model("clip_rn50")
        b16 = vz.create_model("clip_vit_b_16", act_layer="quick_gelu")
    assert isinstance(rn50.visual, ModifiedResNet) and rn50.visual.attnpool.num_heads == 32
    assert b16.visual.patch_size == 16 and len(b16.visual.blocks) == 12
    assert isinstance(b16.text.blocks[0].mlp.act, QuickGELU)


def test_clip_tiny_trains_with_a_trained_tokenizer():
    captions = ["a large red circle", "a small blue square", "a large green star left of a circle"]
    tok = train_tokenizer(captions * 4, vocab_size=100, style="clip", context_length=32)
    model = vz.create_model("clip_tiny", vocab_size=tok.vocab_size, eot_token_id=tok.eot_token_id)
    assert (model.context_length, model.vocab_size, model.embed_dim) == (32, tok.vocab_size, 128)
    assert model.vision_type == "zoo"
    images = torch.randn(3, 3, 32, 32)
    out = model(images, tok(captions))
    assert isinstance(out, CLIPOutput)
    image_features, text_features, scale = out  # open_clip's order
    assert image_features.shape == text_features.shape == (3, 128)
    assert torch.allclose(image_features.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(text_features.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert scale.ndim == 0 and scale.item() == pytest.approx(1 / 0.07, rel=1e-5)
    loss = clip_loss(*out)
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert no_grad == []
    logits_per_image, logits_per_text = model.logits(images, tok(captions))
    assert torch.allclose(logits_per_image, scale * image_features @ text_features.t(), atol=1e-5)
    assert torch.equal(logits_per_text, logits_per_image.t())
    # One input only: the other feature is None.
    assert model(images=images).text_features is None


def test_logit_scale_init_clamp_and_switch():
    model = tiny_vit()
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert model(tokens=tokens(2)).logit_scale.item() == pytest.approx(100.0)
    model.clamp_logit_scale_()
    assert model.logit_scale.item() == pytest.approx(math.log(100))
    fixed = tiny_vit(learn_logit_scale=False, init_logit_scale=math.log(20))
    assert not fixed.logit_scale.requires_grad
    assert fixed(tokens=tokens(1)).logit_scale.item() == pytest.approx(20.0)


def test_causal_mask_and_eot_pooling():
    torch.manual_seed(0)
    text = tiny_text()
    text.eval()
    ids = tokens(3)
    base = text(ids)
    # Tokens after the end token cannot reach it through the causal mask.
    changed = ids.clone()
    for i in range(3):
        end = int((ids[i] == 49).nonzero()[0])
        changed[i, end + 1 :] = 7
    assert torch.allclose(text(changed), base, atol=1e-6)
    # Pooling reads the first end token's feature (after the final LayerNorm, projected).
    x = text.forward_tokens(ids)
    ends = (ids == 49).int().argmax(dim=1)
    assert torch.allclose(base, text.proj(x[torch.arange(3), ends]), atol=1e-6)
    # Argmax pooling (OpenAI's vocabulary) reads the highest id's position.
    text.eot_token_id = None
    assert torch.allclose(text(ids), text.proj(x[torch.arange(3), ids.argmax(dim=1)]), atol=1e-6)
    # Without the causal mask, later tokens do change the feature (the switch is real).
    bidirectional = tiny_text(causal=False)
    bidirectional.load_state_dict(text.state_dict())
    bidirectional.eval()
    assert not torch.allclose(bidirectional(changed), bidirectional(ids), atol=1e-4)
    # Shorter inputs than the context use the first positions.
    assert text(ids[:, :8]).shape == (3, 16)


def test_resnet_tower_and_other_input_sizes():
    torch.manual_seed(0)
    model = tiny_vit(
        vision_layers=(1, 1, 1, 1), vision_width=16, vision_patch_size=None, image_size=64
    ).eval()
    assert model.vision_type == "resnet"
    assert model.visual.attnpool.positional_embedding.shape == (2 * 2 + 1, 512)
    assert model.encode_image(torch.randn(2, 3, 64, 64)).shape == (2, 16)
    # Other multiples of 32 (the pooling position embedding is resampled) run too.
    assert model.encode_image(torch.randn(1, 3, 96, 128)).shape == (1, 16)
    vit = tiny_vit().eval()
    assert vit.encode_image(torch.randn(1, 3, 48, 40)).shape == (1, 16)
    # Loading a state dict of another training size resamples the position embeddings.
    bigger = tiny_vit(image_size=48)
    bigger.load_state_dict(vit.state_dict())
    assert bigger.visual.pos_embed.shape == (1, 1 + 36, 32)


def test_zero_shot_classifier_and_predict():
    torch.manual_seed(0)
    model = tiny_vit().eval()

    def tokenizer(texts):
        # A fake tokenizer: one id per word (ids 3..39), then the end token 49.
        out = torch.zeros(len(texts), 12, dtype=torch.long)
        for i, text in enumerate(texts):
            ids = [3 + sum(map(ord, w)) % 37 for w in text.split()][:10] + [49]
            out[i, : len(ids)] = torch.tensor(ids)
        return out

    names = ["circle", "square", "star"]
    templates = ["a photo of a {}.", lambda c: f"a drawing of a {c}"]
    weights = zero_shot_classifier(model, tokenizer, names, templates, batch_size=4)
    assert weights.shape == (3, 16)
    with torch.no_grad():
        for k, name in enumerate(names):
            texts = [f"a photo of a {name}.", f"a drawing of a {name}"]
            feats = F.normalize(model.encode_text(tokenizer(texts)), dim=-1)
            assert torch.allclose(weights[k], F.normalize(feats.mean(0), dim=0), atol=1e-6)
    images = torch.randn(4, 3, 32, 32)
    logits = zero_shot_predict(model, images, weights)
    with torch.no_grad():
        expected = model.scale() * model.encode_image(images, normalize=True) @ weights.t()
    assert logits.shape == (4, 3) and torch.allclose(logits, expected, atol=1e-5)
    with pytest.raises(ModelArgumentError, match="no '\\{\\}' placeholder"):
        zero_shot_classifier(model, tokenizer, names, ["a photo"])
    with pytest.raises(ModelArgumentError, match="class_names must be a non-empty list"):
        zero_shot_classifier(model, tokenizer, "circle")


def test_retrieval_scores_are_cosine_similarities():
    torch.manual_seed(0)
    model = tiny_vit().eval()
    images, ids = torch.randn(5, 3, 32, 32), tokens(3)
    sims = retrieval_scores(model, images, ids, batch_size=2)
    with torch.no_grad():
        expected = (
            model.encode_image(images, normalize=True) @ model.encode_text(ids, normalize=True).t()
        )
    assert sims.shape == (5, 3) and torch.allclose(sims, expected, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"vision_layers": (1, 1, 1, 1)}, "takes no patch size"),
        ({"vision_patch_size": None}, "needs vision_patch_size"),
        ({"vision_layers": "12"}, "vision_layers must be an int"),
        ({"act_layer": "relu"}, "act_layer must be one of 'gelu', 'quick_gelu'"),
        ({"eot_token_id": 50}, r"eot_token_id must be None .* \[0, 50\)"),
        ({"init_logit_scale": 5.0}, "init_logit_scale 5.0 exceeds max_logit_scale"),
        ({"image_size": 36}, "image_size 36 must be a multiple of patch_size 8"),
        ({"text_heads": 5}, "width 32 must be divisible by heads 5"),
        ({"learn_logit_scale": "no"}, "learn_logit_scale must be True or False"),
        ({"embed_dim": 0}, "embed_dim must be a positive integer"),
    ],
)
def test_argument_errors(kwargs, match):
    with pytest.raises(ModelArgumentError, match=match):
        tiny_vit(**kwargs)


def test_builder_and_input_errors():
    with pytest.raises(ModelArgumentError, match="clip_vit_b_32: .*multiple values .*embed_dim"):
        vz.create_model("clip_vit_b_32", embed_dim=256)
    with pytest.raises(ModelArgumentError, match="valid arguments: .*eot_token_id"):
        vz.create_model("clip_tiny", eot_token=2)
    model = tiny_vit()
    with pytest.raises(
        ModelArgumentError, match="13 tokens exceed the text model's context_length 12"
    ):
        model.encode_text(torch.zeros(1, 13, dtype=torch.long))
    with pytest.raises(ModelArgumentError, match=r"expected token ids Tensor\[N, L\]"):
        model.encode_text(torch.zeros(2, 12))
    with pytest.raises(ModelArgumentError, match="not a multiple of the patch size 8"):
        model.encode_image(torch.randn(1, 3, 30, 30))
    resnet = tiny_vit(
        vision_layers=(1, 1, 1, 1), vision_width=16, vision_patch_size=None, image_size=64
    )
    with pytest.raises(ModelArgumentError, match="not a multiple of 32"):
        resnet.encode_image(torch.randn(1, 3, 48, 48))


def test_zoo_image_tower():
    """``vision_model``: a zoo classifier whose classifier is the projection to E."""
    from visionzoo.errors import UnknownModelError

    model = vz.create_model("clip_tiny", embed_dim=24, vocab_size=50, eot_token_id=2)
    reference = vz.create_model("resnet20", num_classes=24)
    assert sum(p.numel() for p in model.visual.parameters()) == sum(
        p.numel() for p in reference.parameters()
    )
    # The tower is the zoo model itself: its weights load into it and give the same features.
    model.visual.load_state_dict(reference.state_dict())
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    reference.eval()
    assert torch.equal(model.encode_image(x), reference(x))
    # Another classifier with its own switches.
    other = vz.create_model(
        "clip_tiny", vision_model="resnet18", vision_model_args={"shortcut": False}
    )
    assert other.visual.fc.out_features == 128
    with pytest.raises(UnknownModelError, match="resnet2O"):
        vz.create_model("clip_tiny", vision_model="resnet2O")
    with pytest.raises(ModelArgumentError, match="must be a classifier"):
        vz.create_model("clip_tiny", vision_model="clip_tiny_rn")
    with pytest.raises(ModelArgumentError, match="may not set num_classes"):
        vz.create_model("clip_tiny", vision_model_args={"num_classes": 3})
    with pytest.raises(ModelArgumentError, match="vision_model must be a zoo model name"):
        vz.create_model("clip_tiny", vision_model=3)
    with pytest.raises(ModelArgumentError, match="vision_model_args must be a dict"):
        vz.create_model("clip_tiny", vision_model_args=[1])


def test_normalised_features_are_float32_under_autocast():
    torch.manual_seed(0)
    model = tiny_vit().eval()
    images, ids = torch.randn(2, 3, 32, 32), tokens(2)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(images, ids)
        raw = model.encode_image(images)  # unnormalised: left in the autocast dtype
    assert out.image_features.dtype == torch.float32
    assert out.text_features.dtype == torch.float32
    assert raw.dtype == torch.bfloat16
    assert torch.allclose(out.image_features.norm(dim=-1), torch.ones(2), atol=1e-6)
    with torch.no_grad():
        ref = model(images, ids)
    assert (out.image_features - ref.image_features).abs().max() < 0.05


@pytest.mark.parametrize("buckets", [1, 2, 3, 7, 50])
def test_length_buckets_give_the_full_length_features_and_gradients(buckets):
    """The causal tower runs rows grouped by end-of-text position, each group cut after its
    last end token: features and gradients equal a pass over the whole padded batch."""
    torch.manual_seed(0)
    full = tiny_text()
    fast = tiny_text(length_buckets=buckets)
    fast.load_state_dict(full.state_dict())
    ids = tokens(7, seed=3)[[4, 0, 6, 2, 5, 1, 3]]  # unsorted lengths
    # The reference: every position of every row, pooled at the end token.
    x = full.forward_tokens(ids)
    expected = full.proj(full.pool(x, ids))
    got = fast(ids)
    assert torch.allclose(got, expected, atol=1e-6)
    expected.square().sum().backward()
    got.square().sum().backward()
    for (name, a), b in zip(full.named_parameters(), fast.parameters(), strict=True):
        assert a.grad is not None and torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-4), name
    # Rows after their end tokens never reach the pooled feature, so only the first
    # max(end) + 1 positions run: the position embedding beyond them gets no gradient.
    last = int((ids == 49).int().argmax(dim=1).max())
    assert fast.pos_embed.grad[0, last + 1 :].abs().sum() == 0
    assert fast.pos_embed.grad[0, : last + 1].abs().sum() > 0


def test_length_buckets_switch_and_errors():
    ids = tokens(5)  # end tokens at positions 2, 5, 8, 11, 4
    # Which rows run together, and how many positions each group runs.
    text = tiny_text(length_buckets=2)
    seen = []
    inner = text.forward_tokens
    text.forward_tokens = lambda t: seen.append(tuple(t.shape)) or inner(t)
    text(ids)
    assert seen == [(3, 6), (2, 12)]  # ends 2, 4, 5 | 8, 11
    seen.clear()
    text.length_buckets = 1
    text(ids[[0, 4, 1]])
    assert seen == [(3, 6)]  # one group, cut after the last end token
    # A bidirectional tower reads every position: no cut (changing pads changes the feature).
    bidirectional = tiny_text(causal=False, length_buckets=3).eval()
    changed = ids.clone()
    changed[ids == 0] = 7
    assert not torch.allclose(bidirectional(changed), bidirectional(ids), atol=1e-4)
    assert tiny_text(length_buckets=2)(ids[:0]).shape == (0, 16)
    with pytest.raises(ModelArgumentError, match="length_buckets must be a positive integer"):
        tiny_text(length_buckets=0)
    model = vz.create_model("clip_tiny", vocab_size=50, eot_token_id=2, text_length_buckets=4)
    assert model.text.length_buckets == 4


def test_attention_pool_over_a_zoo_tower():
    """``vision_pool="attention"``: CLIP's attention pool over the zoo tower's feature map
    replaces its average pool and classifier; every trainable parameter is used."""
    from visionzoo.models.multimodal.clip import ZooAttentionPoolTower

    torch.manual_seed(0)
    model = vz.create_model(
        "clip_tiny",
        embed_dim=24,
        vocab_size=50,
        eot_token_id=2,
        vision_pool="attention",
        image_size=48,
    )
    tower = model.visual
    assert isinstance(tower, ZooAttentionPoolTower)
    assert isinstance(tower.trunk.fc, torch.nn.Identity)
    # resnet20 at 48 px: a 12 x 12 map of 64 channels; one head of 64 (C / 64) by default.
    assert tower.attnpool.positional_embedding.shape == (145, 64)
    assert tower.attnpool.num_heads == 1 and tower.attnpool.c_proj.out_features == 24
    x = torch.randn(3, 3, 48, 48)
    tower.eval()
    feats = tower.trunk.forward_features(x)
    assert torch.equal(model.encode_image(x), tower.attnpool(feats))
    # The probe that sized the pool left the batch-norm statistics alone.
    reference = vz.create_model("resnet20", num_classes=24)
    assert torch.equal(tower.trunk.bn1.running_mean, reference.bn1.running_mean)
    # (A probe in training mode would leave the means at 0 on its zero image but pull every
    # running variance towards 0 and count a batch.)
    ours = dict(tower.trunk.named_buffers())
    assert ours.keys() == dict(reference.named_buffers()).keys()
    for name, buffer in reference.named_buffers():
        assert torch.equal(ours[name], buffer), name
    tower.train()
    model.encode_image(x).sum().backward()
    assert all(p.grad is not None for p in model.visual.parameters() if p.requires_grad)
    # Heads are a switch; a tower with auxiliary heads has them frozen (never reached).
    four = vz.create_model("clip_tiny", vision_pool="attention", vision_heads=4)
    assert four.visual.attnpool.num_heads == 4
    inception = vz.create_model(
        "clip_tiny",
        vision_model="googlenet",
        vision_model_args={"aux_logits": True},
        vision_pool="attention",
        image_size=64,
    )
    frozen = {
        n.split(".")[1] for n, p in inception.visual.named_parameters() if not p.requires_grad
    }
    assert frozen == {"aux1", "aux2"}
    with pytest.raises(ModelArgumentError, match=r"square feature map .*got shape \(1, 65, 128\)"):
        vz.create_model("clip_tiny", vision_model="vit_micro_patch4_32", vision_pool="attention")
    with pytest.raises(ModelArgumentError, match="vision_pool must be 'avg' or 'attention'"):
        vz.create_model("clip_tiny", vision_pool="max")
    with pytest.raises(ModelArgumentError, match="applies to a zoo image tower"):
        tiny_vit(vision_pool="attention")
