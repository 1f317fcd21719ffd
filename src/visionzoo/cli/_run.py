"""Helpers shared by the commands that use a trained run."""

from __future__ import annotations

from pathlib import Path

from ..errors import CheckpointError


def checkpoint_path(path: str, *, last: bool = False) -> Path:
    """A checkpoint file, or a run folder's ``checkpoints/best.pt`` (``last.pt`` with ``last``)."""
    p = Path(path)
    if p.is_dir():
        name = "last.pt" if last else "best.pt"
        for candidate in (p / "checkpoints" / name, p / name):
            if candidate.is_file():
                return candidate
        raise CheckpointError(f"{str(p)!r} is a folder without checkpoints/{name}")
    if not p.exists():
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist")
    return p
