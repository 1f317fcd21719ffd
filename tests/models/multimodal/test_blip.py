"""BLIP (arXiv:2201.12086): the MED text transformer's three modes and its encoder-decoder
sharing, the ITC / ITM / LM losses against independent computations, hard-negative sampling,
momentum distillation and the queue, generation (greedy, beam, cache, min/max length, eos) and
ITM re-ranked retrieval. Parity with transformers is in tests/interop/test_hf_blip.py."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from visionzoo.errors import ModelArgumentError
from visionzoo.models.multimodal import blip as B
from visionzoo.models.multimodal.blip_text import BlipTextTransformer
from visionzoo.registry import create_model, get_model_entry, list_models

TOK = dict(pad_token_id=0, cls_token_id=2, eos_token_id=3, bos_token_id=5, enc_token_id=6)
VOCAB = 40


def small(**kwargs) -> B.BLIP:
    """A BLIP small enough for CPU tests: 32x32 images (16 patches), widths 32, 2 layers."""
    args = dict(
        img_size=32,
        patch_size=8,
        vision_width=32,
        vision_depth=2,
        vision_heads=2,
        vocab_size=VOCAB,
        text_width=32,
        text_depth=2,
        text_heads=2,
        text_mlp_dim=64,
        max_position_embeddings=24,
        embed_dim=16,
        text_dropout=0.0,
        **TOK,
    )
    args.update(kwargs)
    return B.BLIP(**args)


def randomize(model: nn.Module) -> nn.Module:
    """O(1) random weights so that outputs differ clearly between tokens and pairs."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5) if name.endswith("weight") else p.normal_(0.0, 0.1)
            elif p.ndim >= 2:
                bound = math.sqrt(3.0 / p[0].numel())
                p.uniform_(-bound, bound)
            elif name == "temp":
                p.fill_(0.1)
            else:
                p.normal_(0.0, 0.5 if p.ndim == 3 else 0.1)
    return model


def captions(n: int, length: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``[CLS] words [SEP] [PAD]...`` of random lengths, with the attention mask."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(7, VOCAB, (n, length), generator=g)
    mask = torch.zeros(n, length, dtype=torch.long)
    for i in range(n):
        words = int(torch.randint(3, length - 1, (1,), generator=g))
        ids[i, 0], ids[i, words + 1] = TOK["cls_token_id"], TOK["eos_token_id"]
        ids[i, words + 2 :] = TOK["pad_token_id"]
        mask[i, : words + 2] = 1
    return ids, mask


def images(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


# --- registry and builders -----------------------------------------------------------------------


def test_builders_registered():
    assert {"blip_base", "blip_tiny"} <= set(list_models(task="image-text"))
    for name in ("blip_base", "blip_tiny"):
        entry = get_model_entry(name)
        assert (entry.task, entry.family, entry.paper) == ("image-text", "blip", "arXiv:2201.12086")
        assert "share_except_self_attn" in entry.arguments()
    assert get_model_entry("blip_tiny").input_size == (3, 64, 64)


def test_blip_base_sizes():
    # ViT-B/16 + BERT-base MED. The halves equal transformers' base models (see test_hf_blip);
    # the shared pre-training model adds one causal self-attention per layer and the LM head.
    with torch.device("meta"):
        model = create_model("blip_base")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == 252_441_919  # the momentum copies are not trained
    assert model.queue_size == 57600 and model.momentum_encoder
    assert tuple(model.image_queue.shape) == (256, 57600)


def test_blip_tiny_trains_every_parameter():
    model = create_model("blip_tiny", vocab_size=VOCAB)
    ids, mask = captions(2, 10)
    x = torch.randn(2, 3, 64, 64)
    losses = model(x, ids, mask, prompt_length=1)
    assert set(losses) == {"loss_itc", "loss_itm", "loss_lm"}
    assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())
    sum(losses.values()).backward()
    # Every trainable tensor gets a gradient (DDP needs no find_unused_parameters). The [PAD]
    # embedding row is excluded by padding_idx, not by a missing gradient.
    for name, p in model.named_parameters():
        assert p.grad is not None, name


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(text_width=30, text_heads=4), "text_width 30 must be divisible by text_heads 4"),
        (dict(img_size=30), "img_size 30 must be a multiple of patch_size 8"),
        (dict(enc_token_id=VOCAB), r"enc_token_id must be a token id in \[0, 40\)"),
        (dict(queue_size=8), "queue_size=8 needs momentum_encoder=True"),
        (dict(with_retrieval=False, with_captioning=False), "both False"),
        (dict(share_except_self_attn="no"), "share_except_self_attn must be True or False"),
        (dict(alpha=1.5), r"alpha must be in \[0.0, 1.0\]"),
        (dict(temp=0.0), r"temp must be in \[0.001, 0.5\]"),
        (dict(with_retrieval=False, momentum_encoder=True), "need with_retrieval=True"),
    ],
)
def test_argument_errors(kwargs, match):
    with pytest.raises(ModelArgumentError, match=match):
        small(**kwargs)


