"""Build an image-text DataBundle from ``data.*`` config keys.

``data.name`` picks the source:

=================  ===========================================================================
name               source
=================  ===========================================================================
``shapes``         built-in scenes with the generator's caption ("a large red circle left of a
                   small blue square"); validation samples also carry the class of the
                   largest shape, for zero-shot classification over the shape names. With
                   ``data.subject_captions=p``, a training caption is, with probability p, its
                   subject alone ("a large red circle": two captions per image of different
                   detail, as COCO's five); validation keeps the whole caption
``captions``       ``data.root`` with ``{train,val}.jsonl`` or ``.csv`` image-caption files
                   (:mod:`visionzoo.data.formats.captions`)
``coco_captions``  COCO captions JSON (``annotations/captions_{train,val}2017.json``) on disk
=================  ===========================================================================

Samples: train ``(image uint8 [3, S, S], caption str)`` (one caption of the image, drawn per
access); validation ``(image, [captions], label)`` with every reference caption and the class
index for zero-shot (``-1`` where there is none). ``collate_fn`` stacks the images and keeps the
captions as lists (tokenisation belongs to the model's tokenizer, in the task).

Transforms: captions talk about positions ("left of"), so files are never flipped. ``shapes``
images are used as drawn (a crop could cut out a shape the caption names), unless
``data.caption_flips`` flips them *and* rewrites the caption's relation to match
(:func:`flip_caption`): ``h`` mirrors left-right ("left of" <-> "right of"), ``hv`` also
up-down ("above" <-> "below"), ``d4`` also transposes (the 8 symmetries of a square image;
"left of" <-> "above"); each training access draws one of the 2, 4 or 8 uniformly. Shapes are
drawn at random angles and every class is mirror-symmetric, so a flipped scene is another scene
the generator could have drawn, with a true caption. Files get
``RandomResizedCrop(S, scale=(0.8, 1))`` for training and ``Resize(S) + CenterCrop(S)`` for
validation.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ConfigError, did_you_mean
from .bundle import DataBundle
from .transforms import eval_transform, train_transform

if TYPE_CHECKING:
    from ..engine.config import DataConfig

__all__ = [
    "CAPTION_FLIPS",
    "IMAGE_TEXT_DATASETS",
    "build_image_text_data",
    "collate_image_text",
    "exchange_word_negatives",
    "flip_caption",
    "flip_image",
    "swap_word_negatives",
]

IMAGE_TEXT_DATASETS = ("shapes", "captions", "coco_captions")
FILE_CROP_SCALE = (0.8, 1.0)


# The relation words of a shapes caption and where each of the 8 symmetries of the square takes
# them: symmetry k = (transpose if k & 4) then (flip left-right if k & 1) and (up-down if k & 2),
# applied to the image in that order (transposing swaps the axes: "left of" becomes "above").
CAPTION_FLIPS = {"none": 1, "h": 2, "hv": 4, "d4": 8}
_RELATIONS = re.compile(r"\b(left of|right of|above|below)\b")
_TRANSPOSED = {"left of": "above", "right of": "below", "above": "left of", "below": "right of"}
_MIRRORED_H = {"left of": "right of", "right of": "left of"}
_MIRRORED_V = {"above": "below", "below": "above"}


def flip_caption(caption: str, k: int) -> str:
    """``caption`` with its relation words rewritten for symmetry ``k`` in [0, 8) of
    :func:`flip_image`."""

    def move(m: re.Match[str]) -> str:
        word = m.group(1)
        if k & 4:
            word = _TRANSPOSED[word]
        if k & 1:
            word = _MIRRORED_H.get(word, word)
        if k & 2:
            word = _MIRRORED_V.get(word, word)
        return word

    return _RELATIONS.sub(move, caption)


def flip_image(image: torch.Tensor, k: int) -> torch.Tensor:
    """Symmetry ``k`` in [0, 8) of a square image Tensor[C, S, S]: transposed if ``k & 4``,
    then mirrored left-right if ``k & 1`` and up-down if ``k & 2``."""
    if k & 4:
        image = image.transpose(-1, -2)
    dims = [d for bit, d in ((1, -1), (2, -2)) if k & bit]
    return (image.flip(dims) if dims else image).contiguous()


class ShapesCaptions(Dataset):
    """Built-in shapes scenes as image-caption pairs (module docstring). ``subject_captions``:
    the probability that a training sample's caption is its subject alone (the largest shape,
    "a large red circle") instead of the whole caption, drawn per access. ``caption_flips``:
    none | h | hv | d4, the symmetries a training image is drawn from, its caption rewritten
    to match (:func:`flip_caption`; drawn per access from torch's generator, which the trainer
    seeds and DataLoader workers re-seed)."""

    def __init__(
        self,
        split: str,
        size: int,
        *,
        train: bool,
        transform: Any = None,
        subject_captions: float = 0.0,
        caption_flips: str = "none",
        seed: int = 0,
        **kw: Any,
    ):
        from .shapes import ShapesDataset

        if caption_flips not in CAPTION_FLIPS:
            raise ConfigError(
                f"data.caption_flips must be one of {', '.join(CAPTION_FLIPS)}, "
                f"got {caption_flips!r}"
            )
        self.ds = ShapesDataset(
            split, size, task="image-text", transform=transform, seed=seed, **kw
        )
        h, w = self.ds.generator.image_size
        if caption_flips == "d4" and h != w:
            raise ConfigError(
                f"data.caption_flips=d4 transposes images, which needs a square image_size; "
                f"got {h}x{w}"
            )
        self.train = train
        self.classes = self.ds.classes
        self.subject_captions = float(subject_captions)
        self.symmetries = CAPTION_FLIPS[caption_flips]
        self._rng = np.random.default_rng([seed, 1])

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int):
        from .shapes import caption_subject

        image, caption = self.ds[index]
        if self.train:
            if self.symmetries > 1:
                k = int(torch.randint(self.symmetries, ()))
                # k < 2 mirrors left-right, k < 4 also up-down, k < 8 also transposes.
                image, caption = flip_image(image, k), flip_caption(caption, k)
            if self.subject_captions and self._rng.random() < self.subject_captions:
                caption = caption_subject(caption)
            return image, caption
        return image, [caption], self.ds.targets[index]


def swap_word_negatives(
    captions: Sequence[str],
    words: Sequence[str],
    k: int,
    generator: torch.Generator,
    *,
    which: str = "any",
) -> list[str]:
    """``k`` hard negatives per caption (NegCLIP): caption ``i``'s ``j``-th negative is at index
    ``j * len(captions) + i`` and is the caption with one whole-word occurrence of a ``words``
    entry replaced by a different entry (drawn at random). ``which`` picks the occurrence:
    ``"any"`` (drawn at random) or ``"first"`` (the caption's subject in most captions; on
    ``shapes``, the largest shape). The replacements of one caption's negatives are distinct
    while ``k < len(words)`` (with ``which="first"`` and ``k = len(words) - 1``, every other
    entry once: the negatives enumerate the alternatives). A caption with no
    such word gets itself back with a random entry appended as its last word, so that every
    negative still differs from its caption. Deterministic for a given ``generator`` state.

    Raises ConfigError when ``words`` has fewer than two entries (nothing to swap).
    """
    if which not in ("any", "first"):
        raise ConfigError(f"loss.negatives_swap must be 'any' or 'first', got {which!r}")
    vocab = list(dict.fromkeys(str(w) for w in words))
    if len(vocab) < 2:
        raise ConfigError(
            "loss.text_negatives needs at least two class names to swap between; the data "
            f"has {len(vocab)}"
        )
    pattern = _word_pattern(tuple(vocab))
    found = [list(pattern.finditer(c)) for c in captions]
    n = len(captions)
    # Per caption: a random occurrence for each negative, and a random order of the other
    # entries, so that k <= len(words) - 1 negatives of one caption use k distinct entries.
    picks = torch.randint(0, 1 << 30, (n, k), generator=generator).tolist()
    orders = torch.rand(n, len(vocab), generator=generator).argsort(dim=1).tolist()
    out = []
    for j in range(k):
        for i, caption in enumerate(captions):
            matches = found[i]
            if not matches:
                out.append(f"{caption} {vocab[orders[i][j % len(vocab)]]}")
                continue
            m = matches[0] if which == "first" else matches[picks[i][j] % len(matches)]
            others = [vocab[v] for v in orders[i] if vocab[v] != m.group(0)]
            out.append(caption[: m.start()] + others[j % len(others)] + caption[m.end() :])
    return out


def exchange_word_negatives(
    captions: Sequence[str],
    words: Sequence[str],
    generator: torch.Generator,
    *,
    also: Sequence[str] = (),
) -> list[str]:
    """One hard negative per caption that keeps its words and changes who has them: the first
    two *different* ``words`` entries in the caption trade places ("a large red circle left of a
    small blue star" -> "a large red star left of a small blue circle"). The bag of words is
    unchanged, so only a model that binds each name to its colour, size and place (on
    ``shapes``: knows which shape is the largest) can reject it. A caption without two different
    entries gets a :func:`swap_word_negatives` ``which="first"`` negative instead, so every
    caption has one. Deterministic for a given ``generator`` state.

    ``also``: a second vocabulary whose first two different entries are exchanged as well, when
    the caption has two. On ``shapes``, passing the colours exchanges whole phrases' contents
    ("a large blue star left of a small red circle"): the negative then says the *other* shape
    is the large one, which is what zero-shot prompts about the largest shape must not match.

    Raises ConfigError when ``words`` has fewer than two entries.
    """
    vocab = list(dict.fromkeys(str(w) for w in words))
    fallback = swap_word_negatives(captions, vocab, 1, generator, which="first")
    names = _word_pattern(tuple(vocab))
    extra = _word_pattern(tuple(str(w) for w in also)) if also else None
    out = []
    for caption, other in zip(captions, fallback, strict=True):
        swapped = _exchange_first_two(caption, names)
        if swapped is None:
            out.append(other)
            continue
        if extra is not None:
            swapped = _exchange_first_two(swapped, extra) or swapped
        out.append(swapped)
    return out


@functools.lru_cache(maxsize=16)
def _word_pattern(words: tuple[str, ...]) -> re.Pattern[str]:
    """A regex matching any of ``words`` as a whole word (built once per vocabulary: it is used
    on every training step)."""
    return re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")\b")


def _exchange_first_two(caption: str, pattern: re.Pattern[str]) -> str | None:
    """``caption`` with its first two different ``pattern`` matches exchanged; None when it has
    fewer than two different ones."""
    matches = list(pattern.finditer(caption))
    second = next((m for m in matches[1:] if m.group(0) != matches[0].group(0)), None)
    if second is None:
        return None
    first = matches[0]
    return (
        caption[: first.start()]
        + second.group(0)
        + caption[first.end() : second.start()]
        + first.group(0)
        + caption[second.end() :]
    )


def collate_image_text(batch: list[tuple]) -> tuple:
    """Train: ``(images uint8 [N, 3, S, S], [captions])``; validation: ``(images,
    [[captions of image i]], labels int64 [N])``."""
    images = torch.stack([b[0] for b in batch])
    if len(batch[0]) == 2:
        return images, [b[1] for b in batch]
    return images, [list(b[1]) for b in batch], torch.tensor([int(b[2]) for b in batch])


def build_image_text_data(cfg: DataConfig) -> DataBundle:
    """Datasets and transforms for ``cfg.name`` (module docstring).

    Raises:
        ConfigError: unknown ``data.name`` (with did-you-mean) or ``data.root`` missing.
        DataError: files missing, unreadable or inconsistent (naming the path).
    """
    from .classification import _check_positive, _check_stats

    name = cfg.name
    if name not in IMAGE_TEXT_DATASETS:
        raise ConfigError(
            f"data.name={name!r} is not an image-text data set"
            f"{did_you_mean(str(name), IMAGE_TEXT_DATASETS)}; valid: "
            f"{', '.join(IMAGE_TEXT_DATASETS)}"
        )
    mean, std = _check_stats(cfg)
    val_tf = eval_transform(cfg)
    if name == "shapes":
        _check_positive(cfg, "train_size")
        _check_positive(cfg, "val_size")
        p = cfg.subject_captions
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
            raise ConfigError(f"data.subject_captions must be a number in [0, 1], got {p!r}")
        kw: dict[str, Any] = dict(
            image_size=cfg.image_size, num_classes=cfg.num_classes, seed=cfg.seed
        )
        train = ShapesCaptions(
            "train",
            cfg.train_size,
            train=True,
            subject_captions=p,
            caption_flips=cfg.caption_flips,
            **kw,
        )
        val = ShapesCaptions("val", cfg.val_size, train=False, **kw)
        class_names = list(train.classes)
    else:
        from .formats.captions import CaptionDataset, build_caption_split

        if cfg.caption_flips != "none":
            raise ConfigError(
                f"data.caption_flips={cfg.caption_flips!r} rewrites the relation words of "
                f"`shapes` captions; data.name={name} captions are free text and are never "
                "flipped: leave data.caption_flips=none"
            )

        if not cfg.root:
            raise ConfigError(
                f"data.root is required for data.name={name}: the folder holding "
                + (
                    "train.jsonl/val.jsonl (or .csv) and the images"
                    if name == "captions"
                    else "annotations/captions_{train,val}2017.json and train2017/, val2017/"
                )
            )
        train_tf = train_transform(cfg, crop_scale=FILE_CROP_SCALE, hflip=False)
        train = CaptionDataset(
            build_caption_split(name, cfg.root, "train"),
            transform=train_tf,
            train=True,
            seed=cfg.seed,
        )
        val = CaptionDataset(
            build_caption_split(name, cfg.root, "val"), transform=val_tf, train=False
        )
        class_names = []
    return DataBundle(
        train=train,
        val=val,
        num_classes=len(class_names),
        class_names=class_names,
        mean=mean,
        std=std,
        eval_transform=val_tf,
        collate_fn=collate_image_text,
    )
