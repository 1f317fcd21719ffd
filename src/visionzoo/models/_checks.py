"""Argument checks and small factories shared by the model families.

Builders validate their switches up front so that a bad value (often a string from a YAML file
or the command line) fails with a ModelArgumentError naming the model, the argument and what is
valid, instead of a shape error deep inside ``forward``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

from torch import nn

from ..errors import ModelArgumentError

__all__ = [
    "ACTIVATIONS",
    "act_factory",
    "check_bool",
    "check_choice",
    "check_dropout",
    "check_positive_int",
]

# Activations that may be named by string (e.g. from a CLI override); any callable returning an
# nn.Module is accepted as well.
ACTIVATIONS: dict[str, Callable[..., nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "tanh": nn.Tanh,
}


def check_bool(name: str, value: object, *, model: str) -> None:
    # A YAML/CLI string such as "false" is truthy; refuse it rather than silently flip a switch.
    if not isinstance(value, bool):
        raise ModelArgumentError(f"{model}: {name} must be True or False, got {value!r}")


def check_positive_int(name: str, value: object, *, model: str) -> None:
    """Raise ModelArgumentError unless ``value`` is an int > 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ModelArgumentError(f"{model}: {name} must be a positive integer, got {value!r}")


def check_choice(name: str, value: object, choices: tuple, *, model: str) -> None:
    """Raise ModelArgumentError unless ``value`` is one of ``choices``."""
    if value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise ModelArgumentError(f"{model}: {name} must be one of {valid}, got {value!r}")


def check_dropout(value: object, *, model: str, name: str = "dropout") -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not (0.0 <= float(value) < 1.0) or math.isnan(float(value)):
        raise ModelArgumentError(f"{model}: {name} must be a probability in [0, 1), got {value!r}")


def act_factory(
    act_layer: Callable[..., nn.Module] | str, *, model: str
) -> Callable[[], nn.Module]:
    """Validate ``act_layer`` and return a zero-argument factory of activation modules."""
    if isinstance(act_layer, str):
        if act_layer.lower() not in ACTIVATIONS:
            valid = ", ".join(repr(k) for k in ACTIVATIONS)
            raise ModelArgumentError(
                f"{model}: unknown act_layer {act_layer!r}; valid names: {valid} "
                "(or any callable returning an nn.Module)"
            )
        act_layer = ACTIVATIONS[act_layer.lower()]
    if not callable(act_layer):
        raise ModelArgumentError(
            f"{model}: act_layer must be a callable returning an nn.Module, got {act_layer!r}"
        )
    try:
        probe = act_layer()
    except Exception as e:  # any failure means the argument is unusable
        raise ModelArgumentError(f"{model}: act_layer {act_layer!r} cannot be called: {e}") from e
    if not isinstance(probe, nn.Module):
        raise ModelArgumentError(
            f"{model}: act_layer must return an nn.Module, {act_layer!r} returned {type(probe)}"
        )
    # In-place ReLUs save one activation tensor per layer; they are safe in the zoo's blocks
    # because every activation follows a conv/linear/BN whose output nobody else reads.
    if act_layer in (nn.ReLU, nn.ReLU6):
        return partial(act_layer, inplace=True)
    return act_layer
