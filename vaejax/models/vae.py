"""Encoders, decoders, variational and plain autoencoders as flax.linen modules.

Conventions, for every model here:

- Images are NHWC float32 [B, H, W, C] with values in [0, 1].
- Decoders return *logits* [B, H, W, C] — unconstrained outputs whose sigmoid is the pixel mean
  (Bernoulli probabilities, or the Gaussian mean; see :mod:`vaejax.objectives`).
- Gaussian encoders return ``(mean, log_var)``, each [B, latent_dim].
- All randomness comes in as an explicit ``jax.random`` key argument.

Two families:

- ``mlp``: the VAE of pytorch/examples ``vae/main.py`` (784-400-20 with a 20-400-784 decoder),
  the lectures' dense autoencoder (784-256-128-latent, mirrored) and the conditional VAE, with
  PyTorch's default ``nn.Linear`` initialization.
- ``conv``: the convolutional VAE and AE of Foster, *Generative Deep Learning* 2nd ed., ch. 3,
  on 32x32x1 images, with Keras' default initialization (Glorot-uniform kernels, zero biases);
  the same layers take any square image whose side is a multiple of 8, grey or colour.
"""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vaejax.models.layers import Conv2D, ConvTranspose2D


def torch_linear_init(fan_in: int) -> tuple[Callable, Callable]:
    """PyTorch's default ``nn.Linear`` init: weights and biases ~ U(-1/sqrt(fan_in),
    1/sqrt(fan_in)).

    (``kaiming_uniform_(a=sqrt(5))`` on the weight reduces to that bound.)
    """
    bound = 1.0 / np.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init, init


class TorchDense(nn.Module):
    """``nn.Dense`` initialized like PyTorch's ``nn.Linear`` (the fan-in is read from the input)."""

    features: int

    @nn.compact
    def __call__(self, x):
        kernel_init, bias_init = torch_linear_init(x.shape[-1])
        return nn.Dense(self.features, kernel_init=kernel_init, bias_init=bias_init)(x)


ACTIVATIONS = {"relu": nn.relu, "tanh": jnp.tanh}


class MLPEncoder(nn.Module):
    """[B, ...] (flattened) -> (mean, log_var), each [B, latent_dim]; with ``variational`` False
    (a plain autoencoder) -> z [B, latent_dim]. ReLU hidden layers, linear heads."""

    latent_dim: int = 20
    hidden_dims: Sequence[int] = (400,)
    variational: bool = True
    activation: str = "relu"  # or "tanh" (Burda et al.)

    @nn.compact
    def __call__(self, x):
        h = x.reshape(x.shape[0], -1)
        for width in self.hidden_dims:
            h = ACTIVATIONS[self.activation](TorchDense(width)(h))
        if not self.variational:
            return TorchDense(self.latent_dim, name="z")(h)
        return (
            TorchDense(self.latent_dim, name="mean")(h),
            TorchDense(self.latent_dim, name="log_var")(h),
        )


class MLPDecoder(nn.Module):
    """[B, latent_dim] -> logits [B, *image_shape]: ReLU hidden layers, then a linear output."""

    image_shape: Sequence[int] = (28, 28, 1)
    hidden_dims: Sequence[int] = (400,)
    activation: str = "relu"

    @nn.compact
    def __call__(self, z):
        h = z
        for width in self.hidden_dims:
            h = ACTIVATIONS[self.activation](TorchDense(width)(h))
        logits = TorchDense(int(np.prod(self.image_shape)))(h)
        return logits.reshape(z.shape[0], *self.image_shape)


# Keras' defaults, which Foster's models use.
_keras_kernel_init = nn.initializers.glorot_uniform()


_keras_bias_init = nn.initializers.zeros


