"""``visionzoo explain CHECKPOINT IMAGE ...``: where the model looks, one PNG per image.

Attention rollout (arXiv:2005.00928) for ViT/DeiT, Grad-CAM (arXiv:1610.02391) for CNNs, drawn
over the image as the model saw it (the run's eval resize and crop); see
``visionzoo.analysis.explain`` and docs/explain.md. Prints one JSON object per image: the
input, the PNG written, the method, the predicted class (and for Grad-CAM the layer and the
explained class).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explain",
        help="show where a trained classifier looks (attention rollout / Grad-CAM)",
        description="Write a PNG per image with attention rollout (ViT/DeiT) or Grad-CAM (CNNs) "
        "over the image, and print the paths and predicted classes as JSON.",
    )
    p.add_argument(
        "checkpoint", help="a checkpoint (.pt) or a run folder (uses checkpoints/best.pt)"
    )
    p.add_argument("inputs", nargs="+", metavar="IMAGE", help="image files (or folders of images)")
    p.add_argument(
        "--method",
        default="auto",
        help="auto (rollout for ViT/DeiT, gradcam otherwise), rollout or gradcam",
    )
    p.add_argument(
        "--layer",
        default=None,
        metavar="NAME",
        help="Grad-CAM layer, a dotted module name such as layer4 or features.28 (default: "
        "the layer producing the last feature map)",
    )
    p.add_argument(
        "--target",
        default=None,
        metavar="CLASS",
        help="Grad-CAM: the class to explain, by name or index (default: the predicted class)",
    )
    p.add_argument(
        "--head-fusion",
        default="mean",
        help="rollout: how attention heads are fused: mean (the paper), max or min",
    )
    p.add_argument(
        "--discard-ratio",
        type=float,
        default=0.0,
        help="rollout: fraction of each layer's weakest attention weights set to 0 (default 0)",
    )
    p.add_argument("--cmap", default="jet", help="matplotlib colour map (jet, inferno, ...)")
    p.add_argument("--out", default="explanations", help="folder for the PNGs")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.set_defaults(func=run)


def resolve_target(text: str | None, class_names: list[str] | None, num_classes: int) -> int | None:
    """``--target``: a class name of the run, or an index 0..K-1; ConfigError otherwise."""
    from ..errors import ConfigError, did_you_mean

    if text is None:
        return None
    names = list(class_names or [])
    if text in names:
        return names.index(text)
    if text.strip().lstrip("-").isdigit():
        index = int(text)
        if 0 <= index < num_classes:
            return index
        raise ConfigError(
            f"--target {index} is not a class index of this model (0..{num_classes - 1})"
        )
    valid = ", ".join(names) if names else f"indices 0..{num_classes - 1}"
    raise ConfigError(
        f"--target {text!r} is not a class of this model{did_you_mean(text, names)}; valid: {valid}"
    )


def run(args: argparse.Namespace) -> int:
    from ..analysis.explain import HEAD_FUSIONS, METHODS, explain
    from ..data.images import load_image
    from ..engine.checkpoint import load_model
    from ..engine.trainer import resolve_device
    from ..errors import ConfigError, did_you_mean
    from ._run import checkpoint_path
    from .predict import collect_images

    for flag, value, choices in (
        ("--method", args.method, METHODS),
        ("--head-fusion", args.head_fusion, HEAD_FUSIONS),
    ):
        if value not in choices:
            raise ConfigError(
                f"{flag} {value!r} is not valid{did_you_mean(value, choices)}; "
                f"choose one of {', '.join(choices)}"
            )
    path = checkpoint_path(args.checkpoint)
    model = load_model(path).to(resolve_device(args.device)).eval()
    num_classes = int(getattr(model, "num_classes", 0) or 0)
    target = resolve_target(args.target, getattr(model, "class_names", None), num_classes)
    files = collect_images(args.inputs)
    out_dir = Path(args.out)
    # Files of the same name in different folders must not overwrite each other's PNGs.
    stems = [f.stem for f in files]
    png_names = [s if stems.count(s) == 1 else f"{i:05d}-{s}" for i, s in enumerate(stems)]
    results = []
    for f, name in zip(files, png_names, strict=True):
        picture, facts = explain(
            model,
            load_image(f),
            args.method,
            target=target,
            layer=args.layer,
            discard_ratio=args.discard_ratio,
            head_fusion=args.head_fusion,
            cmap=args.cmap,
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        png = out_dir / f"{name}.png"
        picture.save(png)
        results.append({"image": str(f), "output": str(png), **facts})
    print(json.dumps(results, indent=2))
    return 0
