"""``visionzoo predict CHECKPOINT IMAGE_OR_DIR ...``: predictions as JSON plus annotated PNGs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

BATCH = 32  # images per forward pass
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="predict on images with a trained checkpoint",
        description="Print predictions as JSON (one object per image) and write an annotated PNG "
        "per image into --out.",
    )
    p.add_argument(
        "checkpoint", help="a checkpoint (.pt) or a run folder (uses checkpoints/best.pt)"
    )
    p.add_argument(
        "inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders of images"
    )
    p.add_argument(
        "--topk", type=int, default=5, help="classes to report per image (classification)"
    )
    p.add_argument(
        "--classes",
        default=None,
        metavar="A,B,C",
        help="CLIP checkpoints: zero-shot labels among these comma-separated class names "
        "(default: the classes it was trained with)",
    )
    p.add_argument("--out", default="predictions", help="folder for the annotated PNGs")
    p.add_argument("--no-render", action="store_true", help="only print JSON")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.set_defaults(func=run)


def collect_images(inputs: list[str]) -> list[Path]:
    from ..errors import DataError

    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DataError(
                    f"folder {str(p)!r} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
                )
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"{str(p)!r} is neither an image file nor a folder")
    return files


def save_index_mask(mask, path: Path) -> None:
    """Class indices ``[H, W]`` -> palette PNG (values are the classes; colours as VOC's)."""
    import numpy as np
    from PIL import Image

    from ..tasks.segmentation import palette

    m = np.asarray(mask)
    if m.max(initial=0) > 255:
        Image.fromarray(m.astype(np.uint16)).save(path)  # 16-bit grey: more than 256 classes
        return
    img = Image.fromarray(m.astype(np.uint8))  # mode L; putpalette makes it P, same values
    img.putpalette(palette(256).reshape(-1).tolist())
    img.save(path)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..data.images import load_image
    from ..engine.checkpoint import load_model
    from ..engine.config import config_from_dict
    from ..engine.trainer import resolve_device
    from ..errors import ConfigError
    from ..tasks import get_task
    from ._run import checkpoint_path

    path = checkpoint_path(args.checkpoint)
    model = load_model(path).to(resolve_device(args.device)).eval()
    task = get_task(config_from_dict(model.visionzoo_config))
    predict_kw: dict = {"topk": args.topk}
    if args.classes is not None:
        names = [c.strip() for c in args.classes.split(",") if c.strip()]
        if task.name != "image-text" or not names:
            raise ConfigError(
                "--classes takes comma-separated class names and applies to image-text (CLIP) "
                f"checkpoints; this one is a {task.name} model"
            )
        predict_kw["class_names"] = names
    files = collect_images(args.inputs)
    out_dir = Path(args.out)
    # Files of the same name in different folders must not overwrite each other's PNGs.
    stems = [f.stem for f in files]
    png_names = [s if stems.count(s) == 1 else f"{i:05d}-{s}" for i, s in enumerate(stems)]
    results = []
    for start in range(0, len(files), BATCH):
        chunk = files[start : start + BATCH]
        images = [load_image(f) for f in chunk]
        with torch.no_grad():
            preds = task.predict(model, images, **predict_kw)
        for f, image, pred in zip(chunk, images, preds, strict=True):
            # Keys starting with "_" hold arrays, not JSON: a segmentation "_mask" is written
            # as a palette PNG of class indices (open it with PIL: np.asarray gives classes).
            entry = {"image": str(f), **{k: v for k, v in pred.items() if not k.startswith("_")}}
            name = png_names[len(results)]
            if "_mask" in pred:
                out_dir.mkdir(parents=True, exist_ok=True)
                target = out_dir / f"{name}_mask.png"
                save_index_mask(pred["_mask"], target)
                entry["mask"] = str(target)
            if not args.no_render:
                out_dir.mkdir(parents=True, exist_ok=True)
                target = out_dir / f"{name}.png"
                task.render(image, pred).save(target)
                entry["rendered"] = str(target)
            results.append(entry)
    print(json.dumps(results, indent=2))
    return 0
