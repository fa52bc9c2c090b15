"""Log-likelihood estimates of VAEs as the papers report them: the importance-weighted bound.

For an image x, an encoder q(z | x) = N(mean, diag(exp(log_var))) and K draws z_k ~ q,

    L_K(x) = log (1/K) sum_k p(x | z_k) p(z_k) / q(z_k | x)        (nats)

is a lower bound on log p(x); L_1 is the ELBO, E[L_K] does not decrease with K and tends to
log p(x) as K grows (Burda, Grosse and Salakhutdinov, ICLR 2016). Papers report -L_5000 on the
test set as the "test NLL". :func:`importance_weighted_bound` streams the K draws in chunks, so
K = 5000 needs the memory of one chunk; the same function is the IWAE training objective with a
small K (:func:`iwae_per_example`).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from vaejax.objectives import vae as objectives
from vaejax.objectives.hierarchical import two_layer_terms


def streamed_bound(
    key: jax.Array,
    log_weights_fn: Callable[[jax.Array, int], jax.Array],
    batch: int,
    num_samples: int,
    chunk_size: int = 100,
    dtype=jnp.float32,
) -> dict[str, jax.Array]:
    """L_K and the K-sample ELBO estimate per image, each [B] in nats, from
    ``log_weights_fn(key, S) -> [S, B]`` log importance weights of S fresh draws per image.

    Draws ``num_samples`` per image in chunks of ``chunk_size`` (one ``lax.scan`` step each;
    chunk c uses ``fold_in(key, c)``), accumulating logsumexp as it goes, so memory is that of
    one chunk. Returns ``{"iwae": L_K, "elbo": mean of the K log weights}`` (the latter an
    unbiased, low-variance estimate of the ELBO).
    """
    if num_samples < 1 or chunk_size < 1:
        raise ValueError(
            f"num_samples and chunk_size must be positive, got {num_samples}, {chunk_size}"
        )
    chunk_size = min(chunk_size, num_samples)
    num_chunks = -(-num_samples // chunk_size)

    def chunk(carry, c):
        total, weight_sum = carry
        log_w = log_weights_fn(jax.random.fold_in(key, c), chunk_size)  # [chunk, B]
        valid = (c * chunk_size + jnp.arange(chunk_size) < num_samples)[:, None]
        total = jnp.logaddexp(total, jax.nn.logsumexp(jnp.where(valid, log_w, -jnp.inf), axis=0))
        return (total, weight_sum + jnp.sum(jnp.where(valid, log_w, 0.0), axis=0)), None

    start = (jnp.full((batch,), -jnp.inf, dtype), jnp.zeros((batch,), dtype))
    (total, weight_sum), _ = jax.lax.scan(chunk, start, jnp.arange(num_chunks))
    return {"iwae": total - np.log(num_samples), "elbo": weight_sum / num_samples}


def importance_weighted_bound(
    key: jax.Array,
    log_likelihood_fn: Callable[[jax.Array], jax.Array],
    mean: jax.Array,
    log_var: jax.Array,
    num_samples: int,
    chunk_size: int = 100,
) -> dict[str, jax.Array]:
    """:func:`streamed_bound` of a one-layer Gaussian encoder q(z | x) = N(mean, diag(exp(
    log_var))) ([B, D] each) under a N(0, I) prior: ``log_likelihood_fn(z [S, B, D]) ->
    log p(x | z) [S, B]`` (the decoder and the images inside; run the decoder on all S * B codes
    as one batch)."""
    std = jnp.exp(0.5 * log_var)

    def log_weights(chunk_key, samples):
        z = mean + std * jax.random.normal(chunk_key, (samples, *mean.shape), mean.dtype)
        return (
            log_likelihood_fn(z)
            + objectives.standard_normal_log_density(z)
            - objectives.diagonal_normal_log_density(z, mean, log_var)
        )

    return streamed_bound(key, log_weights, mean.shape[0], num_samples, chunk_size, mean.dtype)


def vae_bound(
    model,
    params,
    x: jax.Array,
    key: jax.Array,
    num_samples: int,
    chunk_size: int = 100,
    likelihood: str = "bernoulli",
    variance: float = 1.0,
) -> dict[str, jax.Array]:
    """:func:`streamed_bound` of a VAE on images x [B, ...]: a :class:`vaejax.models.VAE`, or a
    model with stochastic layers of its own (a ``draws`` method, as
    :class:`vaejax.models.hierarchical.TwoLayerVAE`)."""
    if hasattr(model, "draws"):

        def log_weights(chunk_key, samples):
            terms = two_layer_terms(model, params, x, chunk_key, samples, likelihood, variance)
            return terms["log_px"] - terms["kl"]

        return streamed_bound(key, log_weights, x.shape[0], num_samples, chunk_size, x.dtype)
    mean, log_var = model.apply({"params": params}, x, method="encode")

    def log_likelihood_fn(z):  # [S, B, D] -> [S, B]: one decoder call on S * B codes
        logits = model.apply({"params": params}, z.reshape(-1, z.shape[-1]), method="decode")
        images = jnp.broadcast_to(x, (z.shape[0], *x.shape)).reshape(logits.shape)
        return objectives.log_likelihood(images, logits, likelihood, variance).reshape(z.shape[:2])

    return importance_weighted_bound(key, log_likelihood_fn, mean, log_var, num_samples, chunk_size)


def iwae_per_example(
    model, num_samples: int, likelihood: str = "bernoulli", variance: float = 1.0
) -> objectives.PerExampleFn:
    """The IWAE objective (Burda et al.) as a per-example function for the shared step
    machinery: ``loss`` = -L_K [B] with K = ``num_samples`` reparameterized draws (one chunk),
    plus ``negative_iwae_bound`` (= loss) and ``negative_elbo`` (from the same draws)."""

    def per_example(params, x, key):
        bound = vae_bound(model, params, x, key, num_samples, num_samples, likelihood, variance)
        return {
            "loss": -bound["iwae"],
            "negative_iwae_bound": -bound["iwae"],
            "negative_elbo": -bound["elbo"],
        }

    return per_example
