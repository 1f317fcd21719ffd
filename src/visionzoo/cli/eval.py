"""``visionzoo eval CHECKPOINT [key=value ...]``: evaluate a trained model."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a checkpoint on its validation data (or other data via overrides)",
        description="Evaluate CHECKPOINT on the validation split of the data it was trained on; "
        "data.* overrides point it at other data (e.g. data=imagefolder data.root=PATH).",
    )
    p.add_argument(
        "checkpoint", help="a checkpoint (.pt) or a run folder (uses checkpoints/best.pt)"
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides, e.g. data.batch_size=128",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument(
        "--last", action="store_true", help="with a run folder, use last.pt instead of best.pt"
    )
    p.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="also write metrics.json, the per-class table (per_class.md) and, for "
        "segmentation, --samples image | ground truth | prediction PNGs into DIR",
    )
    p.add_argument("--samples", type=int, default=8, help="validation samples to draw with --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch
    from torch.utils.data import DataLoader

    from ..engine.checkpoint import load_checkpoint, load_model
    from ..engine.config import apply_overrides, config_from_dict
    from ..engine.trainer import resolve_device
    from ..tasks import get_task
    from ._run import checkpoint_path

    path = checkpoint_path(args.checkpoint, last=args.last)
    state = load_checkpoint(path)
    cfg = apply_overrides(config_from_dict(state["config"]), list(args.overrides))
    device = resolve_device(args.device)
    model = load_model(path).to(device)
    task = get_task(cfg)
    bundle = task.build_data()
    loader = DataLoader(
        bundle.val,
        batch_size=cfg.data.eval_batch_size or cfg.data.batch_size,
        shuffle=False,
        num_workers=cfg.data.num_workers,
        collate_fn=bundle.collate_fn,
    )
    with torch.no_grad():
        metrics = task.evaluate(model.eval(), loader)
    # NaN (a metric with nothing to measure, e.g. COCO's "large" objects on 64-pixel images)
    # becomes null: bare NaN is not JSON.
    result = {
        "checkpoint": str(path),
        **{k: (float(v) if math.isfinite(float(v)) else None) for k, v in metrics.items()},
    }
    print(json.dumps(result, indent=2))
    # The per-class table goes to stderr so stdout stays one JSON document.
    report = task.report() if hasattr(task, "report") else ""
    if report:
        print(report, file=sys.stderr)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
        if report:
            (out / "per_class.md").write_text(report + "\n")
        if hasattr(task, "write_samples") and args.samples > 0:
            task.write_samples(model, bundle.val, out, args.samples)
        print(f"wrote {out}", file=sys.stderr)
    return 0
