"""BLIP — Li et al., "BLIP: Bootstrapping Language-Image Pre-training for Unified
Vision-Language Understanding and Generation", arXiv:2201.12086.

The idea (§3.1-3.2): one pre-training model that can both *understand* (retrieve, match) and
*generate* (caption). A ViT encodes the image into tokens; a BERT-like text transformer (MED,
:mod:`.blip_text`) is used three ways and trained with three losses at once:

* **ITC** (image-text contrastive): the unimodal text encoder's [CLS] and the ViT's [CLS] are
  projected (``text_proj``, ``vision_proj``) to a joint space, L2-normalised, and aligned with a
  softmax over similarities / ``temp`` (learnable, initialised 0.07, clamped to [0.001, 0.5]).
  Optional (``momentum_encoder``, from ALBEF, arXiv:2107.07651): a momentum (EMA) copy of the
  unimodal encoders supplies the other modality's features, a **queue** of past momentum
  features adds negatives (``queue_size``), and the targets are softened with the momentum
  model's own similarities: ``alpha * softmax(sim_m) + (1 - alpha) * ground truth``.
* **ITM** (image-text matching): the image-grounded encoder (cross-attention, first token [ENC])
  classifies (``itm_head``) whether a pair matches. Negatives are **hard**: for every image a
  text, and for every text an image, drawn with ``torch.multinomial`` from the softmax of the ITC
  similarities of the batch (+1e-4 as BLIP's code, same pair/same ``image_ids`` excluded).
* **LM** (captioning): the image-grounded causal decoder (first token [DEC]) predicts each next
  token, cross-entropy with label smoothing 0.1 (BLIP's code); padding and the prompt tokens
  ("a picture of ", ``prompt_length``) are not counted.

The encoder and decoder share every parameter except the self-attention layers
(``share_except_self_attn``, §3.1; see :mod:`.blip_text`). In the *released* BLIP the captioning
and retrieval models are separate fine-tuned checkpoints, each with only its half: build those
with ``with_retrieval=False`` (ViT + decoder) or ``with_captioning=False`` (ViT + encoder +
projections + ITM head); ``interop.hf_blip.from_hf_blip`` converts transformers'
``BlipForConditionalGeneration`` and ``BlipForImageTextRetrieval`` that way.

Inference: :meth:`BLIP.generate` / :meth:`BLIP.generate_ids` (greedy or beam search, min/max
length, repetition penalty; batched over images and beams, with a KV cache by default
(``use_cache=False`` recomputes the whole prefix each step); the beam search follows
transformers' semantics, see :meth:`BLIP.generate_ids`), and :meth:`BLIP.retrieve`, which ranks
with ITC and re-ranks the top ``k`` candidates with ITM as BLIP's evaluation does.

Token conventions (BLIP's tokenizer: BERT's WordPiece + [DEC] + [ENC]): captions are tokenized
as ``[CLS] words [SEP] [PAD]...``; ITC reads them as they are, ITM replaces the first token by
``enc_token_id`` and the decoder by ``bos_token_id`` ([DEC]); ``eos_token_id`` is [SEP].

Departures from the paper / BLIP's code (each also marked where it happens):

* The image encoder is a thin wrapper over our shared ViT layers (:mod:`visionzoo.layers`), with
  the LayerNorm epsilon as an argument: BLIP's ViT uses 1e-6, transformers' released BLIP
  configs 1e-5 (``from_hf_blip`` sets it). Position embeddings are resampled (bicubic,
  antialiased, as our ViT) for other input sizes; BLIP/HF interpolate only when asked to.
* ``image_ids`` (optional): pairs with the same id count as positives in ITC and are never drawn
  as ITM negatives — BLIP's retrieval fine-tuning (``idx``); its pre-training uses the
  diagonal only, which is what happens when ``image_ids`` is None.
* Rows with no admissible negative (a batch of one, or every pair sharing the id) fall back to
  uniform sampling over the other pairs; a batch of one has no ITM negatives at all.
* Masks are boolean inputs of ``F.scaled_dot_product_attention``; BLIP's CapFilt
  (captioner/filter bootstrapping) is a data procedure and is not part of the model.

Shape glossary: N batch, B beams, C x H x W image, L = 1 + h*w image tokens, Dv image width,
T text tokens, D text width, E joint (ITC) width, Q queue length, V vocabulary, K candidates.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ModelArgumentError
from ...layers.precision import similarities, unit_rows
from ...layers.transformer import Block, PatchEmbed, resize_pos_embed
from ...registry import register_model
from .._checks import check_bool, check_choice, check_positive_int
from .blip_text import BlipTextTransformer

__all__ = [
    "BLIP",
    "BlipVisionTransformer",
    "RetrievalScores",
    "itc_loss",
    "itc_targets",
    "hard_negative_weights",
    "sample_hard_negatives",
    "blip_token_ids",
    "blip_base",
    "blip_tiny",
]

_PAPER = "arXiv:2201.12086"


# --- argument checks -----------------------------------------------------------------------------


def _is_number(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and not math.isnan(float(value))
    )


def _check_range(
    name: str, value: object, lo: float, hi: float, *, model: str, hi_open: bool = True
) -> float:
    ok = (
        _is_number(value)
        and lo <= float(value)
        and (float(value) < hi if hi_open else float(value) <= hi)
    )
    if not ok:
        bracket = ")" if hi_open else "]"
        raise ModelArgumentError(f"{model}: {name} must be in [{lo}, {hi}{bracket}, got {value!r}")
    return float(value)


def _check_token_id(name: str, value: object, vocab_size: int, *, model: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < vocab_size:
        raise ModelArgumentError(
            f"{model}: {name} must be a token id in [0, {vocab_size}), got {value!r}"
        )


# --- losses and hard negatives -------------------------------------------------------------------


def itc_loss(sim_i2t: Tensor, sim_t2i: Tensor, targets_i2t: Tensor, targets_t2i: Tensor) -> Tensor:
    """Image-text contrastive loss with (possibly soft) targets, both directions averaged.

    ``sim_i2t``: Tensor[N, M] image-to-text logits (similarity / temperature), ``sim_t2i``:
    Tensor[N, M'] text-to-image logits; targets are row distributions of the same shapes. With
    one-hot targets on the diagonal this is CLIP's symmetric cross-entropy.
    """
    loss_i2t = -(F.log_softmax(sim_i2t, dim=1) * targets_i2t).sum(dim=1).mean()
    loss_t2i = -(F.log_softmax(sim_t2i, dim=1) * targets_t2i).sum(dim=1).mean()
    return (loss_i2t + loss_t2i) / 2


def itc_targets(n: int, m: int, image_ids: Tensor | None, ids_all: Tensor | None, device) -> Tensor:
    """Ground-truth ITC targets Tensor[N, M]: row i is uniform over the columns that are
    positives of pair i — column i only (``image_ids`` None), or every column whose id equals
    ``image_ids[i]`` (``ids_all``: Tensor[M], the ids of the columns)."""
    if image_ids is None or ids_all is None:
        return torch.eye(n, m, device=device)
    positives = (image_ids[:, None] == ids_all[None, :]).float()  # (N, M), diagonal included
    return positives / positives.sum(dim=1, keepdim=True)


def hard_negative_weights(sim: Tensor, image_ids: Tensor | None = None) -> Tensor:
    """BLIP's hard-negative sampling weights Tensor[N, N] from in-batch similarities.

    ``softmax(sim, dim=1) + 1e-4`` (BLIP's pre-training code: the floor keeps every other pair
    possible), then zero for the positive (the diagonal) and, with ``image_ids``, for every pair
    of the same image. Rows left with no admissible negative fall back to uniform over the
    other pairs (departure: BLIP would fail; a batch of one keeps an all-zero row).
    """
    n = sim.shape[0]
    weights = F.softmax(sim.float(), dim=1) + 1e-4  # (N, N)
    if image_ids is not None:
        same = image_ids[:, None] == image_ids[None, :]
    else:
        same = torch.eye(n, dtype=torch.bool, device=sim.device)
    weights = weights.masked_fill(same, 0.0)
    empty = weights.sum(dim=1) == 0  # (N,)
    if bool(empty.any()):
        eye = torch.eye(n, dtype=torch.bool, device=sim.device)
        uniform = (~eye).float()
        weights = torch.where(empty[:, None], uniform, weights)
    return weights


def sample_hard_negatives(
    sim_i2t: Tensor,
    sim_t2i: Tensor,
    image_ids: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """One hard negative per image and per text, drawn from :func:`hard_negative_weights`.

    ``sim_i2t``, ``sim_t2i``: Tensor[N, N] in-batch similarities (images x texts, texts x
    images). Returns ``(neg_text_for_image, neg_image_for_text)``, two Tensor[N] of indices.
    Needs N >= 2.
    """
    w_i2t = hard_negative_weights(sim_i2t, image_ids)
    w_t2i = hard_negative_weights(sim_t2i, image_ids)
    neg_text = torch.multinomial(w_i2t, 1, generator=generator).squeeze(1)  # (N,)
    neg_image = torch.multinomial(w_t2i, 1, generator=generator).squeeze(1)  # (N,)
    return neg_text, neg_image


def _all_gather(x: Tensor) -> Tensor:
    """Concatenate ``x`` over DDP ranks (no gradient); ``x`` itself outside DDP."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


# --- image encoder -------------------------------------------------------------------------------


class BlipVisionTransformer(nn.Module):
    """BLIP's image encoder: a ViT (arXiv:2010.11929) returning every token.

    Pre-norm blocks, class token, learned position embedding (one entry for [CLS] too), final
    LayerNorm over all tokens — the same network as our ViT classifier without its head, built
    from the shared :class:`~visionzoo.layers.Block` (fused ``qkv`` with bias, exact GELU). The
    attribute names are timm's/our ViT's, so a ``VisionTransformer`` state dict of the same size
    loads here without its ``head``.

    ``forward``: Tensor[N, C, H, W] -> Tensor[N, L, Dv] (L = 1 + h*w), LayerNorm applied.
    """

    def __init__(
        self,
        *,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        norm_eps: float = 1e-6,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.grid_size = (img_size // patch_size, img_size // patch_size)
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid_size[0] ** 2, embed_dim))
        norm = partial(nn.LayerNorm, eps=norm_eps)
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.Sequential(
            *(
                Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, drop_path=r, norm_layer=norm)
                for r in rates
            )
        )
        self.norm = norm(embed_dim)
        # BLIP's ViT initialisation (timm): truncated normal 0.02 for linear layers, [CLS] and
        # position embedding, zero biases.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.blocks.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        images = x
        x = self.patch_embed(images)  # (N, C, H, W) -> (N, h*w, D); raises unless P divides H, W
        grid = self.patch_embed.grid_size(images.shape[-2], images.shape[-1])
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (N, L, D)
        pos = self.pos_embed
        if grid != self.grid_size:
            # Departure: resampled for any size (HF: only with interpolate_pos_encoding=True).
            pos = resize_pos_embed(pos, grid, self.grid_size, num_prefix_tokens=1)
        x = self.blocks(x + pos)
        return self.norm(x)


