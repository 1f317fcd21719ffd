"""CPU training-step speed of visionzoo's DeepLab v3 against torchvision's.

torchvision's ``deeplabv3_resnet50`` (or ``_resnet101``) is built with random weights, ours
receives the same weights through ``visionzoo.interop.torchvision.from_torchvision``, and both
run forward + backward (cross-entropy with ignore 255 on random masks) on the same batch in
training mode. Runs are interleaved (warm-up, then ours/theirs alternately, the order flipping
each round) so that load drift hits both sides alike. It prints the median time of each side,
the median of the per-round ratios ours/torchvision (goal: <= 1.05) and the largest difference
of the two models' eval outputs (they compute the same function).

    python benchmarks/bench_segmentation.py                       # batch 2 at 256x256, 5 rounds
    python benchmarks/bench_segmentation.py --threads 1 --repeats 9
    python benchmarks/bench_segmentation.py --model deeplabv3_resnet101 --aux
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from visionzoo.interop.torchvision import from_torchvision

GOAL = 1.05
MODELS = ("deeplabv3_resnet50", "deeplabv3_resnet101")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=MODELS[0], choices=MODELS)
    p.add_argument("--batch", type=int, default=2, help="batch size (default 2; BN needs >= 2)")
    p.add_argument("--size", type=int, default=256, help="input height and width (default 256)")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps of each side (default 1)")
    p.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: unchanged)"
    )
    p.add_argument("--aux", action="store_true", help="with the auxiliary FCN head (aux_loss)")
    p.add_argument("--classes", type=int, default=21, help="number of classes (default 21)")
    args = p.parse_args(argv)
    for name in ("batch", "size", "repeats", "classes"):
        if getattr(args, name) <= 0:
            p.error(f"--{name} must be positive")
    if args.batch < 2:
        p.error("--batch must be >= 2: training-mode BN of the image-pooling branch needs it")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    return args


def _main_logits(out: Tensor | tuple | dict) -> tuple[Tensor, Tensor | None]:
    """(main, aux) logits of either model's training output."""
    if isinstance(out, dict):  # torchvision
        return out["out"], out.get("aux")
    if isinstance(out, tuple):  # ours with aux_loss: AuxOutput(logits, (aux,))
        return out[0], out[1][0]
    return out, None


def _step(model: nn.Module, x: Tensor, y: Tensor) -> float:
    start = time.perf_counter()
    main, aux = _main_logits(model(x))
    loss = F.cross_entropy(main, y, ignore_index=255)
    if aux is not None:
        loss = loss + 0.5 * F.cross_entropy(aux, y, ignore_index=255)
    loss.backward()
    elapsed = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    return elapsed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=g)
    y = torch.randint(0, args.classes, (args.batch, args.size, args.size), generator=g)
    y[:, :4] = 255  # a void border, as VOC masks have

    torch.manual_seed(0)
    theirs = getattr(torchvision.models.segmentation, args.model)(
        weights=None, weights_backbone=None, num_classes=args.classes, aux_loss=args.aux
    )
    ours = from_torchvision(args.model, theirs)
    theirs.eval()
    with torch.no_grad():
        # Same function: compare eval outputs on a small input first.
        probe = x[:1, :, :65, :65]
        diff = (ours(probe) - theirs(probe)["out"]).abs().max().item()
    ours.train()
    theirs.train()

    print(
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}; "
        f"{args.model}{' + aux' if args.aux else ''}, input {args.batch}x3x{args.size}x"
        f"{args.size}, forward + backward, {args.warmup} warm-up + {args.repeats} interleaved "
        "rounds, medians",
        flush=True,
    )
    for _ in range(args.warmup):
        _step(ours, x, y)
        _step(theirs, x, y)
    t_ours, t_theirs = [], []
    for r in range(args.repeats):
        # Flip the order every round: whichever runs second may find warmer caches.
        if r % 2 == 0:
            t_ours.append(_step(ours, x, y))
            t_theirs.append(_step(theirs, x, y))
        else:
            t_theirs.append(_step(theirs, x, y))
            t_ours.append(_step(ours, x, y))
    ratio = statistics.median(a / b for a, b in zip(t_ours, t_theirs, strict=True))
    header = f"{'model':<22}{'ours ms':>10}{'torchvision ms':>16}{'ratio':>8}{'max|diff|':>11}"
    print(header)
    print("-" * len(header))
    flag = "" if ratio <= GOAL else "  > goal"
    print(
        f"{args.model:<22}{1e3 * statistics.median(t_ours):>10.1f}"
        f"{1e3 * statistics.median(t_theirs):>16.1f}{ratio:>8.3f}{diff:>11.1e}{flag}"
    )
    print(
        f"per-round ratios: {', '.join(f'{a / b:.3f}' for a, b in zip(t_ours, t_theirs, strict=True))}"
    )
    print(f"goal: ratio ours/torchvision <= {GOAL}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
