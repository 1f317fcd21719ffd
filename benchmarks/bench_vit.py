"""Training-step speed of visionzoo's ViT-B/16 against timm's ``vit_base_patch16_224``.

timm's model is built with random weights, ours receives the same weights through
``visionzoo.interop.timm.from_timm``, and both run the same step on the same batch: forward in
training mode, cross-entropy, backward (gradients zeroed before each step; no optimiser, which
would be the same code for both). Steps are interleaved (warm-up, then ours/timm alternately,
the order flipping each round) so that load drift on a shared machine slows both sides alike.
The script reports the median step time of each side and the median of the per-round ratios
ours/timm (wall time; on CPU also process CPU time, which a busy machine disturbs less); the
goal is a ratio <= 1.0. Before timing it checks that the two models compute the
same function: eval-mode logits and the patch-embedding gradient of one step (float32).

CPU by default (float32, batch 2 at 224x224: about a minute and a half with ``--threads 1`` on
two cores shared with other work, well under a minute on a quiet machine); on CUDA the defaults are bf16 autocast and batch 128.

    python benchmarks/bench_vit.py --threads 1                 # CPU, batch 2, 5 rounds
    python benchmarks/bench_vit.py --device cuda               # bf16, batch 128, 10 rounds
    python benchmarks/bench_vit.py --model vit_tiny_patch16_224 --batch 2 --repeats 3  # smoke
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from contextlib import nullcontext

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visionzoo.interop.timm import from_timm

GOAL = 1.0
# Square-grid 224 models of interop.timm (others would work; these are the ones worth timing).
MODELS = (
    "vit_base_patch16_224",
    "vit_tiny_patch16_224",
    "vit_small_patch16_224",
    "vit_large_patch16_224",
    "deit_base_patch16_224",
    "deit_tiny_patch16_224",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="vit_base_patch16_224", choices=MODELS, metavar="NAME")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    p.add_argument("--batch", type=int, default=None, help="batch size (CPU 2, CUDA 128)")
    p.add_argument("--size", type=int, default=224, help="input height and width (default 224)")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (CPU 5, CUDA 10)")
    p.add_argument(
        "--warmup", type=int, default=None, help="untimed steps per side (CPU 1, CUDA 3)"
    )
    p.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: unchanged)"
    )
    p.add_argument(
        "--amp",
        default=None,
        choices=("none", "bf16"),
        help="autocast dtype (default: bf16 on CUDA, none on CPU)",
    )
    args = p.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.device = torch.device(args.device)
    if args.device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but CUDA is not available")
    cuda = args.device.type == "cuda"
    defaults = {
        "batch": 128 if cuda else 2,
        "repeats": 10 if cuda else 5,
        "warmup": 3 if cuda else 1,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.amp is None:
        args.amp = "bf16" if cuda else "none"
    for name in ("batch", "size", "repeats", "warmup"):
        if getattr(args, name) <= 0:
            p.error(f"--{name} must be positive")
    if args.size % 16:
        p.error("--size must be a multiple of the patch size 16")
    return args


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step(model: nn.Module, x: Tensor, y: Tensor, amp: str) -> None:
    model.zero_grad(set_to_none=True)
    ctx = torch.autocast(x.device.type, dtype=torch.bfloat16) if amp == "bf16" else nullcontext()
    with ctx:
        logits = model(x)
    F.cross_entropy(logits.float(), y).backward()


def _timed(model: nn.Module, x: Tensor, y: Tensor, amp: str) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one step."""
    _sync(x.device)
    wall, cpu = time.perf_counter(), time.process_time()
    _step(model, x, y, amp)
    _sync(x.device)
    return time.perf_counter() - wall, time.process_time() - cpu


def same_function(ours: nn.Module, theirs: nn.Module, x: Tensor, y: Tensor) -> tuple[float, float]:
    """Max |difference| of eval-mode logits and of the patch-embedding weight gradient after
    one float32 training step (first two images)."""
    x, y = x[:2], y[:2]
    ours.eval(), theirs.eval()
    with torch.no_grad():
        logits = (ours(x).float() - theirs(x).float()).abs().max().item()
    ours.train(), theirs.train()
    _step(ours, x, y, "none")
    _step(theirs, x, y, "none")
    g_ours = ours.patch_embed.proj.weight.grad
    g_theirs = theirs.patch_embed.proj.weight.grad
    return logits, (g_ours - g_theirs).abs().max().item()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = args.device
    torch.manual_seed(0)
    theirs = timm.create_model(args.model, pretrained=False, img_size=args.size)
    ours = from_timm(args.model, theirs)
    theirs, ours = theirs.to(device).train(), ours.to(device).train()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=gen).to(device)
    y = torch.randint(0, ours.num_classes, (args.batch,), generator=gen).to(device)

    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
    )
    print(
        f"torch {torch.__version__}, timm {timm.__version__} (fused attention: "
        f"{timm.layers.use_fused_attn()}), {where}; {args.model} forward+backward, input "
        f"{args.batch}x3x{args.size}x{args.size}, amp {args.amp}, {args.warmup} warm-up + "
        f"{args.repeats} interleaved rounds, medians",
        flush=True,
    )
    logit_diff, grad_diff = same_function(ours, theirs, x, y)
    print(f"same function: max|logits diff| {logit_diff:.1e}, max|grad diff| {grad_diff:.1e}")

    for _ in range(args.warmup):
        _step(ours, x, y, args.amp)
        _step(theirs, x, y, args.amp)
    t_ours: list[tuple[float, float]] = []
    t_theirs: list[tuple[float, float]] = []
    for r in range(args.repeats):
        # Flip the order every round: whichever runs second may find warmer caches.
        if r % 2 == 0:
            t_ours.append(_timed(ours, x, y, args.amp))
            t_theirs.append(_timed(theirs, x, y, args.amp))
        else:
            t_theirs.append(_timed(theirs, x, y, args.amp))
            t_ours.append(_timed(ours, x, y, args.amp))
        print(
            f"  round {r + 1}: ours {1e3 * t_ours[-1][0]:.0f} ms, "
            f"timm {1e3 * t_theirs[-1][0]:.0f} ms (wall)",
            flush=True,
        )
    # Wall time is what a user waits for. On CPU the process's CPU time is also reported: a
    # step preempted by other work on a shared machine loses wall time but not CPU time, so
    # its ratio is the steadier one there (on CUDA the host CPU time means nothing).
    clocks = ["wall"] + (["cpu"] if device.type == "cpu" else [])
    print(f"{'':<10}{'step ms':>10}{'images/s':>10}" + ("   (wall)" if len(clocks) > 1 else ""))
    for name, times in (("visionzoo", t_ours), ("timm", t_theirs)):
        ms = 1e3 * statistics.median(t[0] for t in times)
        print(f"{name:<10}{ms:>10.1f}{1e3 * args.batch / ms:>10.1f}")
    for i, clock in enumerate(clocks):
        ratios = [a[i] / b[i] for a, b in zip(t_ours, t_theirs, strict=True)]
        ratio = statistics.median(ratios)
        verdict = "met" if ratio <= GOAL else "NOT met"
        print(
            f"ratio ours/timm ({clock} time) {ratio:.3f} (per round {min(ratios):.3f}-"
            f"{max(ratios):.3f}; goal <= {GOAL}: {verdict})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