# --- the model -----------------------------------------------------------------------------------


class RetrievalScores(NamedTuple):
    """Output of :meth:`BLIP.retrieve`.

    ``i2t``: Tensor[Ni, Nt] — for each image, its top-k texts by ITC get ``ITM match logit + ITC
    cosine`` and every other text -100 (BLIP's evaluation); ``t2i``: Tensor[Nt, Ni] likewise for
    each text; ``itc``: Tensor[Ni, Nt] the ITC cosine similarities alone.
    """

    i2t: Tensor
    t2i: Tensor
    itc: Tensor


class BLIP(nn.Module):
    """BLIP pre-training / fine-tuning model (see the module docstring).

    Args:
        img_size, patch_size, vision_width, vision_depth, vision_heads, vision_mlp_ratio: the ViT.
        vision_norm_eps: the ViT's LayerNorm epsilon (BLIP 1e-6; HF's configs 1e-5).
        drop_path_rate: stochastic depth of the ViT (BLIP: 0 for ViT-B, 0.1 for ViT-L).
        vocab_size, text_width, text_depth, text_heads, text_mlp_dim, max_position_embeddings,
        text_dropout, text_norm_eps: the MED text transformer (BERT-base: 30524, 768, 12, 12,
            3072, 512, 0.1, 1e-12).
        embed_dim: E, the ITC joint-space width (256).
        with_retrieval: build the text encoder, projections and ITM head (ITC + ITM losses,
            ``encode_*``, ``retrieve``).
        with_captioning: build the decoder and LM head (LM loss, ``generate``).
        share_except_self_attn: with both halves, one MED whose layers carry a separate causal
            self-attention for the decoder and share the rest (the paper). False: two separate
            MEDs (as the released, separately fine-tuned checkpoints).
        momentum_encoder: ALBEF/BLIP momentum distillation for ITC (EMA copies of the unimodal
            encoders and projections, updated every training forward).
        momentum: EMA coefficient (0.995).
        queue_size: Q past momentum features used as extra ITC negatives (BLIP: 57600); needs
            ``momentum_encoder``.
        alpha: weight of the momentum model's soft ITC targets (0.4; 0 = hard targets only;
            needs ``momentum_encoder`` when > 0 to take effect).
        temp: initial ITC temperature (0.07), learnable, clamped to [0.001, 0.5].
        label_smoothing: of the LM loss (0.1).
        pad_token_id, cls_token_id, eos_token_id, bos_token_id, enc_token_id: the special tokens
            [PAD], [CLS], [SEP] (end of caption), [DEC] (decoder start), [ENC] (ITM start).

    ``forward(images, input_ids, attention_mask=None, *, image_ids=None, prompt_length=0,
    alpha=None) -> dict`` of losses ``loss_itc``, ``loss_itm`` (with_retrieval) and ``loss_lm``
    (with_captioning); the task sums them (the paper weighs them equally).
    """

    def __init__(
        self,
        *,
        img_size: int = 224,
        patch_size: int = 16,
        vision_width: int = 768,
        vision_depth: int = 12,
        vision_heads: int = 12,
        vision_mlp_ratio: float = 4.0,
        vision_norm_eps: float = 1e-6,
        drop_path_rate: float = 0.0,
        vocab_size: int = 30524,
        text_width: int = 768,
        text_depth: int = 12,
        text_heads: int = 12,
        text_mlp_dim: int = 3072,
        max_position_embeddings: int = 512,
        text_dropout: float = 0.1,
        text_norm_eps: float = 1e-12,
        embed_dim: int = 256,
        with_retrieval: bool = True,
        with_captioning: bool = True,
        share_except_self_attn: bool = True,
        momentum_encoder: bool = False,
        momentum: float = 0.995,
        queue_size: int = 0,
        alpha: float = 0.4,
        temp: float = 0.07,
        label_smoothing: float = 0.1,
        pad_token_id: int = 0,
        cls_token_id: int = 101,
        eos_token_id: int = 102,
        bos_token_id: int = 30522,
        enc_token_id: int = 30523,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        for arg, value in (
            ("img_size", img_size),
            ("patch_size", patch_size),
            ("vision_width", vision_width),
            ("vision_depth", vision_depth),
            ("vision_heads", vision_heads),
            ("vocab_size", vocab_size),
            ("text_width", text_width),
            ("text_depth", text_depth),
            ("text_heads", text_heads),
            ("text_mlp_dim", text_mlp_dim),
            ("max_position_embeddings", max_position_embeddings),
            ("embed_dim", embed_dim),
        ):
            check_positive_int(arg, value, model=name)
        if img_size % patch_size:
            raise ModelArgumentError(
                f"{name}: img_size {img_size} must be a multiple of patch_size {patch_size}"
            )
        for width_arg, width, heads_arg, heads in (
            ("vision_width", vision_width, "vision_heads", vision_heads),
            ("text_width", text_width, "text_heads", text_heads),
        ):
            if width % heads:
                raise ModelArgumentError(
                    f"{name}: {width_arg} {width} must be divisible by {heads_arg} {heads}"
                )
        if not _is_number(vision_mlp_ratio) or int(vision_width * vision_mlp_ratio) < 1:
            raise ModelArgumentError(
                f"{name}: vision_mlp_ratio must be a number > 0, got {vision_mlp_ratio!r}"
            )
        for arg, value in (("vision_norm_eps", vision_norm_eps), ("text_norm_eps", text_norm_eps)):
            if not _is_number(value) or not 0 < float(value) < 1:
                raise ModelArgumentError(f"{name}: {arg} must be in (0, 1), got {value!r}")
        _check_range("drop_path_rate", drop_path_rate, 0.0, 1.0, model=name)
        _check_range("text_dropout", text_dropout, 0.0, 1.0, model=name)
        _check_range("momentum", momentum, 0.0, 1.0, model=name)
        _check_range("alpha", alpha, 0.0, 1.0, model=name, hi_open=False)
        _check_range("label_smoothing", label_smoothing, 0.0, 1.0, model=name)
        if not _is_number(temp) or not 0.001 <= float(temp) <= 0.5:
            raise ModelArgumentError(f"{name}: temp must be in [0.001, 0.5], got {temp!r}")
        for arg, value in (
            ("with_retrieval", with_retrieval),
            ("with_captioning", with_captioning),
            ("share_except_self_attn", share_except_self_attn),
            ("momentum_encoder", momentum_encoder),
        ):
            check_bool(arg, value, model=name)
        if not (with_retrieval or with_captioning):
            raise ModelArgumentError(
                f"{name}: with_retrieval and with_captioning are both False; build at least one "
                "half (retrieval: ITC + ITM; captioning: LM)"
            )
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 0:
            raise ModelArgumentError(
                f"{name}: queue_size must be an integer >= 0, got {queue_size!r}"
            )
        if (momentum_encoder or queue_size) and not with_retrieval:
            raise ModelArgumentError(
                f"{name}: momentum_encoder and queue_size belong to ITC; they need "
                "with_retrieval=True"
            )
        if queue_size and not momentum_encoder:
            raise ModelArgumentError(
                f"{name}: queue_size={queue_size} needs momentum_encoder=True (the queue holds "
                "momentum features, which change slowly enough to stay comparable)"
            )
        for arg, value in (
            ("pad_token_id", pad_token_id),
            ("cls_token_id", cls_token_id),
            ("eos_token_id", eos_token_id),
            ("bos_token_id", bos_token_id),
            ("enc_token_id", enc_token_id),
        ):
            _check_token_id(arg, value, vocab_size, model=name)

        self.with_retrieval = with_retrieval
        self.with_captioning = with_captioning
        self.shared = share_except_self_attn and with_retrieval and with_captioning
        self.share_except_self_attn = share_except_self_attn
        self.momentum_encoder = momentum_encoder
        self.momentum = float(momentum)
        self.queue_size = queue_size
        self.alpha = float(alpha)
        self.label_smoothing = float(label_smoothing)
        self.embed_dim = embed_dim
        self.img_size = img_size
        self.pad_token_id = pad_token_id
        self.cls_token_id = cls_token_id
        self.eos_token_id = eos_token_id
        self.bos_token_id = bos_token_id
        self.enc_token_id = enc_token_id

        self.visual_encoder = BlipVisionTransformer(
            img_size=img_size,
            patch_size=patch_size,
            embed_dim=vision_width,
            depth=vision_depth,
            num_heads=vision_heads,
            mlp_ratio=vision_mlp_ratio,
            norm_eps=vision_norm_eps,
            drop_path_rate=drop_path_rate,
        )
        text_kwargs: dict[str, Any] = dict(
            vocab_size=vocab_size,
            width=text_width,
            depth=text_depth,
            num_heads=text_heads,
            mlp_dim=text_mlp_dim,
            max_position_embeddings=max_position_embeddings,
            encoder_width=vision_width,
            pad_token_id=pad_token_id,
            dropout=text_dropout,
            attn_dropout=text_dropout,
            norm_eps=text_norm_eps,
        )
        self.text_encoder: BlipTextTransformer | None = None
        self.text_decoder: BlipTextTransformer | None = None
        if with_retrieval:
            # The paper's sharing: the decoder lives inside the encoder, with its own causal
            # self-attention and the LM head (see blip_text).
            self.text_encoder = BlipTextTransformer(
                decoder_self_attn=self.shared, lm_head=self.shared, **text_kwargs
            )
            self.vision_proj = nn.Linear(vision_width, embed_dim)
            self.text_proj = nn.Linear(text_width, embed_dim)
            self.itm_head = nn.Linear(text_width, 2)
            self.temp = nn.Parameter(torch.tensor(float(temp)))
        if with_captioning and not self.shared:
            self.text_decoder = BlipTextTransformer(lm_head=True, **text_kwargs)
        self._init_heads()

        if momentum_encoder:
            self.visual_encoder_m = copy.deepcopy(self.visual_encoder)
            self.vision_proj_m = copy.deepcopy(self.vision_proj)
            self.text_proj_m = copy.deepcopy(self.text_proj)
            # Only the unimodal path runs in the momentum model: no cross-attention, no decoder.
            self.text_encoder_m = BlipTextTransformer(cross_attention=False, **text_kwargs)
            self._copy_params(self.text_encoder, self.text_encoder_m)
            for module in self._momentum_pairs_modules():
                module[1].requires_grad_(False)
        if queue_size:
            self.register_buffer(
                "image_queue", F.normalize(torch.randn(embed_dim, queue_size), dim=0)
            )
            self.register_buffer(
                "text_queue", F.normalize(torch.randn(embed_dim, queue_size), dim=0)
            )
            # -100: "no image", never equal to a real image id.
            self.register_buffer("idx_queue", torch.full((queue_size,), -100, dtype=torch.long))
            self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def _init_heads(self) -> None:
        for m in (getattr(self, n, None) for n in ("vision_proj", "text_proj", "itm_head")):
            if m is not None:
                nn.init.normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    # --- helpers ---------------------------------------------------------------------------------

    def _momentum_pairs_modules(self) -> list[tuple[nn.Module, nn.Module]]:
        return [
            (self.visual_encoder, self.visual_encoder_m),
            (self.vision_proj, self.vision_proj_m),
            (self.text_encoder, self.text_encoder_m),
            (self.text_proj, self.text_proj_m),
        ]

    @staticmethod
    def _copy_params(src: nn.Module, dst: nn.Module) -> None:
        src_params = dict(src.named_parameters())
        with torch.no_grad():
            for name, p in dst.named_parameters():
                p.copy_(src_params[name])

    @torch.no_grad()
    def _momentum_update(self) -> None:
        for online, ema in self._momentum_pairs_modules():
            params = dict(online.named_parameters())
            for name, p_m in ema.named_parameters():
                p_m.lerp_(params[name].detach(), 1.0 - self.momentum)

    @torch.no_grad()
    def _enqueue(self, image_feat: Tensor, text_feat: Tensor, image_ids: Tensor | None) -> None:
        image_feat, text_feat = _all_gather(image_feat), _all_gather(text_feat)
        if image_ids is None:
            image_ids = torch.full((image_feat.shape[0],), -100, device=image_feat.device)
        else:
            image_ids = _all_gather(image_ids)
        n = min(image_feat.shape[0], self.queue_size)  # a batch longer than Q keeps its last Q
        image_feat, text_feat, image_ids = image_feat[-n:], text_feat[-n:], image_ids[-n:]
        cols = (self.queue_ptr + torch.arange(n, device=image_feat.device)) % self.queue_size
        self.image_queue[:, cols] = image_feat.T.to(self.image_queue.dtype)
        self.text_queue[:, cols] = text_feat.T.to(self.text_queue.dtype)
        self.idx_queue[cols] = image_ids.to(self.idx_queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + n) % self.queue_size)

    def _need(self, half: str) -> None:
        if half == "retrieval" and not self.with_retrieval:
            raise ModelArgumentError(
                "this BLIP has no text encoder (built with with_retrieval=False): ITC, ITM and "
                "retrieval are not available"
            )
        if half == "captioning" and not self.with_captioning:
            raise ModelArgumentError(
                "this BLIP has no decoder (built with with_captioning=False): the LM loss and "
                "generation are not available"
            )

    @property
    def decoder(self) -> BlipTextTransformer:
        """The MED that runs in decoder mode (the shared encoder, or the separate decoder)."""
        self._need("captioning")
        module = self.text_encoder if self.shared else self.text_decoder
        assert module is not None  # guaranteed by the constructor
        return module

    def _check_inputs(
        self, images: Tensor | None, input_ids: Tensor, attention_mask: Tensor | None
    ) -> None:
        if input_ids.ndim != 2 or input_ids.dtype not in (torch.int32, torch.int64):
            raise ModelArgumentError(
                f"input_ids must be an integer Tensor[N, T], got {input_ids.dtype} of shape "
                f"{tuple(input_ids.shape)}"
            )
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise ModelArgumentError(
                f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, "
                f"got {tuple(attention_mask.shape)}"
            )
        if images is not None and images.shape[0] != input_ids.shape[0]:
            raise ModelArgumentError(
                f"{images.shape[0]} images but {input_ids.shape[0]} captions; one caption per image"
            )

    @staticmethod
    def _first_token(input_ids: Tensor, token_id: int) -> Tensor:
        ids = input_ids.clone()
        ids[:, 0] = token_id
        return ids

    # --- encoders --------------------------------------------------------------------------------

    def image_tokens(self, images: Tensor) -> Tensor:
        """Tensor[N, C, H, W] -> the ViT's tokens Tensor[N, L, Dv] (after its LayerNorm)."""
        return self.visual_encoder(images)

    def encode_image(
        self, images: Tensor, normalize: bool = True, *, image_tokens: Tensor | None = None
    ) -> Tensor:
        """ITC image features Tensor[N, E]: ``vision_proj`` of the ViT's [CLS] output."""
        self._need("retrieval")
        tokens = self.visual_encoder(images) if image_tokens is None else image_tokens
        feat = self.vision_proj(tokens[:, 0])
        return unit_rows(feat) if normalize else feat

    def encode_text(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, normalize: bool = True
    ) -> Tensor:
        """ITC text features Tensor[N, E]: ``text_proj`` of the unimodal encoder's first token
        ([CLS], the ids as given)."""
        self._need("retrieval")
        self._check_inputs(None, input_ids, attention_mask)
        hidden = self.text_encoder(input_ids, attention_mask, mode="text")  # (N, T, D)
        feat = self.text_proj(hidden[:, 0])
        return unit_rows(feat) if normalize else feat

    def itm_logits(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        *,
        images: Tensor | None = None,
        image_tokens: Tensor | None = None,
    ) -> Tensor:
        """ITM logits Tensor[N, 2] (column 1 = "match") of pairs (image i, text i).

        The first token is replaced by [ENC]; give ``images`` Tensor[N, C, H, W] or their
        ``image_tokens`` Tensor[N, L, Dv].
        """
        self._need("retrieval")
        tokens = self._tokens(images, image_tokens)
        self._check_inputs(tokens, input_ids, attention_mask)
        ids = self._first_token(input_ids, self.enc_token_id)
        hidden = self.text_encoder(ids, attention_mask, mode="multimodal", image_tokens=tokens)
        return self.itm_head(hidden[:, 0])

    def lm_logits(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        *,
        images: Tensor | None = None,
        image_tokens: Tensor | None = None,
    ) -> Tensor:
        """Decoder logits Tensor[N, T, V]; position t predicts token t + 1. The first token is
        replaced by [DEC] (bos)."""
        tokens = self._tokens(images, image_tokens)
        self._check_inputs(tokens, input_ids, attention_mask)
        ids = self._first_token(input_ids, self.bos_token_id)
        dec = self.decoder
        return dec.logits(dec(ids, attention_mask, mode="decoder", image_tokens=tokens))

    def _tokens(self, images: Tensor | None, image_tokens: Tensor | None) -> Tensor:
        if (images is None) == (image_tokens is None):
            raise ModelArgumentError("give exactly one of images and image_tokens")
        return self.visual_encoder(images) if image_tokens is None else image_tokens

    # --- training --------------------------------------------------------------------------------

    def forward(
        self,
        images: Tensor,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        *,
        image_ids: Tensor | None = None,
        prompt_length: int = 0,
        alpha: float | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """The pre-training losses of a batch of (image, caption) pairs.

        ``images``: Tensor[N, C, H, W]; ``input_ids``: Tensor[N, T] ``[CLS] caption [SEP] [PAD]...``
        (with the prompt after [CLS] for captioning); ``attention_mask``: Tensor[N, T] (1 =
        token); ``image_ids``: Tensor[N] (optional, pairs of one image are all positives);
        ``prompt_length``: prompt tokens after the first one, not counted by the LM loss;
        ``alpha``: overrides the soft-target weight (BLIP ramps it up over the first epoch);
        ``generator``: for the hard-negative draws.

        Returns ``{"loss_itc", "loss_itm"}`` (with_retrieval) and ``{"loss_lm"}``
        (with_captioning). In training mode it also updates the momentum encoders and the queue.
        """
        self._check_inputs(images, input_ids, attention_mask)
        if image_ids is not None and image_ids.shape != (input_ids.shape[0],):
            raise ModelArgumentError(
                f"image_ids must be Tensor[N] = ({input_ids.shape[0]},), got "
                f"{tuple(image_ids.shape)}"
            )
        if (
            isinstance(prompt_length, bool)
            or not isinstance(prompt_length, int)
            or not 0 <= prompt_length < input_ids.shape[1]
        ):
            raise ModelArgumentError(
                f"prompt_length must be an integer in [0, {input_ids.shape[1]}), got "
                f"{prompt_length!r}"
            )
        image_tokens = self.visual_encoder(images)  # (N, L, Dv)
        losses: dict[str, Tensor] = {}
        if self.with_retrieval:
            alpha = self.alpha if alpha is None else alpha
            _check_range("alpha", alpha, 0.0, 1.0, model="BLIP.forward", hi_open=False)
            losses.update(
                self._retrieval_losses(
                    images, image_tokens, input_ids, attention_mask, image_ids, alpha, generator
                )
            )
        if self.with_captioning:
            losses["loss_lm"] = self._lm_loss(
                image_tokens, input_ids, attention_mask, prompt_length
            )
        return losses

    def _retrieval_losses(
        self,
        images: Tensor,
        image_tokens: Tensor,
        input_ids: Tensor,
        attention_mask: Tensor | None,
        image_ids: Tensor | None,
        alpha: float,
        generator: torch.Generator | None,
    ) -> dict[str, Tensor]:
        n = input_ids.shape[0]
        if self.training:
            with torch.no_grad():
                self.temp.clamp_(0.001, 0.5)  # BLIP clamps the parameter itself, every step
        temp = self.temp
        image_feat = self.encode_image(images, image_tokens=image_tokens)  # (N, E)
        text_feat = self.encode_text(input_ids, attention_mask)  # (N, E)

        if self.momentum_encoder:
            with torch.no_grad():
                if self.training:
                    self._momentum_update()
                image_feat_m = unit_rows(
                    self.vision_proj_m(self.visual_encoder_m(images)[:, 0])
                )  # (N, E)
                text_hidden_m = self.text_encoder_m(input_ids, attention_mask, mode="text")
                text_feat_m = unit_rows(self.text_proj_m(text_hidden_m[:, 0]))
                image_all, text_all, ids_all = image_feat_m, text_feat_m, image_ids
                if self.queue_size:
                    image_all = torch.cat([image_feat_m, self.image_queue.T.clone()])  # (N+Q, E)
                    text_all = torch.cat([text_feat_m, self.text_queue.T.clone()])  # (N+Q, E)
                    if image_ids is not None:
                        ids_all = torch.cat([image_ids, self.idx_queue.clone()])
                targets = itc_targets(n, image_all.shape[0], image_ids, ids_all, images.device)
                targets_i2t = targets_t2i = targets
                if alpha > 0:
                    sim_i2t_m = similarities(image_feat_m, text_all) / temp  # (N, N+Q)
                    sim_t2i_m = similarities(text_feat_m, image_all) / temp
                    targets_i2t = alpha * F.softmax(sim_i2t_m, dim=1) + (1 - alpha) * targets
                    targets_t2i = alpha * F.softmax(sim_t2i_m, dim=1) + (1 - alpha) * targets
            sim_i2t = similarities(image_feat, text_all) / temp  # (N, N+Q)
            sim_t2i = similarities(text_feat, image_all) / temp  # (N, N+Q)
        else:
            sim_i2t = similarities(image_feat, text_feat) / temp  # (N, N)
            sim_t2i = similarities(text_feat, image_feat) / temp
            targets_i2t = targets_t2i = itc_targets(n, n, image_ids, image_ids, images.device)
        loss_itc = itc_loss(sim_i2t, sim_t2i, targets_i2t, targets_t2i)
        if self.momentum_encoder and self.queue_size and self.training:
            self._enqueue(image_feat_m, text_feat_m, image_ids)

        # ITM: the positive pairs and, for each image and each text, one hard negative.
        enc_ids = self._first_token(input_ids, self.enc_token_id)
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        if n >= 2:
            with torch.no_grad():
                neg_text, neg_image = sample_hard_negatives(
                    sim_i2t[:, :n], sim_t2i[:, :n], image_ids, generator
                )
            ids_all_itm = torch.cat([enc_ids, enc_ids, enc_ids[neg_text]])  # (3N, T)
            mask_all = torch.cat([mask, mask, mask[neg_text]])
            tokens_all = torch.cat([image_tokens, image_tokens[neg_image], image_tokens])
        else:  # departure: a batch of one has no negative pair
            ids_all_itm, mask_all, tokens_all = enc_ids, mask, image_tokens
        hidden = self.text_encoder(
            ids_all_itm, mask_all, mode="multimodal", image_tokens=tokens_all
        )
        itm_logits = self.itm_head(hidden[:, 0])  # (3N, 2)
        itm_labels = torch.zeros(itm_logits.shape[0], dtype=torch.long, device=itm_logits.device)
        itm_labels[:n] = 1
        loss_itm = F.cross_entropy(itm_logits, itm_labels)
        return {"loss_itc": loss_itc, "loss_itm": loss_itm}

    def _lm_loss(
        self,
        image_tokens: Tensor,
        input_ids: Tensor,
        attention_mask: Tensor | None,
        prompt_length: int,
    ) -> Tensor:
        dec_ids = self._first_token(input_ids, self.bos_token_id)
        if attention_mask is None:
            labels = dec_ids.masked_fill(dec_ids == self.pad_token_id, -100)
        else:
            labels = dec_ids.masked_fill(attention_mask == 0, -100)
        labels[:, : 1 + prompt_length] = -100  # [DEC] and the prompt are given, not predicted
        dec = self.decoder
        logits = dec.logits(
            dec(dec_ids, attention_mask, mode="decoder", image_tokens=image_tokens)
        )  # (N, T, V)
        return F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]),  # position t predicts token t + 1
            labels[:, 1:].reshape(-1),
            ignore_index=-100,
            label_smoothing=self.label_smoothing,
        )

    # --- generation ------------------------------------------------------------------------------

    @torch.no_grad()
    def generate_ids(
        self,
        images: Tensor,
        *,
        prompt_ids: Sequence[int] = (),
        max_length: int = 30,
        min_length: int = 10,
        num_beams: int = 3,
        repetition_penalty: float = 1.0,
        length_penalty: float = 1.0,
        use_cache: bool = True,
        strategy: str = "auto",
    ) -> list[list[int]]:
        """Caption token ids for each image: the tokens after [DEC] + ``prompt_ids``, up to and
        excluding [SEP] (eos).

        ``max_length`` / ``min_length`` count the whole sequence — [DEC], the prompt and the
        generated tokens — as BLIP (which calls transformers' ``generate``): the sequence stops
        at ``max_length`` tokens, and eos cannot be chosen while it is shorter than
        ``min_length`` (so a caption has at least ``min_length - 1 - len(prompt_ids)`` tokens).
        ``strategy``: "greedy", "beam", or "auto" (greedy when ``num_beams == 1``, as
        transformers; beam search with one beam and ``length_penalty=0`` is also greedy). Beam search keeps ``num_beams`` running hypotheses per image (batched
        as N x B rows), finished hypotheses scored ``sum log p / generated_length **
        length_penalty``, and stops an image when no running beam can beat its finished ones
        (transformers' default ``early_stopping=False`` heuristic). ``repetition_penalty``
        (CTRL, arXiv:1909.05858) divides positive / multiplies negative scores of tokens already
        in the sequence. ``use_cache``: KV cache (True) or recompute the prefix at every step.
        The model should be in eval mode (dropout otherwise stays on).
        """
        check_positive_int("num_beams", num_beams, model="generate")
        check_positive_int("max_length", max_length, model="generate")
        check_bool("use_cache", use_cache, model="generate")
        check_choice("strategy", strategy, ("auto", "greedy", "beam"), model="generate")
        if strategy == "greedy" and num_beams != 1:
            raise ModelArgumentError(
                f"generate: strategy='greedy' keeps one hypothesis; got num_beams={num_beams}"
            )
        if isinstance(min_length, bool) or not isinstance(min_length, int) or min_length < 0:
            raise ModelArgumentError(
                f"generate: min_length must be an integer >= 0, got {min_length!r}"
            )
        if not _is_number(repetition_penalty) or repetition_penalty <= 0:
            raise ModelArgumentError(
                f"generate: repetition_penalty must be > 0, got {repetition_penalty!r}"
            )
        if not _is_number(length_penalty):
            raise ModelArgumentError(
                f"generate: length_penalty must be a number, got {length_penalty!r}"
            )
        dec = self.decoder
        prompt = [int(t) for t in prompt_ids]
        for t in prompt:
            _check_token_id("prompt_ids", t, dec.vocab_size, model="generate")
        prefix_len = 1 + len(prompt)
        if max_length <= prefix_len:
            raise ModelArgumentError(
                f"generate: max_length {max_length} leaves no room after [DEC] and the "
                f"{len(prompt)} prompt tokens; use max_length > {prefix_len}"
            )
        if max_length > dec.max_position_embeddings:
            raise ModelArgumentError(
                f"generate: max_length {max_length} exceeds the decoder's "
                f"max_position_embeddings {dec.max_position_embeddings}"
            )
        image_tokens = self.visual_encoder(images)  # (N, L, Dv)
        n = image_tokens.shape[0]
        prefix = torch.tensor([self.bos_token_id, *prompt], device=image_tokens.device)
        prefix = prefix.expand(n * num_beams, -1)  # (N*B, P)
        image_tokens = image_tokens.repeat_interleave(num_beams, dim=0)  # (N*B, L, Dv)
        cache = dec.new_cache() if use_cache else None

        def step(new_ids: Tensor, all_ids: Tensor) -> Tensor:
            # Logits of the next token Tensor[N*B, V] (float32, as HF's generation).
            if cache is None:
                hidden = dec(all_ids, mode="decoder", image_tokens=image_tokens)
            else:
                hidden = dec(new_ids, mode="decoder", image_tokens=image_tokens, cache=cache)
            return dec.logits(hidden[:, -1]).float()

        settings = (max_length, min_length, float(repetition_penalty))
        if strategy == "greedy" or (strategy == "auto" and num_beams == 1):
            seqs, lengths = self._greedy(step, prefix, *settings)
        else:
            seqs, lengths = self._beam_search(
                step, cache, prefix, num_beams, *settings, float(length_penalty)
            )
        out = []
        for row, length in zip(seqs.tolist(), lengths.tolist(), strict=True):
            tokens = row[prefix_len : prefix_len + length]
            if tokens and tokens[-1] == self.eos_token_id:
                tokens = tokens[:-1]
            out.append(tokens)
        return out

    def _adjust_scores(
        self, scores: Tensor, ids: Tensor, min_length: int, repetition_penalty: float
    ) -> Tensor:
        """transformers' RepetitionPenalty and MinLength logits processors on Tensor[R, V]."""
        if repetition_penalty != 1.0:
            seen = scores.gather(1, ids)  # (R, T)
            seen = torch.where(seen < 0, seen * repetition_penalty, seen / repetition_penalty)
            scores = scores.scatter(1, ids, seen)
        if ids.shape[1] < min_length:
            scores = scores.clone()
            scores[:, self.eos_token_id] = float("-inf")
        return scores

    def _greedy(
        self,
        step: Callable[[Tensor, Tensor], Tensor],
        prefix: Tensor,
        max_length: int,
        min_length: int,
        repetition_penalty: float,
    ) -> tuple[Tensor, Tensor]:
        """Greedy decoding; returns sequences Tensor[N, <= max_length] and generated lengths
        Tensor[N] (eos included)."""
        ids = prefix
        n, prefix_len = prefix.shape
        finished = torch.zeros(n, dtype=torch.bool, device=ids.device)
        lengths = torch.zeros(n, dtype=torch.long, device=ids.device)
        logits = step(ids, ids)
        while True:
            scores = self._adjust_scores(logits, ids, min_length, repetition_penalty)
            next_ids = scores.argmax(dim=-1)  # (N,)
            # Finished rows are padded (as transformers), and no longer grow.
            next_ids = torch.where(finished, torch.full_like(next_ids, self.pad_token_id), next_ids)
            lengths = lengths + (~finished).long()
            ids = torch.cat([ids, next_ids[:, None]], dim=1)
            finished = finished | (next_ids == self.eos_token_id)
            if bool(finished.all()) or ids.shape[1] >= max_length:
                return ids, lengths
            logits = step(next_ids[:, None], ids)

    def _beam_search(
        self,
        step: Callable[[Tensor, Tensor], Tensor],
        cache: Any,
        prefix: Tensor,
        num_beams: int,
        max_length: int,
        min_length: int,
        repetition_penalty: float,
        length_penalty: float,
    ) -> tuple[Tensor, Tensor]:
        """Vectorised beam search (transformers' algorithm, default flags).

        Each step takes the top 2B continuations of the N x B running beams; those ending in eos
        (or reaching ``max_length``) and ranked in the top B become finished candidates, the
        best B others keep running. Returns the best finished hypothesis per image,
        Tensor[N, max_length], and its generated length Tensor[N] (eos included).
        """
        device = prefix.device
        nb, prefix_len = prefix.shape
        b = num_beams
        n = nb // b
        k = 2 * b
        neg = -1.0e9
        pad = self.pad_token_id
        seqs = torch.full((n, b, max_length), pad, dtype=torch.long, device=device)
        seqs[:, :, :prefix_len] = prefix.view(n, b, prefix_len)
        # Only the first beam is live at the start, so the B beams do not all pick one token.
        run_scores = torch.full((n, b), neg, device=device)
        run_scores[:, 0] = 0.0
        fin_seqs = seqs.clone()
        fin_scores = torch.full((n, b), neg, device=device)
        fin_lengths = torch.zeros((n, b), dtype=torch.long, device=device)
        fin_done = torch.zeros((n, b), dtype=torch.bool, device=device)
        improvable = torch.ones((n, 1), dtype=torch.bool, device=device)
        top_b = torch.arange(k, device=device) < b  # (K,): ranks that may finish
        offsets = torch.arange(n, device=device)[:, None] * b  # (N, 1)
        cur = prefix_len
        logits = step(prefix, prefix)  # (N*B, V)
        while True:
            flat = seqs[:, :, :cur].reshape(nb, cur)
            logp = self._adjust_scores(
                F.log_softmax(logits, dim=-1), flat, min_length, repetition_penalty
            )
            vocab = logp.shape[-1]
            total = (logp.view(n, b, vocab) + run_scores[:, :, None]).view(n, b * vocab)
            top_scores, top_idx = total.topk(k, dim=1)  # (N, K)
            src = top_idx // vocab  # (N, K) running beam each candidate extends
            token = top_idx % vocab
            cand = seqs.gather(1, src[:, :, None].expand(-1, -1, max_length)).clone()
            cand[:, :, cur] = token  # (N, K, max_length)
            ends = (token == self.eos_token_id) | (cur + 1 >= max_length)  # (N, K)

            # Running beams for the next step: the best B candidates that did not end.
            live = top_scores + ends.float() * neg
            keep = live.topk(b, dim=1).indices  # (N, B)
            seqs = cand.gather(1, keep[:, :, None].expand(-1, -1, max_length))
            run_scores = live.gather(1, keep)
            run_src = src.gather(1, keep)  # (N, B)

            # Finished hypotheses: merge the new ones (length-normalised) with the kept ones.
            just = ends & top_b
            new_scores = top_scores / float(cur + 1 - prefix_len) ** length_penalty
            new_scores = new_scores + (~improvable).float() * neg + (~just).float() * neg
            merged_scores = torch.cat([fin_scores, new_scores], dim=1)  # (N, B+K)
            best = merged_scores.topk(b, dim=1).indices  # (N, B)
            fin_scores = merged_scores.gather(1, best)
            merged_seqs = torch.cat([fin_seqs, cand], dim=1)
            fin_seqs = merged_seqs.gather(1, best[:, :, None].expand(-1, -1, max_length))
            new_len = torch.full_like(token, cur + 1 - prefix_len)
            fin_lengths = torch.cat([fin_lengths, new_len], dim=1).gather(1, best)
            fin_done = torch.cat([fin_done, just], dim=1).gather(1, best)

            cur += 1
            # Can a running beam still beat the worst finished one (assuming its current
            # length)? Only once all B slots are finished can the answer be no.
            best_running = run_scores[:, :1] / float(cur - prefix_len) ** length_penalty
            worst = torch.where(fin_done, fin_scores.min(dim=1, keepdim=True).values, neg)
            improvable = improvable & (best_running > worst).any(dim=1, keepdim=True)
            if not bool(improvable.any()) or bool(ends.all()):
                return fin_seqs[:, 0], fin_lengths[:, 0]
            if cache is not None:
                cache.reorder((run_src + offsets).reshape(-1))
            last = seqs[:, :, cur - 1].reshape(nb, 1)
            logits = step(last, seqs[:, :, :cur].reshape(nb, cur))

    @torch.no_grad()
    def generate(
        self,
        images: Tensor,
        tokenizer: Any,
        *,
        prompt: str | Sequence[int] = (),
        **kwargs: Any,
    ) -> list[str]:
        """Captions (str) for ``images`` Tensor[N, C, H, W].

        ``tokenizer``: an object with ``decode(list[int]) -> str`` (and ``encode`` when
        ``prompt`` is a string), or a plain callable ``list[int] -> str``. ``prompt``: text
        (e.g. "a picture of ", encoded with the tokenizer; special tokens it adds are dropped)
        or its token ids. The returned captions do not repeat the prompt. ``kwargs`` go to
        :meth:`generate_ids` (max_length, min_length, num_beams, ...).
        """
        decode = getattr(tokenizer, "decode", None) or tokenizer
        if not callable(decode):
            raise ModelArgumentError(
                "generate: tokenizer must have a decode(list[int]) method or be a callable "
                f"list[int] -> str, got {type(tokenizer).__name__}"
            )
        if isinstance(prompt, str):
            prompt_ids = self._encode_prompt(tokenizer, prompt) if prompt else []
        else:
            prompt_ids = [int(t) for t in prompt]
        ids = self.generate_ids(images, prompt_ids=prompt_ids, **kwargs)
        return [str(decode(row)).strip() for row in ids]

    def _encode_prompt(self, tokenizer: Any, prompt: str) -> list[int]:
        encode = getattr(tokenizer, "encode", None)
        if not callable(encode):
            raise ModelArgumentError(
                "generate: a text prompt needs a tokenizer with encode(str); pass prompt as "
                "token ids instead"
            )
        encoded = encode(prompt)
        ids = list(getattr(encoded, "ids", encoded))  # tokenizers.Encoding or list[int]
        special = {
            self.pad_token_id,
            self.cls_token_id,
            self.eos_token_id,
            self.bos_token_id,
            self.enc_token_id,
        }
        while ids and ids[0] in special:
            ids = ids[1:]
        while ids and ids[-1] in special:
            ids = ids[:-1]
        return [int(t) for t in ids]

    # --- retrieval -------------------------------------------------------------------------------

    @torch.no_grad()
    def retrieve(
        self,
        images: Tensor,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        *,
        k: int = 16,
        batch_size: int = 64,
    ) -> RetrievalScores:
        """Score every image against every text: ITC for all, ITM for the top ``k`` (BLIP §4.2
        / its evaluation code: k = 256 on COCO).

        ``images``: Tensor[Ni, C, H, W]; ``input_ids``: Tensor[Nt, T] captions ([CLS] first);
        ``batch_size``: images, texts or pairs per forward. Returns :class:`RetrievalScores`;
        rank with ``scores.i2t.argsort(dim=1, descending=True)``.
        """
        self._need("retrieval")
        check_positive_int("k", k, model="retrieve")
        check_positive_int("batch_size", batch_size, model="retrieve")
        self._check_inputs(None, input_ids, attention_mask)
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        tokens = torch.cat([self.visual_encoder(x) for x in images.split(batch_size)])
        image_feat = self.encode_image(images, image_tokens=tokens)  # (Ni, E)
        text_feat = torch.cat(
            [
                self.encode_text(ids, m)
                for ids, m in zip(input_ids.split(batch_size), mask.split(batch_size), strict=True)
            ]
        )  # (Nt, E)
        itc = image_feat @ text_feat.T  # (Ni, Nt) cosine similarities

        def match_scores(image_idx: Tensor, text_idx: Tensor) -> Tensor:
            # ITM "match" logits of the pairs (image_idx[j], text_idx[j]), batch_size at a time.
            parts = [
                self.itm_logits(input_ids[t], mask[t], image_tokens=tokens[i])[:, 1]
                for i, t in zip(
                    image_idx.split(batch_size), text_idx.split(batch_size), strict=True
                )
            ]
            return torch.cat(parts)

        # Image -> text: each image's top-k texts by ITC, re-scored by ITM + ITC.
        top_sim, top_txt = itc.topk(min(k, itc.shape[1]), dim=1)  # (Ni, K)
        img = torch.arange(itc.shape[0], device=itc.device)[:, None].expand_as(top_txt)
        scores = match_scores(img.reshape(-1), top_txt.reshape(-1)).view_as(top_sim)
        i2t = torch.full_like(itc, -100.0).scatter(1, top_txt, scores.to(itc.dtype) + top_sim)
        # Text -> image likewise.
        sim_t = itc.T  # (Nt, Ni)
        top_sim, top_img = sim_t.topk(min(k, sim_t.shape[1]), dim=1)  # (Nt, K)
        txt = torch.arange(sim_t.shape[0], device=itc.device)[:, None].expand_as(top_img)
        scores = match_scores(top_img.reshape(-1), txt.reshape(-1)).view_as(top_sim)
        t2i = torch.full_like(sim_t, -100.0).scatter(1, top_img, scores.to(itc.dtype) + top_sim)
        return RetrievalScores(i2t=i2t, t2i=t2i, itc=itc)


