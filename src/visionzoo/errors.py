"""User-facing errors.

Every error a person can cause (a misspelt model name, a bad config key, a corrupt image...)
raises a subclass of :class:`VisionZooError` whose message names the offending file, key or
value and says what would be valid. The CLI prints these messages without a traceback and
exits with status 2.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "VisionZooError",
    "UnknownModelError",
    "ModelArgumentError",
    "OpArgumentError",
    "ConfigError",
    "DataError",
    "CheckpointError",
    "TrainingError",
    "did_you_mean",
]


def did_you_mean(value: str, choices: Iterable[str], n: int = 3) -> str:
    """Return `` (did you mean a, b?)`` for the closest choices, or an empty string."""
    matches = difflib.get_close_matches(value, list(choices), n=n, cutoff=0.6)
    if not matches:
        return ""
    return " (did you mean " + ", ".join(matches) + "?)"


class VisionZooError(Exception):
    """Base class of every error caused by user input."""


class UnknownModelError(VisionZooError, LookupError):
    """A model name that is not in the registry."""

    def __init__(self, name: str, choices: Iterable[str]):
        choices = sorted(choices)
        self.name = name
        self.suggestions = difflib.get_close_matches(name, choices, n=3, cutoff=0.6)
        msg = f"unknown model {name!r}{did_you_mean(name, choices)}"
        if not self.suggestions:
            msg += "; run `visionzoo models` to list the available models"
        super().__init__(msg)


class ModelArgumentError(VisionZooError, ValueError):
    """A model constructor argument that is unknown or out of range."""


class OpArgumentError(VisionZooError, ValueError):
    """A tensor operator (``visionzoo.ops``) called with a wrong shape, dtype or value."""


class ConfigError(VisionZooError, ValueError):
    """An unknown config key, a wrong type or an invalid value."""


class DataError(VisionZooError):
    """Unreadable, corrupt or inconsistent data (names the file)."""


class CheckpointError(VisionZooError):
    """A checkpoint that is missing, truncated or incompatible."""


class TrainingError(VisionZooError):
    """A run that cannot continue (e.g. a NaN loss), named by its step."""
