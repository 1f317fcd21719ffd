"""``visionzoo compare NAME NAME ...``: one row of parameters, MACs and FLOPs per model."""

from __future__ import annotations

import argparse
import json

from ..analysis.profile import format_shape, format_stride, profile
from ._common import (
    add_input_size,
    add_set,
    display_name,
    format_switches,
    format_table,
    input_size_arg,
    parse_model_spec,
    parse_switches,
)

_EPILOG = """\
model specs:
  NAME                       a registered model (visionzoo models)
  NAME:KEY=VALUE,KEY=VALUE   the same model with switches; values are YAML
                             (true/false/0.5/[6,12,18]). Inline switches override --set,
                             which applies to every model.

examples:
  visionzoo compare resnet18 resnet34 resnet50
  visionzoo compare resnet50 resnet50:stride_in_1x1=true resnet50:shortcut=false
  visionzoo compare mobilenet_v2 mobilenet_v2:width_mult=0.5 --input-size 3 160 160
"""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "compare",
        help="compare parameters and MACs of several models or variants",
        description="Profile several models (or variants of one) and print one row per model.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "specs", nargs="+", metavar="NAME[:KEY=VALUE,...]", help="models to compare"
    )
    add_input_size(parser)
    add_set(parser)
    parser.add_argument("--batch-size", type=int, default=1, help="N of the input (default 1)")
    parser.add_argument("--json", action="store_true", help="print a JSON list of profiles")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    common = parse_switches(args.switches)
    # Parse every spec first so that a typo fails before any model is built.
    parsed = [parse_model_spec(spec) for spec in args.specs]
    results = []
    for name, inline in parsed:
        switches = {**common, **inline}
        result = profile(
            name,
            input_size_arg(args.input_size),
            batch_size=args.batch_size,
            model_kwargs=switches,
        )
        results.append((display_name(name, inline), switches, result))

    if args.json:
        out = [{**r.to_dict(), "name": label, "switches": sw} for label, sw, r in results]
        print(json.dumps(out, indent=2))
        return 0
    rows = [
        [
            label,
            f"{r.params:,}",
            f"{r.params / 1e6:.2f}",
            f"{r.gmacs:.3f}",
            f"{r.gflops:.3f}",
            "x".join(map(str, r.input_size)),
            format_stride(r.output_stride),
            format_shape(r.output_shape),
        ]
        for label, _, r in results
    ]
    headers = ["model", "params", "M params", "GMACs", "GFLOPs", "input", "stride", "output"]
    print(format_table(headers, rows, align="lrrrrlrl"))
    if common:
        print(f"\nswitches for every model (--set): {format_switches(common)}")
    return 0
