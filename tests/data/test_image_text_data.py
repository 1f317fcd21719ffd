"""Image-caption data: shapes captions, JSONL/CSV files and COCO captions JSON."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from visionzoo.data.image_text import build_image_text_data
from visionzoo.engine.config import DataConfig
from visionzoo.errors import ConfigError, DataError


def test_shapes_captions_and_labels():
    b = build_image_text_data(DataConfig(name="shapes", image_size=32, train_size=6, val_size=4))
    image, caption = b.train[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8
    assert isinstance(caption, str) and caption.startswith("a ")
    images, caps, labels = next(iter(DataLoader(b.val, batch_size=4, collate_fn=b.collate_fn)))
    assert images.shape == (4, 3, 32, 32) and len(caps) == 4 and labels.shape == (4,)
    gen = b.val.ds.generator
    for i in range(4):
        s = gen.sample("val", i)
        assert caps[i] == [s["caption"]] and int(labels[i]) == s["label"]
        # The caption names the labelled (largest) shape.
        assert b.class_names[int(labels[i])] in s["caption"]


def _images(root, names):
    for n in names:
        (root / n).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(root / n)


def test_jsonl_and_csv(tmp_path):
    _images(tmp_path, ["img/a.png", "img/b.png"])
    lines = [
        {"image": "img/a.png", "caption": "a cat"},
        {"image": "img/a.png", "captions": ["a small   cat", "cat"]},
        {"image": "img/b.png", "caption": "a dog"},
    ]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    (tmp_path / "val.csv").write_text("image,caption,extra\nimg/b.png,a dog,1\nimg/b.png,dog,2\n")
    b = build_image_text_data(DataConfig(name="captions", root=str(tmp_path), image_size=16))
    assert len(b.train) == 2 and b.train.entries[0][1] == ["a cat", "a small cat", "cat"]
    image, cap = b.train[0]
    assert image.shape == (3, 16, 16) and cap in ("a cat", "a small cat", "cat")
    assert b.val[0][1:] == (["a dog", "dog"], -1)


def test_bad_caption_files(tmp_path):
    _images(tmp_path, ["a.png"])
    cfg = DataConfig(name="captions", root=str(tmp_path))
    (tmp_path / "train.jsonl").write_text('{"image": "../secret.png", "caption": "x"}\n')
    with pytest.raises(DataError, match=r"train\.jsonl:1.*escapes"):
        build_image_text_data(cfg)
    (tmp_path / "train.jsonl").write_text('{"image": "a.png", "caption": ""}\n')
    with pytest.raises(DataError, match=r"train\.jsonl:1: caption must be a non-empty string"):
        build_image_text_data(cfg)
    (tmp_path / "train.jsonl").write_text('{"image": "a.png", "caption": "ok"}\n{oops\n')
    with pytest.raises(DataError, match=r"train\.jsonl:2: invalid JSON"):
        build_image_text_data(cfg)
    (tmp_path / "train.jsonl").write_text('{"image": "a.png", "caption": "ok"}\n')
    with pytest.raises(DataError, match=r"val\.jsonl nor .*val\.csv exists"):
        build_image_text_data(cfg)
    (tmp_path / "val.csv").write_text("path,text\na.png,x\n")
    with pytest.raises(DataError, match="header with 'image' and 'caption'"):
        build_image_text_data(cfg)
    with pytest.raises(ConfigError, match="not an image-text data set"):
        build_image_text_data(DataConfig(name="imagefolder"))
    with pytest.raises(ConfigError, match="data.root is required"):
        build_image_text_data(DataConfig(name="coco_captions"))


def test_coco_captions(tmp_path):
    _images(tmp_path, ["train2017/1.jpg", "val2017/2.jpg"])
    (tmp_path / "annotations").mkdir()
    for split, iid in (("train", 1), ("val", 2)):
        data = {
            "images": [{"id": iid, "file_name": f"{iid}.jpg"}],
            "annotations": [
                {"id": 10, "image_id": iid, "caption": "A man riding a horse."},
                {"id": 11, "image_id": iid, "caption": "Someone on a horse"},
            ],
        }
        (tmp_path / "annotations" / f"captions_{split}2017.json").write_text(json.dumps(data))
    b = build_image_text_data(DataConfig(name="coco_captions", root=str(tmp_path)))
    assert b.val[0][1] == ["A man riding a horse.", "Someone on a horse"]


def test_swap_word_negatives():
    import re

    from visionzoo.data.image_text import swap_word_negatives

    words = ["circle", "square", "star"]
    captions = ["a large red circle left of a small blue square", "a starry sky", "a small star"]
    g = torch.Generator().manual_seed(0)
    neg = swap_word_negatives(captions, words, 4, g)
    assert len(neg) == 12
    for j in range(4):
        first, second, third = neg[3 * j : 3 * j + 3]
        # Exactly one class word differs, and it became another class word.
        a, b = captions[0].split(), first.split()
        diff = [(x, y) for x, y in zip(a, b, strict=True) if x != y]
        assert len(diff) == 1 and diff[0][0] in words and diff[0][1] in words
        # "starry" is not the word "star": nothing to swap, so a class word is appended.
        assert second.startswith("a starry sky ") and second.split()[-1] in words
        assert re.fullmatch(r"a small (circle|square)", third)
    # Deterministic for a generator state.
    again = swap_word_negatives(captions, words, 4, torch.Generator().manual_seed(0))
    assert again == neg
    with pytest.raises(ConfigError, match="at least two class names"):
        swap_word_negatives(captions, ["circle"], 1, g)
    # which="first": always the first class word.
    first = swap_word_negatives(captions[:1], words, 5, g, which="first")
    assert all(
        re.fullmatch(r"a large red (square|star) left of a small blue square", c) for c in first
    )
    # k = len(words) - 1 with which="first": every other entry exactly once.
    both = swap_word_negatives(captions[:1], words, 2, g, which="first")
    assert sorted(c.split()[3] for c in both) == ["square", "star"]
    with pytest.raises(ConfigError, match="'any' or 'first', got 'last'"):
        swap_word_negatives(captions, words, 1, g, which="last")


def test_exchange_word_negatives():
    import re

    from visionzoo.data.image_text import exchange_word_negatives, swap_word_negatives

    words = ["circle", "square", "star"]
    captions = [
        "a large red circle left of a small blue star, and a small green circle",
        "a large red circle above a small blue circle, and a small green square",
        "a large red circle left of a small blue circle",
        "a starry sky",
    ]
    neg = exchange_word_negatives(captions, words, torch.Generator().manual_seed(0))
    assert len(neg) == 4
    # The first two different class words trade places; everything else is kept.
    assert neg[0] == "a large red star left of a small blue circle, and a small green circle"
    # The repeated "circle" is skipped: the second *different* word is "square".
    assert neg[1] == "a large red square above a small blue circle, and a small green circle"
    bag = [sorted(re.findall(r"\w+", c)) for c in (neg[0], captions[0])]
    assert bag[0] == bag[1]
    # Without two different class words: the first-word swap of swap_word_negatives, drawn
    # from the same generator state.
    fallback = swap_word_negatives(
        captions, words, 1, torch.Generator().manual_seed(0), which="first"
    )
    assert neg[2:] == fallback[2:]
    assert neg[2] != captions[2] and neg[3] != captions[3]
    # also=colours: the colours trade places too, so the second shape becomes the subject.
    phrases = exchange_word_negatives(
        captions[:3], words, torch.Generator().manual_seed(0), also=["red", "blue", "green"]
    )
    assert phrases[0] == "a large blue star left of a small red circle, and a small green circle"
    assert phrases[1] == "a large blue square above a small red circle, and a small green circle"
    assert phrases[2] == neg[2]  # one class: the first-name swap, colours untouched
    with pytest.raises(ConfigError, match="at least two class names"):
        exchange_word_negatives(captions, ["circle"], torch.Generator())


def test_shapes_subject_captions():
    from visionzoo.data.shapes import caption_subject

    assert caption_subject("a large red circle left of a small blue square") == (
        "a large red circle"
    )
    assert caption_subject("a large red circle") == "a large red circle"
    assert caption_subject("an empty background") == "an empty background"
    full = build_image_text_data(DataConfig(name="shapes", train_size=40, val_size=4))
    half = build_image_text_data(
        DataConfig(name="shapes", train_size=40, val_size=4, subject_captions=0.5)
    )
    always = build_image_text_data(
        DataConfig(name="shapes", train_size=40, val_size=4, subject_captions=1.0)
    )
    captions = [full.train[i][1] for i in range(40)]
    mixed = [half.train[i][1] for i in range(40)]
    assert [always.train[i][1] for i in range(40)] == [caption_subject(c) for c in captions]
    # Each caption is either the whole one or its subject, and both kinds occur.
    assert all(m in (c, caption_subject(c)) for m, c in zip(mixed, captions, strict=True))
    assert 0 < sum(m != c for m, c in zip(mixed, captions, strict=True)) < 40
    # Validation keeps the whole caption.
    assert always.val[0][1] == full.val[0][1]
    for bad in (1.5, -0.1, "half", True):
        with pytest.raises(ConfigError, match="data.subject_captions must be a number in"):
            build_image_text_data(DataConfig(name="shapes", subject_captions=bad))


def _moved(cx: float, cy: float, k: int, size: int) -> tuple[float, float]:
    """Where symmetry k of flip_image takes the point (cx, cy) of a size x size image."""
    if k & 4:
        cx, cy = cy, cx
    if k & 1:
        cx = size - cx
    if k & 2:
        cy = size - cy
    return cx, cy


@pytest.mark.parametrize("k", range(8))
def test_flip_caption_follows_the_flipped_geometry(k):
    """The rewritten relation is the one the generator's own rule gives for the moved shapes."""
    from visionzoo.data.image_text import flip_caption
    from visionzoo.data.shapes import Shape, _relation

    rng = np.random.default_rng(k)
    for _ in range(200):
        ax, ay, bx, by = rng.uniform(0, 48, 4)
        a = Shape(cls=0, colour="red", cx=ax, cy=ay, radius=3.0, angle=0.0, size="large")
        b = Shape(cls=1, colour="blue", cx=bx, cy=by, radius=2.0, angle=0.0, size="small")
        caption = f"a large red circle {_relation(a, b)} a small blue square, and a small red star"
        (ax2, ay2), (bx2, by2) = _moved(ax, ay, k, 48), _moved(bx, by, k, 48)
        a2, b2 = replace(a, cx=ax2, cy=ay2), replace(b, cx=bx2, cy=by2)
        expected = (
            f"a large red circle {_relation(a2, b2)} a small blue square, and a small red star"
        )
        assert flip_caption(caption, k) == expected
    # Words that are not relations stay; a caption without one is unchanged.
    assert flip_caption("a large red circle", k) == "a large red circle"


