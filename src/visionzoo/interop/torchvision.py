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

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from ..errors import ModelArgumentError, did_you_mean
from ..registry import create_model

__all__ = ["TvSpec", "SPECS", "from_torchvision", "convert_state_dict", "supported_models"]


def _identity(key: str) -> str | None:
    return key


@dataclass(frozen=True)
class TvSpec:
    """How one torchvision architecture maps onto ours.

    ``model``: our registry name; ``kwargs``: switches that make ours match torchvision's variant;
    ``head``: the key of the final classifier's weight (its rows give ``num_classes``);
    ``rename``: maps a torchvision key to ours (None drops it); ``infer``: extra builder
    arguments read from the state dict (e.g. whether auxiliary heads are present).
    """

    model: str
    head: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    rename: Callable[[str], str | None] = _identity
    infer: Callable[[Mapping[str, Tensor]], dict[str, Any]] | None = None


def _googlenet_infer(sd: Mapping[str, Tensor]) -> dict[str, Any]:
    return {"aux_logits": any(k.startswith("aux1.") for k in sd)}


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
}


def supported_models() -> list[str]:
    """torchvision architecture names :func:`from_torchvision` converts."""
    return sorted(SPECS)


def _spec(name: str) -> TvSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise ModelArgumentError(
            f"no torchvision converter for {name!r}{did_you_mean(name, SPECS)}; "
            f"supported: {', '.join(supported_models())}"
        ) from None


def convert_state_dict(name: str, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename torchvision ``state_dict`` keys of architecture ``name`` to ours."""
    spec = _spec(name)
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        new = spec.rename(key)
        if new is not None:
            out[new] = value
    return out


def from_torchvision(
    name: str, model_or_state_dict: nn.Module | Mapping[str, Tensor], **kwargs: Any
) -> nn.Module:
    """Our model ``name`` holding the weights of a torchvision model (or its state dict).

    ``kwargs`` override the switches inferred from the weights. The returned model is in eval
    mode. A state dict that does not fit raises ModelArgumentError naming the keys.
    """
    spec = _spec(name)
    if isinstance(model_or_state_dict, nn.Module):
        reference = model_or_state_dict
        state_dict = reference.state_dict()
        # torchvision's GoogLeNet may re-normalise its input; carry that flag over.
        if hasattr(reference, "transform_input"):
            kwargs.setdefault("transform_input", bool(reference.transform_input))
    else:
        state_dict = dict(model_or_state_dict)
    if spec.head not in state_dict:
        raise ModelArgumentError(
            f"the weights given for {name!r} have no {spec.head!r}; is this a torchvision {name}?"
        )
    build = {**spec.kwargs, "num_classes": int(state_dict[spec.head].shape[0])}
    if spec.infer is not None:
        build.update(spec.infer(state_dict))
    build.update(kwargs)
    model = create_model(spec.model, **build)
    converted = convert_state_dict(name, state_dict)
    missing, unexpected = model.load_state_dict(converted, strict=False)
    if missing or unexpected:
        raise ModelArgumentError(
            f"torchvision {name} weights do not fit visionzoo {spec.model}: "
            f"missing {sorted(missing)[:8]}, unexpected {sorted(unexpected)[:8]}"
        )
    return model.eval()
