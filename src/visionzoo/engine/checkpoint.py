"""Checkpoints: atomic writes, safe loads, RNG state, and rebuilding a model from a file.

A checkpoint is a dict of tensors and plain Python values only, so that it loads with
``torch.load(weights_only=True)`` (no code runs when a file is opened). Written by the trainer:

- ``format`` = ``"visionzoo-checkpoint"``, ``version`` = 1 (added by :func:`make_state`)
- ``config``: ``config_to_dict(RunConfig)``; ``model_kwargs``: builder arguments the data
  decided (e.g. ``{"num_classes": 6}``), passed to ``create_model`` besides
  ``config["model"]["args"]``
- ``model``: the model's state dict; ``ema`` (optional): the EMA weights, either
  ``ModelEma.state_dict()`` (``{"module": state dict, "updates": n, ...}``) or a plain state dict
- ``class_names`` (optional), and whatever else the trainer resumes from (optimizer,
  scheduler, scaler, ``rng_state()``, step, metrics).

Writes are atomic: the file is written under a temporary name in the same directory,
flushed and fsynced, renamed over the target with ``os.replace`` (atomic on POSIX and
Windows), and the directory is fsynced so the rename itself survives a power cut. A crash at
any point leaves the old file or the new one, never a truncated one.
"""

from __future__ import annotations

import os
import pickle
import random
import secrets
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError, VisionZooError
from ..registry import create_model

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "make_state",
    "save_checkpoint",
    "load_checkpoint",
    "rng_state",
    "set_rng_state",
    "load_model",
]

CHECKPOINT_FORMAT = "visionzoo-checkpoint"
CHECKPOINT_VERSION = 1

# Leaf values torch's weights_only unpickler accepts (exact types: subclasses such as an
# IntEnum or a NamedTuple pickle by class reference and would be refused when loading).
_SCALARS = (str, int, float, bool, type(None), bytes, torch.Size, torch.device, torch.dtype)
_TENSORS = (torch.Tensor, nn.Parameter)


def make_state(**parts: Any) -> dict[str, Any]:
    """A checkpoint dict: ``format`` and ``version`` followed by ``parts``."""
    for reserved in ("format", "version"):
        if reserved in parts:
            raise TypeError(f"make_state: {reserved!r} is set by make_state itself")
    return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **parts}


def _plain(value: Any, where: str) -> Any:
    """``value`` with numpy arrays/scalars converted; TypeError on anything not loadable."""
    tp = type(value)
    if tp in _TENSORS:
        return value
    if tp in _SCALARS:
        return value
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise TypeError(f"checkpoint value at {where} is a numpy object array")
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, np.generic):
        return value.item()  # np.float64 etc. pickle via numpy, which weights_only refuses
    if tp in (dict, OrderedDict):
        out = tp()
        for k, v in value.items():
            key = _plain(k, f"{where}[{k!r}] (key)")
            out[key] = _plain(v, f"{where}[{k!r}]")
        metadata = getattr(value, "_metadata", None)
        if metadata is not None:
            # Module.state_dict() keeps per-module versions here; load_state_dict reads them.
            out._metadata = _plain(metadata, f"{where}._metadata")
        return out
    if tp in (list, tuple):
        return tp(_plain(v, f"{where}[{i}]") for i, v in enumerate(value))
    raise TypeError(
        f"checkpoint value at {where} has type {tp.__module__}.{tp.__qualname__}; a checkpoint "
        "may hold only tensors, dict, list, tuple, str, int, float, bool and None "
        "(so that torch.load(weights_only=True) can read it)"
    )


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Atomically write ``state`` to ``path`` (parent directories are created).

    ``state`` may hold only tensors and plain Python values (numpy arrays become tensors,
    numpy scalars Python numbers); anything else raises TypeError naming its key path.
    """
    if not isinstance(state, dict):
        raise TypeError(f"save_checkpoint: state must be a dict, got {type(state).__name__}")
    state = _plain(state, "state")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # os.open with 0o666 lets the umask decide the mode, as for any file the user writes.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Persist a rename on POSIX; Windows cannot open directories, and there it is skipped."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _first_sentence(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    head, sep, _ = line.partition(". ")
    return head + "." if sep else line


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a visionzoo checkpoint with ``torch.load(weights_only=True)``.

    A missing, truncated or corrupt file, one holding arbitrary Python objects, or a file
    that is not a visionzoo checkpoint raises CheckpointError naming the path and the reason.
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist")
    if not p.is_file():
        raise CheckpointError(f"checkpoint {str(p)!r} is not a file")
    try:
        state = torch.load(p, map_location=map_location, weights_only=True)
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        zipfile.BadZipFile,
        ValueError,
        OSError,
        KeyError,
        IndexError,
    ) as e:
        # Truncated zips raise RuntimeError("PytorchStreamReader failed ..."), empty or cut
        # files EOFError, garbage UnpicklingError("invalid load key") or ValueError.
        text = str(e).strip()
        if "Weights only load failed" in text:
            # Keep the unpickler's own line, not torch's generic advice around it.
            text = next((ln for ln in text.splitlines() if "WeightsUnpickler" in ln), text)
            if "GLOBAL" in text:
                # An intact file that pickles arbitrary objects: refuse rather than run code.
                raise CheckpointError(
                    f"checkpoint {str(p)!r} holds Python objects other than tensors and plain "
                    f"values, so it cannot be loaded safely (weights_only=True): "
                    f"{_first_sentence(text)}"
                ) from None
        reason = f"{type(e).__name__}: {_first_sentence(text)}" if text else type(e).__name__
        if isinstance(e, PermissionError):
            raise CheckpointError(f"checkpoint {str(p)!r} cannot be read ({reason})") from None
        raise CheckpointError(f"checkpoint {str(p)!r} is truncated or corrupt ({reason})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{str(p)!r} is not a visionzoo checkpoint (no format={CHECKPOINT_FORMAT!r} entry; "
            "checkpoints are written by `visionzoo train`)"
        )
    version = state.get("version")
    if type(version) is not int:
        raise CheckpointError(
            f"{str(p)!r} is not a visionzoo checkpoint (its 'version' is {version!r}, not an int)"
        )
    if version > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint {str(p)!r} has format version {version}, newer than this visionzoo "
            f"reads ({CHECKPOINT_VERSION}); upgrade visionzoo"
        )
    return state


# ---------------------------------------------------------------------------------------------
# Random number generators


def rng_state() -> dict[str, Any]:
    """The states of Python's ``random``, numpy's global RNG, torch CPU and (if available) CUDA.

    Plain values and tensors only, so it can go into a checkpoint.
    """
    version, internal, gauss_next = random.getstate()
    name, key, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        # random.getstate(): (version, tuple of 625 ints, gauss_next) - all plain values.
        "python": {"version": version, "state": tuple(internal), "gauss_next": gauss_next},
        "numpy": {
            "bit_generator": str(name),
            # uint32 words held as int64 so any torch version reads them back exactly.
            "key": torch.from_numpy(key.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured.

    CUDA states are restored for the devices present (a run resumed on fewer GPUs restores
    the first ones); a state without ``cuda`` leaves the CUDA generators alone.
    """
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(x) for x in py["state"]), py["gauss_next"]))
    npst = state["numpy"]
    key = torch.as_tensor(npst["key"]).numpy().astype(np.uint32)
    np.random.set_state(
        (
            npst["bit_generator"],
            key,
            int(npst["pos"]),
            int(npst["has_gauss"]),
            float(npst["cached_gaussian"]),
        )
    )
    torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8).cpu())
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        for i, s in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(torch.as_tensor(s, dtype=torch.uint8).cpu(), i)


