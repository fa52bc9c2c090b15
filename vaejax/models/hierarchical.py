"""Burda et al.'s VAE with two stochastic layers (Importance Weighted Autoencoders, ICLR 2016,
arXiv:1509.00519, section 5): 784-200-200-[100]-100-100-[50], tanh hidden layers, diagonal
Gaussian stochastic layers, a Bernoulli decoder.

- inference: q(z1 | x) through 200-200, q(z2 | z1) through 100-100;
- generation: p(z2) = N(0, I), p(z1 | z2) through 100-100, p(x | z1) through 200-200.

Every layer is a :class:`~vaejax.models.vae.TorchDense`. It is trained and evaluated on the
importance-weighted bound (:mod:`vaejax.objectives.likelihood`); the ELBO is its K = 1 case,
estimated from one draw per image (there is no closed-form KL between the layers).

Shapes: images [B, H, W, C] in [0, 1]; z1 [..., 100], z2 [..., latent_dim].
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vaejax.models.vae import MLPDecoder, MLPEncoder


class TwoLayerVAE(nn.Module):
    """Two stochastic layers z1 (``middle_dim``) and z2 (``latent_dim``).

    ``draws(x, key, S)`` draws S (z1, z2) ~ q per image and returns them with the parameters of
    every distribution at them; the log importance weights are the objective's
    (:func:`vaejax.objectives.likelihood.two_layer_log_weights`).

    For pictures it reads like a one-layer VAE whose code is z2: ``encode(x)`` -> (mean,
    log_var) of q(z2 | z1) at z1 = the mean of q(z1 | x); ``decode(z2)`` -> the logits of
    p(x | z1) at z1 = the mean of p(z1 | z2).
    """

    image_shape: Sequence[int] = (28, 28, 1)
    latent_dim: int = 50
    middle_dim: int = 100
    outer_hidden: Sequence[int] = (200, 200)
    inner_hidden: Sequence[int] = (100, 100)

    def setup(self):
        self.q_z1 = MLPEncoder(self.middle_dim, tuple(self.outer_hidden), activation="tanh")
        self.q_z2 = MLPEncoder(self.latent_dim, tuple(self.inner_hidden), activation="tanh")
        self.p_z1 = MLPEncoder(self.middle_dim, tuple(self.inner_hidden), activation="tanh")
        self.p_x = MLPDecoder(tuple(self.image_shape), tuple(self.outer_hidden), "tanh")

    def draws(self, x, key, num_samples: int):
        """``num_samples`` draws (z1, z2) ~ q(. | x) per image, rows ordered (sample, image):
        ``z1`` [S * B, middle_dim] with ``q_z1`` = (mean, log_var) of q(z1 | x) at each row,
        ``z2`` [S * B, latent_dim] with ``q_z2`` of q(z2 | z1), ``p_z1`` = (mean, log_var) of
        p(z1 | z2), and ``logits`` [S * B, H, W, C] of p(x | z1)."""
        batch = x.shape[0]
        k1, k2 = jax.random.split(key)
        mean1, log_var1 = self.q_z1(x)  # [B, D1]: once per image
        eps1 = jax.random.normal(k1, (num_samples, batch, self.middle_dim), mean1.dtype)
        z1 = (mean1 + jnp.exp(0.5 * log_var1) * eps1).reshape(num_samples * batch, -1)
        mean2, log_var2 = self.q_z2(z1)
        z2 = mean2 + jnp.exp(0.5 * log_var2) * jax.random.normal(k2, mean2.shape, mean2.dtype)
        rows = (num_samples, 1)
        return {
            "z1": z1,
            "q_z1": (jnp.tile(mean1, rows), jnp.tile(log_var1, rows)),
            "z2": z2,
            "q_z2": (mean2, log_var2),
            "p_z1": self.p_z1(z2),
            "logits": self.p_x(z1),
        }

    def __call__(self, x, key):
        """One draw per image (:meth:`draws` with S = 1)."""
        return self.draws(x, key, 1)

    def encode(self, x):
        mean1, _ = self.q_z1(x)
        return self.q_z2(mean1)

    def decode(self, z2):
        prior_mean1, _ = self.p_z1(z2)
        return self.p_x(prior_mean1)


def burda_two_layer_vae(
    latent_dim: int = 50, image_shape: Sequence[int] = (28, 28, 1)
) -> TwoLayerVAE:
    """784-200-200-[100]-100-100-[latent_dim], 521,084 parameters at latent_dim 50 on 28x28."""
    return TwoLayerVAE(tuple(image_shape), latent_dim)
