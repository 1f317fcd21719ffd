"""CPU inference speed of visionzoo's classification CNNs against torchvision's.

For each family, torchvision's model is built with random weights, ours receives the same
weights through ``visionzoo.interop.torchvision.from_torchvision``, and both run the same input
in eval mode under ``torch.no_grad()``. Runs are interleaved (warm-up, then ours/theirs
alternately, the order flipping each round) so that a machine whose load drifts slows both
sides alike. The table reports the median time of each side and the median of the per-round
ratios ours/torchvision; the goal is a ratio <= 1.05. ``max|diff|`` confirms the two models
compute the same function.

    python benchmarks/bench_classification_cpu.py            # batch 8 at 224x224
    python benchmarks/bench_classification_cpu.py --quick    # batch 2 at 112x112, a smoke run
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torchvision
from torch import Tensor, nn

from visionzoo.interop.torchvision import from_torchvision

GOAL = 1.05

# torchvision builders, with the arguments that make a random-weight model without extras.
REFERENCES: dict[str, Callable[[], nn.Module]] = {
    "alexnet": lambda: torchvision.models.alexnet(weights=None),
    "vgg11": lambda: torchvision.models.vgg11(weights=None),
    "googlenet": lambda: torchvision.models.googlenet(
        weights=None, aux_logits=False, init_weights=True
    ),
    "resnet18": lambda: torchvision.models.resnet18(weights=None),
    "resnet50": lambda: torchvision.models.resnet50(weights=None),
    "mobilenet_v2": lambda: torchvision.models.mobilenet_v2(weights=None),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=8, help="batch size (default 8)")
    p.add_argument("--size", type=int, default=224, help="input height and width (default 224)")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds per model (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs of each side (default 1)")
    p.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: unchanged)"
    )
    p.add_argument(
        "--models",
        nargs="+",
        default=list(REFERENCES),
        choices=list(REFERENCES),
        metavar="NAME",
        help=f"subset of {', '.join(REFERENCES)}",
    )
    p.add_argument("--quick", action="store_true", help="batch 2, size 112, 3 rounds")
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.size, args.repeats = 2, 112, 3
    for name in ("batch", "size", "repeats"):
        if getattr(args, name) <= 0:
            p.error(f"--{name} must be positive")
    return args


def _time(model: nn.Module, x: Tensor) -> float:
    start = time.perf_counter()
    model(x)
    return time.perf_counter() - start


def bench(name: str, x: Tensor, repeats: int, warmup: int) -> dict[str, float]:
    torch.manual_seed(0)
    theirs = REFERENCES[name]().eval()
    ours = from_torchvision(name, theirs).eval()
    with torch.no_grad():
        diff = (ours(x) - theirs(x)).abs().max().item()  # doubles as the first warm-up
        for _ in range(warmup - 1):
            ours(x)
            theirs(x)
        t_ours, t_theirs = [], []
        for r in range(repeats):
            # Flip the order every round: whichever runs second may find warmer caches.
            if r % 2 == 0:
                t_ours.append(_time(ours, x))
                t_theirs.append(_time(theirs, x))
            else:
                t_theirs.append(_time(theirs, x))
                t_ours.append(_time(ours, x))
    return {
        "ours_ms": 1e3 * statistics.median(t_ours),
        "theirs_ms": 1e3 * statistics.median(t_theirs),
        "ratio": statistics.median(a / b for a, b in zip(t_ours, t_theirs, strict=True)),
        "max_diff": diff,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    print(
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}; "
        f"input {args.batch}x3x{args.size}x{args.size}, {args.warmup} warm-up + "
        f"{args.repeats} interleaved rounds, medians"
    )
    header = f"{'model':<14}{'ours ms':>10}{'torchvision ms':>16}{'ratio':>8}{'max|diff|':>11}"
    print(header)
    print("-" * len(header))
    worst = 0.0
    for name in args.models:
        r = bench(name, x, args.repeats, args.warmup)
        flag = "" if r["ratio"] <= GOAL else "  > goal"
        worst = max(worst, r["ratio"])
        print(
            f"{name:<14}{r['ours_ms']:>10.1f}{r['theirs_ms']:>16.1f}{r['ratio']:>8.3f}"
            f"{r['max_diff']:>11.1e}{flag}",
            flush=True,
        )
    print(f"goal: ratio ours/torchvision <= {GOAL}; worst {worst:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
