"""Images on the device: uint8 -> float batches (scaling, binarization, padding, shifts,
corruption).

A **preprocessor** is a function ``preprocess(raw_batch, key) -> batch`` that the training step
(:mod:`vaejax.training.step`) applies on the device to each gathered batch, with its own key.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from vaejax.data.idx import DataError, ImageSplit

Preprocess = Callable[[Any, jax.Array], Any]
BINARIZATIONS = ("none", "dynamic", "static", "dequantize")


def fixed_binarization(images: np.ndarray, seed: int) -> np.ndarray:
    """One Bernoulli draw per pixel with P(1) = intensity / 255, reproducible from ``seed``.

    Returns uint8 images with values in {0, 255}, so that they flow through the same
    uint8 -> [0, 1] path as grey images. Uses numpy's PCG64, the same on every platform.
    """
    rng = np.random.Generator(np.random.PCG64(seed))
    threshold = rng.random(images.shape, dtype=np.float32)
    return np.where(threshold < images.astype(np.float32) / 255.0, 255, 0).astype(np.uint8)


# Seeds of the fixed draws: the test set is binarized once with the same draw for every run
# and both binarization protocols; static training data gets its own draw.
TEST_BINARIZATION_SEED = 0


STATIC_TRAIN_BINARIZATION_SEED = 1


def apply_binarization_protocol(split: ImageSplit, binarization: str, train: bool) -> ImageSplit:
    """The host-side part of a binarization protocol.

    ``none``: unchanged. ``static``: both splits binarized once with fixed seeds. ``dynamic``:
    the test split binarized once with a fixed seed; the training split stays grey and is drawn
    afresh on the device each time an image is visited (once an epoch). ``dequantize``:
    unchanged (the noise is added on the device, :func:`dequantize`).
    """
    if binarization not in BINARIZATIONS:
        raise DataError(f"unknown binarization {binarization!r}: choose {', '.join(BINARIZATIONS)}")
    if binarization in ("none", "dequantize") or (binarization == "dynamic" and train):
        return split
    seed = STATIC_TRAIN_BINARIZATION_SEED if train else TEST_BINARIZATION_SEED
    return ImageSplit(fixed_binarization(split.images, seed), split.labels)


def to_unit_interval(images: jax.Array) -> jax.Array:
    """uint8 [..., H, W, C] -> float32 in [0, 1]."""
    return images.astype(jnp.float32) / 255.0


def binarize(key: jax.Array, images: jax.Array) -> jax.Array:
    """A Bernoulli draw per pixel with P(1) = the pixel's value in [0, 1]; float32 in {0, 1}."""
    return jax.random.bernoulli(key, images).astype(jnp.float32)


def dequantize(key: jax.Array, images: jax.Array) -> jax.Array:
    """uint8 images -> (x + u) / 256 with u ~ U[0, 1) per value: float32 in [0, 1), whose density
    on the 256 bins' cubes equals the probability of the discrete image (uniform dequantization,
    Theis et al. 2016, arXiv:1511.01844)."""
    return (images.astype(jnp.float32) + jax.random.uniform(key, images.shape)) / 256.0


def pad_images(images: jax.Array, size: int) -> jax.Array:
    """Zero-pads [B, H, W, C] images evenly to [B, size, size, C] (28 -> 32 adds 2 each side)."""
    height, width = images.shape[-3], images.shape[-2]
    if size < height or size < width or (size - height) % 2 or (size - width) % 2:
        raise ValueError(f"cannot pad {height}x{width} images evenly to {size}x{size}")
    pad_h, pad_w = (size - height) // 2, (size - width) // 2
    return jnp.pad(images, [(0, 0)] * (images.ndim - 3) + [(pad_h, pad_h), (pad_w, pad_w), (0, 0)])


