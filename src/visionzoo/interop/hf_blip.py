"""Converter from transformers' BLIP (``BlipForConditionalGeneration``,
``BlipForImageTextRetrieval``) to visionzoo's :class:`~visionzoo.models.multimodal.blip.BLIP`.

transformers splits BLIP as the released checkpoints do: a captioning model (ViT + decoder with
LM head) and a retrieval model (ViT + encoder with cross-attention + ``vision_proj``,
``text_proj``, ``itm_head``). Each becomes a BLIP with only that half
(``with_retrieval=False`` or ``with_captioning=False``). Renames (HF -> ours):

* ViT: ``vision_model.embeddings.{class_embedding, position_embedding, patch_embedding}`` ->
  ``visual_encoder.{cls_token, pos_embed, patch_embed.proj}``; ``encoder.layers.N.{layer_norm1,
  self_attn.qkv, self_attn.projection, layer_norm2, mlp.fc1, mlp.fc2}`` -> ``blocks.N.{norm1,
  attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``; ``post_layernorm`` -> ``norm``.
* BERT: ``embeddings.LayerNorm`` -> ``embeddings.norm``; ``encoder.layer.N.attention.self.{query,
  key, value}`` / ``attention.output.{dense, LayerNorm}`` -> ``layers.N.self_attn.{query, key,
  value, out, norm}``; ``crossattention`` -> ``cross_attn`` likewise; ``intermediate.dense``,
  ``output.dense``, ``output.LayerNorm`` -> ``mlp.fc1``, ``mlp.fc2``, ``mlp.norm``;
  ``cls.predictions.{transform.dense, transform.LayerNorm, bias}`` -> ``lm_head.{dense, norm,
  bias}``; ``cls.predictions.decoder`` is dropped after checking that it is tied to the word
  embeddings (ours uses them directly).
* The retrieval model has no ITC temperature (transformers returns plain cosine similarities);
  ours keeps its initial ``temp``. With ``momentum_encoder=True`` (and ``queue_size``) in
  ``kwargs``, the momentum encoders start as copies of the converted weights, ready for BLIP's
  fine-tuning recipe.

With a model, the sizes, LayerNorm epsilons, head counts and special tokens come from its
config; with a bare state dict, sizes are read off the weights, head counts default to
width / 64 (BLIP's 12 heads at width 768) and epsilons to transformers' released configs
(ViT 1e-5, BERT 1e-12). ``kwargs`` override anything (e.g. ``enc_token_id``, which transformers'
config does not record: default bos + 1, BLIP's tokenizer order).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ModelArgumentError
from ..models.multimodal.blip import BLIP

__all__ = ["from_hf_blip", "convert_state_dict"]

_VISION_RULES = [
    (r"^vision_model\.embeddings\.class_embedding$", "visual_encoder.cls_token"),
    (r"^vision_model\.embeddings\.position_embedding$", "visual_encoder.pos_embed"),
    (r"^vision_model\.embeddings\.patch_embedding\.", "visual_encoder.patch_embed.proj."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.layer_norm1\.", r"visual_encoder.blocks.\1.norm1."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.layer_norm2\.", r"visual_encoder.blocks.\1.norm2."),
    (
        r"^vision_model\.encoder\.layers\.(\d+)\.self_attn\.qkv\.",
        r"visual_encoder.blocks.\1.attn.qkv.",
    ),
    (
        r"^vision_model\.encoder\.layers\.(\d+)\.self_attn\.projection\.",
        r"visual_encoder.blocks.\1.attn.proj.",
    ),
    (r"^vision_model\.encoder\.layers\.(\d+)\.mlp\.", r"visual_encoder.blocks.\1.mlp."),
    (r"^vision_model\.post_layernorm\.", "visual_encoder.norm."),
]

# Applied after the "text_decoder.bert." / "text_encoder." prefix became "<ours>.".
_TEXT_RULES = [
    (r"\.embeddings\.LayerNorm\.", ".embeddings.norm."),
    (r"\.encoder\.layer\.(\d+)\.attention\.self\.", r".layers.\1.self_attn."),
    (r"\.encoder\.layer\.(\d+)\.attention\.output\.dense\.", r".layers.\1.self_attn.out."),
    (r"\.encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.", r".layers.\1.self_attn.norm."),
    (r"\.encoder\.layer\.(\d+)\.crossattention\.self\.", r".layers.\1.cross_attn."),
    (r"\.encoder\.layer\.(\d+)\.crossattention\.output\.dense\.", r".layers.\1.cross_attn.out."),
    (
        r"\.encoder\.layer\.(\d+)\.crossattention\.output\.LayerNorm\.",
        r".layers.\1.cross_attn.norm.",
    ),
    (r"\.encoder\.layer\.(\d+)\.intermediate\.dense\.", r".layers.\1.mlp.fc1."),
    (r"\.encoder\.layer\.(\d+)\.output\.dense\.", r".layers.\1.mlp.fc2."),
    (r"\.encoder\.layer\.(\d+)\.output\.LayerNorm\.", r".layers.\1.mlp.norm."),
    (r"\.cls\.predictions\.transform\.dense\.", ".lm_head.dense."),
    (r"\.cls\.predictions\.transform\.LayerNorm\.", ".lm_head.norm."),
    (r"\.cls\.predictions\.bias$", ".lm_head.bias"),
]


# Top-level names of our BLIP that transformers' models do not have.
_OURS_ONLY = {
    "visual_encoder_m",
    "vision_proj_m",
    "text_encoder_m",
    "text_proj_m",
    "image_queue",
    "text_queue",
    "idx_queue",
    "queue_ptr",
}


def _rename(key: str) -> str | None:
    """Our key for transformers' ``key``; None for tensors we do not keep."""
    if key.startswith("vision_model."):
        for pattern, repl in _VISION_RULES:
            new, count = re.subn(pattern, repl, key)
            if count:
                return new
        return key  # unknown: reported as unexpected by the caller
    if key.startswith("text_decoder.bert."):
        key = "text_decoder." + key[len("text_decoder.bert.") :]
    elif not key.startswith(("text_encoder.", "text_decoder.")):
        return key  # vision_proj, text_proj, itm_head: same names
    if ".cls.predictions.decoder." in key or ".pooler." in key or key.endswith(".position_ids"):
        return None  # tied LM output (checked separately), unused pooler, a constant buffer
    for pattern, repl in _TEXT_RULES:
        key = re.sub(pattern, repl, key)
    return key