@pytest.mark.parametrize("k", range(8))
def test_flip_image_moves_pixels_as_the_caption_says(k):
    from visionzoo.data.image_text import flip_image

    image = torch.zeros(3, 8, 8)
    image[:, 1, 6] = 1.0  # pixel centre (x, y) = (6.5, 1.5)
    out = flip_image(image, k)
    x, y = _moved(6.5, 1.5, k, 8)
    assert out.shape == (3, 8, 8) and out.is_contiguous()
    assert out[0, int(y), int(x)] == 1.0 and out.sum() == 3.0
    assert torch.equal(flip_image(image, 0), image)


def test_shapes_caption_flips_draw_every_symmetry_and_keep_pairs_true():
    from visionzoo.data.image_text import ShapesCaptions, flip_caption, flip_image

    plain = ShapesCaptions("train", 4, train=True, image_size=32)
    flipped = ShapesCaptions("train", 4, train=True, image_size=32, caption_flips="d4")
    torch.manual_seed(0)
    image, caption = plain[1]
    assert " of " in caption or "above" in caption or "below" in caption
    variants = {k: (flip_image(image, k), flip_caption(caption, k)) for k in range(8)}
    seen = set()
    for _ in range(64):
        img, cap = flipped[1]
        match = [k for k, (i, c) in variants.items() if torch.equal(img, i) and cap == c]
        assert match, "a flipped image came with a caption that does not describe it"
        seen.update(match)
    assert len(seen) == 8
    # Validation is never flipped; h draws only the left-right mirror.
    val = ShapesCaptions("val", 2, train=False, image_size=32, caption_flips="d4")
    assert torch.equal(val[0][0], ShapesCaptions("val", 2, train=False, image_size=32)[0][0])
    mirror = ShapesCaptions("train", 4, train=True, image_size=32, caption_flips="h")
    for _ in range(16):
        img, cap = mirror[1]
        assert (torch.equal(img, variants[0][0]) and cap == variants[0][1]) or (
            torch.equal(img, variants[1][0]) and cap == variants[1][1]
        )


def test_caption_flips_config():
    from visionzoo.data.image_text import ShapesCaptions

    bundle = build_image_text_data(
        DataConfig(name="shapes", image_size=32, train_size=4, val_size=2, caption_flips="hv")
    )
    assert bundle.train.symmetries == 4
    with pytest.raises(ConfigError, match="data.caption_flips must be one of none, h, hv, d4"):
        build_image_text_data(
            DataConfig(name="shapes", image_size=32, train_size=4, val_size=2, caption_flips="x")
        )
    with pytest.raises(ConfigError, match="d4 transposes images, which needs a square"):
        ShapesCaptions("train", 2, train=True, image_size=(32, 48), caption_flips="d4")
    with pytest.raises(ConfigError, match="data.name=captions captions are free text"):
        build_image_text_data(DataConfig(name="captions", root="x", caption_flips="h"))
