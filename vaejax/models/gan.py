"""GANs of the lectures: the DCGAN with its binary cross-entropy game, and WGAN-GP.

Models (flax.linen, NHWC, images in [-1, 1], the generator's tanh range):

- :class:`Generator`: z [B, noise_dim] -> image [B, S, S, C]. The pytorch/examples ``dcgan``
  layout (Radford et al. 2016): a projection of z to a ``start`` x ``start`` map (a 1x1
  transposed convolution's worth of weights, written as a dense layer), then 4x4 stride-2
  transposed convolutions halving the channels, batch normalization and ReLU between, tanh at
  the end. S = 64 gives pytorch/examples' generator exactly (widths 8w, 4w, 2w, w);
  S = 28 starts at 7x7 (widths 2w, w); any S = 4 * 2^k starts at 4x4.
- :class:`Discriminator`: the mirror: 4x4 stride-2 convolutions doubling the channels,
  LeakyReLU 0.2, batch normalization after all but the first, then one logit per image from
  the ``start`` x ``start`` map. With ``normalization="none"`` it is the WGAN-GP critic: the
  gradient penalty is per image, and batch normalization would mix the images of a batch
  (Gulrajani et al. 2017, sec. 4).

Batch normalization here uses the statistics of the batch at hand, in training and sampling
alike, as pytorch/examples' dcgan does (it never switches to running averages), so the models
hold no state besides their parameters. Draw samples in batches of 64 or more.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from vaejax.models.layers import Conv2D, ConvTranspose2D

NORMALIZATIONS = ("batch", "none")


dcgan_init = nn.initializers.normal(0.02)  # Radford et al.: weights ~ N(0, 0.02)


def layout(image_size: int) -> tuple[int, int]:
    """(start size, number of stride-2 layers) with start * 2^layers = ``image_size``, start 7
    or 4: 28 -> (7, 2), 32 -> (4, 3), 64 -> (4, 4). Raises ValueError for other sizes."""
    for first in (7, 4):
        layers = int(round(math.log2(image_size / first))) if image_size >= 2 * first else 0
        if layers >= 1 and first * 2**layers == image_size:
            return first, layers
    raise ValueError(
        f"image size {image_size} is not 7 * 2^k (14, 28, 56, ...) or 4 * 2^k (8, 16, 32, 64, ...)"
    )


class BatchNorm(nn.Module):
    """Normalizes each channel by the batch's mean and (biased) variance over [B, H, W], then
    scales and shifts: PyTorch's ``BatchNorm2d`` in training mode. scale ~ N(1, 0.02) and shift
    0 at initialization, as pytorch/examples' dcgan sets them."""

    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x):
        channels = x.shape[-1]
        scale = self.param("scale", lambda k, s: 1.0 + 0.02 * jax.random.normal(k, s), (channels,))
        bias = self.param("bias", nn.initializers.zeros, (channels,))
        mean = jnp.mean(x, axis=(0, 1, 2))
        variance = jnp.mean(jnp.square(x - mean), axis=(0, 1, 2))
        return (x - mean) * jax.lax.rsqrt(variance + self.epsilon) * scale + bias


class Generator(nn.Module):
    """z [B, noise_dim] -> images [B, S, S, channels] in [-1, 1] (see the module docstring)."""

    image_size: int = 28
    channels: int = 1
    width: int = 64  # pytorch/examples' ngf
    conv_implementation: str = "auto"

    @nn.compact
    def __call__(self, z):
        start, layers = layout(self.image_size)
        widths = [self.width * 2 ** (layers - 1 - i) for i in range(layers)]
        h = nn.Dense(start * start * widths[0], use_bias=False, kernel_init=dcgan_init)(z)
        h = nn.relu(BatchNorm()(h.reshape(z.shape[0], start, start, widths[0])))
        for width in widths[1:]:
            h = ConvTranspose2D(
                width,
                4,
                stride=2,
                use_bias=False,
                kernel_init=dcgan_init,
                implementation=self.conv_implementation,
            )(h)
            h = nn.relu(BatchNorm()(h))
        h = ConvTranspose2D(
            self.channels,
            4,
            stride=2,
            use_bias=False,
            kernel_init=dcgan_init,
            implementation=self.conv_implementation,
        )(h)
        return jnp.tanh(h)


class Discriminator(nn.Module):
    """images [B, S, S, C] in [-1, 1] -> logits [B] (see the module docstring)."""

    image_size: int = 28
    width: int = 64  # pytorch/examples' ndf
    normalization: str = "batch"  # "none" for the WGAN-GP critic
    conv_implementation: str = "auto"

    @nn.compact
    def __call__(self, x):
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}")
        _, layers = layout(self.image_size)
        h = x
        for i in range(layers):
            h = Conv2D(
                self.width * 2**i,
                4,
                stride=2,
                use_bias=False,
                kernel_init=dcgan_init,
                implementation=self.conv_implementation,
            )(h)
            if i > 0 and self.normalization == "batch":
                h = BatchNorm()(h)
            h = nn.leaky_relu(h, 0.2)
        h = h.reshape(h.shape[0], -1)
        return nn.Dense(1, use_bias=False, kernel_init=dcgan_init)(h)[:, 0]


class GAN(NamedTuple):
    """A generator and a discriminator (critic) module, and the size of z."""

    generator: Generator
    discriminator: Discriminator
    noise_dim: int = 100

    def init(self, key: jax.Array) -> dict[str, Any]:
        """{'generator': params, 'discriminator': params}, compiled (run op by op, the
        initializers' random draws compile one by one: about 20 s on a 2-core CPU)."""

        def init_both(key):
            g_key, d_key = jax.random.split(key)
            z = jnp.zeros((2, self.noise_dim))
            g_params = self.generator.init(g_key, z)["params"]
            images = self.generator.apply({"params": g_params}, z)
            return {
                "generator": g_params,
                "discriminator": self.discriminator.init(d_key, images)["params"],
            }

        return jax.jit(init_both)(key)

    def generate(self, params, z: jax.Array) -> jax.Array:
        """z [B, noise_dim] -> images [B, S, S, C] in [-1, 1]."""
        return self.generator.apply({"params": params}, z)

    def critic(self, params, images: jax.Array) -> jax.Array:
        """images [B, S, S, C] in [-1, 1] -> logits (scores) [B]."""
        return self.discriminator.apply({"params": params}, images)

    def sample(self, params, key: jax.Array, n: int) -> jax.Array:
        """n images [n, S, S, C] in [0, 1] from z ~ N(0, I) drawn with ``key``."""
        z = jax.random.normal(key, (n, self.noise_dim))
        return (self.generate(params, z) + 1.0) / 2.0


def dcgan(
    image_size: int = 28,
    channels: int = 1,
    width: int = 64,
    noise_dim: int = 100,
    critic: bool = False,
) -> GAN:
    """The DCGAN pair; ``critic=True`` drops the discriminator's batch normalization (WGAN-GP)."""
    return GAN(
        Generator(image_size, channels, width),
        Discriminator(image_size, width, "none" if critic else "batch"),
        noise_dim,
    )