def _kind(state_dict: Mapping[str, Tensor]) -> str:
    has_encoder = any(k.startswith("text_encoder.") for k in state_dict)
    has_decoder = any(k.startswith("text_decoder.") for k in state_dict)
    if has_decoder and not has_encoder and "text_decoder.cls.predictions.bias" in state_dict:
        return "captioning"
    if has_encoder and not has_decoder and "itm_head.weight" in state_dict:
        return "retrieval"
    raise ModelArgumentError(
        "from_hf_blip: expected the weights of transformers' BlipForConditionalGeneration "
        "(vision_model + text_decoder) or BlipForImageTextRetrieval (vision_model + "
        "text_encoder + itm_head); got neither (BlipForQuestionAnswering and BlipModel are "
        "not supported)"
    )


def _same(a: Tensor, b: Tensor) -> bool:
    """Whether two tensors are tied (one storage) or equal; meta tensors (no values) pass."""
    if a.shape != b.shape:
        return False
    if a.is_meta or b.is_meta or a.data_ptr() == b.data_ptr():
        return True
    return torch.equal(a, b)


def convert_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """transformers' BLIP state dict with keys renamed to ours (see the module docstring).

    Raises ModelArgumentError when the LM head's output weight or bias is not tied to the word
    embeddings / ``cls.predictions.bias`` (ours ties them by construction).
    """
    prefix = "text_decoder.cls.predictions."
    if prefix + "decoder.weight" in state_dict:
        tied = state_dict["text_decoder.bert.embeddings.word_embeddings.weight"]
        if not _same(state_dict[prefix + "decoder.weight"], tied):
            raise ModelArgumentError(
                "from_hf_blip: cls.predictions.decoder.weight differs from the word embeddings "
                "(tie_word_embeddings=False); visionzoo's BLIP always ties them"
            )
    if prefix + "decoder.bias" in state_dict and not _same(
        state_dict[prefix + "decoder.bias"], state_dict[prefix + "bias"]
    ):
        raise ModelArgumentError(
            "from_hf_blip: cls.predictions.decoder.bias differs from cls.predictions.bias"
        )
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        new = _rename(key)
        if new is not None:
            out[new] = value
    return out


