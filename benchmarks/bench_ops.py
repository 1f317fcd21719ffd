"""Speed of visionzoo.ops against torchvision.ops (C++/CUDA kernels), printed as ratios.

Cases (same inputs for both sides, checked to give the same result):

* ``nms`` at 1k/5k/20k boxes, two box populations: ``det`` (RPN-like: centres uniform on an
  800x800 image, sizes 16-256 px log-uniform, aspect 1:2-2:1) at IoU 0.5 and 0.7, and
  ``dense`` (torchvision's test recipe: corners uniform in [0, 100), sizes up to 100, so boxes
  overlap heavily) at IoU 0.5;
* ``batched_nms``: ``det`` boxes in 10 categories at IoU 0.5;
* ``box_iou``: N ``det`` boxes against 1000 (an N x 1000 matrix: proposals vs ground truth or
  anchors vs ground truth; N x N at 20k would be a 1.6 GB output);
* ``roi_pool`` / ``roi_align`` (7x7, adaptive sampling, aligned=False / sampling 2,
  aligned=True): 1000 RoIs of 8-300 px over 2 images of 800x800 on a 2x256x50x50 map
  (spatial_scale 1/16), forward alone and forward + backward (a fixed random output
  gradient); the check column gives the largest difference of the outputs / input gradients.

After a warm-up, each round times ours and torchvision's once, alternating which goes first,
so that load drift hits both alike; the table gives the median time of each side and the
median of the per-round ratios ours/torchvision. Goals: <= 1.5 on CPU, <= 1.0 on GPU.
On CUDA every call is bracketed by torch.cuda.synchronize().

    python benchmarks/bench_ops.py                 # CPU, one thread, 7 rounds
    python benchmarks/bench_ops.py --device cuda   # GPU (when there is one)
    python benchmarks/bench_ops.py --quick         # 3 rounds, 1k and 5k boxes only
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torchvision
import torchvision.ops as tvops

from visionzoo import ops

GOALS = {"cpu": 1.5, "cuda": 1.0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "all"])
    p.add_argument("--repeats", type=int, default=7, help="timed rounds per case (default 7)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs of each side first")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000], metavar="N")
    p.add_argument(
        "--ops",
        nargs="+",
        default=["nms", "batched_nms", "box_iou", "roi_pool", "roi_align"],
        choices=["nms", "batched_nms", "box_iou", "roi_pool", "roi_align"],
    )
    p.add_argument("--quick", action="store_true", help="3 rounds, 1k and 5k boxes")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.sizes = 3, [1000, 5000]
    if args.repeats <= 0 or args.threads <= 0:
        p.error("--repeats and --threads must be positive")
    return args


# ----------------------------------------------------------------------------- inputs


def det_boxes(n: int, seed: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(n, 2, generator=g) * 800
    size = torch.exp(torch.rand(n, generator=g) * (math.log(256) - math.log(16)) + math.log(16))
    aspect = torch.exp((torch.rand(n, generator=g) * 2 - 1) * math.log(2))
    w, h = size * aspect.sqrt(), size / aspect.sqrt()
    boxes = torch.stack([centre[:, 0] - w / 2, centre[:, 1] - h / 2, centre[:, 0] + w / 2,
                         centre[:, 1] + h / 2], 1)  # fmt: skip
    return boxes.to(device), torch.rand(n, generator=g).to(device)


def dense_boxes(n: int, seed: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    boxes = torch.rand(n, 4, generator=g) * 100
    boxes[:, 2:] += boxes[:, :2]
    return boxes.to(device), torch.rand(n, generator=g).to(device)


def rois_and_map(device: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 256, 50, 50, generator=g)
    centre = torch.rand(1000, 2, generator=g) * 800
    size = torch.rand(1000, 2, generator=g) * 292 + 8
    batch = torch.randint(0, 2, (1000, 1), generator=g).float()
    rois = torch.cat([batch, centre - size / 2, centre + size / 2], 1)
    return x.to(device), rois.to(device)


# ----------------------------------------------------------------------------- timing


def _timed(fn: Callable[[], object], device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def compare(
    ours: Callable[[], object],
    theirs: Callable[[], object],
    device: str,
    repeats: int,
    warmup: int,
) -> tuple[float, float, float]:
    """Median ms of each side and the median per-round ratio ours/theirs."""
    for _ in range(warmup):
        ours()
        theirs()
    t_ours, t_theirs, ratios = [], [], []
    for r in range(repeats):
        if r % 2 == 0:
            a = _timed(ours, device)
            b = _timed(theirs, device)
        else:
            b = _timed(theirs, device)
            a = _timed(ours, device)
        t_ours.append(a)
        t_theirs.append(b)
        ratios.append(a / b)
    return (
        statistics.median(t_ours) * 1e3,
        statistics.median(t_theirs) * 1e3,
        statistics.median(ratios),
    )


def forward_backward(fn: Callable, x: torch.Tensor, *args) -> Callable[[], torch.Tensor]:
    xg = x.clone().requires_grad_()
    grad_out = None

    def run() -> torch.Tensor:
        nonlocal grad_out
        out = fn(xg, *args)
        if grad_out is None:  # fixed random output gradient, made once
            g = torch.Generator().manual_seed(5)
            grad_out = torch.randn(out.shape, generator=g).to(out.device)
        out.backward(grad_out)
        grad, xg.grad = xg.grad, None
        return grad

    return run


# ----------------------------------------------------------------------------- cases


def cases(args: argparse.Namespace, device: str):
    """Yield (op, case, ours, theirs, same) with ``same`` a short agreement string."""
    for n in args.sizes:
        if "nms" in args.ops:
            for name, make, thr in [("det", det_boxes, 0.5), ("det", det_boxes, 0.7),
                                    ("dense", dense_boxes, 0.5)]:  # fmt: skip
                b, s = make(n, 0, device)
                same = torch.equal(ops.nms(b, s, thr), tvops.nms(b, s, thr))
                yield ("nms", f"{name} N={n} iou={thr}", lambda b=b, s=s, t=thr: ops.nms(b, s, t),
                       lambda b=b, s=s, t=thr: tvops.nms(b, s, t), f"equal={same}")  # fmt: skip
        if "batched_nms" in args.ops:
            b, s = det_boxes(n, 1, device)
            idx = torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(2)).to(device)
            same = torch.equal(ops.batched_nms(b, s, idx, 0.5), tvops.batched_nms(b, s, idx, 0.5))
            yield ("batched_nms", f"det N={n} 10 classes iou=0.5",
                   lambda b=b, s=s, i=idx: ops.batched_nms(b, s, i, 0.5),
                   lambda b=b, s=s, i=idx: tvops.batched_nms(b, s, i, 0.5), f"equal={same}")  # fmt: skip
        if "box_iou" in args.ops:
            b, _ = det_boxes(n, 3, device)
            gt, _ = det_boxes(1000, 4, device)
            same = torch.equal(ops.box_iou(b, gt), tvops.box_iou(b, gt))
            yield ("box_iou", f"N={n} x 1000", lambda b=b, gt=gt: ops.box_iou(b, gt),
                   lambda b=b, gt=gt: tvops.box_iou(b, gt), f"equal={same}")  # fmt: skip
    x, rois = rois_and_map(device)
    specs = []
    if "roi_pool" in args.ops:
        specs.append(("roi_pool", "7x7", ops.roi_pool, tvops.roi_pool, (7, 1 / 16)))
    if "roi_align" in args.ops:
        specs.append(("roi_align", "7x7 adaptive", ops.roi_align, tvops.roi_align,
                      (7, 1 / 16, -1, False)))  # fmt: skip
        specs.append(("roi_align", "7x7 sr=2 aligned", ops.roi_align, tvops.roi_align,
                      (7, 1 / 16, 2, True)))  # fmt: skip
    for op, label, ours, theirs, extra in specs:
        diff = (ours(x, rois, *extra) - theirs(x, rois, *extra)).abs().max().item()
        yield (op, f"1000 RoIs {label} fwd", lambda f=ours, e=extra: f(x, rois, *e),
               lambda f=theirs, e=extra: f(x, rois, *e), f"max|diff|={diff:.1e}")  # fmt: skip
        fb_ours = forward_backward(ours, x, rois, *extra)
        fb_theirs = forward_backward(theirs, x, rois, *extra)
        diff = (fb_ours() - fb_theirs()).abs().max().item()
        yield (op, f"1000 RoIs {label} fwd+bwd", fb_ours, fb_theirs,
               f"grad max|diff|={diff:.1e}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        if args.device == "cuda":
            print("no CUDA device", file=sys.stderr)
            return 2
        devices = ["cpu"]
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"{platform.processor() or platform.machine()}, threads={args.threads}, "
          f"repeats={args.repeats}")  # fmt: skip
    for device in devices:
        name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
        print(f"\n## {device} ({name}); goal: ratio <= {GOALS[device]}\n")
        print(
            f"| {'op':11s} | {'case':38s} | {'ours ms':>9s} | {'tv ms':>9s} | {'ratio':>5s} | check |"
        )
        print(f"|{'-' * 13}|{'-' * 40}|{'-' * 11}|{'-' * 11}|{'-' * 7}|-------|")
        worst = 0.0
        for op, case, ours, theirs, same in cases(args, device):
            a, b, ratio = compare(ours, theirs, device, args.repeats, args.warmup)
            worst = max(worst, ratio)
            print(f"| {op:11s} | {case:38s} | {a:9.2f} | {b:9.2f} | {ratio:5.2f} | {same} |",
                  flush=True)  # fmt: skip
        print(f"\nworst ratio on {device}: {worst:.2f} (goal <= {GOALS[device]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
