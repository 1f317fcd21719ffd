"""``visionzoo bench detectors [data=shapes] [key=value ...]``: the detection-evolution benchmark.

R-CNN (arXiv:1311.2524), Fast R-CNN (arXiv:1504.08083) and Faster R-CNN (arXiv:1506.01497)
with the same ResNet-18 trunk (``rcnn_resnet18``, ``fast_rcnn_resnet18``,
``fasterrcnn_resnet18_c4``), trained by the one :class:`~visionzoo.engine.trainer.Trainer` and
evaluated by the detection task on the same split, in one table: proposal time per image,
training time, test time per image, mAP@0.5 and the speed ratios against R-CNN, with the
papers' ratios beside them. See docs/detection_evolution.md.

Timing rules (the papers'): selective search runs once per image before training (its time is
the "proposals" column, measured uncached on the validation images); the detectors' test time
excludes it (Fast R-CNN's Table 4 does the same) and the "with proposals" column adds it back.
Faster R-CNN's proposal time is the time spent in its RPN during evaluation.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError

HELP = """\
Benchmarks. `detectors`: train and evaluate R-CNN, Fast R-CNN and Faster R-CNN with the same
ResNet-18 trunk on the same split and print proposal time, training time, test time, mAP@0.5
and the speed ratios against R-CNN beside the papers' ratios.

  visionzoo bench detectors data=shapes
  visionzoo bench detectors --train-size 800 --val-size 200 --epochs 8 --out bench_out
  visionzoo bench detectors --models fast_rcnn,faster_rcnn optim.lr=0.01

