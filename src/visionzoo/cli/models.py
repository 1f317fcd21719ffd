"""``visionzoo models``: the registered models, one per line."""

from __future__ import annotations

import argparse
import json

from ..registry import TASKS, get_model_entry, list_models
from ._common import format_table


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "models",
        help="list the available models",
        description="List the registered models with their task, family and paper.",
    )
    parser.add_argument("--task", metavar="TASK", help=f"only this task ({', '.join(TASKS)})")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    entries = [get_model_entry(name) for name in list_models(args.task)]
    if args.json:
        rows = [
            {
                "name": e.name,
                "task": e.task,
                "family": e.family,
                "paper": e.paper,
                "input_size": list(e.input_size),
            }
            for e in entries
        ]
        print(json.dumps(rows, indent=2))
        return 0
    if not entries:
        print(f"no models registered for task {args.task!r} yet")
        return 0
    rows = [[e.name, e.task, e.family, e.paper or "-"] for e in entries]
    print(format_table(["name", "task", "family", "paper"], rows))
    return 0
