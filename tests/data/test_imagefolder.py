"""Image loading (every Pillow mode -> RGB, corrupt files) and the ImageFolder format."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from visionzoo.data.formats.imagefolder import ImageFolderDataset, list_images
from visionzoo.data.images import load_image, to_rgb, verify_image
from visionzoo.errors import DataError

# --------------------------------------------------------------------------------------------
# helpers


def _save(img: Image.Image, path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


def _rgb(value: tuple[int, int, int] = (10, 20, 30), size: int = 6) -> Image.Image:
    return Image.new("RGB", (size, size), value)


def _jpeg_bytes(size: int = 64) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
        buf, format="JPEG", quality=90
    )
    return buf.getvalue()


def _tree(root: Path, spec: dict[str, dict[str, int]]) -> Path:
    """spec: split -> class -> number of small PNGs (pixel value encodes the class)."""
    for split, classes in spec.items():
        for k, (name, n) in enumerate(sorted(classes.items())):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                _save(_rgb((k * 40, i, 0)), d / f"{i:03d}.png")
    return root


# --------------------------------------------------------------------------------------------
# load_image: modes


def test_rgb_png_roundtrip(tmp_path):
    img = load_image(_save(_rgb((1, 2, 3)), tmp_path / "a.png"))
    assert img.mode == "RGB"
    assert img.getpixel((0, 0)) == (1, 2, 3)


def test_grayscale_is_replicated(tmp_path):
    img = load_image(_save(Image.new("L", (4, 4), 77), tmp_path / "g.png"))
    assert img.mode == "RGB" and img.getpixel((1, 1)) == (77, 77, 77)


def test_one_bit(tmp_path):
    im = Image.new("1", (4, 4), 1)
    assert load_image(_save(im, tmp_path / "b.png")).getpixel((0, 0)) == (255, 255, 255)


def test_rgba_drops_alpha(tmp_path):
    img = load_image(_save(Image.new("RGBA", (4, 4), (200, 100, 50, 0)), tmp_path / "a.png"))
    # Alpha dropped, not composited: a fully transparent pixel keeps its stored colour.
    assert img.mode == "RGB" and img.getpixel((0, 0)) == (200, 100, 50)


def test_la_drops_alpha(tmp_path):
    img = load_image(_save(Image.new("LA", (4, 4), (90, 10)), tmp_path / "la.png"))
    assert img.getpixel((0, 0)) == (90, 90, 90)


def test_palette_colours_preserved(tmp_path):
    im = Image.new("P", (2, 1))
    im.putpalette([255, 0, 0, 0, 128, 255] + [0] * 762)
    im.putpixel((1, 0), 1)
    img = load_image(_save(im, tmp_path / "p.png"))
    assert img.mode == "RGB"
    assert img.getpixel((0, 0)) == (255, 0, 0)
    assert img.getpixel((1, 0)) == (0, 128, 255)


def test_palette_with_transparency_and_gif(tmp_path):
    im = Image.new("P", (2, 1))
    im.putpalette([255, 0, 0, 0, 128, 255] + [0] * 762)
    im.putpixel((1, 0), 1)
    im.info["transparency"] = 0
    for name in ("t.png", "t.gif"):
        img = load_image(_save(im, tmp_path / name, transparency=0))
        assert img.mode == "RGB"
        assert img.getpixel((1, 0)) == (0, 128, 255)
        assert img.getpixel((0, 0)) == (255, 0, 0)  # transparency dropped like alpha


def test_sixteen_bit_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    path = _save(Image.fromarray(values), tmp_path / "deep.png")
    assert Image.open(path).mode.startswith("I")  # really stored as 16-bit
    img = load_image(path)
    assert img.mode == "RGB"
    got = np.asarray(img)
    assert got[0, :, 0].tolist() == [0, 1, 128, 255]
    assert (got[..., 0] == got[..., 1]).all() and (got[..., 1] == got[..., 2]).all()


def test_int32_and_float_modes():
    i32 = Image.fromarray(np.array([[0, 65535, 70000, -5]], dtype=np.int32), mode="I")
    assert np.asarray(to_rgb(i32))[0, :, 0].tolist() == [0, 255, 255, 0]
    f01 = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), mode="F")
    assert np.asarray(to_rgb(f01))[0, :, 0].tolist() == [0, 128, 255]
    f255 = Image.fromarray(np.array([[3.0, 300.0, np.nan]], dtype=np.float32), mode="F")
    assert np.asarray(to_rgb(f255))[0, :, 0].tolist() == [3, 255, 0]


def test_cmyk_jpeg(tmp_path):
    img = load_image(_save(Image.new("CMYK", (8, 8), (0, 0, 0, 0)), tmp_path / "c.jpg"))
    assert img.mode == "RGB"
    assert all(abs(v - 255) <= 2 for v in img.getpixel((4, 4)))  # no ink = white


def test_exif_orientation_applied(tmp_path):
    im = Image.new("RGB", (4, 2), (0, 0, 0))
    im.putpixel((0, 0), (255, 255, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = _save(im, tmp_path / "rot.png", exif=exif)
    img = load_image(path)
    assert img.size == (2, 4)
    assert img.getpixel((1, 0)) == (255, 255, 255)


# --------------------------------------------------------------------------------------------
# load_image: bad files


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.png: file not found"):
        load_image(tmp_path / "nope.png")


def test_directory_is_not_an_image(tmp_path):
    (tmp_path / "d.jpg").mkdir()
    with pytest.raises(DataError, match=r"d\.jpg: is a directory"):
        load_image(tmp_path / "d.jpg")


def test_random_bytes_with_png_name(tmp_path):
    path = tmp_path / "fake.png"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    with pytest.raises(DataError, match=r"fake\.png: not an image"):
        load_image(path)
    assert "fake.png" in verify_image(path)


def test_truncated_jpeg(tmp_path):
    data = _jpeg_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.jpg: corrupt or truncated"):
        load_image(path)
    # The cheap 1/8-scale check still reads the whole scan, so it catches the truncation.
    assert "truncated" in verify_image(path)
    good = tmp_path / "ok.jpg"
    good.write_bytes(data)
    assert verify_image(good) is None


def test_truncated_png(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
        buf, format="PNG"
    )
    path = tmp_path / "cut.png"
    path.write_bytes(buf.getvalue()[:200])
    with pytest.raises(DataError, match=r"cut\.png: corrupt or truncated"):
        load_image(path)


# --------------------------------------------------------------------------------------------
# ImageFolder


def test_classes_labels_and_layout(tmp_path):
    root = _tree(tmp_path, {"train": {"dog": 2, "cat": 3}, "val": {"cat": 1, "dog": 1}})
    # Extras the format must handle: nested folders, upper-case suffixes, non-images, hidden.
    _save(_rgb((40, 9, 0)), root / "train" / "dog" / "nested" / "deep.JPG")
    (root / "train" / "dog" / "notes.txt").write_text("not an image")
    (root / "train" / "dog" / "._002.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (root / "train" / ".cache").mkdir()
    ds = ImageFolderDataset(root, "train")
    assert ds.classes == ["cat", "dog"]
    assert ds.class_to_idx == {"cat": 0, "dog": 1}
    assert len(ds) == 6
    assert ds.targets == [0, 0, 0, 1, 1, 1]
    assert [Path(p).name for p, _ in ds.samples[3:]] == ["000.png", "001.png", "deep.JPG"]
    img, label = ds[4]
    assert isinstance(img, Image.Image) and img.getpixel((0, 0)) == (40, 1, 0) and label == 1
    val = ImageFolderDataset(root, "val", transform=lambda im: torch.tensor(im.getpixel((0, 0))))
    assert val.classes == ["cat", "dog"] and val.targets == [0, 1]
    assert val[1][0].tolist() == [40, 0, 0]


def test_list_images_case_insensitive(tmp_path):
    for name in ("a.JPEG", "b.Png", "c.bmp", "d.GIF", "e.webp", "f.TIF", "g.tiff", "h.jpg"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "i.svg").write_bytes(b"")
    assert [Path(p).name for p in list_images(tmp_path)] == [
        "a.JPEG",
        "b.Png",
        "c.bmp",
        "d.GIF",
        "e.webp",
        "f.TIF",
        "g.tiff",
        "h.jpg",
    ]


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match=r"nowhere: image folder root does not exist"):
        ImageFolderDataset(tmp_path / "nowhere")


def test_root_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataError, match=r"f: image folder root is not a directory"):
        ImageFolderDataset(tmp_path / "f")


@pytest.mark.parametrize("missing", ["train", "val"])
def test_missing_split_folder(tmp_path, missing):
    present = "val" if missing == "train" else "train"
    root = _tree(tmp_path, {present: {"a": 1}})
    with pytest.raises(DataError, match=rf"{missing}: no {missing}/ folder"):
        ImageFolderDataset(root, missing)


def test_no_class_folders_hints_at_loose_images(tmp_path):
    _save(_rgb(), tmp_path / "train" / "x.png")
    (tmp_path / "val").mkdir()
    with pytest.raises(DataError, match=r"train: no class folders.*found 1 images.*x\.png"):
        ImageFolderDataset(tmp_path)


def test_empty_class_folder(tmp_path):
    root = _tree(tmp_path, {"train": {"a": 1, "b": 0}, "val": {"a": 1, "b": 1}})
    (root / "train" / "b" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"train/b: class folder has no images"):
        ImageFolderDataset(root, "train")


def test_val_classes_must_match_train(tmp_path):
    root = _tree(tmp_path, {"train": {"a": 1, "b": 1, "c": 1}, "val": {"a": 1, "d": 1}})
    with pytest.raises(
        DataError, match=r"val: missing class folders b, c; class folders not in train/: d"
    ):
        ImageFolderDataset(root, "val")


def test_bad_file_raises_naming_it_by_default(tmp_path):
    root = _tree(tmp_path, {"train": {"a": 2}, "val": {"a": 1}})
    bad = root / "train" / "a" / "zz_bad.jpg"
    data = _jpeg_bytes()
    bad.write_bytes(data[: len(data) // 3])
    ds = ImageFolderDataset(root, "train")
    assert len(ds) == 3 and ds.skipped == 0
    ds[0]  # good files still load
    with pytest.raises(DataError, match=r"zz_bad\.jpg: corrupt or truncated"):
        ds[2]


def test_skip_bad_drops_and_counts(tmp_path, caplog):
    root = _tree(tmp_path, {"train": {"a": 2, "b": 1}, "val": {"a": 1, "b": 1}})
    data = _jpeg_bytes()
    (root / "train" / "a" / "cut.jpg").write_bytes(data[:300])
    (root / "train" / "b" / "noise.png").write_bytes(b"\x89PNG not really")
    (root / "train" / "b" / "fine.jpg").write_bytes(data)
    with caplog.at_level(logging.WARNING):
        ds = ImageFolderDataset(root, "train", skip_bad=True)
    assert ds.skipped == 2
    assert sorted(Path(p).name for p, _ in ds.skipped_files) == ["cut.jpg", "noise.png"]
    assert [Path(p).name for p, _ in ds.samples] == ["000.png", "001.png", "000.png", "fine.jpg"]
    assert ds.targets == [0, 0, 1, 1]
    assert all(isinstance(ds[i][0], Image.Image) for i in range(len(ds)))
    assert "skipped 2 unreadable" in caplog.text


def test_skip_bad_class_with_only_bad_files(tmp_path):
    root = _tree(tmp_path, {"train": {"a": 1}, "val": {"a": 1}})
    (root / "train" / "b").mkdir()
    (root / "train" / "b" / "junk.png").write_bytes(b"junk")
    with pytest.raises(DataError, match=r"every image of class folder\(s\) b is unreadable"):
        ImageFolderDataset(root, "train", skip_bad=True)
