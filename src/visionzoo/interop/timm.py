"""Load timm models' weights into visionzoo models.

Our vision transformers use timm's attribute names (``patch_embed.proj``, ``cls_token``,
``blocks.N.attn.qkv``, ``head_dist``...), so the conversion is the identity on state-dict keys.
What differs between timm variants of one architecture is read off the weights: the number of
classes (the head's rows), the training image size (the position embedding's grid), whether a
[CLS] token, a position embedding and qkv biases are present. Loading is strict, so every
tensor must find a home: a timm model with a part we do not build (e.g. ``fc_norm`` after
average pooling, register tokens) is refused with the keys named.

    import timm
    from visionzoo.interop.timm import from_timm
    ours = from_timm("deit_tiny_distilled_patch16_224", timm.create_model(
        "deit_tiny_distilled_patch16_224", pretrained=False))

timm is needed only to build the reference model; this module does not import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from ..models.classification.vit import img_size_from_pos_embed
from ._common import ConverterSpec, load_converted, lookup_spec, rename_keys

__all__ = ["SPECS", "from_timm", "convert_state_dict", "supported_models"]


def _vit_infer(sd: Mapping[str, Tensor]) -> dict[str, Any]:
    proj = sd["patch_embed.proj.weight"]  # Tensor[D, C, P, P]
    class_token = "cls_token" in sd
    args: dict[str, Any] = {
        "in_chans": int(proj.shape[1]),
        "class_token": class_token,
        "pos_embed": "learned" if "pos_embed" in sd else "none",
        "qkv_bias": "blocks.0.attn.qkv.bias" in sd,
    }
    if "pos_embed" in sd:
        prefix = int(class_token) + int("dist_token" in sd)
        args["img_size"] = img_size_from_pos_embed(sd["pos_embed"], int(proj.shape[-1]), prefix)
    return args


def _spec(model: str) -> ConverterSpec:
    return ConverterSpec(model, head="head.weight", infer=_vit_infer, build_on_meta=True)


_VIT_NAMES = (
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
)
# timm's fine-tuned-at-384 variants are the same networks with a 24x24 grid: our 224 builder
# with img_size inferred from the position embedding.
_AT_384 = {
    "vit_tiny_patch16_384": "vit_tiny_patch16_224",
    "vit_small_patch16_384": "vit_small_patch16_224",
    "vit_small_patch32_384": "vit_small_patch32_224",
    "vit_base_patch16_384": "vit_base_patch16_224",
    "vit_base_patch32_384": "vit_base_patch32_224",
    "vit_large_patch16_384": "vit_large_patch16_224",
    "vit_large_patch32_384": "vit_large_patch32_224",
    "deit_base_patch16_384": "deit_base_patch16_224",
    "deit_base_distilled_patch16_384": "deit_base_distilled_patch16_224",
}

SPECS: dict[str, ConverterSpec] = {
    **{name: _spec(name) for name in _VIT_NAMES},
    **{name: _spec(ours) for name, ours in _AT_384.items()},
}


def supported_models() -> list[str]:
    """timm model names :func:`from_timm` converts."""
    return sorted(SPECS)


def convert_state_dict(name: str, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """timm ``state_dict`` of model ``name`` with keys renamed to ours (here: unchanged)."""
    return rename_keys(lookup_spec(SPECS, name, "timm"), state_dict)


def from_timm(
    name: str, model_or_state_dict: nn.Module | Mapping[str, Tensor], **kwargs: Any
) -> nn.Module:
    """Our model for timm's ``name`` holding the weights of a timm model (or its state dict).

    ``kwargs`` override the switches inferred from the weights (e.g. ``img_size=384`` resamples
    the position embedding of a 224 model). The returned model is in eval mode. Weights that
    do not fit raise ModelArgumentError naming the keys.
    """
    spec = lookup_spec(SPECS, name, "timm")
    if isinstance(model_or_state_dict, nn.Module):
        state_dict = model_or_state_dict.state_dict()
    else:
        state_dict = dict(model_or_state_dict)
    return load_converted("timm", name, spec, state_dict, kwargs)
