"""BLIP's text transformer, the "multimodal mixture of encoder-decoder" (MED) — Li et al.,
"BLIP: Bootstrapping Language-Image Pre-training for Unified Vision-Language Understanding and
Generation", arXiv:2201.12086, §3.1.

MED is BERT-base (arXiv:1810.04805: post-LayerNorm layers, LayerNorm eps 1e-12, exact GELU,
learned absolute positions) with a cross-attention to the image tokens inserted in every layer
between the self-attention and the feed-forward network. One network serves three modes (the
``mode`` argument of :meth:`BlipTextTransformer.forward`):

* ``"text"`` — unimodal encoder: bidirectional self-attention, no cross-attention. The output
  of the first token ([CLS]) is the text's ITC feature.
* ``"multimodal"`` — image-grounded encoder: bidirectional self-attention + cross-attention.
  BLIP replaces the first token by [ENC]; its output feeds the ITM head.
* ``"decoder"`` — image-grounded decoder: causal self-attention + cross-attention + the LM
  head. The sequence starts with [DEC] (the "bos" token).

**Sharing (``decoder_self_attn``).** The paper (§3.1, Table 3) shares *all* parameters between
the encoder and the decoder *except the self-attention layers*: bidirectional and causal
self-attention are different jobs, while the embeddings, cross-attention and FFN are shared.
With ``decoder_self_attn=True`` every layer carries a second self-attention ``self_attn_dec``
used in decoder mode only, so one module holds the shared encoder-decoder of BLIP's
pre-training (``BLIP(share_except_self_attn=True)``); the encoder modes use ``self_attn``. With
``decoder_self_attn=False`` decoder mode uses ``self_attn`` with a causal mask: that is how a
stand-alone decoder is built (the released captioning checkpoints, where the decoder is a
separate network, and our ``share_except_self_attn=False`` ablation). The self-attention's
output projection and LayerNorm belong to the self-attention, as in BLIP's
``tie_encoder_decoder_weights(..., skip_key="/attention")``.

**KV cache.** For generation, :class:`KVCache` keeps each layer's self-attention keys/values
of the tokens seen so far and the cross-attention keys/values of the image tokens (computed
once), so each decoding step runs the network on the new token only.

Departures from BERT/BLIP (each also marked where it happens): no token-type embeddings (BLIP's
MED has none either); attention through ``F.scaled_dot_product_attention`` with a boolean mask
(BERT adds -10000 / HF the dtype's minimum: identical softmax unless a query row has *no*
visible key, which needs a padded first token — the first token is always [CLS]/[ENC]/[DEC]);
the LM head's output weight is the word-embedding matrix itself (``F.linear``), not a separate
``decoder`` Linear tied to it, so the state dict holds it once.

Attribute names: ``embeddings.{word_embeddings, position_embeddings, norm}``,
``layers.N.{self_attn, self_attn_dec, cross_attn}.{query, key, value, out, norm}``,
``layers.N.mlp.{fc1, fc2, norm}``, ``lm_head.{dense, norm, bias}``; HF's BERT names map over
one for one (``interop.hf_blip``).

Shape glossary: N batch (or batch x beams), T text tokens (S of them already in the cache),
L image tokens, D text width, Dv image width, H heads, d = D / H, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ModelArgumentError
from .._checks import check_bool, check_choice, check_dropout, check_positive_int

__all__ = [
    "MODES",
    "KVCache",
    "MedAttention",
    "MedMlp",
    "MedLayer",
    "LMHead",
    "TextEmbeddings",
    "BlipTextTransformer",
]

MODES = ("text", "multimodal", "decoder")


@dataclass
class KVCache:
    """Per-layer keys and values kept between decoding steps.

    ``self_kv[i]``: the self-attention (k, v) of every token seen so far, each Tensor[N, H, S, d];
    ``cross_kv[i]``: the cross-attention (k, v) of the image tokens, each Tensor[N, H, L, d].
    """

    num_layers: int
    self_kv: list[tuple[Tensor, Tensor] | None] = field(default_factory=list)
    cross_kv: list[tuple[Tensor, Tensor] | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.self_kv = [None] * self.num_layers
        self.cross_kv = [None] * self.num_layers

    @property
    def length(self) -> int:
        """S, the number of tokens already in the cache."""
        kv = self.self_kv[0]
        return 0 if kv is None else kv[0].shape[2]

    def reorder(self, index: Tensor) -> None:
        """Keep rows ``index`` (Tensor[N'] of batch rows), e.g. the beams that survive a step."""
        self.self_kv = [
            None if kv is None else (kv[0].index_select(0, index), kv[1].index_select(0, index))
            for kv in self.self_kv
        ]
        self.cross_kv = [
            None if kv is None else (kv[0].index_select(0, index), kv[1].index_select(0, index))
            for kv in self.cross_kv
        ]


class MedAttention(nn.Module):
    """BERT attention sub-layer, post-norm: ``norm(x + drop(out(attn(query(x), key(c), value(c)))))``
    with ``c = x`` (self-attention) or the image tokens (cross-attention, ``kv_dim = Dv``).

    Separate ``query``/``key``/``value`` projections (rather than ViT's fused ``qkv``) because
    cross-attention takes keys and values from another sequence of another width, and the
    cache stores keys and values on their own.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        kv_dim: int | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        norm_eps: float = 1e-12,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ModelArgumentError(
                f"MedAttention: width {dim} is not divisible by num_heads {num_heads}"
            )
        kv_dim = kv_dim or dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.attn_drop = attn_drop
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(kv_dim, dim)
        self.value = nn.Linear(kv_dim, dim)
        self.out = nn.Linear(dim, dim)
        self.drop = nn.Dropout(proj_drop)
        self.norm = nn.LayerNorm(dim, eps=norm_eps)

    def _heads(self, x: Tensor) -> Tensor:
        n, length, _ = x.shape
        return x.view(n, length, self.num_heads, self.head_dim).transpose(1, 2)  # (N, H, T, d)

    def project_kv(self, context: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values of ``context`` Tensor[N, T, kv_dim] -> 2 x Tensor[N, H, T, d]."""
        return self._heads(self.key(context)), self._heads(self.value(context))

    def forward(self, x: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """``x`` Tensor[N, T, D] attends to keys/values Tensor[N, H, S, d]; ``attn_mask``
        (bool, True = visible) broadcastable to (N, H, T, S)."""
        n, length, dim = x.shape
        q = self._heads(self.query(x))  # (N, T, D) -> (N, H, T, d)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.attn_drop if self.training else 0.0
        )  # (N, H, T, d)
        y = y.transpose(1, 2).reshape(n, length, dim)  # (N, H, T, d) -> (N, T, D)
        return self.norm(x + self.drop(self.out(y)))


class MedMlp(nn.Module):
    """BERT feed-forward sub-layer, post-norm: ``norm(x + drop(fc2(gelu(fc1(x)))))``."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0, norm_eps: float = 1e-12) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact (erf) GELU, as BERT and HF's "gelu"
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)
        self.norm = nn.LayerNorm(dim, eps=norm_eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x + self.drop(self.fc2(self.act(self.fc1(x)))))


class MedLayer(nn.Module):
    """One MED layer: self-attention -> [cross-attention to the image] -> FFN.

    ``self_attn`` serves the encoder modes (and decoder mode when there is no ``self_attn_dec``);
    ``self_attn_dec`` (``decoder_self_attn=True``) is the decoder's own causal self-attention —
    the only part the paper does not share between encoder and decoder.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        encoder_width: int,
        cross_attention: bool = True,
        decoder_self_attn: bool = False,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        norm_eps: float = 1e-12,
    ) -> None:
        super().__init__()

        def attention(kv_dim: int) -> MedAttention:
            return MedAttention(dim, num_heads, kv_dim, attn_drop, drop, norm_eps)

        self.self_attn = attention(dim)
        self.self_attn_dec = attention(dim) if decoder_self_attn else None
        self.cross_attn = attention(encoder_width) if cross_attention else None
        self.mlp = MedMlp(dim, mlp_dim, drop, norm_eps)

    def forward(
        self,
        x: Tensor,
        self_mask: Tensor | None,
        image_tokens: Tensor | None,
        decoder: bool,
        cache: KVCache | None = None,
        index: int = 0,
    ) -> Tensor:
        attn = self.self_attn_dec if decoder and self.self_attn_dec is not None else self.self_attn
        k, v = attn.project_kv(x)  # 2 x (N, H, T, d)
        if cache is not None:
            past = cache.self_kv[index]
            if past is not None:
                k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)  # (N,H,S+T,d)
            cache.self_kv[index] = (k, v)
        x = attn(x, k, v, self_mask)
        if image_tokens is not None and self.cross_attn is not None:
            kv = cache.cross_kv[index] if cache is not None else None
            if kv is None:
                kv = self.cross_attn.project_kv(image_tokens)  # 2 x (N, H, L, d)
                if cache is not None:
                    cache.cross_kv[index] = kv
            # Every image token is visible (no image padding): no mask.
            x = self.cross_attn(x, kv[0], kv[1])
        return self.mlp(x)