def _infer(state_dict: Mapping[str, Tensor], kind: str) -> dict[str, Any]:
    """Builder arguments read off the (converted) weights."""
    text = "text_decoder" if kind == "captioning" else "text_encoder"
    patch = state_dict["visual_encoder.patch_embed.proj.weight"]  # (Dv, 3, P, P)
    grid = int(round((state_dict["visual_encoder.pos_embed"].shape[1] - 1) ** 0.5))
    vision_width, text_width = patch.shape[0], state_dict[f"{text}.embeddings.norm.weight"].shape[0]
    depth = 1 + max(
        int(k.split(".")[2]) for k in state_dict if k.startswith("visual_encoder.blocks.")
    )
    text_depth = 1 + max(
        int(k.split(".")[2]) for k in state_dict if k.startswith(f"{text}.layers.")
    )
    fc1 = state_dict["visual_encoder.blocks.0.mlp.fc1.weight"]
    words = state_dict[f"{text}.embeddings.word_embeddings.weight"]
    args: dict[str, Any] = dict(
        img_size=grid * patch.shape[-1],
        patch_size=patch.shape[-1],
        vision_width=vision_width,
        vision_depth=depth,
        vision_heads=max(1, vision_width // 64),
        vision_mlp_ratio=fc1.shape[0] / vision_width,
        vision_norm_eps=1e-5,
        vocab_size=words.shape[0],
        text_width=text_width,
        text_depth=text_depth,
        text_heads=max(1, text_width // 64),
        text_mlp_dim=state_dict[f"{text}.layers.0.mlp.fc1.weight"].shape[0],
        max_position_embeddings=state_dict[f"{text}.embeddings.position_embeddings.weight"].shape[
            0
        ],
        text_norm_eps=1e-12,
        with_retrieval=kind == "retrieval",
        with_captioning=kind == "captioning",
    )
    if kind == "retrieval":
        args["embed_dim"] = state_dict["vision_proj.weight"].shape[0]
    return args


def _from_config(config: Any) -> dict[str, Any]:
    """Builder arguments from a transformers ``BlipConfig``."""
    vision, text = config.vision_config, config.text_config
    for part, cfg in (("vision_config", vision), ("text_config", text)):
        if getattr(cfg, "hidden_act", "gelu") != "gelu":
            raise ModelArgumentError(
                f"from_hf_blip: {part}.hidden_act={cfg.hidden_act!r} is not supported; "
                "visionzoo's BLIP uses the exact GELU ('gelu') as BLIP"
            )
    args: dict[str, Any] = dict(
        vision_heads=vision.num_attention_heads,
        vision_norm_eps=float(vision.layer_norm_eps),
        text_heads=text.num_attention_heads,
        text_norm_eps=float(text.layer_norm_eps),
        text_dropout=float(text.hidden_dropout_prob),
    )
    for ours, theirs in (
        ("pad_token_id", "pad_token_id"),
        ("bos_token_id", "bos_token_id"),
        ("eos_token_id", "sep_token_id"),  # BLIP's generate stops at [SEP]
    ):
        value = getattr(text, theirs, None)
        if isinstance(value, int):
            args[ours] = value
    return args


def from_hf_blip(model_or_state_dict: nn.Module | Mapping[str, Tensor], **kwargs: Any) -> BLIP:
    """Our BLIP holding the weights of a transformers ``BlipForConditionalGeneration`` or
    ``BlipForImageTextRetrieval`` (or its state dict), in eval mode.

    ``kwargs`` override the inferred builder arguments (e.g. ``text_heads`` for a bare state
    dict, ``enc_token_id``, ``cls_token_id``). Weights that do not fit raise ModelArgumentError
    naming the keys.
    """
    config = getattr(model_or_state_dict, "config", None)
    if isinstance(model_or_state_dict, nn.Module):
        state_dict = model_or_state_dict.state_dict()
    else:
        state_dict = dict(model_or_state_dict)
    kind = _kind(state_dict)
    converted = convert_state_dict(state_dict)
    args = _infer(converted, kind)
    if config is not None and hasattr(config, "vision_config"):
        args.update(_from_config(config))
    args.update(kwargs)
    bos = args.get("bos_token_id", 30522)
    if "enc_token_id" not in kwargs and isinstance(bos, int) and bos + 1 < args["vocab_size"]:
        args["enc_token_id"] = bos + 1  # BLIP's tokenizer adds [DEC], then [ENC]
    model = BLIP(**args)
    ours = model.state_dict()
    # Not in transformers' models: the ITC temperature (kept at its initial value) and, when
    # asked for with momentum_encoder=True / queue_size, the momentum copies (started equal to
    # the converted weights, as BLIP starts them) and the queues (random, as BLIP's).
    own = {k for k in ours if k == "temp" or k.split(".")[0] in _OURS_ONLY}
    missing = sorted(k for k in ours if k not in converted and k not in own)
    unexpected = sorted(k for k in converted if k not in ours)
    if missing or unexpected:
        raise ModelArgumentError(
            f"transformers BLIP ({kind}) weights do not fit visionzoo BLIP: missing "
            f"{missing[:8]}, unexpected {unexpected[:8]}"
        )
    for key in own:
        converted.setdefault(key, ours[key])
    try:
        model.load_state_dict(converted, strict=True)
    except RuntimeError as e:  # shape mismatches
        raise ModelArgumentError(
            f"transformers BLIP weights do not fit visionzoo BLIP: {e}"
        ) from None
    if model.momentum_encoder:
        for online, ema in model._momentum_pairs_modules():
            model._copy_params(online, ema)
    return model.eval()
