"""Machinery shared by the converters from reference implementations (torchvision, timm...).

A converter is a table of :class:`ConverterSpec`, one per reference architecture name: which of
our models it becomes, how its state-dict keys map onto ours, and which builder arguments are
read off the weights. :func:`load_converted` does the rest — infer, build, load strictly, and
report every key that did not fit as a ModelArgumentError.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ModelArgumentError, did_you_mean
from ..registry import create_model

__all__ = ["ConverterSpec", "lookup_spec", "rename_keys", "load_converted"]


def _identity(key: str) -> str | None:
    return key


@dataclass(frozen=True)
class ConverterSpec:
    """How one reference architecture maps onto ours.

    ``model``: our registry name; ``kwargs``: switches that make ours match the reference's
    variant; ``head``: the reference key of the final classifier's weight (its rows give
    ``num_classes``); ``rename``: maps a reference key to ours (None drops it); ``infer``: extra
    builder arguments read from the reference state dict (e.g. auxiliary heads present, the
    training image size); ``build_on_meta``: build our model on the meta device and adopt the
    converted tensors (copies) instead of initialising weights that are overwritten at once —
    only for models whose every tensor is in the state dict (no non-persistent buffers).
    """

    model: str
    head: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    rename: Callable[[str], str | None] = _identity
    infer: Callable[[Mapping[str, Tensor]], dict[str, Any]] | None = None
    build_on_meta: bool = False


def lookup_spec(specs: Mapping[str, ConverterSpec], name: str, source: str) -> ConverterSpec:
    """``specs[name]``, or a ModelArgumentError listing the supported names."""
    try:
        return specs[name]
    except KeyError:
        raise ModelArgumentError(
            f"no {source} converter for {name!r}{did_you_mean(name, specs)}; "
            f"supported: {', '.join(sorted(specs))}"
        ) from None


def rename_keys(spec: ConverterSpec, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The reference ``state_dict`` with keys renamed to ours (dropped keys removed)."""
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        new = spec.rename(key)
        if new is not None:
            out[new] = value
    return out


def load_converted(
    source: str,
    name: str,
    spec: ConverterSpec,
    state_dict: Mapping[str, Tensor],
    kwargs: Mapping[str, Any],
) -> nn.Module:
    """Our model for reference ``name`` (from ``source``) holding ``state_dict``, in eval mode.

    Builder arguments: ``spec.kwargs``, then ``num_classes`` from the head, then
    ``spec.infer``, then the caller's ``kwargs`` (which win). Loading is strict: a missing,
    unexpected or mis-shaped tensor raises ModelArgumentError naming the keys.
    """
    if spec.head not in state_dict:
        raise ModelArgumentError(
            f"the weights given for {name!r} have no {spec.head!r}; is this a {source} {name}?"
        )
    build = {**spec.kwargs, "num_classes": int(state_dict[spec.head].shape[0])}
    if spec.infer is not None:
        build.update(spec.infer(state_dict))
    build.update(kwargs)
    converted = rename_keys(spec, state_dict)
    if spec.build_on_meta:
        with torch.device("meta"):
            model = create_model(spec.model, **build)
        targets = model.state_dict()
        # Copies, so that our model never shares storage with the reference; cast to our dtype
        # as a plain load_state_dict would.
        converted = {
            k: v.detach().to(dtype=targets[k].dtype, copy=True) if k in targets else v
            for k, v in converted.items()
        }
    else:
        model = create_model(spec.model, **build)
    # Key sets first, so that the message names every missing and unexpected tensor (torch
    # reports only the shape mismatches when both kinds of problems occur).
    expected = model.state_dict().keys()
    missing = sorted(k for k in expected if k not in converted)
    unexpected = sorted(k for k in converted if k not in expected)
    if missing or unexpected:
        raise ModelArgumentError(
            f"{source} {name} weights do not fit visionzoo {spec.model}: "
            f"missing {missing[:8]}, unexpected {unexpected[:8]}"
        )
    try:
        model.load_state_dict(converted, strict=True, assign=spec.build_on_meta)
    except RuntimeError as e:  # shape mismatches
        raise ModelArgumentError(
            f"{source} {name} weights do not fit visionzoo {spec.model}: {e}"
        ) from None
    return model.eval()