class LMHead(nn.Module):
    """BERT's LM head: ``dense -> GELU -> LayerNorm -> (word embeddings)^T + bias``.

    Departure (state-dict layout only): the output projection is the word-embedding matrix
    passed in at call time (weight tying, as BERT and BLIP), not a separate tied Linear.
    """

    def __init__(self, dim: int, vocab_size: int, norm_eps: float = 1e-12) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, dim)
        self.act = nn.GELU()
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, x: Tensor, embedding_weight: Tensor) -> Tensor:
        """Tensor[..., D] -> Tensor[..., V] logits."""
        return F.linear(self.norm(self.act(self.dense(x))), embedding_weight, self.bias)


class TextEmbeddings(nn.Module):
    """Word + learned absolute position embeddings, LayerNorm, dropout (BERT without token
    types)."""

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        max_position_embeddings: int,
        pad_token_id: int,
        drop: float = 0.0,
        norm_eps: float = 1e-12,
    ) -> None:
        super().__init__()
        # padding_idx as BERT/BLIP: the [PAD] row starts at zero and receives no gradient.
        self.word_embeddings = nn.Embedding(vocab_size, dim, padding_idx=pad_token_id)
        self.position_embeddings = nn.Embedding(max_position_embeddings, dim)
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.drop = nn.Dropout(drop)

    def forward(self, input_ids: Tensor, start: int = 0) -> Tensor:
        """Tensor[N, T] token ids at positions ``start .. start+T-1`` -> Tensor[N, T, D]."""
        length = input_ids.shape[1]
        positions = torch.arange(start, start + length, device=input_ids.device)  # (T,)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        return self.drop(self.norm(x))


