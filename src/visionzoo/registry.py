"""Model registry: paper name -> builder.

Builders register themselves with :func:`register_model` when their family module is
imported; :func:`create_model` and :func:`list_models` import every family first, so the
registry is complete whichever entry point is used. Duplicate names are rejected.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from .errors import ModelArgumentError, UnknownModelError, VisionZooError, did_you_mean

__all__ = [
    "TASKS",
    "ModelEntry",
    "register_model",
    "create_model",
    "list_models",
    "get_model_entry",
]

TASKS = ("classification", "segmentation", "detection", "image-text")


@dataclass(frozen=True)
class ModelEntry:
    """What the registry knows about one model name."""

    name: str
    builder: Callable[..., nn.Module]
    task: str
    family: str
    # Default input size (C, H, W) used by the profiler and the CLI when none is given.
    input_size: tuple[int, int, int] = (3, 224, 224)
    paper: str = ""
    # The class the builder forwards ``**kwargs`` to; its __init__ lists the valid switches.
    model_class: type[nn.Module] | None = None

    def arguments(self) -> list[str]:
        """Sorted keyword arguments the builder accepts (its own and its model class's)."""
        params = inspect.signature(self.builder).parameters
        names = {n for n, p in params.items() if p.kind is not p.VAR_KEYWORD}
        if self.model_class is not None and any(p.kind is p.VAR_KEYWORD for p in params.values()):
            init = inspect.signature(self.model_class.__init__).parameters
            kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
            names |= {n for n, p in init.items() if n != "self" and p.kind in kinds}
        return sorted(names)


_REGISTRY: dict[str, ModelEntry] = {}
_loaded = False


def register_model(
    name: str | None = None,
    *,
    task: str,
    family: str,
    input_size: tuple[int, int, int] = (3, 224, 224),
    paper: str = "",
    model_class: type[nn.Module] | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a builder under ``name`` (default: the function's name)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or fn.__name__
        if key in _REGISTRY:
            raise ValueError(f"model {key!r} is registered twice")
        _REGISTRY[key] = ModelEntry(key, fn, task, family, tuple(input_size), paper, model_class)
        return fn

    return deco


def _ensure_loaded() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        from . import models  # noqa: F401  (imports every family, which registers them)


def get_model_entry(name: str) -> ModelEntry:
    """Return the registry entry of ``name``; unknown names raise UnknownModelError."""
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(name, _REGISTRY) from None


def list_models(task: str | None = None) -> list[str]:
    """Sorted model names, optionally only those of one task."""
    _ensure_loaded()
    if task is not None and task not in TASKS:
        raise VisionZooError(
            f"unknown task {task!r}{did_you_mean(task, TASKS)}; valid: {', '.join(TASKS)}"
        )
    return sorted(n for n, e in _REGISTRY.items() if task is None or e.task == task)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build model ``name`` with keyword arguments (the paper's switches).

    Raises UnknownModelError for unknown names and ModelArgumentError for arguments the
    builder does not accept or values it rejects.
    """
    entry = get_model_entry(name)
    try:
        inspect.signature(entry.builder).bind(**kwargs)
        model = entry.builder(**kwargs)
    except TypeError as e:
        # Builders forward **kwargs to the model class; an unknown key surfaces here too.
        if "argument" not in str(e):
            raise
        valid = ", ".join(entry.arguments()) or "none"
        raise ModelArgumentError(f"{name}: {e}; valid arguments: {valid}") from None
    return model
