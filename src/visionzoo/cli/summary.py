"""``visionzoo summary NAME``: parameters, MACs, FLOPs, shapes and per-stage rows of a model."""

from __future__ import annotations

import argparse
import dataclasses
import json

from ..analysis.profile import profile
from ._common import add_input_size, add_set, display_name, input_size_arg, parse_switches


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "summary",
        help="parameters, MACs, FLOPs and output shapes of a model",
        description=(
            "Build a model with the given switches and print its parameters, MACs and FLOPs "
            "(FLOPs = 2 x MACs, convolutions, linear layers and attention products), output "
            "shape and stride, and one row per top-level stage. Counting runs on shape-only "
            "'meta' tensors, so large models at 224x224 take a moment."
        ),
        epilog="example: visionzoo summary resnet50 --set stride_in_1x1=true",
    )
    parser.add_argument("name", metavar="NAME", help="registered model name (visionzoo models)")
    add_input_size(parser)
    add_set(parser)
    parser.add_argument("--batch-size", type=int, default=1, help="N of the input (default 1)")
    parser.add_argument("--json", action="store_true", help="print the profile as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    switches = parse_switches(args.switches)
    result = profile(
        args.name,
        input_size_arg(args.input_size),
        batch_size=args.batch_size,
        model_kwargs=switches,
    )
    result = dataclasses.replace(result, name=display_name(args.name, switches))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result.table())
    return 0