class BlipTextTransformer(nn.Module):
    """MED: BERT with optional cross-attention, used as text encoder, image-grounded encoder or
    image-grounded decoder (see the module docstring).

    Args:
        vocab_size: V (BERT's 30522 + BLIP's [DEC] and [ENC] = 30524).
        width: D.
        depth: number of layers.
        num_heads: H.
        mlp_dim: FFN hidden width (4 D in BERT).
        max_position_embeddings: longest sequence (512 in BERT).
        encoder_width: Dv, the width of the image tokens the cross-attention reads.
        cross_attention: build the cross-attention sub-layers (False for a text-only encoder,
            e.g. the momentum text encoder, which only ever runs in "text" mode).
        decoder_self_attn: a separate causal self-attention for decoder mode (the paper's
            encoder-decoder sharing).
        lm_head: build the LM head (needed for decoder mode's logits).
        pad_token_id: id of [PAD] (its embedding row gets no gradient).
        dropout: BERT's hidden dropout (embeddings, after each sub-layer's output projection).
        attn_dropout: dropout on the attention weights.
        norm_eps: LayerNorm epsilon (BERT: 1e-12).
    """

    def __init__(
        self,
        *,
        vocab_size: int = 30524,
        width: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_dim: int = 3072,
        max_position_embeddings: int = 512,
        encoder_width: int = 768,
        cross_attention: bool = True,
        decoder_self_attn: bool = False,
        lm_head: bool = False,
        pad_token_id: int = 0,
        dropout: float = 0.1,
        attn_dropout: float = 0.1,
        norm_eps: float = 1e-12,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        for arg, value in (
            ("vocab_size", vocab_size),
            ("width", width),
            ("depth", depth),
            ("num_heads", num_heads),
            ("mlp_dim", mlp_dim),
            ("max_position_embeddings", max_position_embeddings),
            ("encoder_width", encoder_width),
        ):
            check_positive_int(arg, value, model=name)
        if width % num_heads:
            raise ModelArgumentError(
                f"{name}: width {width} must be divisible by num_heads {num_heads}"
            )
        for arg, value in (
            ("cross_attention", cross_attention),
            ("decoder_self_attn", decoder_self_attn),
            ("lm_head", lm_head),
        ):
            check_bool(arg, value, model=name)
        check_dropout(dropout, model=name, name="dropout")
        check_dropout(attn_dropout, model=name, name="attn_dropout")
        if isinstance(pad_token_id, bool) or not isinstance(pad_token_id, int):
            raise ModelArgumentError(f"{name}: pad_token_id must be an int, got {pad_token_id!r}")
        if not 0 <= pad_token_id < vocab_size:
            raise ModelArgumentError(
                f"{name}: pad_token_id {pad_token_id} is outside the vocabulary [0, {vocab_size})"
            )
        self.vocab_size = vocab_size
        self.width = width
        self.depth = depth
        self.max_position_embeddings = max_position_embeddings
        self.cross_attention = cross_attention
        self.decoder_self_attn = decoder_self_attn

        self.embeddings = TextEmbeddings(
            vocab_size, width, max_position_embeddings, pad_token_id, dropout, norm_eps
        )
        self.layers = nn.ModuleList(
            MedLayer(
                width,
                num_heads,
                mlp_dim,
                encoder_width,
                cross_attention=cross_attention,
                decoder_self_attn=decoder_self_attn,
                drop=dropout,
                attn_drop=attn_dropout,
                norm_eps=norm_eps,
            )
            for _ in range(depth)
        )
        self.lm_head = LMHead(width, vocab_size, norm_eps) if lm_head else None
        self._init_weights()

    def _init_weights(self) -> None:
        # BERT's initialisation: N(0, 0.02) weights, zero biases, unit LayerNorms.
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)
                if isinstance(m, nn.Embedding) and m.padding_idx is not None:
                    with torch.no_grad():
                        m.weight[m.padding_idx].zero_()
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def new_cache(self) -> KVCache:
        """An empty :class:`KVCache` for decoder-mode generation."""
        return KVCache(self.depth)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        *,
        mode: str = "text",
        image_tokens: Tensor | None = None,
        cache: KVCache | None = None,
    ) -> Tensor:
        """Token ids Tensor[N, T] -> hidden states Tensor[N, T, D].

        ``attention_mask``: Tensor[N, T] (or Tensor[N, S+T] with a cache), 1 = token, 0 = padding.
        ``mode``: "text", "multimodal" or "decoder". ``image_tokens``: Tensor[N, L, Dv], required
        in "multimodal" mode; in "decoder" mode the cross-attention runs when it is given.
        ``cache`` (decoder mode): keys/values of earlier tokens; ``input_ids`` are then the new
        tokens only, at positions S .. S+T-1.
        """
        check_choice("mode", mode, MODES, model=type(self).__name__)
        if input_ids.ndim != 2:
            raise ModelArgumentError(
                f"expected token ids Tensor[N, T], got shape {tuple(input_ids.shape)}"
            )
        if mode == "text":
            image_tokens = None  # the unimodal encoder never looks at the image
        elif mode == "multimodal" and image_tokens is None:
            raise ModelArgumentError("mode='multimodal' needs image_tokens Tensor[N, L, Dv]")
        if image_tokens is not None and not self.cross_attention:
            raise ModelArgumentError(
                "this text transformer has no cross-attention (cross_attention=False); "
                "it can only run in mode='text'"
            )
        if cache is not None and mode != "decoder":
            raise ModelArgumentError("a KV cache is only used in mode='decoder'")
        decoder = mode == "decoder"
        start = cache.length if cache is not None else 0
        n, length = input_ids.shape
        if start + length > self.max_position_embeddings:
            raise ModelArgumentError(
                f"text of {start + length} tokens is longer than max_position_embeddings "
                f"{self.max_position_embeddings}"
            )
        x = self.embeddings(input_ids, start)  # (N, T, D)
        mask = _self_attention_mask(attention_mask, n, start, length, decoder, x.device)
        for i, layer in enumerate(self.layers):
            x = layer(x, mask, image_tokens, decoder, cache, i)
        return x

    def logits(self, hidden: Tensor) -> Tensor:
        """Hidden states Tensor[..., D] -> LM logits Tensor[..., V] (needs ``lm_head=True``)."""
        if self.lm_head is None:
            raise ModelArgumentError("this text transformer has no LM head (lm_head=False)")
        return self.lm_head(hidden, self.embeddings.word_embeddings.weight)


