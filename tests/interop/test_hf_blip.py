"""interop.hf_blip.from_hf_blip: transformers' BlipForConditionalGeneration and
BlipForImageTextRetrieval with random weights, converted, give the same LM logits, ITM logits,
ITC similarities and generated captions (greedy and beam search) as the originals."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

from tests.conftest import TOLERANCES  # noqa: E402
from visionzoo.errors import ModelArgumentError  # noqa: E402
from visionzoo.interop.hf_blip import convert_state_dict, from_hf_blip  # noqa: E402
from visionzoo.registry import create_model  # noqa: E402

TOL = TOLERANCES["parity_fp32"]
BOS, ENC, CLS, SEP, PAD = 98, 99, 1, 3, 0


def blip_config(
    vision_width: int = 64,
    vision_layers: int = 2,
    vision_heads: int = 4,
    image_size: int = 32,
    patch_size: int = 8,
    text_width: int = 64,
    text_layers: int = 2,
    text_heads: int = 4,
    vocab_size: int = 100,
    vision_eps: float = 1e-5,
):
    return transformers.BlipConfig(
        vision_config=dict(
            hidden_size=vision_width,
            intermediate_size=2 * vision_width,
            num_hidden_layers=vision_layers,
            num_attention_heads=vision_heads,
            image_size=image_size,
            patch_size=patch_size,
            layer_norm_eps=vision_eps,
        ),
        text_config=dict(
            vocab_size=vocab_size,
            hidden_size=text_width,
            intermediate_size=2 * text_width,
            num_hidden_layers=text_layers,
            num_attention_heads=text_heads,
            max_position_embeddings=40,
            bos_token_id=vocab_size - 2,
            pad_token_id=PAD,
            sep_token_id=SEP,
            eos_token_id=SEP,
        ),
        image_text_hidden_size=32,
    )


def randomize(model: nn.Module) -> nn.Module:
    """O(1) random weights (transformers initialises the ViT with std 1e-10, which would make a
    wrong mapping invisible), random LayerNorm affines."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name.lower():
                p.uniform_(0.5, 1.5) if name.endswith("weight") else p.normal_(0.0, 0.1)
            elif p.ndim >= 2:
                bound = math.sqrt(3.0 / p[0].numel())
                p.uniform_(-bound, bound)
            else:
                p.normal_(0.0, 0.5 if p.ndim == 3 else 0.1)
    return model.eval()


def build(cls, config) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return randomize(cls(config))


def captions(n: int, length: int, first: int, vocab: int = 100, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab - 2, (n, length), generator=g)
    ids[:, 0] = first
    mask = torch.ones_like(ids)
    mask[-1, length - 3 :] = 0  # one padded caption
    ids[-1, length - 3 :] = PAD
    return ids, mask


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.fixture(scope="module")
def captioner():
    torch.manual_seed(0)
    return build(transformers.BlipForConditionalGeneration, blip_config())


@pytest.fixture(scope="module")
def retriever():
    torch.manual_seed(1)
    return build(transformers.BlipForImageTextRetrieval, blip_config())


def test_captioning_lm_logits(captioner):
    ours = from_hf_blip(captioner, cls_token_id=CLS)
    assert not ours.with_retrieval and ours.text_decoder is not None
    assert ours.visual_encoder.norm.eps == 1e-5 and ours.decoder.embeddings.norm.eps == 1e-12
    x = torch.randn(3, 3, 32, 32)
    ids, mask = captions(3, 9, first=BOS)  # the decoder starts with [DEC] (bos)
    with torch.no_grad():
        theirs = captioner(pixel_values=x, input_ids=ids, attention_mask=mask).logits
        mine = ours.lm_logits(ids, mask, images=x)
        assert max_diff(theirs, mine) <= TOL
        tokens = captioner.vision_model(pixel_values=x).last_hidden_state
        assert max_diff(tokens, ours.image_tokens(x)) <= TOL