def make_batch_preprocessor(
    image_size: int = 28, dynamic_binarization: bool = False, dequantized: bool = False
) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """Returns ``preprocess(images_uint8, key) -> float32 [B, image_size, image_size, C]``.

    Runs on the device inside the compiled step: scale to [0, 1], optionally binarize with
    ``key`` or, with ``dequantized``, add uniform noise (:func:`dequantize`; not without a key:
    pictures), zero-pad to ``image_size``.
    """

    def preprocess(images: jax.Array, key: jax.Array) -> jax.Array:
        if dequantized and key is not None:
            x = dequantize(key, images)
        else:
            x = to_unit_interval(images)
        if dynamic_binarization:
            x = binarize(key, x)
        if image_size != x.shape[-2]:
            x = pad_images(x, image_size)
        return x

    return preprocess


def to_tanh_range(preprocess: Preprocess) -> Preprocess:
    """Lifts an images -> [0, 1] preprocessor to the generator's range [-1, 1]."""
    return lambda batch, key: preprocess(batch, key) * 2.0 - 1.0


def random_shift(key: jax.Array, images: jax.Array, max_shift: int) -> jax.Array:
    """Each image [B, H, W, C] moved by its own whole-pixel offset in [-max_shift, max_shift]
    along each axis, the uncovered border filled with 0 (background)."""
    if max_shift == 0:
        return images
    height, width = images.shape[1:3]
    padded = jnp.pad(images, [(0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)])
    offsets = jax.random.randint(key, (images.shape[0], 2), 0, 2 * max_shift + 1)
    crop = lambda image, offset: jax.lax.dynamic_slice(
        image, (offset[0], offset[1], 0), (height, width, image.shape[-1])
    )
    return jax.vmap(crop)(padded, offsets)


def make_classifier_preprocessor(max_shift: int = 0):
    """``(images uint8, labels) -> (images in [0, 1], labels)``, randomly shifted in training."""

    def preprocess(batch, key):
        images, labels = batch
        images = to_unit_interval(images)
        return (images if key is None else random_shift(key, images, max_shift)), labels

    return preprocess


NOISES = ("gaussian", "salt_pepper")


def gaussian_noise(key: jax.Array, x: jax.Array, std: float) -> jax.Array:
    """x + std * N(0, 1) per pixel, clipped to [0, 1]; same shape as x."""
    return jnp.clip(x + std * jax.random.normal(key, x.shape, x.dtype), 0.0, 1.0)


def salt_and_pepper(key: jax.Array, x: jax.Array, rate: float) -> jax.Array:
    """Each pixel with probability ``rate`` set to 0 or 1 (a fair coin), else kept."""
    hit_key, value_key = jax.random.split(key)
    hit = jax.random.bernoulli(hit_key, rate, x.shape)
    value = jax.random.bernoulli(value_key, 0.5, x.shape).astype(x.dtype)
    return jnp.where(hit, value, x)


def corrupt(noise: str, key: jax.Array, x: jax.Array, level: float) -> jax.Array:
    """``noise`` ("gaussian": std ``level``; "salt_pepper": rate ``level``) applied to x."""
    if noise == "gaussian":
        return gaussian_noise(key, x, level)
    if noise == "salt_pepper":
        return salt_and_pepper(key, x, level)
    raise ValueError(f"unknown noise {noise!r}: choose {', '.join(NOISES)}")


def make_denoising_preprocessor(image_size: int, noise: str, level: float) -> Callable:
    """``preprocess(uint8 images, key) -> (corrupted, clean)``, each [B, S, S, C] in [0, 1]."""
    plain = make_batch_preprocessor(image_size)

    def preprocess(images, key):
        clean = plain(images, None)
        return corrupt(noise, key, clean, level), clean

    return preprocess


def with_labels(preprocess: Preprocess) -> Preprocess:
    """Lifts an image preprocessor to ``(images, labels)`` batches (labels pass through)."""

    def preprocess_pair(batch, key):
        images, labels = batch
        return preprocess(images, key), labels

    return preprocess_pair