# ---------------------------------------------------------------------------------------------
# Rebuilding a model


def _strip_wrapper_prefix(sd: dict[str, Any]) -> dict[str, Any]:
    """Drop a DDP ``module.`` / torch.compile ``_orig_mod.`` prefix shared by every key."""
    for prefix in ("module.", "_orig_mod."):
        while sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


def load_model(path: str | Path, map_location: Any = "cpu", ema: bool | None = None) -> nn.Module:
    """Rebuild the model saved in a training checkpoint, from the checkpoint alone.

    The model is built with ``create_model(config["model"]["name"], **config["model"]["args"],
    **model_kwargs)``, its weights loaded strictly, and returned in eval mode. ``ema=None``
    (default) loads the EMA weights when the checkpoint has them - with EMA enabled those are
    the weights the trainer evaluated, so they are what picked ``best.pt`` - else the raw
    weights; ``ema=True`` requires EMA weights, ``ema=False`` loads the raw ones.
    When ``map_location`` is a device (string or torch.device) the model is moved there.

    Attached attributes: ``class_names`` (list of str, or None when the checkpoint has none),
    ``visionzoo_task_state`` (what the task saved beside the weights, e.g. a tokenizer, or None),
    ``visionzoo_config`` (the run's config dict) and ``visionzoo_weights`` (``"ema"`` or
    ``"model"``: which weights were loaded).
    """
    state = load_checkpoint(path, map_location=map_location)
    where = str(Path(path))
    cfg = state.get("config")
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
        raise CheckpointError(
            f"checkpoint {where!r} has no model config (it was not written by `visionzoo train`)"
        )
    name = cfg["model"].get("name")
    args = dict(cfg["model"].get("args") or {})
    args.update(state.get("model_kwargs") or {})

    if ema is None:
        ema = state.get("ema") is not None
    if ema:
        weights = state.get("ema")
        if weights is None:
            raise CheckpointError(
                f"checkpoint {where!r} has no EMA weights (the run had trainer.ema_decay unset); "
                "load it with ema=False"
            )
        if isinstance(weights, dict) and isinstance(weights.get("module"), dict):
            weights = weights["module"]  # ModelEma.state_dict() layout
    else:
        weights = state.get("model")
    if not isinstance(weights, dict):
        raise CheckpointError(f"checkpoint {where!r} has no model weights")

    try:
        model = create_model(name, **args)
    except VisionZooError as e:
        raise CheckpointError(
            f"checkpoint {where!r}: cannot rebuild model {name!r} from its config: {e}"
        ) from None
    try:
        model.load_state_dict(_strip_wrapper_prefix(weights), strict=True)
    except RuntimeError as e:
        raise CheckpointError(
            f"checkpoint {where!r}: its weights do not match model {name!r} built from its "
            f"config: {e}"
        ) from None
    if isinstance(map_location, (str, torch.device)):
        model.to(map_location)
    model.eval()
    names = state.get("class_names")
    model.class_names = [str(c) for c in names] if names is not None else None
    model.visionzoo_config = cfg
    model.visionzoo_weights = "ema" if ema else "model"
    model.visionzoo_task_state = state.get("task_state")
    return model