# --- builders ------------------------------------------------------------------------------------


@register_model(
    task="image-text", family="blip", input_size=(3, 224, 224), paper=_PAPER, model_class=BLIP
)
def blip_base(**kwargs: Any) -> BLIP:
    """BLIP with ViT-B/16 and a BERT-base MED (12 layers, width 768, 12 heads), the paper's
    pre-training settings: 224 px, ITC with momentum distillation (momentum 0.995, queue 57600,
    alpha 0.4), ITM with hard negatives, LM; random initialisation (the paper starts from
    ImageNet ViT and BERT-base weights)."""
    kwargs.setdefault("momentum_encoder", True)
    kwargs.setdefault("queue_size", 57600 if kwargs["momentum_encoder"] else 0)
    return BLIP(
        patch_size=16,
        vision_width=768,
        vision_depth=12,
        vision_heads=12,
        text_width=768,
        text_depth=12,
        text_heads=12,
        text_mlp_dim=3072,
        **kwargs,
    )


@register_model(
    task="image-text", family="blip", input_size=(3, 64, 64), paper=_PAPER, model_class=BLIP
)
def blip_tiny(**kwargs: Any) -> BLIP:
    """A small BLIP for CPU training on 64x64 images (not in the paper): ViT with 8x8 patches,
    width 192, 4 layers, 3 heads; MED width 192, 4 layers, 3 heads, FFN 768, 40 positions,
    ITC/ITM/LM without momentum encoder or queue. Pass ``vocab_size`` and the special token ids
    of the tokenizer trained on the captions."""
    kwargs.setdefault("img_size", 64)
    kwargs.setdefault("vocab_size", 1000)
    kwargs.setdefault("max_position_embeddings", 40)
    kwargs.setdefault("embed_dim", 128)
    for arg, value in _TINY_TOKENS.items():
        kwargs.setdefault(arg, value)
    return BLIP(
        patch_size=8,
        vision_width=192,
        vision_depth=4,
        vision_heads=3,
        text_width=192,
        text_depth=4,
        text_heads=3,
        text_mlp_dim=768,
        **kwargs,
    )