def test_create_model_rejects_unknown_argument():
    with pytest.raises(ModelArgumentError, match="blip_tiny"):
        create_model("blip_tiny", vision_width=64)  # the architecture is the builder's name


def test_input_errors():
    model = small().eval()
    ids, mask = captions(2)
    with pytest.raises(ModelArgumentError, match="3 images but 2 captions"):
        model(images(3), ids, mask)
    with pytest.raises(ModelArgumentError, match="attention_mask must have the shape"):
        model(images(2), ids, mask[:, :5])
    with pytest.raises(ModelArgumentError, match="prompt_length"):
        model(images(2), ids, mask, prompt_length=ids.shape[1])
    caption_only = small(with_retrieval=False)
    with pytest.raises(ModelArgumentError, match="with_retrieval=False"):
        caption_only.encode_text(ids, mask)
    retrieval_only = small(with_captioning=False)
    with pytest.raises(ModelArgumentError, match="with_captioning=False"):
        retrieval_only.generate_ids(images(1))


# --- the text transformer ------------------------------------------------------------------------


def test_text_transformer_modes():
    torch.manual_seed(0)
    med = randomize(
        BlipTextTransformer(
            vocab_size=VOCAB, width=32, depth=2, num_heads=2, mlp_dim=64, encoder_width=24,
            max_position_embeddings=16, decoder_self_attn=True, lm_head=True, dropout=0.0,
            attn_dropout=0.0,
        )
    ).eval()  # fmt: skip
    ids = torch.randint(7, VOCAB, (2, 8))
    later = ids.clone()
    later[:, 5:] = torch.randint(7, VOCAB, (2, 3))
    img = torch.randn(2, 5, 24)
    with torch.no_grad():
        # Decoder: causal — positions before 5 do not see the changed tokens.
        dec = med(ids, mode="decoder", image_tokens=img)
        dec_later = med(later, mode="decoder", image_tokens=img)
        assert torch.allclose(dec[:, :5], dec_later[:, :5], atol=1e-6)
        assert not torch.allclose(dec[:, 5:], dec_later[:, 5:], atol=1e-3)
        # Encoders: bidirectional — every position sees the change.
        enc = med(ids, mode="multimodal", image_tokens=img)
        enc_later = med(later, mode="multimodal", image_tokens=img)
        assert (enc[:, :5] - enc_later[:, :5]).abs().amax() > 1e-3
        # The unimodal encoder ignores the image; the image-grounded one does not.
        assert torch.equal(med(ids, mode="text", image_tokens=img), med(ids, mode="text"))
        other = med(ids, mode="multimodal", image_tokens=torch.randn(2, 5, 24))
        assert (enc - other).abs().amax() > 1e-3
        # Padding: changing padded tokens leaves the real tokens' outputs unchanged.
        mask = torch.ones_like(ids)
        mask[:, 6:] = 0
        padded = ids.clone()
        padded[:, 6:] = 0
        a = med(ids, mask, mode="text")
        b = med(padded, mask, mode="text")
        assert torch.allclose(a[:, :6], b[:, :6], atol=1e-6)
    with pytest.raises(ModelArgumentError, match="needs image_tokens"):
        med(ids, mode="multimodal")
    with pytest.raises(ModelArgumentError, match="mode must be one of"):
        med(ids, mode="causal")
    with pytest.raises(ModelArgumentError, match="longer than max_position_embeddings 16"):
        med(torch.ones(1, 17, dtype=torch.long))