def _self_attention_mask(
    attention_mask: Tensor | None,
    n: int,
    start: int,
    length: int,
    causal: bool,
    device: torch.device,
) -> Tensor | None:
    """Boolean self-attention mask (True = visible) broadcastable to (N, H, T, S+T), or None
    when every key is visible to every query."""
    total = start + length
    mask = None
    if attention_mask is not None:
        if attention_mask.ndim != 2 or tuple(attention_mask.shape) not in ((n, total), (n, length)):
            raise ModelArgumentError(
                f"attention_mask must be Tensor[N, T] = ({n}, {total}), got shape "
                f"{tuple(attention_mask.shape)}"
            )
        keys = attention_mask.bool()
        if keys.shape[1] != total:  # a mask of the new tokens only: the cached ones are visible
            keys = torch.cat([keys.new_ones(n, start), keys], dim=1)
        if not bool(keys.all()):
            mask = keys[:, None, None, :]  # (N, 1, 1, S+T)
    if causal and length > 1:
        # Query i (absolute position start + i) sees keys 0 .. start + i.
        q_pos = torch.arange(start, total, device=device)[:, None]
        k_pos = torch.arange(total, device=device)[None, :]
        causal_mask = (k_pos <= q_pos)[None, None]  # (1, 1, T, S+T)
        mask = causal_mask if mask is None else mask & causal_mask
    return mask
