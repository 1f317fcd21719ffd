"""Where a CLIP trained on ``shapes`` gets zero-shot wrong: accuracy by scene, and why.

Loads a checkpoint written by ``visionzoo train clip_tiny data=shapes task=image-text`` and
scores ``--n`` validation scenes (from the run's own generator settings) three ways:

* **zero-shot**: the task's classifier (class names in the ``SHAPES_TEMPLATES`` prompts, averaged
  and re-normalised), as ``val/zeroshot_acc1`` computes it;
* **caption-level**: the scene's own caption against its 7 variants with the first shape name
  swapped for each other class; the right caption must score highest. Everything but the
  largest shape's class is given, so this isolates whether the image features carry it;
* **exchange**: the caption against the same caption with its first two different shape names
  exchanged (scenes with two different classes only). Both have the same words, so only a
  model that binds each shape to its colour, size and place gets these right.

Each is broken down by the number of shapes in the scene, and the zero-shot confusion matrix
(rows: true class) is printed, then the cosine similarity of one caption's text features with the
same caption after one word is changed (1.000: the text tower ignores that word), then zero-shot
with prompt ensembles in the captions' own form (training captions with their first class name
as the slot, 8 to 512 of them) against the task's colour templates. One thread; a
few seconds on CPU. ``--bf16`` scores under bf16 autocast, as the trainer validates with
``trainer.amp=bf16``.

    python benchmarks/clip_shapes_breakdown.py runs/<run>/checkpoints/best.pt [--n 1000] [--bf16]
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--n", type=int, default=1000, help="validation scenes (default 1000)")
    p.add_argument(
        "--bf16", action="store_true", help="score under bf16 autocast, as trainer.amp=bf16 does"
    )
    args = p.parse_args()
    torch.set_num_threads(1)

    import visionzoo as vz
    from visionzoo.data.image_text import (
        ShapesCaptions,
        exchange_word_negatives,
        swap_word_negatives,
    )
    from visionzoo.data.transforms import normalize
    from visionzoo.engine.config import config_from_dict
    from visionzoo.models.multimodal.clip import CLIP, zero_shot_classifier
    from visionzoo.tasks.image_text import SHAPES_TEMPLATES, ImageTextTask

    model = vz.load(args.checkpoint).eval()
    cfg = config_from_dict(model.visionzoo_config)
    if cfg.data.name != "shapes" or not isinstance(model, CLIP):
        raise SystemExit(f"{args.checkpoint}: not a CLIP trained on shapes")
    task = ImageTextTask(cfg)
    task.load_state_dict(model.visionzoo_task_state)
    names = list(model.class_names)
    k = len(names)
    d = cfg.data
    ds = ShapesCaptions(
        "val", args.n, train=False, image_size=d.image_size, num_classes=d.num_classes, seed=d.seed
    )
    items = [ds[i] for i in range(args.n)]
    images = torch.stack([it[0] for it in items])
    labels = torch.tensor([int(it[2]) for it in items])
    captions = [it[1][0] for it in items]
    word = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b")
    shapes = [len(word.findall(c)) for c in captions]

    def task_tokens(texts: list[str]) -> torch.Tensor:
        return task._tokens(texts, model).input_ids

    def encode_text(texts: list[str]) -> torch.Tensor:
        ids = task_tokens(texts)
        return torch.cat(
            [model.encode_text(ids[i : i + 512], normalize=True) for i in range(0, len(ids), 512)]
        )

    precision = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16)
    with torch.no_grad(), precision:
        f = model.encode_image(normalize(images, *task._normalization()), normalize=True)
        guess = (f @ task._classifier_for(model, names).t()).argmax(1)
        zs = guess == labels
        g = torch.Generator().manual_seed(0)
        swaps = swap_word_negatives(captions, names, k - 1, g, which="first")
        t = encode_text(captions + swaps).view(k, args.n, -1)
        cap = torch.einsum("ne,kne->nk", f, t).argmax(1) == 0
        ex = exchange_word_negatives(captions, names, g)
        has_pair = [len(set(word.findall(c))) >= 2 for c in captions]
        te = encode_text(captions + ex).view(2, args.n, -1)
        exc = torch.einsum("ne,kne->nk", f, te).argmax(1) == 0

    # rows[n]: scenes with n shapes; rows[0]: all scenes.
    rows: dict[int, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for i, n in enumerate(shapes):
        for r in (rows[n], rows[0]):
            r["zero-shot"].append(bool(zs[i]))
            r["caption-level"].append(bool(cap[i]))
            if has_pair[i]:
                r["exchange"].append(bool(exc[i]))

    def acc(v: list[bool]) -> str:
        return f"{sum(v) / len(v):.3f}" if v else "-"

    print(f"{args.checkpoint}: {args.n} validation scenes")
    print("| shapes in scene | scenes | zero-shot | caption-level | exchange |")
    print("|---|---|---|---|---|")
    for n in sorted(rows, key=lambda n: (n == 0, n)):
        r = rows[n]
        label = "all" if n == 0 else str(n)
        print(
            f"| {label} | {len(r['zero-shot'])} | {acc(r['zero-shot'])} | "
            f"{acc(r['caption-level'])} | {acc(r['exchange'])} |"
        )
    cm = torch.zeros(k, k, dtype=torch.long)
    for a, b in zip(labels.tolist(), guess.tolist(), strict=True):
        cm[a, b] += 1
    print("\nzero-shot confusion (rows: true class)")
    print("| | " + " | ".join(names) + " |")
    print("|---" * (k + 1) + "|")
    for i, name in enumerate(names):
        print(f"| {name} | " + " | ".join(str(int(v)) for v in cm[i]) + " |")

    # Which words the text tower reads: cosine similarity of a caption's text features with the
    # same caption with one word changed (1.000: the word is ignored).
    base = "a large red circle left of a small blue square"
    edits = {
        "first shape (circle -> star)": "a large red star left of a small blue square",
        "first colour (red -> green)": "a large green circle left of a small blue square",
        "first size (large -> small)": "a small red circle left of a small blue square",
        "relation (left of -> above)": "a large red circle above a small blue square",
        "second shape (square -> star)": "a large red circle left of a small blue star",
    }
    with torch.no_grad(), precision:
        t = encode_text([base, *edits.values()])
    print(f"\ntext cosine similarity with {base!r}")
    print("| changed word | cosine |")
    print("|---|---|")
    for i, name in enumerate(edits, start=1):
        print(f"| {name} | {float(t[0] @ t[i]):.3f} |")

    # Prompt ensembles in the captions' own form: training captions with their first class name
    # as the slot ("a large red {} left of a small blue square"), averaged per class as CLIP
    # averages templates. Same images and labels as the zero-shot column above.
    train = ShapesCaptions(
        "train", 512, train=False, image_size=d.image_size, num_classes=d.num_classes, seed=d.seed
    )
    slots = [word.sub("{}", train.ds.caption(i), count=1) for i in range(512)]
    print("\nzero-shot with caption-form prompt ensembles (n training captions as templates)")
    print("| templates | zero-shot |")
    print("|---|---|")
    print(
        f"| the task's {len(SHAPES_TEMPLATES)} colour templates | {float(zs.float().mean()):.3f} |"
    )
    with torch.no_grad(), precision:
        for n in (8, 32, 128, 512):
            classifier = zero_shot_classifier(model, task_tokens, names, slots[:n])
            acc = ((f @ classifier.t()).argmax(1) == labels).float().mean()
            print(f"| {n} caption templates | {float(acc):.3f} |")


if __name__ == "__main__":
    main()
