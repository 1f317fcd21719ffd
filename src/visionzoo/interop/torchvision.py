"""Load torchvision models' weights into visionzoo models.

Our attribute names follow torchvision's wherever the paper allows, so most conversions are the
identity on state-dict keys; the few renames live in each model's :class:`TvSpec`. The target
model's configuration (number of classes, auxiliary heads...) is inferred from the weights, and
``strict`` loading guarantees that every tensor found a home.

    from torchvision.models import resnet50
    from visionzoo.interop.torchvision import from_torchvision
    ours = from_torchvision("resnet50", resnet50(weights=None))
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from ..models.classification.vit import img_size_from_pos_embed
from ._common import ConverterSpec, load_converted, lookup_spec, rename_keys

__all__ = ["TvSpec", "SPECS", "from_torchvision", "convert_state_dict", "supported_models"]

# How one torchvision architecture maps onto ours (see ConverterSpec for the fields).
TvSpec = ConverterSpec


def _googlenet_infer(sd: Mapping[str, Tensor]) -> dict[str, Any]:
    return {"aux_logits": any(k.startswith("aux1.") for k in sd)}


_VIT_BLOCK_RENAMES = (
    ("ln_1.", "norm1."),
    ("ln_2.", "norm2."),
    ("self_attention.in_proj_", "attn.qkv."),
    ("self_attention.out_proj.", "attn.proj."),
    ("mlp.0.", "mlp.fc1."),
    ("mlp.3.", "mlp.fc2."),
)
_VIT_TOP_RENAMES = {
    "conv_proj.weight": "patch_embed.proj.weight",
    "conv_proj.bias": "patch_embed.proj.bias",
    "class_token": "cls_token",
    "encoder.pos_embedding": "pos_embed",
    "encoder.ln.weight": "norm.weight",
    "encoder.ln.bias": "norm.bias",
    "heads.head.weight": "head.weight",
    "heads.head.bias": "head.bias",
}


def _vit_rename(key: str) -> str | None:
    # torchvision: encoder.layers.encoder_layer_N.{ln_1, self_attention.in_proj_weight, mlp.0...}
    # ours (timm's names): blocks.N.{norm1, attn.qkv.weight, mlp.fc1...}. in_proj_weight is
    # Tensor[3D, D] with rows [q; k; v], exactly our qkv.weight, so no tensor is reshaped.
    if key in _VIT_TOP_RENAMES:
        return _VIT_TOP_RENAMES[key]
    prefix = "encoder.layers.encoder_layer_"
    if not key.startswith(prefix):
        return key  # unknown keys stay and are reported as unexpected
    index, rest = key[len(prefix) :].split(".", 1)
    for old, new in _VIT_BLOCK_RENAMES:
        if rest.startswith(old):
            rest = new + rest[len(old) :]
            break
    return f"blocks.{index}.{rest}"


def _vit_infer(sd: Mapping[str, Tensor]) -> dict[str, Any]:
    # torchvision fixes the training size in its constructor (image_size); read it back off the
    # position embedding's grid so that, e.g., a model built with image_size=384 converts.
    patch = int(sd["conv_proj.weight"].shape[-1])
    img_size = img_size_from_pos_embed(sd["encoder.pos_embedding"], patch, num_prefix_tokens=1)
    return {"img_size": img_size, "in_chans": int(sd["conv_proj.weight"].shape[1])}


SPECS: dict[str, TvSpec] = {
    "alexnet": TvSpec("alexnet", head="classifier.6.weight"),
    **{
        f"vgg{d}{bn}": TvSpec(f"vgg{d}{bn}", head="classifier.6.weight")
        for d in (11, 13, 16, 19)
        for bn in ("", "_bn")
    },
    "googlenet": TvSpec(
        "googlenet", head="fc.weight", kwargs={"torchvision_compat": True}, infer=_googlenet_infer
    ),
    **{f"resnet{d}": TvSpec(f"resnet{d}", head="fc.weight") for d in (18, 34, 50, 101, 152)},
    "mobilenet_v2": TvSpec("mobilenet_v2", head="classifier.1.weight"),
    **{
        f"vit_b_{p}": TvSpec(
            f"vit_b_{p}",
            head="heads.head.weight",
            rename=_vit_rename,
            infer=_vit_infer,
            build_on_meta=True,
        )
        for p in (16, 32)
    },
    # Same keys as ours; the aux head (aux_loss) and input channels are read off the weights.
    **{
        f"deeplabv3_resnet{d}": TvSpec(
            f"deeplabv3_resnet{d}",
            head="classifier.4.weight",
            infer=lambda sd: {
                "aux_loss": any(k.startswith("aux_classifier.") for k in sd),
                "in_chans": int(sd["backbone.conv1.weight"].shape[1]),
            },
            build_on_meta=True,
        )
        for d in (50, 101)
    },
    # Detection: same keys as ours; the predictor's cls_score rows are the classes including
    # background. torchvision builds a randomly initialised model with trainable BatchNorm2d
    # (its state dict then has num_batches_tracked) and a pretrained one with frozen BN.
    "fasterrcnn_resnet50_fpn": TvSpec(
        "fasterrcnn_resnet50_fpn",
        head="roi_heads.box_predictor.cls_score.weight",
        infer=lambda sd: {
            **(
                {"norm_layer": "bn", "trainable_layers": 5}
                if any(k.endswith("num_batches_tracked") for k in sd)
                else {}
            ),
            "representation_size": int(sd["roi_heads.box_head.fc6.weight"].shape[0]),
        },
        build_on_meta=True,
    ),
}


def _fasterrcnn_module_kwargs(ref: nn.Module) -> dict[str, Any]:
    """The settings of a torchvision FasterRCNN module (they are not in its state dict)."""
    t, rpn, heads = ref.transform, ref.rpn, ref.roi_heads
    min_size = tuple(int(s) for s in t.min_size)
    kwargs: dict[str, Any] = {
        "min_size": min_size[0] if len(min_size) == 1 else min_size,
        "max_size": int(t.max_size),
        "image_mean": tuple(t.image_mean),
        "image_std": tuple(t.image_std),
        "size_divisible": int(t.size_divisible),
        "anchor_sizes": tuple(tuple(s) for s in rpn.anchor_generator.sizes),
        "aspect_ratios": tuple(tuple(r) for r in rpn.anchor_generator.aspect_ratios),
        "rpn_pre_nms_top_n_train": int(rpn._pre_nms_top_n["training"]),
        "rpn_pre_nms_top_n_test": int(rpn._pre_nms_top_n["testing"]),
        "rpn_post_nms_top_n_train": int(rpn._post_nms_top_n["training"]),
        "rpn_post_nms_top_n_test": int(rpn._post_nms_top_n["testing"]),
        "rpn_nms_thresh": float(rpn.nms_thresh),
        "rpn_fg_iou_thresh": float(rpn.proposal_matcher.high_threshold),
        "rpn_bg_iou_thresh": float(rpn.proposal_matcher.low_threshold),
        "rpn_batch_size_per_image": int(rpn.fg_bg_sampler.batch_size_per_image),
        "rpn_positive_fraction": float(rpn.fg_bg_sampler.positive_fraction),
        "rpn_score_thresh": float(rpn.score_thresh),
        "rpn_min_size": float(rpn.min_size),
        "box_fg_iou_thresh": float(heads.proposal_matcher.high_threshold),
        "box_bg_iou_thresh": float(heads.proposal_matcher.low_threshold),
        "box_batch_size_per_image": int(heads.fg_bg_sampler.batch_size_per_image),
        "box_positive_fraction": float(heads.fg_bg_sampler.positive_fraction),
        "bbox_reg_weights": tuple(float(w) for w in heads.box_coder.weights),
        "box_score_thresh": float(heads.score_thresh),
        "box_nms_thresh": float(heads.nms_thresh),
        "detections_per_img": int(heads.detections_per_img),
    }
    # torchvision sets eps = 0 on the frozen BN of its COCO_V1 weights; carry the eps over.
    for m in ref.backbone.modules():
        if hasattr(m, "running_var") and hasattr(m, "eps"):
            kwargs["norm_eps"] = float(m.eps)
            break
    return kwargs


# Settings read off a reference module (not its state dict), by architecture name.
_MODULE_KWARGS = {"fasterrcnn_resnet50_fpn": _fasterrcnn_module_kwargs}


def supported_models() -> list[str]:
    """torchvision architecture names :func:`from_torchvision` converts."""
    return sorted(SPECS)


def convert_state_dict(name: str, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename torchvision ``state_dict`` keys of architecture ``name`` to ours."""
    return rename_keys(lookup_spec(SPECS, name, "torchvision"), state_dict)


def from_torchvision(
    name: str, model_or_state_dict: nn.Module | Mapping[str, Tensor], **kwargs: Any
) -> nn.Module:
    """Our model ``name`` holding the weights of a torchvision model (or its state dict).

    ``kwargs`` override the switches inferred from the weights. The returned model is in eval
    mode. A state dict that does not fit raises ModelArgumentError naming the keys.
    """
    spec = lookup_spec(SPECS, name, "torchvision")
    if isinstance(model_or_state_dict, nn.Module):
        reference = model_or_state_dict
        state_dict = reference.state_dict()
        # torchvision's GoogLeNet may re-normalise its input; carry that flag over.
        if hasattr(reference, "transform_input"):
            kwargs.setdefault("transform_input", bool(reference.transform_input))
        if name in _MODULE_KWARGS:
            kwargs = {**_MODULE_KWARGS[name](reference), **kwargs}
    else:
        state_dict = dict(model_or_state_dict)
    return load_converted("torchvision", name, spec, state_dict, kwargs)
