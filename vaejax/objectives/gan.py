"""Losses of the GANs, on logits ``l`` (D(x) = sigmoid(l)).



- discriminator: -log D(x) - log(1 - D(G(z))) = softplus(-l_real) + softplus(l_fake);
- generator, non-saturating: -log D(G(z)) = softplus(-l_fake);
- generator, minimax (Goodfellow et al.'s original): log(1 - D(G(z))) = -softplus(l_fake). Its
  gradient d/dl = -sigmoid(l) vanishes where the discriminator rejects the fakes (l << 0),
  early in training; the non-saturating one's, -(1 - sigmoid(l)), is then about -1;
- WGAN-GP critic: mean f(G(z)) - mean f(x) + lambda * mean (||grad f(x_hat)||_2 - 1)^2 over
  x_hat on random segments between real and fake images; generator: -mean f(G(z)).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

LOSSES = ("bce", "wgan-gp")


GENERATOR_LOSSES = ("non-saturating", "minimax")


def discriminator_bce(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """-mean log D(x) - mean log(1 - D(G(z))), in nats; logits [B]."""
    return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))


def generator_non_saturating(fake_logits: jax.Array) -> jax.Array:
    """-mean log D(G(z)), in nats."""
    return jnp.mean(jax.nn.softplus(-fake_logits))


def generator_minimax(fake_logits: jax.Array) -> jax.Array:
    """mean log(1 - D(G(z))), the generator's side of the original minimax game (nats)."""
    return -jnp.mean(jax.nn.softplus(fake_logits))


GENERATOR_LOSS_FNS = {"non-saturating": generator_non_saturating, "minimax": generator_minimax}


def interpolates(key: jax.Array, real: jax.Array, fake: jax.Array) -> jax.Array:
    """x_hat = u * real + (1 - u) * fake with one u ~ U[0, 1] per image; images [B, ...]."""
    u = jax.random.uniform(key, (real.shape[0],) + (1,) * (real.ndim - 1), real.dtype)
    return u * real + (1.0 - u) * fake


def gradient_penalty(critic, x_hat: jax.Array) -> tuple[jax.Array, jax.Array]:
    """mean over images of (||d critic(x_hat_i) / d x_hat_i||_2 - 1)^2, and the norms [B].

    ``critic`` maps images [B, ...] -> scores [B] with no interaction between the images of a
    batch (no batch normalization), so the gradient of the summed scores holds every image's own
    gradient. The norm carries a 1e-12 inside the square root: finite where the gradient is 0.
    """
    grads = jax.grad(lambda x: jnp.sum(critic(x)))(x_hat)
    norms = jnp.sqrt(jnp.sum(jnp.square(grads.reshape(grads.shape[0], -1)), axis=1) + 1e-12)
    return jnp.mean(jnp.square(norms - 1.0)), norms
