"""visionzoo: landmark computer-vision models, faithful to their papers, every idea a switch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import errors
from .registry import create_model, get_model_entry, list_models

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "create_model",
    "errors",
    "get_model_entry",
    "list_models",
    "load",
    "profile",
]

if TYPE_CHECKING:
    from .analysis.profile import Profile


def profile(model: Any, input_size: tuple[int, ...] | None = None, **kwargs: Any) -> Profile:
    """Count parameters, MACs and FLOPs (= 2 x MACs) of ``model`` on one input of ``input_size``.

    ``model`` is a module or a registered name; ``input_size`` None means the registry entry's
    default for a name, 3x224x224 for a module. See :func:`visionzoo.analysis.profile.profile`.
    """
    from .analysis.profile import profile as _profile

    return _profile(model, input_size, **kwargs)


def load(path: str, map_location: str = "cpu", **kwargs: Any) -> Any:
    """Rebuild the model stored in a checkpoint written by ``visionzoo train``."""
    from .engine.checkpoint import load_model

    return load_model(path, map_location=map_location, **kwargs)
