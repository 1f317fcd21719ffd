"""Typed run configuration.

A run is a :class:`RunConfig` of dataclasses. It comes from a YAML recipe (``configs/*.yaml``)
and dotted ``key=value`` overrides (``optim.lr=0.05 data.batch_size=64``); a section given a
bare value sets its ``name`` (``data=digits`` is ``data.name=digits``, ``model=vgg11`` is
``model.name=vgg11``). ``model.args.<switch>=value`` passes a switch to the model builder.
Unknown keys and values of the wrong type raise ConfigError naming the key and the valid ones.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError, did_you_mean

__all__ = [
    "ModelConfig",
    "DataConfig",
    "OptimConfig",
    "SchedConfig",
    "LossConfig",
    "DistillConfig",
    "TrainerConfig",
    "RunConfig",
    "load_config",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "save_config",
]


@dataclass
class ModelConfig:
    name: str = "resnet18"
    # Switches passed to the builder, e.g. {"shortcut": False, "width_mult": 0.5}.
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    # shapes | digits | imagefolder | cifar10 | cifar100 | mnist | fashionmnist
    name: str = "shapes"
    root: str | None = None
    image_size: int = 64
    batch_size: int = 64
    eval_batch_size: int | None = None
    num_workers: int = 0
    # Built-in generators: samples per split and the seed that fixes them.
    train_size: int = 2000
    val_size: int = 500
    seed: int = 0
    # shapes: how many shape classes to use (first k of the generator's list); None = all.
    num_classes: int | None = None
    download: bool = False
    skip_bad: bool = False
    # detection: boxes of zero/negative size, outside the image or with labels out of range
    bad_boxes: str = "drop"  # drop (and count) | raise
    # image-text: a tokenizer file (saved by a run, or CLIP's bpe_simple_vocab_16e6.txt.gz);
    # None trains one of vocab_size entries on the training captions. context_length: tokens
    # per caption (start and end included).
    tokenizer: str | None = None
    vocab_size: int = 1000
    context_length: int = 32
    # image-text on shapes: probability that a training caption is its subject alone (the
    # largest shape, "a large red circle") instead of the whole caption
    subject_captions: float = 0.0
    # image-text on shapes: training images flipped with their captions' relation words
    # rewritten to match: none | h (left/right) | hv (and up/down) | d4 (and transposed: the 8
    # symmetries of the square)
    caption_flips: str = "none"
    # Train-time augmentation: none | light (crop + flip) | trivialaugment | randaugment
    augment: str = "light"
    hflip: bool = True
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | adamw
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    # No weight decay on biases and normalisation parameters.
    no_decay_norm_bias: bool = True


@dataclass
class SchedConfig:
    name: str = "cosine"  # constant | step | multistep | cosine | poly
    warmup_epochs: float = 0.0
    warmup_start_factor: float = 0.1
    step_size: float = 30.0  # epochs (step)
    milestones: list[float] = field(default_factory=lambda: [30.0, 60.0, 90.0])  # epochs
    gamma: float = 0.1
    power: float = 0.9  # poly
    min_lr: float = 0.0  # cosine floor


@dataclass
class LossConfig:
    label_smoothing: float = 0.0
    # Weight of each auxiliary head's loss (GoogLeNet's two side classifiers: 0.3 in the paper).
    aux_weight: float = 0.3
    # Segmentation: loss = ce_weight * CE + dice_weight * soft Dice (per head); pixels equal to
    # ignore_index (255, VOC's object boundaries) count in neither the loss nor the metrics.
    ce_weight: float = 1.0
    dice_weight: float = 0.0
    ignore_index: int = 255
    # Image-text (CLIP): hard negative captions per caption, each the caption with one of the
    # data's class names swapped for another (NegCLIP); 0 = the paper's loss.
    text_negatives: int = 0
    # ... which class name a negative swaps: any (at random) | first (the caption's subject)
    negatives_swap: str = "any"
    # ... plus one more per caption: none | classes (its first two different class names
    # exchanged) | phrases (shapes: their colours too, so the other shape becomes the subject)
    exchange_negatives: str = "none"


@dataclass
class DistillConfig:
    """Knowledge distillation from a trained teacher (DeiT, arXiv:2012.12877 §5).

    ``teacher``: a checkpoint written by ``visionzoo train`` or its run folder (``best.pt``,
    else ``last.pt``); nothing is downloaded, so a bare model name is refused.
    ``type``: none | soft (KL at temperature ``tau``, times tau^2) | hard (CE with the teacher's
    argmax). ``alpha``: the distillation term's weight; the label term gets ``1 - alpha``.
    Checked, and used, by the classification task (tasks/classification.py).
    """

    teacher: str | None = None
    type: str = "none"
    alpha: float = 0.5
    tau: float = 1.0


@dataclass
class TrainerConfig:
    epochs: int = 10
    max_steps: int | None = None  # stop after this many optimiser steps (tests, smoke runs)
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    amp: str = "none"  # none | bf16 | fp16
    channels_last: bool = False
    compile: bool = False
    accum_steps: int = 1
    clip_grad_norm: float | None = None
    ema_decay: float | None = None
    seed: int = 0
    deterministic: bool = False
    log_every: int = 10
    eval_every: int = 1  # epochs
    save_every_steps: int | None = None  # also write last.pt every N steps (crash safety)
    output_dir: str = "runs"
    run_name: str | None = None
    progress: bool = True
    tensorboard: bool = True
    plots: bool = True
    threads: int | None = None  # torch.set_num_threads on CPU


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    # Task override; None = the model's registry task.
    task: str | None = None


# ---------------------------------------------------------------------------------------------
# Conversion helpers


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against annotation ``tp`` (ints are accepted for floats)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # YAML 1.1 reads "3e-4" (no dot) as a string; accept what float() accepts.
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


def _unknown_key(key: str, valid: list[str]) -> ConfigError:
    leaf = key.rsplit(".", 1)[-1]
    return ConfigError(
        f"unknown config key {key!r}{did_you_mean(leaf, valid)}; valid keys here: {', '.join(valid)}"
    )


def _fill(obj: Any, data: dict[str, Any], prefix: str) -> None:
    hints = _hints(type(obj))
    valid = [f.name for f in dataclasses.fields(obj)]
    for k, v in data.items():
        key = f"{prefix}{k}"
        if k not in hints:
            raise _unknown_key(key, valid)
        current = getattr(obj, k)
        if dataclasses.is_dataclass(current):
            if isinstance(v, dict):
                _fill(current, v, f"{key}.")
            elif "name" in {f.name for f in dataclasses.fields(current)}:
                current.name = _coerce(v, str, f"{key}.name")
            else:
                raise ConfigError(f"{key}: expected a mapping, got {v!r}")
        else:
            setattr(obj, k, _coerce(v, hints[k], key))


def config_from_dict(data: dict[str, Any] | None) -> RunConfig:
    """Build a RunConfig from nested plain data (defaults fill what is missing)."""
    cfg = RunConfig()
    if data:
        if not isinstance(data, dict):
            raise ConfigError(f"a config must be a mapping, got {type(data).__name__}")
        _fill(cfg, data, "")
    return cfg


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    """Plain nested data (YAML- and checkpoint-safe)."""
    return dataclasses.asdict(cfg)


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        return text


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """Apply ``key=value`` strings; values are parsed as YAML (``true``, ``0.1``, ``[1, 2]``)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(
                f"override {item!r} is not of the form key=value (e.g. optim.lr=0.05)"
            )
        key, text = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        value = _parse_value(text)
        nested: dict[str, Any] = value
        parts = key.split(".")
        # model.args.<switch> is free-form: everything after "args" is one switch name.
        if len(parts) > 3 and parts[:2] == ["model", "args"]:
            parts = parts[:2] + [".".join(parts[2:])]
        for part in reversed(parts):
            nested = {part: nested}
        if parts[:2] == ["model", "args"] and len(parts) == 3:
            cfg.model.args[parts[2]] = value
            continue
        _fill(cfg, nested, "")
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Load a YAML recipe (or the defaults when ``path`` is None) and apply overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {str(p)!r} is not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {str(p)!r} must hold a mapping at the top level")
    try:
        cfg = config_from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return apply_overrides(cfg, list(overrides or []))


def save_config(cfg: RunConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
