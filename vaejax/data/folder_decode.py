"""One image file decoded for a folder dataset (:mod:`vaejax.data.folder_scan`): its pixels made
8-bit and fitted to ``S x S``, or the reason it is skipped.

**Images.** Whatever PIL opens is accepted: PNG, JPEG, GIF, BMP, TIFF, WebP and the rest of
PIL's formats; of an animation or multi-page file, the first frame. The EXIF orientation is
applied. Files PIL does not recognise are skipped as ``not images``, unless their extension is an
image format's (``.png``, ``.jpg``, ...: a damaged image); those and the files PIL recognises but
cannot decode (truncated, damaged, too large for PIL) are skipped as ``unreadable``. Pixels
become 8-bit:

- grey images (PIL modes ``1``, ``L``, ``LA``, ``I;16``, ``I``, ``F``) stay grey: 1-bit as 0/255,
  16-bit (``I;16``, and ``I`` taken as 16-bit, clipped to 0..65535) as ``round(v / 257)``, float
  (``F``) rounded and clipped to 0..255;
- transparency (alpha channel or a transparent colour) is composited on **white**, as an image
  is shown on a page: ``round((c * a + 255 * (255 - a)) / 255)``;
- palette (``P``), CMYK, YCbCr and other colour modes become RGB by PIL's conversion.

Each image is then fitted to ``S x S`` (``S`` = ``image_size``, at least 8): an image already
``S x S`` is kept bit for bit; otherwise one whose shorter side is not ``S`` is resized (PIL's
antialiased Lanczos filter) so that its shorter side is ``S`` and its longer side
``round(long * S / short)`` (halves up), then the centred ``S x S`` square is cut out (left and
top offsets ``(length - S) // 2``).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import PIL.Image
import PIL.ImageOps

# A change to these rules changes the arrays: raise vaejax.data.folder_scan.RULES with it, so that
# every folder is prepared again.
BACKGROUND = 255  # what transparent pixels become: white
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
ALPHA_MODES = frozenset({"LA", "PA", "RGBA", "RGBa"})
# why a file is skipped, as the summary says it
NOT_IMAGE, UNREADABLE = "not images", "unreadable"


class Unusable(Exception):
    """A file that gives no image: ``kind`` (:data:`NOT_IMAGE` or :data:`UNREADABLE`) says why."""

    def __init__(self, kind: str, reason: str = ""):
        super().__init__(reason)
        self.kind = kind


class DecodedImage(NamedTuple):
    """An image file's pixels, fitted, with what was done to them."""

    pixels: np.ndarray  # uint8 [S, S, 1] (grey) or [S, S, 3]
    mode: str  # the file's PIL mode
    resized: bool
    cropped: bool


def decode(path: Path, size: int) -> DecodedImage:
    """The image at ``path`` as 8-bit pixels fitted to ``size`` x ``size``; raises
    :class:`Unusable` for a file that is no image or cannot be decoded."""
    try:
        with PIL.Image.open(path) as image:
            image.load()  # fails on a truncated file
            mode = image.mode
            picture = _to_8bit(_upright(image))
    except PIL.UnidentifiedImageError:
        if path.suffix.lower() in PIL.Image.registered_extensions():  # e.g. an empty photo.jpg
            raise Unusable(UNREADABLE, "not recognised by PIL") from None
        raise Unusable(NOT_IMAGE) from None
    except Exception as e:  # noqa: BLE001 - PIL raises many kinds for damaged files
        raise Unusable(UNREADABLE, f"{type(e).__name__}: {e}") from None
    picture, resized, cropped = _fit(picture, size)
    pixels = np.asarray(picture, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    return DecodedImage(pixels, mode, resized, cropped)


def _upright(image: PIL.Image.Image) -> PIL.Image.Image:
    """``image`` turned as its EXIF orientation says (unchanged when it says nothing)."""
    try:
        return PIL.ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - a damaged EXIF block: the pixels are still good
        return image


def _to_8bit(image: PIL.Image.Image) -> PIL.Image.Image:
    """``image`` as 8-bit grey (``L``) when its mode is grey, else as ``RGB``; see the module
    docstring for the rules."""
    mode = image.mode
    if mode in SIXTEEN_BIT_MODES:
        values = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
        return PIL.Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8))
    if mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64))
        return PIL.Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))
    if mode in ALPHA_MODES or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.uint32)
        alpha = rgba[..., 3:]
        flat = (rgba[..., :3] * alpha + BACKGROUND * (255 - alpha) + 127) // 255
        flat = flat.astype(np.uint8)
        return PIL.Image.fromarray(flat[..., 0] if mode in GREY_MODES else flat)
    if mode in ("L", "RGB"):
        return image
    return image.convert("L" if mode in GREY_MODES else "RGB")


def _fit(picture: PIL.Image.Image, size: int) -> tuple[PIL.Image.Image, bool, bool]:
    """(``picture`` fitted to ``size`` x ``size``, whether it was resized, whether only
    cropped)."""
    width, height = picture.size
    if width == height == size:
        return picture, False, False
    resized = min(width, height) != size
    if resized:
        short, long = min(width, height), max(width, height)
        scaled = (long * size + short // 2) // short
        width, height = (size, scaled) if width <= height else (scaled, size)
        picture = picture.resize((width, height), PIL.Image.Resampling.LANCZOS)
    left, top = (width - size) // 2, (height - size) // 2
    return picture.crop((left, top, left + size, top + size)), resized, not resized