# Default special ids of blip_tiny: those of visionzoo.data.tokenizers.train_tokenizer(style=
# "blip"), which puts [PAD] [UNK] [CLS] [SEP] [MASK] [DEC] [ENC] first, as ids 0-6.
_TINY_TOKENS = {
    "pad_token_id": 0,
    "cls_token_id": 2,
    "eos_token_id": 3,
    "bos_token_id": 5,
    "enc_token_id": 6,
}

_SPECIAL_TOKENS = {
    "pad_token_id": "[PAD]",
    "cls_token_id": "[CLS]",
    "eos_token_id": "[SEP]",
    "bos_token_id": "[DEC]",
    "enc_token_id": "[ENC]",
}


def blip_token_ids(tokenizer: Any) -> dict[str, int]:
    """BLIP's special-token arguments (``pad_token_id`` ... ``enc_token_id``) and
    ``vocab_size`` read from a tokenizer with ``token_to_id`` (visionzoo's ``TextTokenizer``,
    a ``tokenizers.Tokenizer``) or ``convert_tokens_to_ids`` (a transformers tokenizer), e.g.
    ``create_model("blip_tiny", **blip_token_ids(tok))``."""
    lookup = getattr(tokenizer, "token_to_id", None) or getattr(
        tokenizer, "convert_tokens_to_ids", None
    )
    if not callable(lookup):
        raise ModelArgumentError(
            "blip_token_ids: the tokenizer needs token_to_id or convert_tokens_to_ids, got "
            f"{type(tokenizer).__name__}"
        )
    ids: dict[str, int] = {}
    for arg, token in _SPECIAL_TOKENS.items():
        idx = lookup(token)
        if not isinstance(idx, int):
            raise ModelArgumentError(
                f"blip_token_ids: the tokenizer has no {token} token (needed for {arg}); train "
                'it with the BLIP special tokens (train_tokenizer(..., style="blip"))'
            )
        ids[arg] = idx
    size = getattr(tokenizer, "vocab_size", None)
    if size is None and hasattr(tokenizer, "get_vocab_size"):
        size = tokenizer.get_vocab_size(with_added_tokens=True)
    if size is None:
        size = len(tokenizer)
    ids["vocab_size"] = int(size)
    return ids
