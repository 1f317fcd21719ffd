"""Named YAML recipes shipped inside the package (``visionzoo/configs/*.yaml``)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..errors import ConfigError, did_you_mean

DEFAULT_RECIPE = "default"


def _recipe_dir() -> Path:
    return Path(str(resources.files("visionzoo") / "configs"))


def list_recipes() -> list[str]:
    return sorted(p.stem for p in _recipe_dir().glob("*.yaml"))


def resolve_recipe(name_or_path: str) -> Path:
    """A path to an existing YAML file, or the name of a shipped recipe."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        return p
    candidate = _recipe_dir() / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    names = list_recipes()
    raise ConfigError(
        f"unknown recipe {name_or_path!r}{did_you_mean(name_or_path, names)}; "
        f"shipped recipes: {', '.join(names)} (or give a path to a .yaml file)"
    )
