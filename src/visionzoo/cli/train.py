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
        cfg = load_config(resolve_recipe(args.config or DEFAULT_RECIPE))
        if model is not None:
            get_model_entry(model)  # fail fast, with did-you-mean, before building data
            cfg.model.name = model
            if args.config is None:
                # The default recipe's switches belong to its model, not to the one asked for.
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
