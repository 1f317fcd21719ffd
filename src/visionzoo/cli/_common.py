"""Helpers shared by the model-inspection commands (``models``, ``summary``, ``compare``).

- ``--set key=value`` switches: values are parsed as YAML, so ``true``, ``0.5``, ``[6, 12]``
  and ``null`` become Python values and anything else stays a string.
- ``NAME:key=value,key=value`` model specs, so that one command line can compare variants of
  one model (``resnet50:stride_in_1x1=true``).
- aligned text tables.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml

from ..analysis.profile import format_table
from ..errors import ConfigError

__all__ = [
    "add_input_size",
    "add_set",
    "format_table",
    "format_switches",
    "parse_assignment",
    "parse_model_spec",
    "parse_switches",
]

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# A comma starts a new switch only when ``key=`` follows, so list values keep their commas:
# ``deeplabv3:rates=[6,12,18],image_pooling=false``.
_SWITCH_SPLIT = re.compile(r",(?=\s*[A-Za-z_][A-Za-z0-9_]*\s*=)")


def parse_value(text: str) -> Any:
    """YAML scalar/list parsing; text YAML cannot parse stays a string."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_assignment(item: str) -> tuple[str, Any]:
    """``"key=value"`` -> ``("key", parsed value)``; raises ConfigError naming the item."""
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not _KEY.match(key):
        raise ConfigError(
            f"bad switch {item!r}: expected key=value with a Python identifier as key "
            "(e.g. shortcut=false)"
        )
    return key, parse_value(value.strip())


def parse_switches(items: Iterable[str] | None) -> dict[str, Any]:
    """A list of ``key=value`` strings -> builder keyword arguments (later items win)."""
    return dict(parse_assignment(item) for item in items or ())


def parse_model_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"resnet50:stride_in_1x1=true,shortcut=false"`` -> ``("resnet50", {...})``."""
    name, sep, rest = spec.partition(":")
    name = name.strip()
    if not name:
        raise ConfigError(f"bad model spec {spec!r}: expected NAME or NAME:key=value,...")
    if not sep or not rest.strip():
        return name, {}
    return name, parse_switches(s for s in _SWITCH_SPLIT.split(rest))


def format_switches(switches: Mapping[str, Any]) -> str:
    """``{"shortcut": False}`` -> ``shortcut=false`` (YAML spelling, as typed)."""

    def value(v: Any) -> str:
        return yaml.safe_dump(v, default_flow_style=True, width=10**6).strip().removesuffix("...")

    return ",".join(f"{k}={value(v).strip()}" for k, v in switches.items())


def display_name(name: str, switches: Mapping[str, Any]) -> str:
    return f"{name}:{format_switches(switches)}" if switches else name


def add_input_size(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input-size",
        nargs=3,
        type=int,
        metavar=("C", "H", "W"),
        help="input size (default: the model's own, 3 224 224 for classifiers)",
    )


def add_set(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="switches",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="model switch passed to the builder, value parsed as YAML "
        "(true/false/0.5/[6,12]); repeat for several",
    )


def input_size_arg(value: Sequence[int] | None) -> tuple[int, int, int] | None:
    return None if value is None else (int(value[0]), int(value[1]), int(value[2]))
