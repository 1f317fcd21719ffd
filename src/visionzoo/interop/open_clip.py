"""Load open_clip CLIP models' weights into visionzoo's :class:`~visionzoo.models.multimodal.
clip.CLIP`.

    import open_clip
    from visionzoo.interop.open_clip import from_open_clip
    ours = from_open_clip("ViT-B-32", open_clip.create_model("ViT-B-32", pretrained=None))
    ours.encode_image(images)   # == the open_clip model's encode_image(images)

Supported names (open_clip's model config names): ``ViT-B-32``, ``ViT-B-16``, ``RN50`` and
their ``-quickgelu`` variants (OpenAI's released weights use QuickGELU; the plain names use
exact GELU). The second argument is the open_clip model or its ``state_dict()``. What varies
inside one architecture is read off the weights (image size from the position embedding,
context length, vocabulary size); heads follow CLIP's rule (width / 64), as open_clip's configs.

Key mapping (everything else is identical, so loading is strict and any tensor left over or
missing is reported by name):

=====================================================  ==========================================
open_clip                                              visionzoo
=====================================================  ==========================================
``visual.conv1.weight``                                ``visual.patch_embed.proj.weight``
``visual.class_embedding`` (D,)                        ``visual.cls_token`` (1, 1, D)
``visual.positional_embedding`` (L, D)                 ``visual.pos_embed`` (1, L, D)
``visual.ln_pre`` / ``visual.ln_post``                 ``visual.norm_pre`` / ``visual.norm``
``visual.proj`` (D, E)                                 ``visual.proj.weight`` (E, D), transposed
``visual.transformer.resblocks.N`` / ``transformer.    ``visual.blocks.N`` / ``text.blocks.N``
resblocks.N``
  ``ln_1``, ``ln_2``                                     ``norm1``, ``norm2``
  ``attn.in_proj_weight`` / ``_bias``                    ``attn.qkv.weight`` / ``.bias``
  ``attn.out_proj``                                      ``attn.proj``
  ``mlp.c_fc``, ``mlp.c_proj``                           ``mlp.fc1``, ``mlp.fc2``
``token_embedding``                                    ``text.token_embedding``
``positional_embedding`` (L, D)                        ``text.pos_embed`` (1, L, D)
``ln_final``                                           ``text.norm``
``text_projection`` (D, E)                             ``text.proj.weight`` (E, D), transposed
``visual.*`` of a ModifiedResNet                       ``visual.*`` (same names)
``logit_scale``                                        ``logit_scale``
=====================================================  ==========================================

open_clip is needed only to build the reference model; this module does not import it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ModelArgumentError
from ..models.multimodal.clip import CLIP
from ..registry import create_model
from ._common import lookup_spec

__all__ = ["SPECS", "from_open_clip", "convert_state_dict", "supported_models"]


@dataclass(frozen=True)
class OpenCLIPSpec:
    """Our builder for one open_clip config name, and the switches that make it match."""

    model: str
    kwargs: dict[str, Any] = field(default_factory=dict)


SPECS: dict[str, OpenCLIPSpec] = {
    "ViT-B-32": OpenCLIPSpec("clip_vit_b_32"),
    "ViT-B-16": OpenCLIPSpec("clip_vit_b_16"),
    "RN50": OpenCLIPSpec("clip_rn50"),
    "ViT-B-32-quickgelu": OpenCLIPSpec("clip_vit_b_32", {"act_layer": "quick_gelu"}),
    "ViT-B-16-quickgelu": OpenCLIPSpec("clip_vit_b_16", {"act_layer": "quick_gelu"}),
    # ModifiedResNet has no MLP activation; only the text tower reads act_layer.
    "RN50-quickgelu": OpenCLIPSpec("clip_rn50", {"act_layer": "quick_gelu"}),
}

_BLOCK_RENAMES = (
    ("ln_1.", "norm1."),
    ("ln_2.", "norm2."),
    ("attn.in_proj_weight", "attn.qkv.weight"),
    ("attn.in_proj_bias", "attn.qkv.bias"),
    ("attn.out_proj.", "attn.proj."),
    ("mlp.c_fc.", "mlp.fc1."),
    ("mlp.c_proj.", "mlp.fc2."),
)
_VIT_RENAMES = {
    "visual.conv1.weight": "visual.patch_embed.proj.weight",
    "visual.class_embedding": "visual.cls_token",
    "visual.positional_embedding": "visual.pos_embed",
    "visual.proj": "visual.proj.weight",
}
_TEXT_RENAMES = {
    "token_embedding.weight": "text.token_embedding.weight",
    "positional_embedding": "text.pos_embed",
    "text_projection": "text.proj.weight",
}
_BLOCK = re.compile(r"^(visual\.)?transformer\.resblocks\.(\d+)\.(.+)$")


def supported_models() -> list[str]:
    """open_clip config names :func:`from_open_clip` converts."""
    return sorted(SPECS)


def _is_resnet(sd: Mapping[str, Tensor]) -> bool:
    return "visual.attnpool.positional_embedding" in sd


def _convert_key(key: str, value: Tensor, resnet: bool) -> tuple[str, Tensor] | None:
    if key == "attn_mask" or key.endswith(".attn_mask"):
        return None  # open_clip's causal mask buffer (ours is SDPA's is_causal)
    match = _BLOCK.match(key)
    if match:
        tower = "visual" if match.group(1) else "text"
        rest = match.group(3)
        for old, new in _BLOCK_RENAMES:
            if rest.startswith(old):
                rest = new + rest[len(old) :]
                break
        return f"{tower}.blocks.{match.group(2)}.{rest}", value
    if key in _TEXT_RENAMES:
        new = _TEXT_RENAMES[key]
        if key == "positional_embedding":
            value = value.unsqueeze(0)  # (L, D) -> (1, L, D)
        elif key == "text_projection":
            value = value.t()  # x @ P (D, E) == Linear with weight P^T (E, D)
        return new, value
    if key.startswith("ln_final."):
        return "text.norm." + key[len("ln_final.") :], value
    if key.startswith("visual.") and not resnet:
        if key in _VIT_RENAMES:
            new = _VIT_RENAMES[key]
            if key == "visual.class_embedding":
                value = value.reshape(1, 1, -1)  # (D,) -> (1, 1, D)
            elif key == "visual.positional_embedding":
                value = value.unsqueeze(0)
            elif key == "visual.proj":
                value = value.t()
            return new, value
        if key.startswith("visual.ln_pre."):
            return "visual.norm_pre." + key[len("visual.ln_pre.") :], value
        if key.startswith("visual.ln_post."):
            return "visual.norm." + key[len("visual.ln_post.") :], value
    return key, value  # ResNet tower keys, logit_scale


def convert_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """open_clip CLIP ``state_dict`` -> ours (keys renamed, projections transposed)."""
    resnet = _is_resnet(state_dict)
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        converted = _convert_key(key, value, resnet)
        if converted is not None:
            out[converted[0]] = converted[1]
    return out


def _infer(sd: Mapping[str, Tensor], name: str) -> dict[str, Any]:
    """Builder arguments read off the (open_clip) weights."""
    for key in ("token_embedding.weight", "positional_embedding"):
        if key not in sd:
            raise ModelArgumentError(
                f"the weights given for {name!r} have no {key!r}; is this an open_clip CLIP model?"
            )
    args: dict[str, Any] = {
        "vocab_size": int(sd["token_embedding.weight"].shape[0]),
        "context_length": int(sd["positional_embedding"].shape[0]),
    }
    if _is_resnet(sd):
        side = int(sd["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5
        args["image_size"] = int(round(side)) * 32
    elif "visual.positional_embedding" in sd and "visual.conv1.weight" in sd:
        patch = int(sd["visual.conv1.weight"].shape[-1])
        side = int(round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5))
        args["image_size"] = side * patch
    return args


def from_open_clip(
    name: str, model_or_state_dict: nn.Module | Mapping[str, Tensor], **kwargs: Any
) -> CLIP:
    """Our CLIP for open_clip model ``name`` holding its weights, in eval mode.

    Args:
        name: the open_clip config name (see :func:`supported_models`).
        model_or_state_dict: the open_clip model, or its state dict.
        kwargs: builder arguments that override the inferred ones.

    Raises ModelArgumentError for an unsupported name or weights that do not fit (naming the
    missing / unexpected / mis-shaped tensors).
    """
    spec = lookup_spec(SPECS, name, "open_clip")
    if isinstance(model_or_state_dict, nn.Module):
        state_dict = model_or_state_dict.state_dict()
    elif isinstance(model_or_state_dict, Mapping):
        state_dict = model_or_state_dict
    else:
        raise ModelArgumentError(
            f"from_open_clip: expected an open_clip model or its state dict, got "
            f"{type(model_or_state_dict).__name__}"
        )
    build = {**spec.kwargs, **_infer(state_dict, name), **kwargs}
    converted = convert_state_dict(state_dict)
    # Every tensor is overwritten: build on the meta device and adopt copies of the weights.
    with torch.device("meta"):
        model = create_model(spec.model, **build)
    targets = model.state_dict()
    expected = targets.keys()
    missing = sorted(k for k in expected if k not in converted)
    unexpected = sorted(k for k in converted if k not in expected)
    if missing or unexpected:
        raise ModelArgumentError(
            f"open_clip {name} weights do not fit visionzoo {spec.model}: "
            f"missing {missing[:8]}, unexpected {unexpected[:8]}"
        )
    converted = {k: v.detach().to(dtype=targets[k].dtype, copy=True) for k, v in converted.items()}
    try:
        model.load_state_dict(converted, strict=True, assign=True)
    except RuntimeError as e:  # shape mismatches
        raise ModelArgumentError(
            f"open_clip {name} weights do not fit visionzoo {spec.model}: {e}"
        ) from None
    return model.eval()