key=value items override the run config of every detector (data.*, optim.*, trainer.*).
"""

# (short name, registered model, label)
DETECTORS = (
    ("rcnn", "rcnn_resnet18", "R-CNN"),
    ("fast_rcnn", "fast_rcnn_resnet18", "Fast R-CNN"),
    ("faster_rcnn", "fasterrcnn_resnet18_c4", "Faster R-CNN"),
)
# The papers' figures with VGG-16 (R-CNN: 84 h training, 47 s/img test; Fast R-CNN: 9.5 h,
# 0.32 s/img, 0.22 s/img with truncated SVD -> "9x faster training, 213x faster testing";
# Faster R-CNN: proposals ~10 ms with the RPN instead of ~2 s for selective search on a CPU).
PAPER = {
    "rcnn": {"train_x": "1x", "test_x": "1x", "proposals": "~2 s (SS, CPU)"},
    "fast_rcnn": {"train_x": "9x", "test_x": "213x", "proposals": "~2 s (SS, CPU)"},
    "faster_rcnn": {"train_x": "-", "test_x": "~230x (0.198 s/img)", "proposals": "~10 ms (RPN)"},
}


def _options() -> argparse.ArgumentParser:
    """The options of ``bench detectors`` (parsed with key=value items in any order)."""
    p = argparse.ArgumentParser(prog="visionzoo bench detectors")
    p.add_argument("items", nargs="*", metavar="key=value", help="config overrides (data=shapes)")
    p.add_argument("--train-size", type=int, default=400, help="training images (400)")
    p.add_argument("--val-size", type=int, default=100, help="validation images (100)")
    p.add_argument("--epochs", type=int, default=10, help="epochs of Fast/Faster R-CNN (10)")
    p.add_argument(
        "--rcnn-iters",
        type=int,
        default=1000,
        help="R-CNN fine-tuning iterations of 128 regions (1000)",
    )
    p.add_argument(
        "--rcnn-warp", type=int, default=32, help="R-CNN's warped region size in px (32)"
    )
    p.add_argument("--image-size", type=int, default=64, help="shapes image size (64)")
    p.add_argument(
        "--models",
        default="rcnn,fast_rcnn,faster_rcnn",
        help="comma-separated subset of rcnn, fast_rcnn, faster_rcnn",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", default=None, help="folder for table.md, results.json and the runs")
    return p


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmarks (detectors: R-CNN vs Fast R-CNN vs Faster R-CNN)",
        description=HELP + "\n" + _options().format_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("what", choices=["detectors"], help="which benchmark")
    # Options and key=value items in any order: parsed by _options() in run().
    p.add_argument("rest", nargs=argparse.REMAINDER, help="options and key=value overrides")
    p.set_defaults(func=run)


def _config(name: str, args: argparse.Namespace, out: Path, overrides: list[str]) -> Any:
    from ..engine.config import RunConfig, apply_overrides

    cfg = RunConfig()
    cfg.task = "detection"
    cfg.model.name = name
    d = cfg.data
    d.name, d.image_size = "shapes", args.image_size
    d.train_size, d.val_size = args.train_size, args.val_size
    d.batch_size, d.eval_batch_size, d.augment = 2, 8, "light"
    # Fast R-CNN's minibatch: 2 images (x 64 RoIs); the same for Faster R-CNN. From scratch,
    # AdamW and RoIAlign (measured: SGD 0.02 + RoI pooling, 6 epochs: mAP@0.5 0.26; AdamW 1e-3
    # + RoIAlign, 10 epochs: 0.68; see docs/detection_evolution.md).
    cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay = "adamw", 1e-3, 1e-4
    if not name.startswith("rcnn"):
        cfg.model.args["roi_op"] = "align"
    cfg.sched.name, cfg.sched.warmup_epochs = "cosine", 0.5
    t = cfg.trainer
    t.epochs, t.eval_every, t.device = args.epochs, args.epochs, "cpu"
    t.output_dir, t.run_name = str(out / "runs"), name
    t.progress, t.tensorboard, t.plots, t.log_every = False, False, False, 50
    t.threads = args.threads
    t.clip_grad_norm = 10.0
    cache = out / "cache"
    if hasattr_proposals(name):
        cfg.model.args["proposal_cache_dir"] = str(cache / "proposals")
    if name.startswith("rcnn"):
        cfg.model.args["feature_cache_dir"] = str(cache / "rcnn_features")
        cfg.model.args["warp_size"] = args.rcnn_warp
        # One epoch = 2 images per fine-tuning iteration (RCNN.multi_stage_fit): pick the
        # epochs that give --rcnn-iters, capped exactly by max_steps.
        t.epochs = max(1, math.ceil(args.rcnn_iters * 2 / max(args.train_size, 1)))
        t.eval_every = t.epochs
        t.max_steps = args.rcnn_iters
        # R-CNN's stage 2 is its own SGD (momentum 0.9, warm-up + cosine) at optim.lr.
        cfg.optim.name, cfg.optim.lr = "sgd", 0.05
    if not hasattr_proposals(name):
        # Selective-search settings (model.args.proposal_*) concern R-CNN and Fast R-CNN only.
        overrides = [o for o in overrides if not o.startswith("model.args.proposal")]
    return apply_overrides(cfg, overrides)


def hasattr_proposals(name: str) -> bool:
    """Whether the detector takes selective-search proposals (R-CNN, Fast R-CNN)."""
    return name.startswith(("rcnn", "fast_rcnn"))


def _precompute_proposals(model: Any, bundle: Any) -> tuple[float, float]:
    """Fill the model's proposal cache for every training image (both orientations: the data
    flips them) and every validation image; returns (mean uncached selective-search seconds
    per validation image, proposals per validation image)."""
    cache = model.proposal_cache
    from ..models.detection.proposals import image_to_uint8_hwc

    times, counts = [], []
    for i in range(len(bundle.val)):
        image = bundle.val[i][0]
        hwc = image_to_uint8_hwc(image)
        t0 = time.perf_counter()
        boxes = cache.compute(hwc)  # timed without the cache
        times.append(time.perf_counter() - t0)
        counts.append(boxes.shape[0])
        cache._write(cache._key(hwc), boxes)
    base = getattr(bundle.train, "base", None)
    for i in range(len(bundle.train)):
        # The generator's raw image (before the random flip), and its mirror image.
        image = base[i][0] if base is not None else bundle.train[i][0]
        image = torch.as_tensor(image)
        cache(image)
        cache(image.flip(-1))
    n = max(len(times), 1)
    return sum(times) / n, sum(counts) / n


def _bench_one(short: str, name: str, args: argparse.Namespace, out: Path, overrides: list[str]):
    from ..engine.trainer import Trainer

    cfg = _config(name, args, out, overrides)
    trainer = Trainer(cfg)
    model = trainer.model
    n_val = len(trainer.bundle.val)
    row: dict[str, Any] = {"detector": short, "model": name}
    if hasattr(model, "proposal_cache"):
        row["proposal_s"], row["proposals_per_img"] = _precompute_proposals(model, trainer.bundle)
    rpn_time = [0.0]
    if hasattr(model, "rpn"):
        start: list[float] = []
        model.rpn.register_forward_pre_hook(lambda *a: start.append(time.perf_counter()))
        model.rpn.register_forward_hook(
            lambda *a: rpn_time.__setitem__(0, rpn_time[0] + time.perf_counter() - start[-1])
        )
    val_time = [0.0]
    validate = trainer.validate

    def timed_validate() -> dict[str, float]:
        rpn_time[0] = 0.0
        t0 = time.perf_counter()
        metrics = validate()
        val_time[0] += time.perf_counter() - t0
        return metrics

    trainer.validate = timed_validate  # type: ignore[method-assign]
    t0 = time.perf_counter()
    metrics = trainer.fit()
    total = time.perf_counter() - t0
    row["train_s"] = total - val_time[0]
    row["test_s"] = val_time[0] / max(n_val, 1)
    if hasattr(model, "rpn"):
        row["proposal_s"] = rpn_time[0] / max(n_val, 1)
        row["test_with_proposals_s"] = row["test_s"]
    else:
        row["test_with_proposals_s"] = row["test_s"] + row.get("proposal_s", 0.0)
    row["mAP50"] = metrics.get("val/mAP50", float("nan"))
    row["mAP"] = metrics.get("val/mAP", float("nan"))
    row["run_dir"] = str(trainer.run_dir)
    return row


def _table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    labels = {s: label for s, _, label in DETECTORS}
    base = next((r for r in rows if r["detector"] == "rcnn"), None)
    head = (
        "| detector | proposals s/img | train s | test s/img (w/o proposals) | test s/img "
        "(with proposals) | mAP@0.5 | train x vs R-CNN | test x vs R-CNN | paper: train x | "
        "paper: test x | paper: proposals |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        p = PAPER[r["detector"]]
        tx = f"{base['train_s'] / r['train_s']:.1f}x" if base else "-"
        sx = f"{base['test_with_proposals_s'] / r['test_with_proposals_s']:.1f}x" if base else "-"
        lines.append(
            f"| {labels[r['detector']]} ({r['model']}) | {r.get('proposal_s', float('nan')):.4f} "
            f"| {r['train_s']:.0f} | {r['test_s']:.4f} | {r['test_with_proposals_s']:.4f} "
            f"| {r['mAP50']:.3f} | {tx} | {sx} | {p['train_x']} | {p['test_x']} "
            f"| {p['proposals']} |"
        )
    lines.append("")
    lines.append(
        f"shapes {args.image_size} px, {args.train_size} train / {args.val_size} val images, "
        f"{args.epochs} epochs (Fast/Faster R-CNN), {args.rcnn_iters} R-CNN fine-tuning "
        f"iterations on {args.rcnn_warp} px warps, torch threads {torch.get_num_threads()}. The test ratio compares times "
        "with proposals (the papers' R-CNN and Fast R-CNN test times exclude them)."
    )
    return "\n".join(lines)


def run(ns: argparse.Namespace) -> int:
    from ..cli.train import split_items

    args = _options().parse_intermixed_args(ns.rest)
    if args.threads:
        torch.set_num_threads(args.threads)
    for key in ("train_size", "val_size", "epochs", "rcnn_iters", "rcnn_warp", "image_size"):
        if getattr(args, key) < 1:
            raise ConfigError(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    _, overrides = split_items(["_", *args.items])
    for item in overrides:
        k, _, v = item.partition("=")
        if k.strip() in ("data", "data.name") and v.strip() != "shapes":
            raise ConfigError(
                f"bench detectors runs on the built-in shapes data only, got {item!r}"
            )
    overrides = [o for o in overrides if o.partition("=")[0].strip() not in ("data", "data.name")]
    wanted = [m.strip() for m in args.models.split(",") if m.strip()]
    known = [s for s, _, _ in DETECTORS]
    bad = [m for m in wanted if m not in known]
    if bad or not wanted:
        raise ConfigError(f"--models: unknown {bad or wanted}; valid: {', '.join(known)}")
    out = (
        Path(args.out)
        if args.out
        else Path("runs") / f"bench-detectors-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for short, name, label in DETECTORS:
        if short not in wanted:
            continue
        print(f"== {label} ({name})", flush=True)
        row = _bench_one(short, name, args, out, overrides)
        print(
            f"   mAP@0.5 {row['mAP50']:.3f}, train {row['train_s']:.0f} s, test "
            f"{row['test_s']:.4f} s/img",
            flush=True,
        )
        rows.append(row)
    table = _table(rows, args)
    print(table)
    (out / "table.md").write_text(table + "\n")
    (out / "results.json").write_text(
        json.dumps({"rows": rows, "args": vars(args) | {"func": None}}, indent=2, default=str)
    )
    print(f"written: {out / 'table.md'}, {out / 'results.json'}")
    return 0
