"""``visionzoo train [MODEL] [key=value ...]``: train on built-in or your own data."""

from __future__ import annotations

import argparse

from ..engine.config import apply_overrides, load_config
from ..engine.recipes import DEFAULT_RECIPE, resolve_recipe
from ..errors import ConfigError

HELP = """\
Train a model. With no arguments, runs the default recipe (a small ResNet on the built-in
`shapes` data, a few minutes on a laptop CPU).

  visionzoo train                                   # default recipe
  visionzoo train resnet18 data=digits trainer.epochs=5
  visionzoo train googlenet data=imagefolder data.root=PATH model.args.aux_logits=true
  visionzoo train --config my_recipe.yaml optim.lr=0.05
  visionzoo train --resume runs/20261127-101500-resnet18-shapes [trainer.epochs=20]

Overrides are dotted keys (values parsed as YAML); `data=NAME` is short for data.name=NAME and
`model.args.SWITCH=VALUE` passes a switch to the model builder. Unknown keys are errors that
list the valid ones.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "items", nargs="*", metavar="[MODEL] key=value", help="model name and config overrides"
    )
    p.add_argument(
        "--config", "-c", default=None, help=f"recipe name or YAML path (default: {DEFAULT_RECIPE})"
    )
    p.add_argument(
        "--resume",
        default=None,
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR (or a checkpoint)",
    )
    p.set_defaults(func=run)


def split_items(items: list[str]) -> tuple[str | None, list[str]]:
    """The optional leading model name and the key=value overrides."""
    model, overrides = None, []
    for i, item in enumerate(items):
        if "=" in item:
            overrides.append(item)
        elif i == 0:
            model = item
        else:
            raise ConfigError(
                f"argument {item!r} is not of the form key=value (only the first argument may be a model name)"
            )
    return model, overrides


def _override_value(overrides: list[str], *keys: str) -> str | None:
    value = None
    for item in overrides:
        key, _, v = item.partition("=")
        if key.strip() in keys:
            value = v.strip()
    return value


def pick_recipe(model: str, model_task: str, overrides: list[str]) -> str:
    """The shipped recipe for ``visionzoo train MODEL ...`` without ``--config``:

    1. ``<model>_<data>`` (e.g. ``unet_shapes``), a setting tuned for that model and data;
    2. ``<task>`` for tasks other than classification (``segmentation``, ``detection``...):
       the task's defaults (image size, batch, optimiser, schedule) on the built-in data;
    3. ``default``.

    ``data``/``data.name`` and ``task`` are read from the overrides (the data defaults to
    ``shapes``, the task to the model's registry task)."""
    from ..engine.recipes import list_recipes

    data = _override_value(overrides, "data", "data.name") or "shapes"
    task = _override_value(overrides, "task") or model_task
    shipped = set(list_recipes())
    for name in (f"{model}_{data}", task if task != "classification" else None):
        if name and name in shipped:
            return name
    return DEFAULT_RECIPE


def run(args: argparse.Namespace) -> int:
    from ..engine.distributed import teardown
    from ..engine.trainer import Interrupted, Trainer
    from ..registry import get_model_entry

    model, overrides = split_items(args.items)
    if args.resume:
        if model is not None or args.config:
            raise ConfigError(
                "--resume continues a run as configured; give only key=value overrides with it"
            )
        trainer = Trainer(resume=args.resume, overrides=overrides)
    else:
        recipe = args.config
        if model is not None:
            entry = get_model_entry(model)  # fail fast, with did-you-mean, before building data
            if recipe is None:
                recipe = pick_recipe(model, entry.task, overrides)
                print(f"recipe: {recipe}")
        cfg = load_config(resolve_recipe(recipe or DEFAULT_RECIPE))
        if model is not None and cfg.model.name != model:
            cfg.model.name = model
            # The recipe's switches belong to its model, not to the one asked for.
            cfg.model.args = {}
        cfg = apply_overrides(cfg, overrides)
        trainer = Trainer(cfg)
    if trainer.is_main:
        print(f"run folder: {trainer.run_dir}")
    try:
        metrics = trainer.fit()
    except Interrupted as e:
        print(f"visionzoo train: {e}")
        return 130
    finally:
        teardown(trainer.dist)
    if trainer.is_main:
        shown = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        print(f"done: {shown}")
        print(f"best checkpoint: {trainer.run_dir / 'checkpoints' / 'best.pt'}")
    return 0
