"""Per-task behaviour plugged into the one trainer."""

from __future__ import annotations

import importlib

from ..engine.config import RunConfig
from ..errors import ConfigError, did_you_mean
from ..registry import TASKS, get_model_entry
from .base import Task

# task name -> "module:Class"; a task module is imported only when used.
_TASKS: dict[str, str] = {
    "classification": "visionzoo.tasks.classification:ClassificationTask",
    "detection": "visionzoo.tasks.detection:DetectionTask",
    "image-text": "visionzoo.tasks.image_text:ImageTextTask",
    "segmentation": "visionzoo.tasks.segmentation:SegmentationTask",
}


def available_tasks() -> list[str]:
    return sorted(_TASKS)


def task_name_for(cfg: RunConfig) -> str:
    """The task of a run: ``cfg.task`` if set, else the model's registry task."""
    name = cfg.task or get_model_entry(cfg.model.name).task
    if name not in _TASKS:
        hint = did_you_mean(name, TASKS)
        raise ConfigError(
            f"task {name!r} has no trainer yet{hint}; available: {', '.join(available_tasks())}"
        )
    return name


def get_task(cfg: RunConfig) -> Task:
    """Instantiate the Task object for ``cfg``."""
    module_name, cls_name = _TASKS[task_name_for(cfg)].split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(cfg)
