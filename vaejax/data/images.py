"""uint8 images on the host: :func:`image_array` (whatever a record or an example holds ->
[H, W, C]) and :func:`fit_to_size` (-> [N, S, S, C], PIL's bilinear filter)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import PIL.Image


def image_array(image: Any) -> np.ndarray:
    """An image as a uint8 array [H, W, C] from what a record or an example holds: an array
    (``tfds.data_source`` decoded it), encoded bytes (read with ``SkipDecoding``, or an example's
    JPEG), a file object or a PIL image (an example not yet written)."""
    if isinstance(image, np.ndarray):
        array = image
    else:
        if isinstance(image, (bytes, bytearray, memoryview)):
            image = io.BytesIO(image)
        if isinstance(image, PIL.Image.Image):
            array = np.asarray(image)
        else:
            with PIL.Image.open(image) as opened:
                array = np.asarray(opened if opened.mode in ("L", "RGB") else opened.convert("RGB"))
    array = np.asarray(array, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


def fit_to_size(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 images [N, H, W, C] -> [N, size, size, C]: unchanged at that size, else each
    centre-cropped to a square and resized with PIL's antialiased bilinear filter (once, on the
    host). (28-pixel images meant for 32-pixel models are zero-padded on the device instead, see
    :func:`vaejax.data.preprocess.make_batch_preprocessor`.)"""
    n, height, width, channels = images.shape
    if height == width == size:
        return images
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    out = np.empty((n, size, size, channels), np.uint8)
    for i, image in enumerate(images):
        square = image[top : top + side, left : left + side]
        picture = PIL.Image.fromarray(square[..., 0] if channels == 1 else square)
        resized = np.asarray(picture.resize((size, size), PIL.Image.BILINEAR))
        out[i] = resized.reshape(size, size, channels)
    return out
