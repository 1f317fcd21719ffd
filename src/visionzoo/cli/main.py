"""Entry point of the ``visionzoo`` command.

Each command lives in its own module of this package, exposing ``register(subparsers)`` which
adds its parser and sets ``func`` to a callable taking the parsed arguments and returning an
exit status. User errors (VisionZooError) are printed without a traceback and exit with 2;
``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import VisionZooError

# Command modules, in the order `visionzoo --help` lists them.
COMMANDS = ("train", "eval", "predict", "explain", "models", "summary", "compare", "bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="visionzoo",
        description="Train, evaluate, compare and inspect landmark computer-vision models.",
    )
    parser.add_argument("--version", action="version", version=f"visionzoo {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f".{name}", __package__).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except VisionZooError as e:
        if args.debug:
            raise
        print(f"visionzoo {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"visionzoo {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