def test_retrieval_itm_and_itc(retriever):
    ours = from_hf_blip(retriever, cls_token_id=CLS)
    assert ours.enc_token_id == ENC and not ours.with_captioning
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        # ITM: the image-grounded encoder's first token ([ENC]) through itm_head.
        ids, mask = captions(3, 9, first=ENC)
        theirs = retriever(input_ids=ids, pixel_values=x, attention_mask=mask).itm_score
        mine = ours.itm_logits(ids, mask, images=x)
        assert max_diff(theirs, mine) <= TOL
        # ITC: cosine similarity of the projected [CLS] features (no temperature in HF).
        ids, mask = captions(3, 9, first=CLS)
        theirs = retriever(
            input_ids=ids, pixel_values=x, attention_mask=mask, use_itm_head=False
        ).itm_score
        mine = ours.encode_image(x) @ ours.encode_text(ids, mask).T
        assert max_diff(theirs, mine) <= TOL
        assert (theirs - theirs.mean()).abs().max() > 1e-2  # a real, varied signal


def strip(sequences: torch.Tensor, prefix_len: int) -> list[list[int]]:
    out = []
    for row in sequences.tolist():
        tokens = row[prefix_len:]
        out.append(tokens[: tokens.index(SEP)] if SEP in tokens else tokens)
    return out


@pytest.mark.parametrize("num_beams", [1, 3])
def test_generation_matches_transformers(num_beams):
    torch.manual_seed(2)
    captioner = build(transformers.BlipForConditionalGeneration, blip_config())
    with torch.no_grad():
        captioner.text_decoder.cls.predictions.bias[SEP] += 3.0  # captions of several lengths
    ours = from_hf_blip(captioner, cls_token_id=CLS)
    x = torch.randn(4, 3, 32, 32)
    settings = dict(num_beams=num_beams, max_length=14, min_length=4)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = strip(captioner.generate(pixel_values=x, **settings), 1)
        # A prompt: transformers takes [CLS] prompt [SEP], puts bos first and drops the [SEP].
        prompt = [17, 23]
        prompt_ids = torch.tensor([[CLS, *prompt, SEP]]).repeat(4, 1)
        theirs_prompted = strip(
            captioner.generate(pixel_values=x, input_ids=prompt_ids, **settings), 3
        )
    assert ours.generate_ids(x, **settings) == theirs
    assert ours.generate_ids(x, prompt_ids=prompt, **settings) == theirs_prompted
    # eos and min_length both at work: no eos before the sequence ([DEC], prompt, tokens)
    # reaches 4 tokens, and captions of several lengths.
    assert min(len(t) for t in theirs) >= 3 and min(len(t) for t in theirs_prompted) >= 1
    assert len({len(t) for t in theirs + theirs_prompted}) > 1


def test_larger_config():
    # Head widths of 32 (not BLIP's 64), 96 px images: sizes and head counts come from the
    # config, the ViT's LayerNorm epsilon too.
    torch.manual_seed(3)
    cfg = blip_config(
        vision_width=256, vision_layers=4, vision_heads=8, image_size=96, patch_size=16,
        text_width=256, text_layers=4, text_heads=8, vocab_size=3000, vision_eps=1e-6,
    )  # fmt: skip
    x = torch.randn(2, 3, 96, 96)
    captioner = build(transformers.BlipForConditionalGeneration, cfg)
    ours = from_hf_blip(captioner, cls_token_id=CLS)
    assert ours.visual_encoder.norm.eps == 1e-6 and ours.img_size == 96
    ids, mask = captions(2, 12, first=2998, vocab=3000)
    with torch.no_grad():
        theirs = captioner(pixel_values=x, input_ids=ids, attention_mask=mask).logits
        assert max_diff(theirs, ours.lm_logits(ids, mask, images=x)) <= TOL
    retriever = build(transformers.BlipForImageTextRetrieval, cfg)
    ours = from_hf_blip(retriever, cls_token_id=CLS)
    ids, mask = captions(2, 12, first=2999, vocab=3000)
    with torch.no_grad():
        theirs = retriever(input_ids=ids, pixel_values=x, attention_mask=mask).itm_score
        assert max_diff(theirs, ours.itm_logits(ids, mask, images=x)) <= TOL


