"""Robust image loading: any file Pillow can decode becomes an 8-bit RGB image, or a DataError.

People bring photos, scans, screenshots and exports from other tools, so a loader sees every
Pillow mode. :func:`load_image` decodes the whole file up front (``Image.load``) so that a
truncated or corrupt file fails here, with its path, and not later inside a transform. The
conversions to RGB, mode by mode:

=============================  ===============================================================
mode                           conversion
=============================  ===============================================================
``RGB``                        unchanged
``1``, ``L``                   grey replicated to three channels (``1`` -> 0 or 255)
``LA``, ``La``                 alpha dropped, grey replicated
``RGBA``, ``RGBa``, ``RGBX``   alpha (or padding) dropped: the colour channels as stored
``P``, ``PA``                  palette looked up (palette transparency dropped like alpha)
``CMYK``, ``YCbCr``, ``HSV``   Pillow's conversion to RGB
``I;16``, ``I;16B/L/N``        16-bit grey scaled by 255/65535 (= 1/257) and rounded, so
                               65535 -> 255 and 257*k -> k; clipping would turn most of a
                               16-bit image white
``I``                          32-bit integer grey, read as a 16-bit range (older Pillow opens
                               16-bit PNGs as ``I``): clipped to 0..65535, then as ``I;16``
``F``                          float grey: values in 0..1 when the maximum is <= 1 (scaled by
                               255), otherwise read as 0..255 and clipped; NaN -> 0
=============================  ===============================================================

Alpha is dropped, not composited on black: that is what torchvision's and timm's loaders do
(``convert("RGB")``), so a model trained elsewhere sees the same pixels here. EXIF
orientation is applied (a phone photo is used the way it is displayed); a corrupt EXIF block is
ignored rather than failing an otherwise good image. Multi-frame files (GIF, TIFF) give their
first frame. Pillow's 16-bit RGB PNG decoder already reduces to 8 bits (high byte).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "load_image", "verify_image", "to_rgb"]

# Suffixes (lower case) that the folder formats treat as images.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
_PILLOW_TO_RGB = ("1", "L", "LA", "La", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "HSV")


def _grey_to_rgb(grey: np.ndarray) -> Image.Image:
    """uint8 [H, W] -> RGB image with the grey value in every channel."""
    return Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2), mode="RGB")


def _sixteen_bit_to_uint8(values: np.ndarray) -> np.ndarray:
    """Values in 0..65535 -> round(v * 255 / 65535) in integer arithmetic (no float error)."""
    v = np.clip(values.astype(np.int64), 0, 65535)
    return ((v * 255 + 32767) // 65535).astype(np.uint8)


def to_rgb(img: Image.Image, source: str | os.PathLike[str] | None = None) -> Image.Image:
    """Convert a decoded Pillow image of any mode to 8-bit RGB (table in the module docstring).

    ``source`` names the file in the DataError raised for a mode with no RGB conversion.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in _PILLOW_TO_RGB:
        return img.convert("RGB")
    if mode == "P":
        # A palette with a transparent index must go through RGBA, or Pillow warns that
        # "transparency expressed in bytes" is being ignored; the colours are the same.
        if "transparency" in img.info:
            return img.convert("RGBA").convert("RGB")
        return img.convert("RGB")
    if mode == "PA":
        return img.convert("RGBA").convert("RGB")
    if mode in _SIXTEEN_BIT or mode == "I":
        return _grey_to_rgb(_sixteen_bit_to_uint8(np.asarray(img)))
    if mode == "F":
        values = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0)
        scale = 255.0 if values.size and values.max() <= 1.0 else 1.0
        return _grey_to_rgb(np.clip(np.rint(values * scale), 0, 255).astype(np.uint8))
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as e:
        where = f"{source}: " if source is not None else ""
        raise DataError(f"{where}image mode {mode!r} cannot be converted to RGB ({e})") from e


def _open(path: str | os.PathLike[str], draft: bool) -> Image.Image:
    p = Path(path)
    try:
        # Pillow reads from our file object, so the decoded image outlives the `with` (the
        # pixels are in memory after load()); Image.open(path) would tie it to the file.
        with open(p, "rb") as f:
            img = Image.open(f)
            if draft and img.format == "JPEG":
                # 1/8-scale DCT decode: still entropy-decodes every block, so truncation and
                # corrupt scans are found, at a fraction of the cost of a full decode.
                img.draft("RGB", (1, 1))
            img.load()
    except FileNotFoundError:
        raise DataError(f"{p}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{p}: is a directory, not an image file") from None
    except PermissionError:
        raise DataError(f"{p}: permission denied") from None
    except Image.UnidentifiedImageError:
        raise DataError(
            f"{p}: not an image Pillow can read (unknown format or corrupt header)"
        ) from None
    except Image.DecompressionBombError as e:
        raise DataError(f"{p}: refused as a decompression bomb ({e})") from None
    except Exception as e:  # Pillow plugins raise many types on bad data
        raise DataError(f"{p}: corrupt or truncated image ({type(e).__name__}: {e})") from e
    # A broken EXIF block should not lose an otherwise good image.
    with contextlib.suppress(Exception):
        ImageOps.exif_transpose(img, in_place=True)
    return img


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open ``path``, decode it fully and return an 8-bit RGB Pillow image.

    Raises:
        DataError: naming ``path`` and the reason: missing file, not an image, corrupt or
            truncated data, or a colour mode with no RGB conversion.
    """
    return to_rgb(_open(path, draft=False), source=path)


def verify_image(path: str | os.PathLike[str]) -> str | None:
    """Return None when ``path`` decodes to an RGB image, else the reason it does not.

    Cheaper than :func:`load_image`: JPEGs are decoded at 1/8 scale (which still reads every
    byte of the compressed data), other formats fully. ``Image.verify`` alone would miss
    truncated JPEGs, a common kind of bad file in downloaded or scraped data sets.
    """
    try:
        to_rgb(_open(path, draft=True), source=path)
    except DataError as e:
        return str(e)
    return None