class ConvEncoder(nn.Module):
    """Foster's encoder: Conv 32/64/128 (3x3, stride 2, 'same', ReLU), flatten, dense head(s).

    [B, 32, 32, 1] -> z [B, latent_dim] when ``variational`` is False (the AE), else
    (z_mean, z_log_var). Parameter counts with latent_dim 2: 96,770 (AE), 100,868 (VAE).
    """

    latent_dim: int = 2
    channels: Sequence[int] = (32, 64, 128)
    variational: bool = True
    conv_implementation: str = "auto"  # see vaejax.models.layers

    @nn.compact
    def __call__(self, x):
        h = x
        for width in self.channels:
            h = nn.relu(
                Conv2D(
                    width,
                    3,
                    stride=2,
                    implementation=self.conv_implementation,
                    kernel_init=_keras_kernel_init,
                    bias_init=_keras_bias_init,
                )(h)
            )
        h = h.reshape(h.shape[0], -1)
        dense = lambda name: nn.Dense(
            self.latent_dim, kernel_init=_keras_kernel_init, bias_init=_keras_bias_init, name=name
        )
        if not self.variational:
            return dense("z")(h)
        return dense("z_mean")(h), dense("z_log_var")(h)


class ConvDecoder(nn.Module):
    """Foster's decoder: Dense to 4x4x128, ConvTranspose 128/64/32 (3x3, stride 2, ReLU), Conv 1
    (3x3).

    [B, latent_dim] -> logits [B, 32, 32, 1] (Foster applies a sigmoid; here it lives in the loss).
    Parameter count with latent_dim 2: 246,273.
    """

    channels: Sequence[int] = (128, 64, 32)
    image_channels: int = 1
    start_size: int = 4
    conv_implementation: str = "auto"  # see vaejax.models.layers

    @nn.compact
    def __call__(self, z):
        init = dict(kernel_init=_keras_kernel_init, bias_init=_keras_bias_init)
        conv = dict(implementation=self.conv_implementation, **init)
        h = nn.Dense(self.start_size * self.start_size * self.channels[0], **init)(z)
        h = h.reshape(z.shape[0], self.start_size, self.start_size, self.channels[0])
        for width in self.channels:
            h = nn.relu(ConvTranspose2D(width, 3, stride=2, **conv)(h))
        return Conv2D(self.image_channels, 3, **conv)(h)


class VAE(nn.Module):
    """A Gaussian-latent VAE: ``encoder(x) -> (mean, log_var)``, ``decoder(z) -> logits``.

    ``apply(params, x, key)`` returns ``(logits, mean, log_var)`` with one reparameterized sample
    z ~ q(z | x) drawn with ``key``.
    """

    encoder: nn.Module
    decoder: nn.Module

    def __call__(self, x, key):
        mean, log_var = self.encoder(x)
        return self.decoder(reparameterize(key, mean, log_var)), mean, log_var

    def encode(self, x):
        return self.encoder(x)

    def decode(self, z):
        return self.decoder(z)


class Autoencoder(nn.Module):
    """A deterministic autoencoder: ``apply(params, x)`` returns ``(logits, z)``."""

    encoder: nn.Module
    decoder: nn.Module

    def __call__(self, x):
        z = self.encoder(x)
        return self.decoder(z), z

    def encode(self, x):
        return self.encoder(x)

    def decode(self, z):
        return self.decoder(z)


class ConditionalVAE(nn.Module):
    """A VAE conditioned on a class label (Sohn et al. 2015; the lectures' CVAE).

    The encoder sees [flattened x, one_hot(label)], the decoder [z, one_hot(label)], so z is left
    to hold what the label does not say (style). ``apply(params, x, labels, key)`` returns
    ``(logits, mean, log_var)``; ``decode(z, labels)`` draws a chosen class from the prior.
    Labels are int [B] in 0..num_classes-1.
    """

    encoder: nn.Module
    decoder: nn.Module
    num_classes: int = 10

    def _with_label(self, features, labels):
        return jnp.concatenate(
            [features.reshape(features.shape[0], -1), jax.nn.one_hot(labels, self.num_classes)],
            axis=-1,
        )

    def __call__(self, x, labels, key):
        mean, log_var = self.encode(x, labels)
        return self.decode(reparameterize(key, mean, log_var), labels), mean, log_var

    def encode(self, x, labels):
        return self.encoder(self._with_label(x, labels))

    def decode(self, z, labels):
        return self.decoder(self._with_label(z, labels))


def mlp_vae(
    latent_dim: int = 20,
    hidden_dims: Sequence[int] = (400,),
    image_shape: Sequence[int] = (28, 28, 1),
    activation: str = "relu",
) -> VAE:
    """pytorch/examples ``vae/main.py``: 784-400-(20, 20) encoder, 20-400-784 decoder (652,824
    params)."""
    return VAE(
        MLPEncoder(latent_dim, tuple(hidden_dims), activation=activation),
        MLPDecoder(tuple(image_shape), tuple(reversed(hidden_dims)), activation),
    )