def test_kv_cache_matches_full_decoder_pass():
    torch.manual_seed(0)
    med = randomize(
        BlipTextTransformer(
            vocab_size=VOCAB, width=32, depth=2, num_heads=2, mlp_dim=64, encoder_width=24,
            max_position_embeddings=16, lm_head=True,
        )
    ).eval()  # fmt: skip
    ids = torch.randint(7, VOCAB, (3, 7))
    img = torch.randn(3, 5, 24)
    with torch.no_grad():
        full = med(ids, mode="decoder", image_tokens=img)
        cache = med.new_cache()
        steps = [med(ids[:, :3], mode="decoder", image_tokens=img, cache=cache)]  # a prefix
        for t in range(3, 7):
            steps.append(med(ids[:, t : t + 1], mode="decoder", image_tokens=img, cache=cache))
    assert cache.length == 7
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)


def test_encoder_decoder_share_all_but_self_attention():
    torch.manual_seed(0)
    shared = randomize(small()).eval()
    assert shared.text_decoder is None and shared.decoder is shared.text_encoder
    layer = shared.text_encoder.layers[0]
    assert layer.self_attn_dec is not None and layer.cross_attn is not None
    # Exactly one extra self-attention per layer and the LM head over the retrieval half.
    retrieval = small(with_captioning=False)

    def count(m: nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    extra = shared.text_encoder.depth * count(layer.self_attn) + count(shared.decoder.lm_head)
    assert count(shared) == count(retrieval) + extra
    # The decoder's self-attention is its own; the FFN (and cross-attention) are shared.
    ids, mask = captions(2)
    x = images(2)
    with torch.no_grad():
        enc, dec = shared.encode_text(ids, mask), shared.lm_logits(ids, mask, images=x)
        layer.self_attn_dec.query.weight.add_(0.5)
        assert torch.equal(shared.encode_text(ids, mask), enc)
        assert (shared.lm_logits(ids, mask, images=x) - dec).abs().amax() > 1e-3
        layer.mlp.fc1.weight.add_(0.5)
        assert (shared.encode_text(ids, mask) - enc).abs().amax() > 1e-3
    # share_except_self_attn=False: two separate MEDs, no tensor in common.
    separate = small(share_except_self_attn=False)
    assert separate.text_decoder is not None and separate.decoder is separate.text_decoder
    assert separate.text_encoder.layers[0].self_attn_dec is None
    enc_ptrs = {p.data_ptr() for p in separate.text_encoder.parameters()}
    assert enc_ptrs.isdisjoint(p.data_ptr() for p in separate.text_decoder.parameters())


# --- losses --------------------------------------------------------------------------------------


def test_itc_and_itm_match_independent_computation():
    torch.manual_seed(0)
    model = randomize(small(with_captioning=False)).eval()
    n = 5
    ids, mask = captions(n)
    x = images(n)
    losses = model(x, ids, mask, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        img, txt = model.encode_image(x), model.encode_text(ids, mask)
        assert torch.allclose(img.norm(dim=1), torch.ones(n))
        sim = img @ txt.T / model.temp  # (images, texts)
        target = torch.arange(n)
        itc = (F.cross_entropy(sim, target) + F.cross_entropy(sim.T, target)) / 2
        assert torch.allclose(losses["loss_itc"], itc, atol=1e-5)
        # Hard negatives: softmax(sim) + 1e-4 without the positive, same generator stream.
        g = torch.Generator().manual_seed(7)
        eye = torch.eye(n, dtype=torch.bool)
        w_i2t = (F.softmax(sim, dim=1) + 1e-4).masked_fill(eye, 0)
        w_t2i = (F.softmax(sim.T, dim=1) + 1e-4).masked_fill(eye, 0)
        neg_txt = torch.multinomial(w_i2t, 1, generator=g)[:, 0]
        neg_img = torch.multinomial(w_t2i, 1, generator=g)[:, 0]
        tokens = model.image_tokens(x)
        logits = torch.cat(
            [
                model.itm_logits(ids, mask, image_tokens=tokens),
                model.itm_logits(ids, mask, image_tokens=tokens[neg_img]),
                model.itm_logits(ids[neg_txt], mask[neg_txt], image_tokens=tokens),
            ]
        )
        labels = torch.tensor([1] * n + [0] * (2 * n))
        assert torch.allclose(losses["loss_itm"], F.cross_entropy(logits, labels), atol=1e-5)


def test_itc_with_image_ids_counts_every_pair_of_an_image_as_positive():
    torch.manual_seed(0)
    model = randomize(small(with_captioning=False)).eval()
    ids, mask = captions(4)
    x = images(4)
    image_ids = torch.tensor([7, 3, 7, 1])
    loss = model(x, ids, mask, image_ids=image_ids)["loss_itc"]
    with torch.no_grad():
        sim = model.encode_image(x) @ model.encode_text(ids, mask).T / model.temp
    same = (image_ids[:, None] == image_ids[None, :]).float()
    targets = same / same.sum(1, keepdim=True)
    expected = (
        -(
            (F.log_softmax(sim, 1) * targets).sum(1).mean()
            + (F.log_softmax(sim.T, 1) * targets).sum(1).mean()
        )
        / 2
    )
    assert torch.allclose(loss, expected, atol=1e-5)


def test_lm_loss_matches_independent_computation():
    torch.manual_seed(0)
    model = randomize(small(with_retrieval=False)).eval()
    ids, mask = captions(3, 12)
    x = images(3)
    prompt_length = 2
    loss = model(x, ids, mask, prompt_length=prompt_length)["loss_lm"]
    with torch.no_grad():
        logp = F.log_softmax(model.lm_logits(ids, mask, images=x), dim=-1)  # [DEC] first
    eps, terms = 0.1, []
    for i in range(3):
        for t in range(1 + prompt_length, ids.shape[1]):  # [DEC] and the prompt are given
            if mask[i, t]:
                row = logp[i, t - 1]
                terms.append((1 - eps) * -row[ids[i, t]] + eps * -row.mean())
    assert torch.allclose(loss, torch.stack(terms).mean(), atol=1e-5)
    # Without smoothing: the plain next-token cross-entropy.
    model.label_smoothing = 0.0
    plain = model(x, ids, mask, prompt_length=prompt_length)["loss_lm"]
    nll = [-logp[i, t - 1, ids[i, t]] for i in range(3) for t in range(3, 12) if mask[i, t]]
    assert torch.allclose(plain, torch.stack(nll).mean(), atol=1e-5)


def test_momentum_distillation_and_queue():
    torch.manual_seed(0)
    q, n, alpha = 6, 4, 0.4
    model = randomize(
        small(with_captioning=False, momentum_encoder=True, queue_size=q, alpha=alpha, momentum=0.9)
    )
    B.BLIP._copy_params(model.visual_encoder, model.visual_encoder_m)
    B.BLIP._copy_params(model.vision_proj, model.vision_proj_m)
    B.BLIP._copy_params(model.text_proj, model.text_proj_m)
    B.BLIP._copy_params(model.text_encoder, model.text_encoder_m)
    model.train()
    ids, mask = captions(n)
    x = images(n)
    image_queue, text_queue = model.image_queue.clone(), model.text_queue.clone()
    loss = model(x, ids, mask)["loss_itc"]
    with torch.no_grad():
        # The momentum model equals the online one here, so sim_m = sim.
        img, txt = model.encode_image(x), model.encode_text(ids, mask)
        temp = model.temp
        image_all = torch.cat([img, image_queue.T])  # (N+Q, E)
        text_all = torch.cat([txt, text_queue.T])
        sim_i2t, sim_t2i = img @ text_all.T / temp, txt @ image_all.T / temp
        hard = torch.eye(n, n + q)
        t_i2t = alpha * F.softmax(sim_i2t, 1) + (1 - alpha) * hard
        t_t2i = alpha * F.softmax(sim_t2i, 1) + (1 - alpha) * hard
        expected = (
            -(
                (F.log_softmax(sim_i2t, 1) * t_i2t).sum(1).mean()
                + (F.log_softmax(sim_t2i, 1) * t_t2i).sum(1).mean()
            )
            / 2
        )
    assert torch.allclose(loss, expected, atol=1e-5)
    # The batch's momentum features entered the queue at columns 0..3.
    assert torch.allclose(model.image_queue[:, :n], img.T, atol=1e-6)
    assert torch.allclose(model.text_queue[:, :n], txt.T, atol=1e-6)
    assert torch.equal(model.image_queue[:, n:], image_queue[:, n:])
    assert int(model.queue_ptr) == n
    # EMA: after the online weights move, one training forward moves the momentum weights
    # by (1 - momentum) of the gap; the queue wraps around (columns 4, 5, 0, 1).
    with torch.no_grad():
        model.vision_proj.weight.add_(1.0)
    before = model.vision_proj_m.weight.clone()
    model(x, ids, mask, image_ids=torch.arange(n))
    expected_m = 0.9 * before + 0.1 * model.vision_proj.weight
    assert torch.allclose(model.vision_proj_m.weight, expected_m, atol=1e-6)
    assert int(model.queue_ptr) == 2
    assert model.idx_queue.tolist() == [2, 3, -100, -100, 0, 1]
    assert not any(p.requires_grad for p in model.text_encoder_m.parameters())


def test_hard_negative_sampling():
    g = torch.Generator().manual_seed(0)
    # The positive (diagonal) is the most similar pair and is never drawn; the hardest other
    # pair (similarity 25) takes almost all the weight — all but BLIP's 1e-4 floor per pair.
    sim = torch.full((4, 4), -30.0)
    sim.fill_diagonal_(30.0)
    prefer = torch.tensor([2, 0, 3, 1])
    sim[torch.arange(4), prefer] = 25.0
    soft = math.exp(-5) / (1 + math.exp(-5))
    p_prefer = (soft + 1e-4) / (soft + 3e-4)
    draws = torch.stack(
        [torch.stack(B.sample_hard_negatives(sim, sim, generator=g)) for _ in range(100)]
    )
    assert (draws != torch.arange(4)).all()
    assert abs((draws == prefer).float().mean().item() - p_prefer) < 0.03
    # Frequencies follow softmax(sim) + 1e-4 without the diagonal. A circulant similarity
    # (sim[i, j] depends on (j - i) mod N only) gives every row the same distribution over
    # offsets, so one call yields N draws of it.
    n = 256
    profile = torch.full((n,), -8.0)
    profile[:5] = torch.tensor([6.0, 2.0, 1.0, 0.0, -1.0])  # offset 0 = the positive
    offsets = (torch.arange(n)[None, :] - torch.arange(n)[:, None]) % n
    sim = profile[offsets]  # (N, N)
    weights = F.softmax(profile, 0) + 1e-4
    weights[0] = 0
    weights = weights / weights.sum()
    assert torch.allclose(
        B.hard_negative_weights(sim)[0] / B.hard_negative_weights(sim)[0].sum(), weights
    )
    counts = torch.zeros(n)
    for _ in range(8):
        neg_txt, neg_img = B.sample_hard_negatives(sim, sim, generator=g)
        for neg in (neg_txt, neg_img):
            counts += torch.bincount((neg - torch.arange(n)) % n, minlength=n)
    freq = counts / counts.sum()  # 4096 draws
    assert counts[0] == 0  # never the positive
    assert torch.allclose(freq[1:5], weights[1:5], atol=0.025)
    assert abs(freq[5:].sum().item() - weights[5:].sum().item()) < 0.02  # the 1e-4 floor
    # Pairs of the same image are never negatives; a row with none left falls back to uniform.
    image_ids = torch.tensor([0, 0, 1, 1])
    w = B.hard_negative_weights(torch.zeros(4, 4), image_ids)
    assert torch.equal(w > 0, image_ids[:, None] != image_ids[None, :])
    w = B.hard_negative_weights(torch.zeros(3, 3), torch.tensor([5, 5, 5]))
    assert torch.equal(w, 1 - torch.eye(3))


def test_itc_loss_function():
    sim = torch.randn(3, 5)
    hard = torch.eye(3, 5)
    expected = F.cross_entropy(sim, torch.arange(3))
    assert torch.allclose(B.itc_loss(sim, sim, hard, hard), expected)


# --- generation ----------------------------------------------------------------------------------


def greedy_reference(model, x, prompt, max_length, min_length):
    """Token-by-token argmax, recomputing the whole sequence each step (no cache)."""
    out = []
    for i in range(x.shape[0]):
        seq = [TOK["bos_token_id"], *prompt]
        while len(seq) < max_length:
            tokens = model.image_tokens(x[i : i + 1])
            logits = model.lm_logits(torch.tensor([seq]), image_tokens=tokens)[0, -1]
            if len(seq) < min_length:
                logits[TOK["eos_token_id"]] = -math.inf
            seq.append(int(logits.argmax()))
            if seq[-1] == TOK["eos_token_id"]:
                break
        tokens = seq[1 + len(prompt) :]
        out.append(tokens[:-1] if tokens and tokens[-1] == TOK["eos_token_id"] else tokens)
    return out


@pytest.fixture
def captioner():
    torch.manual_seed(0)
    model = randomize(small(with_retrieval=False)).eval()
    with torch.no_grad():
        model.decoder.lm_head.bias[TOK["eos_token_id"]] += 2.5  # some captions end early
    return model


def test_greedy_equals_argmax_loop(captioner):
    x = images(4)
    with torch.no_grad():
        expected = greedy_reference(captioner, x, [9, 11], max_length=14, min_length=6)
    for use_cache in (True, False):
        got = captioner.generate_ids(
            x, prompt_ids=[9, 11], max_length=14, min_length=6, num_beams=1, use_cache=use_cache
        )
        assert got == expected
    assert any(len(t) < 14 - 3 for t in expected)  # eos stopped some captions
    # Beam search with one beam and no length normalisation is greedy search.
    beam1 = captioner.generate_ids(
        x, prompt_ids=[9, 11], max_length=14, min_length=6, num_beams=1, strategy="beam",
        length_penalty=0.0,
    )  # fmt: skip
    assert beam1 == expected


def test_beam_search_cache(captioner):
    x = images(3)
    kw = dict(max_length=12, min_length=4, num_beams=3)
    cached = captioner.generate_ids(x, **kw)
    assert captioner.generate_ids(x, use_cache=False, **kw) == cached
    assert cached != captioner.generate_ids(x, max_length=12, min_length=4, num_beams=1)


def test_beam_search_finds_what_greedy_misses(captioner):
    # A bigram "language model" where the greedy first word (A, p=.5) leads nowhere good and
    # the second (B, p=.4) leads to "B C eos" (p = .4 x .9 x .9): beam search with two beams
    # keeps B alive and returns it; greedy search walks A A A A A to max_length.
    a, b, c, eos, bos = 1, 2, 4, TOK["eos_token_id"], TOK["bos_token_id"]
    table = torch.full((VOCAB, VOCAB), 1e-6)
    table[bos, [a, b, c]] = torch.tensor([0.5, 0.4, 0.1])
    table[a, [a, b, c, eos]] = torch.tensor([0.31, 0.30, 0.29, 0.10])
    table[b, [c, eos, a]] = torch.tensor([0.9, 0.05, 0.05])
    table[c, [eos, a, b]] = torch.tensor([0.9, 0.05, 0.05])
    log_table = table.log()

    def step(new_ids, all_ids):
        return log_table[all_ids[:, -1]]

    args = dict(max_length=6, min_length=0, repetition_penalty=1.0)
    seqs, lengths = captioner._beam_search(step, None, torch.tensor([[bos], [bos]]), 2, **args,
                                           length_penalty=1.0)  # fmt: skip
    assert seqs[0, 1 : 1 + lengths[0]].tolist() == [b, c, eos]
    seqs, lengths = captioner._greedy(step, torch.tensor([[bos]]), **args)
    assert seqs[0, 1 : 1 + lengths[0]].tolist() == [a] * 5


def test_min_and_max_length(captioner):
    x = images(2)
    with torch.no_grad():
        captioner.decoder.lm_head.bias[TOK["eos_token_id"]] += 100.0  # eos always wins
    for beams in (1, 3):
        # eos stops at once...
        assert captioner.generate_ids(x, max_length=12, min_length=0, num_beams=beams) == [[], []]
        # ...unless min_length forbids it: the sequence [DEC] + prompt + tokens reaches 7 first.
        got = captioner.generate_ids(
            x, prompt_ids=[9], max_length=12, min_length=7, num_beams=beams
        )
        assert [len(t) for t in got] == [5, 5]
    with torch.no_grad():
        captioner.decoder.lm_head.bias[TOK["eos_token_id"]] -= 1000.0  # eos never wins
    for beams in (1, 3):
        got = captioner.generate_ids(x, max_length=9, min_length=0, num_beams=beams)
        assert [len(t) for t in got] == [8, 8]  # max_length counts [DEC]
    with pytest.raises(ModelArgumentError, match="max_position_embeddings 24"):
        captioner.generate_ids(x, max_length=25)
    with pytest.raises(ModelArgumentError, match="leaves no room"):
        captioner.generate_ids(x, prompt_ids=[9, 9], max_length=3)
    with pytest.raises(ModelArgumentError, match="strategy='greedy'"):
        captioner.generate_ids(x, strategy="greedy", num_beams=2)


def test_generate_with_a_tokenizer():
    from visionzoo.data.tokenizers import train_tokenizer

    texts = ["a large red circle", "a small blue square left of a red circle", "a picture of"]
    tok = train_tokenizer(texts * 5, vocab_size=60, style="blip", algorithm="wordpiece")
    ids_args = B.blip_token_ids(tok)
    assert ids_args["bos_token_id"] == tok.token_to_id("[DEC]")
    torch.manual_seed(0)
    model = randomize(small(with_retrieval=False, **ids_args)).eval()
    x = images(2)
    prompt = tok.encode("a picture of ")
    ids = model.generate_ids(x, prompt_ids=prompt, max_length=12, min_length=5, num_beams=2)
    texts_out = model.generate(
        x, tok, prompt="a picture of ", max_length=12, min_length=5, num_beams=2
    )
    assert texts_out == [tok.decode(t).strip() for t in ids]
    assert all(isinstance(t, str) for t in texts_out)
    # A plain decode callable works too.
    assert model.generate(x, lambda t: str(len(t)), prompt=prompt, max_length=12, num_beams=2) == [
        str(len(t)) for t in model.generate_ids(x, prompt_ids=prompt, max_length=12, num_beams=2)
    ]
    with pytest.raises(ModelArgumentError, match="no \\[PAD\\] token"):
        B.blip_token_ids(train_tokenizer(texts, vocab_size=40, style="clip"))


# --- retrieval -----------------------------------------------------------------------------------


def test_retrieve_reranks_top_k_with_itm():
    torch.manual_seed(0)
    model = randomize(small(with_captioning=False)).eval()
    x = images(4)
    ids, mask = captions(5)
    k = 2
    scores = model.retrieve(x, ids, mask, k=k, batch_size=3)
    with torch.no_grad():
        itc = model.encode_image(x) @ model.encode_text(ids, mask).T
        assert torch.allclose(scores.itc, itc, atol=1e-5)
        for i in range(4):
            top = set(itc[i].topk(k).indices.tolist())
            for j in range(5):
                match = model.itm_logits(ids[j : j + 1], mask[j : j + 1], images=x[i : i + 1])
                expected = float(match[0, 1] + itc[i, j]) if j in top else -100.0
                assert scores.i2t[i, j].item() == pytest.approx(expected, abs=1e-4)
                top_t = set(itc[:, j].topk(k).indices.tolist())
                expected = float(match[0, 1] + itc[i, j]) if i in top_t else -100.0
                assert scores.t2i[j, i].item() == pytest.approx(expected, abs=1e-4)
    # k >= the number of candidates re-ranks everything.
    full = model.retrieve(x, ids, mask, k=10)
    assert (full.i2t > -100).all() and (full.t2i > -100).all()


def test_itc_features_and_similarities_are_float32_under_autocast():
    torch.manual_seed(0)
    model = randomize(small()).eval()
    ids, mask = captions(2)
    x = images(2)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        f_img, f_txt = model.encode_image(x), model.encode_text(ids, mask)
    assert f_img.dtype == f_txt.dtype == torch.float32
    assert torch.allclose(f_img.norm(dim=-1), torch.ones(2), atol=1e-6)
    with torch.no_grad():
        ref = model.encode_image(x)
    assert (f_img - ref).abs().max() < 0.1
