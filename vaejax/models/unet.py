"""Denoisers of diffusion models: a small U-Net for images and an MLP for points."""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vaejax.models.layers import Conv2D


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
    """Transformer-style sinusoidal embedding of timesteps t [B] -> [B, dim] (dim even):
    sin(t w_k) then cos(t w_k), w_k = max_period^(-k / (dim / 2)), k = 0..dim/2 - 1."""
    half = dim // 2
    frequencies = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    angles = t.astype(jnp.float32)[:, None] * frequencies[None]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


class ResidualBlock(nn.Module):
    """GroupNorm, swish, 3x3 conv; GroupNorm scaled and shifted by the time embedding, swish, 3x3
    conv; plus the input (through a 1x1 conv where the channels change).

    The embedding enters after the normalization, as (1 + scale) and shift per channel (Nichol &
    Dhariwal's scale-shift norm): added before it, as in Ho et al., a per-channel constant is
    what GroupNorm removes when a group holds one channel (8 channels, 8 groups).
    """

    channels: int
    groups: int = 8

    @nn.compact
    def __call__(self, x: jax.Array, embedding: jax.Array) -> jax.Array:
        h = Conv2D(self.channels)(nn.swish(nn.GroupNorm(self.groups)(x)))
        scale, shift = jnp.split(
            nn.Dense(2 * self.channels)(nn.swish(embedding))[:, None, None], 2, axis=-1
        )
        h = nn.GroupNorm(self.groups)(h) * (1.0 + scale) + shift
        h = Conv2D(self.channels)(nn.swish(h))
        if x.shape[-1] != self.channels:
            x = Conv2D(self.channels, 1)(x)
        return x + h


class UNet(nn.Module):
    """A small DDPM U-Net: (x_t [B, H, W, C], t [B] int) -> predicted noise [B, H, W, C].

    A 3x3 conv to ``channels``; per level a residual block (``channels * multiplier``) whose
    output is kept for the skip, then a stride-2 3x3 conv down (not after the last level); two
    residual blocks in the middle; going up, nearest-neighbour 2x upsampling + 3x3 conv to the
    level's channels, the level's skip concatenated, a residual block; GroupNorm, swish and a
    zero-initialized 3x3 conv out. The timestep enters every residual block through a
    sinusoidal embedding and a 2-layer MLP (width 4 x ``channels``). H and W must halve evenly
    ``len(multipliers) - 1`` times (28 -> 14 -> 7 for three levels). No attention layers (Ho et
    al. have one at 16x16): at 7x7 it buys little on MNIST and costs CPU time. The convolutions
    are :class:`vaejax.models.layers.Conv2D` (flax's, with a backward pass that stays fast
    inside the epoch loop on CPU).
    """

    channels: int = 32
    multipliers: Sequence[int] = (1, 2, 2)
    groups: int = 8

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
        embedding = timestep_embedding(t, self.channels)
        embedding = nn.Dense(4 * self.channels)(nn.swish(nn.Dense(4 * self.channels)(embedding)))
        h = Conv2D(self.channels)(x)
        skips = []
        for level, multiplier in enumerate(self.multipliers):
            h = ResidualBlock(self.channels * multiplier, self.groups)(h, embedding)
            skips.append(h)
            if level < len(self.multipliers) - 1:
                h = Conv2D(h.shape[-1], stride=2)(h)
        h = ResidualBlock(h.shape[-1], self.groups)(h, embedding)
        h = ResidualBlock(h.shape[-1], self.groups)(h, embedding)
        for level, multiplier in reversed(list(enumerate(self.multipliers))):
            skip = skips[level]
            if h.shape[1:3] != skip.shape[1:3]:
                h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
                h = Conv2D(self.channels * multiplier)(h)
            h = ResidualBlock(self.channels * multiplier, self.groups)(
                jnp.concatenate([h, skip], axis=-1), embedding
            )
        h = nn.swish(nn.GroupNorm(self.groups)(h))
        return Conv2D(x.shape[-1], kernel_init=nn.initializers.zeros)(h)


class MLPDenoiser(nn.Module):
    """(x_t [B, D], t [B]) -> predicted noise [B, D]: swish MLP on [x_t, embedding(t)]."""

    hidden: int = 128
    layers: int = 3
    embedding_dim: int = 32

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
        h = jnp.concatenate([x, timestep_embedding(t, self.embedding_dim)], axis=-1)
        for _ in range(self.layers):
            h = nn.swish(nn.Dense(self.hidden)(h))
        return nn.Dense(x.shape[-1])(h)
