"""Objectives of :class:`vaejax.models.hierarchical.TwoLayerVAE` (Burda et al.'s two stochastic
layers), in nats per image.

For a draw (z1, z2) ~ q(z1 | x) q(z2 | z1) the log importance weight is

    log w = log p(x | z1) + log p(z1 | z2) + log p(z2) - log q(z1 | x) - log q(z2 | z1).

Its expectation is the ELBO; -log w of one draw is an unbiased estimate of the negative ELBO,
split into the reconstruction -log p(x | z1) and the KL estimate log q - log p. The
importance-weighted bound over K draws is :func:`vaejax.objectives.likelihood.vae_bound`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vaejax.objectives import vae as objectives


def two_layer_terms(
    model, params, x: jax.Array, key: jax.Array, num_samples: int, likelihood: str, variance: float
) -> dict[str, jax.Array]:
    """``log_px`` = log p(x | z1) and ``kl`` = log q(z1, z2 | x) - log p(z1, z2) of
    ``num_samples`` draws per image of ``x`` [B, H, W, C], each [S, B] in nats."""
    d = model.apply({"params": params}, x, key, num_samples, method="draws")
    images = jnp.broadcast_to(x, (num_samples, *x.shape)).reshape(d["logits"].shape)
    log_px = objectives.log_likelihood(images, d["logits"], likelihood, variance)
    log_prior = objectives.diagonal_normal_log_density(
        d["z1"], *d["p_z1"]
    ) + objectives.standard_normal_log_density(d["z2"])
    log_posterior = objectives.diagonal_normal_log_density(
        d["z1"], *d["q_z1"]
    ) + objectives.diagonal_normal_log_density(d["z2"], *d["q_z2"])
    shape = (num_samples, x.shape[0])
    return {"log_px": log_px.reshape(shape), "kl": (log_posterior - log_prior).reshape(shape)}


def two_layer_elbo_per_example(
    model, *, likelihood: str = "bernoulli", beta: float = 1.0, variance: float = 1.0
) -> objectives.PerExampleFn:
    """``f(params, x, key) -> terms [B]`` from one draw per image: ``reconstruction``,
    ``kl`` (its one-draw estimate), ``negative_elbo`` = their sum and ``loss`` =
    reconstruction + ``beta`` kl; the same keys as :func:`vaejax.objectives.negative_elbo`."""

    def per_example(params, x, key):
        terms = two_layer_terms(model, params, x, key, 1, likelihood, variance)
        reconstruction, kl = -terms["log_px"][0], terms["kl"][0]
        return {
            "loss": reconstruction + beta * kl,
            "reconstruction": reconstruction,
            "kl": kl,
            "negative_elbo": reconstruction + kl,
        }

    return per_example