def burda_vae(latent_dim: int = 50, image_shape: Sequence[int] = (28, 28, 1)) -> VAE:
    """Burda et al.'s model with one stochastic layer: 784-200-200 (tanh)-(50, 50) encoder,
    50-200-200 (tanh)-784 Bernoulli decoder (arXiv:1509.00519, section 5)."""
    return mlp_vae(latent_dim, (200, 200), image_shape, activation="tanh")


def mlp_autoencoder(
    latent_dim: int = 2,
    hidden_dims: Sequence[int] = (256, 128),
    image_shape: Sequence[int] = (28, 28, 1),
) -> Autoencoder:
    """The lectures' dense autoencoder: 784-256-128-latent encoder, mirrored decoder, ReLU."""
    return Autoencoder(
        MLPEncoder(latent_dim, tuple(hidden_dims), variational=False),
        MLPDecoder(tuple(image_shape), tuple(reversed(hidden_dims))),
    )


def mlp_cvae(
    latent_dim: int = 2,
    hidden_dims: Sequence[int] = (512,),
    num_classes: int = 10,
    image_shape: Sequence[int] = (28, 28, 1),
) -> ConditionalVAE:
    """A conditional MLP VAE: (784 + classes)-hidden-latent encoder, (latent + classes)-hidden-784
    decoder."""
    return ConditionalVAE(
        MLPEncoder(latent_dim, tuple(hidden_dims)),
        MLPDecoder(tuple(image_shape), tuple(reversed(hidden_dims))),
        num_classes,
    )


def conv_decoder(
    channels: Sequence[int], image_shape: Sequence[int], conv_implementation: str = "auto"
) -> ConvDecoder:
    """The decoder mirroring a :class:`ConvEncoder` of ``channels`` on ``image_shape``
    (S, S, C): it starts at S / 2^len(channels) pixels. Raises ValueError for a size the
    stride-2 layers cannot reach."""
    size, width, image_channels = image_shape
    start = size >> len(channels)
    if size != width or start < 1 or start << len(channels) != size:
        raise ValueError(
            f"the conv model takes square images whose side is a multiple of "
            f"{2 ** len(channels)}, not {size}x{width}"
        )
    return ConvDecoder(
        tuple(reversed(channels)), image_channels, start, conv_implementation=conv_implementation
    )


def conv_vae(
    latent_dim: int = 2,
    channels: Sequence[int] = (32, 64, 128),
    conv_implementation: str = "auto",
    image_shape: Sequence[int] = (32, 32, 1),
) -> VAE:
    """Foster's convolutional VAE, on [B, 32, 32, 1] images by default (any ``image_shape``
    (S, S, C) with S a multiple of 8: the decoder starts at S / 8)."""
    return VAE(
        ConvEncoder(latent_dim, tuple(channels), True, conv_implementation),
        conv_decoder(channels, image_shape, conv_implementation),
    )


def conv_autoencoder(
    latent_dim: int = 2,
    channels: Sequence[int] = (32, 64, 128),
    conv_implementation: str = "auto",
    image_shape: Sequence[int] = (32, 32, 1),
) -> Autoencoder:
    """Foster's convolutional autoencoder, on [B, 32, 32, 1] images by default (see
    :func:`conv_vae` for other shapes)."""
    return Autoencoder(
        ConvEncoder(latent_dim, tuple(channels), False, conv_implementation),
        conv_decoder(channels, image_shape, conv_implementation),
    )


def count_params(params) -> int:
    """Number of scalars in a parameter pytree."""
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(params))


def reparameterize(key: jax.Array, mean: jax.Array, log_var: jax.Array) -> jax.Array:
    """A sample z = mean + exp(log_var / 2) * eps, eps ~ N(0, I) drawn with ``key``.

    Differentiable in ``mean`` and ``log_var`` (the reparameterization trick).
    """
    eps = jax.random.normal(key, mean.shape, mean.dtype)
    return mean + jnp.exp(0.5 * log_var) * eps