def test_state_dict_input_and_overrides(captioner):
    from_model = from_hf_blip(captioner, cls_token_id=CLS)
    # A bare state dict has no config: head counts default to width / 64, so give them.
    sd = captioner.state_dict()
    with pytest.raises(ModelArgumentError, match="cls_token_id"):
        from_hf_blip(sd)  # BERT's [CLS] id 101 is outside this 100-token vocabulary
    ours = from_hf_blip(
        sd, vision_heads=4, text_heads=4, cls_token_id=CLS, bos_token_id=BOS, eos_token_id=SEP
    )
    x = torch.randn(2, 3, 32, 32)
    ids, mask = captions(2, 7, first=BOS)
    with torch.no_grad():
        assert torch.equal(
            ours.lm_logits(ids, mask, images=x), from_model.lm_logits(ids, mask, images=x)
        )
    keys = convert_state_dict(sd)
    assert "text_decoder.lm_head.bias" in keys
    assert not any("cls.predictions" in k for k in keys)


def test_momentum_encoder_starts_from_the_converted_weights(retriever):
    ours = from_hf_blip(retriever, cls_token_id=CLS, momentum_encoder=True, queue_size=8)
    online = dict(ours.text_encoder.named_parameters())
    for name, p in ours.text_encoder_m.named_parameters():
        assert torch.equal(p, online[name]) and not p.requires_grad
    assert torch.equal(ours.visual_encoder_m.pos_embed, ours.visual_encoder.pos_embed)
    ids, mask = captions(2, 8, first=CLS)
    losses = ours.train()(torch.randn(2, 3, 32, 32), ids, mask)
    assert set(losses) == {"loss_itc", "loss_itm"} and int(ours.queue_ptr) == 2


def test_refuses_other_weights(captioner, retriever):
    sd = dict(captioner.state_dict())
    sd["text_decoder.cls.predictions.decoder.weight"] = (
        sd["text_decoder.cls.predictions.decoder.weight"].clone() + 1
    )
    with pytest.raises(ModelArgumentError, match="differs from the word embeddings"):
        from_hf_blip(sd, cls_token_id=CLS)
    both = {**captioner.state_dict(), **retriever.state_dict()}  # a VQA-like mixture
    with pytest.raises(ModelArgumentError, match="BlipForConditionalGeneration"):
        from_hf_blip(both, cls_token_id=CLS)
    sd = dict(retriever.state_dict())
    del sd["text_encoder.encoder.layer.1.crossattention.self.key.weight"]
    with pytest.raises(ModelArgumentError, match=r"missing \['text_encoder.layers.1.cross_attn"):
        from_hf_blip(sd, cls_token_id=CLS, bos_token_id=BOS, eos_token_id=SEP)


def test_base_sizes_match_transformers():
    # Our halves of blip_base hold exactly transformers' base models (BlipConfig()'s defaults:
    # ViT-B/16 at 384 px, BERT-base); the retrieval half adds the ITC temperature.
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = transformers.BlipConfig()
        hf_cap = transformers.BlipForConditionalGeneration(config)
        hf_ret = transformers.BlipForImageTextRetrieval(config)
        cap = create_model("blip_base", img_size=384, with_retrieval=False, momentum_encoder=False)
        ret = create_model("blip_base", img_size=384, with_captioning=False, momentum_encoder=False)

    def count(m: nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    assert count(cap) == count(hf_cap) == 223_971_644
    assert count(ret) == count(hf_ret) + 1
    assert sorted(convert_state_dict(hf_cap.state_dict())) == sorted(cap.state_dict())
    ret_keys = set(convert_state_dict(hf_ret.state_dict()))
    assert ret_keys == set(ret.state_dict()) - {"temp"}
