"""One GAN update: ``n_critic`` discriminator steps, each on its own slice of the real batch, then
one generator step: two :func:`~vaejax.training.gradient_update` on the two halves of
:class:`GANState`, trained by the same epoch runner and loop as every other model."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from vaejax.models.gan import GAN
from vaejax.objectives.gan import (
    GENERATOR_LOSS_FNS,
    GENERATOR_LOSSES,
    LOSSES,
    discriminator_bce,
    gradient_penalty,
    interpolates,
)
from vaejax.training import step


class GANState(NamedTuple):
    """The two players' :class:`~vaejax.training.TrainState`."""

    generator: step.TrainState
    discriminator: step.TrainState


def create_gan_state(
    params,
    generator_optimizer: optax.GradientTransformation,
    discriminator_optimizer: optax.GradientTransformation,
) -> GANState:
    return GANState(
        step.create_train_state(params["generator"], generator_optimizer),
        step.create_train_state(params["discriminator"], discriminator_optimizer),
    )


def gan_losses(gan: GAN, loss: str, generator_loss: str, penalty_weight: float):
    """``(discriminator_loss, generator_loss)`` in the form of :func:`gradient_update`:
    ``discriminator_loss(d_params, (real, g_params), key)`` against fresh fakes and
    ``generator_loss(g_params, (d_params, n), key)`` on ``n`` fresh fakes, each returning
    ``(loss, metrics)``."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if generator_loss not in GENERATOR_LOSSES:
        raise ValueError(f"generator loss must be one of {GENERATOR_LOSSES}")

    def fakes(g_params, key, n):
        return gan.generate(g_params, jax.random.normal(key, (n, gan.noise_dim)))

    def discriminator_loss(d_params, batch, key):
        real, g_params = batch
        noise_key, mix_key = jax.random.split(key)
        fake = jax.lax.stop_gradient(fakes(g_params, noise_key, real.shape[0]))
        real_logits, fake_logits = gan.critic(d_params, real), gan.critic(d_params, fake)
        if loss == "bce":
            return discriminator_bce(real_logits, fake_logits), {
                "d_real": jnp.mean(jax.nn.sigmoid(real_logits)),
                "d_fake": jnp.mean(jax.nn.sigmoid(fake_logits)),
            }
        penalty, _ = gradient_penalty(
            lambda x: gan.critic(d_params, x), interpolates(mix_key, real, fake)
        )
        wasserstein = jnp.mean(real_logits) - jnp.mean(fake_logits)
        return -wasserstein + penalty_weight * penalty, {
            "wasserstein": wasserstein,
            "gradient_penalty": penalty,
        }

    def generator_objective(g_params, batch, key):
        d_params, n = batch
        fake_logits = gan.critic(d_params, fakes(g_params, key, n))
        if loss == "bce":
            return GENERATOR_LOSS_FNS[generator_loss](fake_logits), {}
        return -jnp.mean(fake_logits), {}

    return discriminator_loss, generator_objective


def make_gan_update(
    gan: GAN,
    *,
    loss: str,
    generator_optimizer: optax.GradientTransformation,
    discriminator_optimizer: optax.GradientTransformation,
    n_critic: int = 1,
    generator_loss: str = "non-saturating",
    penalty_weight: float = 10.0,
) -> step.Update:
    """``update(state: GANState, real [n_critic * B, S, S, C] in [-1, 1], key)``: ``n_critic``
    discriminator steps, step j on real images j, n_critic + j, 2 n_critic + j, ... (every
    device holds a share of each slice) against fresh fakes, then one generator step on B fresh
    fakes. Metrics: ``d_loss``, ``g_loss``, ``d_grad_norm``, ``g_grad_norm``; for ``bce``
    ``d_real`` and ``d_fake`` (mean D(x), D(G(z))), for ``wgan-gp`` ``d_wasserstein`` (mean f(x)
    - mean f(G(z)), the critic's estimate) and ``d_gradient_penalty``; the discriminator's
    averaged over its steps.
    """
    discriminator_loss, generator_objective = gan_losses(gan, loss, generator_loss, penalty_weight)
    d_step = step.gradient_update(discriminator_loss, discriminator_optimizer)
    g_step = step.gradient_update(generator_objective, generator_optimizer)

    def update(state: GANState, real, key):
        batch = real.shape[0] // n_critic
        # row i * n_critic + j -> slice j: each device's rows stay on that device
        slices = real.reshape(batch, n_critic, *real.shape[1:]).swapaxes(0, 1)
        d_keys = jax.random.split(jax.random.fold_in(key, 0), n_critic)

        def critic_step(d_state, inputs):
            images, step_key = inputs
            return d_step(d_state, (images, state.generator.params), step_key)

        d_state, d_metrics = jax.lax.scan(critic_step, state.discriminator, (slices, d_keys))
        g_state, g_metrics = g_step(
            state.generator, (d_state.params, batch), jax.random.fold_in(key, 1)
        )
        metrics = {
            ("d_" + k if not k.startswith("d_") else k): jnp.mean(v) for k, v in d_metrics.items()
        }
        metrics.update({"g_" + k: v for k, v in g_metrics.items()})
        return GANState(g_state, d_state), metrics

    return update
