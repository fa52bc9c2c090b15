"""Objectives of (variational) autoencoders, in nats per image.

Per-example functions return arrays [B]; the losses the optimizer sees are their batch means
(:func:`batch_mean`). Sums run over every pixel of an image, so a number is "nats per image"
(for MNIST 28x28 = 784 pixels), the unit papers and pytorch/examples report.

Pixel likelihoods p(x | z), both parameterized by the decoder's logits:

- ``bernoulli``: P(x = 1) = sigmoid(logits); log p = x * logits - softplus(logits). For x in
  [0, 1] that is minus the binary cross-entropy (pytorch/examples uses it on grey pixels too).
- ``gaussian``: N(x; sigmoid(logits), variance) per pixel with a fixed variance; with
  variance 1/2 minus the log-likelihood is the squared error plus a constant.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

LIKELIHOODS = ("bernoulli", "gaussian")


PerExampleFn = Callable[..., dict[str, jax.Array]]


def kl_to_standard_normal(mean: jax.Array, log_var: jax.Array) -> jax.Array:
    """KL(N(mean, diag(exp(log_var))) || N(0, I)) in nats, summed over the last axis: [B]."""
    # expm1: exp(v) - 1 - v without the cancellation that makes it negative for tiny v
    return 0.5 * jnp.sum(jnp.expm1(log_var) - log_var + jnp.square(mean), axis=-1)


def _sum_pixels(values: jax.Array) -> jax.Array:
    return jnp.sum(values.reshape(values.shape[0], -1), axis=-1)


def bernoulli_log_likelihood(x: jax.Array, logits: jax.Array) -> jax.Array:
    """log Bernoulli(x; sigmoid(logits)) summed over pixels: [B], nats (<= 0 for x in {0, 1}).

    Stable for any logits: x * l - softplus(l) never forms log(sigmoid(l)).
    """
    return _sum_pixels(x * logits - jax.nn.softplus(logits))


def gaussian_log_likelihood(x: jax.Array, mean: jax.Array, variance: float = 1.0) -> jax.Array:
    """log N(x; mean, variance * I) summed over pixels: [B], nats."""
    return _sum_pixels(-0.5 * (jnp.square(x - mean) / variance + jnp.log(2 * np.pi * variance)))


def log_likelihood(
    x: jax.Array, logits: jax.Array, likelihood: str = "bernoulli", variance: float = 1.0
) -> jax.Array:
    """log p(x | z) [B] for the decoder output ``logits`` under ``likelihood``."""
    if likelihood == "bernoulli":
        return bernoulli_log_likelihood(x, logits)
    if likelihood == "gaussian":
        return gaussian_log_likelihood(x, jax.nn.sigmoid(logits), variance)
    raise ValueError(f"unknown likelihood {likelihood!r}: choose {', '.join(LIKELIHOODS)}")


def negative_elbo(
    x: jax.Array,
    logits: jax.Array,
    mean: jax.Array,
    log_var: jax.Array,
    *,
    likelihood: str = "bernoulli",
    beta: float = 1.0,
    variance: float = 1.0,
) -> dict[str, jax.Array]:
    """The (beta-weighted) negative ELBO per image, in nats.

    Returns, each [B]: ``reconstruction`` = -log p(x | z), ``kl``, ``negative_elbo`` =
    reconstruction + kl (a single-sample estimate of -ELBO >= -log p(x)), and ``loss`` =
    reconstruction + beta * kl, the training objective (equal to ``negative_elbo`` at beta = 1).
    """
    reconstruction = -log_likelihood(x, logits, likelihood, variance)
    kl = kl_to_standard_normal(mean, log_var)
    return {
        "loss": reconstruction + beta * kl,
        "negative_elbo": reconstruction + kl,
        "reconstruction": reconstruction,
        "kl": kl,
    }


def standard_normal_log_density(z: jax.Array) -> jax.Array:
    """log N(z; 0, I) summed over the last axis: [B], nats."""
    return -0.5 * jnp.sum(jnp.square(z) + jnp.log(2 * np.pi), axis=-1)


def diagonal_normal_log_density(z: jax.Array, mean: jax.Array, log_var: jax.Array) -> jax.Array:
    """log N(z; mean, diag(exp(log_var))) summed over the last axis: [B], nats."""
    return -0.5 * jnp.sum(
        jnp.square(z - mean) * jnp.exp(-log_var) + log_var + jnp.log(2 * np.pi), axis=-1
    )


def log_importance_weights(
    x: jax.Array,
    logits: jax.Array,
    z: jax.Array,
    mean: jax.Array,
    log_var: jax.Array,
    likelihood: str = "bernoulli",
    variance: float = 1.0,
) -> jax.Array:
    """log w = log p(x | z) + log N(z; 0, I) - log q(z | x) for one sample z per image: [B], nats.

    ``x`` [B, H, W, C] images, ``logits`` [B, H, W, C] the decoder's output at ``z``, ``z``,
    ``mean`` and ``log_var`` each [B, latent_dim], with q(z | x) = N(mean, diag(exp(log_var))).
    Its expectation over z ~ q is the ELBO (minus ``negative_elbo`` at beta = 1); K of them,
    stacked to [K, B], feed :func:`iwae_bound`.
    """
    return (
        log_likelihood(x, logits, likelihood, variance)
        + standard_normal_log_density(z)
        - diagonal_normal_log_density(z, mean, log_var)
    )


def iwae_bound(log_weights: jax.Array) -> jax.Array:
    """The importance-weighted bound log (1/K) sum_k w_k per image: [B], nats.

    ``log_weights`` [K, B] are K log importance weights log p(x, z_k) - log q(z_k | x) with
    z_k ~ q(z | x) (:func:`log_importance_weights`). Computed stably as logsumexp over k minus
    log K. By Jensen it is >= the K-sample ELBO estimate mean_k log w_k, equal at K = 1, and
    its expectation increases with K towards log p(x) (Burda, Grosse and Salakhutdinov,
    "Importance Weighted Autoencoders", ICLR 2016, arXiv:1509.00519).
    """
    num_samples = log_weights.shape[0]
    return jax.nn.logsumexp(log_weights, axis=0) - float(np.log(num_samples))


RECONSTRUCTION_LOSSES = ("bce", "mse")


def reconstruction_loss(x: jax.Array, logits: jax.Array, kind: str = "bce") -> jax.Array:
    """A plain autoencoder's loss per image [B], summed over pixels.

    ``bce``: binary cross-entropy of x against sigmoid(logits). ``mse``: squared error between
    x and sigmoid(logits).
    """
    if kind == "bce":
        return -bernoulli_log_likelihood(x, logits)
    if kind == "mse":
        return _sum_pixels(jnp.square(x - jax.nn.sigmoid(logits)))
    raise ValueError(f"unknown reconstruction loss {kind!r}: choose bce or mse")


def vae_per_example(
    model,
    *,
    likelihood: str = "bernoulli",
    beta: float = 1.0,
    variance: float = 1.0,
    perceptual: Callable | None = None,
    perceptual_weight: float = 0.0,
) -> PerExampleFn:
    """``f(params, x, key) -> negative_elbo terms [B]`` for a :class:`vaejax.models.VAE`.

    With ``perceptual(x, x_hat) -> [B]`` (a distance between images in [0, 1], e.g.
    :func:`vaejax.evaluation.judge.perceptual_distance`), the terms hold ``perceptual`` of x and the
    decoder's mean sigmoid(logits), and ``loss`` adds ``perceptual_weight`` times it (the
    ``negative_elbo`` term stays the plain bound).
    """

    def per_example(params, x, key):
        logits, mean, log_var = model.apply({"params": params}, x, key)
        terms = negative_elbo(
            x, logits, mean, log_var, likelihood=likelihood, beta=beta, variance=variance
        )
        if perceptual is None:
            return terms
        distance = perceptual(x, jax.nn.sigmoid(logits))
        return {
            **terms,
            "perceptual": distance,
            "loss": terms["loss"] + perceptual_weight * distance,
        }

    return per_example


def with_bits_per_dim(per_example: PerExampleFn, dims: int, dequantized: bool) -> PerExampleFn:
    """Adds ``bits_per_dim`` [B] to ``per_example``'s terms: the bound on -log p(x) of its
    ``negative_iwae_bound`` (else ``negative_elbo``) in bits per dimension, over ``dims`` values
    per image. Binarized images: nats / (dims ln 2). ``dequantized`` 8-bit images (a density on
    (x + u) / 256): the discrete image's bound, (nats + dims ln 256) / (dims ln 2), as the papers
    report 8-bit likelihoods (Theis et al. 2016)."""
    offset = dims * jnp.log(256.0) if dequantized else 0.0

    def with_bits(params, x, key):
        terms = per_example(params, x, key)
        nats = terms.get("negative_iwae_bound", terms["negative_elbo"])
        return {**terms, "bits_per_dim": (nats + offset) / (dims * jnp.log(2.0))}

    return with_bits


def cvae_per_example(
    model, *, likelihood: str = "bernoulli", beta: float = 1.0, variance: float = 1.0
) -> PerExampleFn:
    """``f(params, (x, labels), key) -> negative_elbo terms [B]`` for a
    :class:`vaejax.models.ConditionalVAE` (the conditional ELBO of log p(x | label))."""

    def per_example(params, batch, key):
        x, labels = batch
        logits, mean, log_var = model.apply({"params": params}, x, labels, key)
        return negative_elbo(
            x, logits, mean, log_var, likelihood=likelihood, beta=beta, variance=variance
        )

    return per_example


def autoencoder_per_example(model, kind: str = "bce") -> PerExampleFn:
    """``f(params, batch, key) -> {"loss": reconstruction_loss [B]}`` for an Autoencoder (key
    unused). ``batch`` is images x (reconstruct x) or a pair ``(inputs, targets)``: a denoising
    autoencoder sees corrupted inputs and is scored against the clean targets."""
    if kind not in RECONSTRUCTION_LOSSES:
        raise ValueError(f"unknown reconstruction loss {kind!r}: choose bce or mse")

    def per_example(params, batch, key):
        del key
        inputs, targets = batch if isinstance(batch, tuple) else (batch, batch)
        logits, _ = model.apply({"params": params}, inputs)
        return {"loss": reconstruction_loss(targets, logits, kind)}

    return per_example


def batch_mean(per_example: PerExampleFn) -> Callable:
    """Turns a per-example function into a loss: ``(params, batch, key) -> (mean loss, metrics)``.

    ``metrics`` holds the batch mean of every per-example term (``loss`` included).
    """

    def loss_fn(params, batch, key):
        terms = per_example(params, batch, key)
        metrics = {name: jnp.mean(value) for name, value in terms.items()}
        return metrics["loss"], metrics

    return loss_fn


def foster_beta(num_pixels: int, reconstruction_weight: float = 500.0) -> float:
    """The beta on the summed ELBO equivalent to Foster's VAE loss.

    Foster: ``w * mean_pixels(BCE) + sum_latents(KL)``
    = ``(w / D) * (sum_pixels(BCE) + (D / w) KL)`` with D pixels. Up to the constant factor
    w / D (to which Adam is invariant, but for its epsilon), that is the negative ELBO with
    beta = D / w: 1024 / 500 = 2.048 on 32x32 images.
    """
    return num_pixels / reconstruction_weight
