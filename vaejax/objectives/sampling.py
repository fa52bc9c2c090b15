"""Sampling a trained denoiser.

**Sampling** (:func:`make_sampler`): ancestral DDPM sampling over all T steps, x_{t-1} ~
q(x_{t-1} | x_t, x0_hat) with x0_hat predicted from eps_theta; or DDIM over a subsequence of
``steps`` timesteps, deterministic for ``eta = 0`` (eta = 1 over all T steps is DDPM). Each is one
compiled ``lax.scan`` over timesteps, batched, the batch sharded over the devices.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vaejax.objectives.diffusion import Diffusion, Schedule, posterior, predict_x0
from vaejax.sharding import batch_sharded, check_batch_size, data_mesh

SAMPLERS = ("ddpm", "ddim")


def ddim_timesteps(timesteps: int, steps: int) -> np.ndarray:
    """``steps`` timesteps evenly spread over 0..T-1, increasing, last = T - 1."""
    if not 1 <= steps <= timesteps:
        raise ValueError(f"sampling steps must lie in 1..{timesteps}, got {steps}")
    return np.unique(np.round(np.linspace(0, timesteps - 1, steps)).astype(np.int32))


def _step_noise(key: jax.Array, t: jax.Array, like: jax.Array) -> jax.Array:
    return jax.random.normal(jax.random.fold_in(key, t), like.shape, like.dtype)


def ddpm_step(
    schedule: Schedule,
    x_t: jax.Array,
    t: jax.Array,
    noise_hat: jax.Array,
    noise: jax.Array,
    clip: float | None = None,
) -> jax.Array:
    """One ancestral step: x_{t-1} = mu(x0_hat, x_t) + sqrt(beta_tilde_t) noise, x0_hat from the
    predicted noise (clipped to [-clip, clip] when given). t is a scalar here."""
    t_batch = jnp.full(x_t.shape[:1], t)
    x0 = predict_x0(schedule, x_t, t_batch, noise_hat)
    if clip is not None:
        x0 = jnp.clip(x0, -clip, clip)
    mean, variance = posterior(schedule, x0, x_t, t_batch)
    return mean + jnp.sqrt(variance) * noise


def ddim_step(
    schedule: Schedule,
    x_t: jax.Array,
    t: jax.Array,
    t_next: jax.Array,
    noise_hat: jax.Array,
    noise: jax.Array,
    eta: float = 0.0,
    clip: float | None = None,
) -> jax.Array:
    """One DDIM step from timestep t to the earlier ``t_next`` (-1: the data):
    x = sqrt(alpha_bar') x0_hat + sqrt(1 - alpha_bar' - sigma^2) eps_hat + sigma noise (with
    ``clip``, x0_hat clipped and eps_hat recomputed from it), with
    sigma = eta sqrt((1 - alpha_bar') / (1 - alpha_bar) (1 - alpha_bar / alpha_bar'))."""
    alpha_bar, one_minus = schedule.alpha_bars[t], schedule.one_minus_alpha_bars[t]
    later = t_next >= 0
    alpha_bar_next = jnp.where(later, schedule.alpha_bars[jnp.maximum(t_next, 0)], 1.0)
    one_minus_next = jnp.where(later, schedule.one_minus_alpha_bars[jnp.maximum(t_next, 0)], 0.0)
    x0 = (x_t - jnp.sqrt(one_minus) * noise_hat) / jnp.sqrt(alpha_bar)
    if clip is not None:  # and the noise that the clipped x0_hat implies, so x_t stays its mix
        x0 = jnp.clip(x0, -clip, clip)
        noise_hat = (x_t - jnp.sqrt(alpha_bar) * x0) / jnp.sqrt(one_minus)
    # 1 - alpha_bar / alpha_bar' = (alpha_bar' - alpha_bar) / alpha_bar', as a difference of the
    # 1 - alpha_bar's (accurate near t = 0)
    sigma = eta * jnp.sqrt(
        one_minus_next / one_minus * (one_minus - one_minus_next) / alpha_bar_next
    )
    direction = jnp.sqrt(jnp.maximum(one_minus_next - sigma**2, 0.0)) * noise_hat
    return jnp.sqrt(alpha_bar_next) * x0 + direction + sigma * noise


def sample_loop(
    model: Diffusion,
    params,
    key: jax.Array,
    x_T: jax.Array,
    *,
    sampler: str = "ddpm",
    steps: int = 0,
    eta: float = 0.0,
    clip: float | None = None,
    keep_trajectory: bool = False,
    sharding=None,
):
    """Runs the reverse process from x_T as one ``lax.scan`` over timesteps; returns x_0, or with
    ``keep_trajectory`` (x_0, [steps, B, ...] every state after a step, x_T excluded).

    ``sampler``: ``ddpm`` (all T steps, ancestral) or ``ddim`` (``steps`` steps, 0 = T). The
    noise of timestep t is ``normal(fold_in(key, t))``: DDIM with eta = 1 over all T steps takes
    the same noise as DDPM. ``sharding`` constrains the batch of every step (data parallelism).
    """
    T = model.schedule.timesteps
    if sampler == "ddpm":
        times = np.arange(T, dtype=np.int32)
    elif sampler == "ddim":
        times = ddim_timesteps(T, steps or T)
    else:
        raise ValueError(f"unknown sampler {sampler!r}: use one of {', '.join(SAMPLERS)}")
    previous = np.concatenate([[-1], times[:-1]]).astype(np.int32)
    constrain = (
        (lambda x: jax.lax.with_sharding_constraint(x, sharding)) if sharding else (lambda x: x)
    )

    def body(x, pair):
        t, t_next = pair
        noise_hat = model.predict_noise(params, x, jnp.full(x.shape[:1], t))
        noise = constrain(_step_noise(key, t, x))
        if sampler == "ddpm":
            x = ddpm_step(model.schedule, x, t, noise_hat, noise, clip)
        else:
            x = ddim_step(model.schedule, x, t, t_next, noise_hat, noise, eta, clip)
        x = constrain(x)
        return x, (x if keep_trajectory else None)

    x, trajectory = jax.lax.scan(body, constrain(x_T), (times[::-1], previous[::-1]))
    return (x, trajectory) if keep_trajectory else x


def make_sampler(
    model: Diffusion,
    example_shape: Sequence[int],
    *,
    sampler: str = "ddpm",
    steps: int = 0,
    eta: float = 0.0,
    clip: float | None = None,
    mesh=None,
) -> Callable[[Any, jax.Array, int], jax.Array]:
    """A compiled ``sample(params, key, n) -> x_0 [n, *example_shape]``: x_T ~ N(0, I) and the
    steps' noise from ``key``, then :func:`sample_loop`; the batch sharded over ``mesh``
    (default: all devices; n must split evenly). The same key gives the same samples on any
    number of devices."""
    mesh = mesh or data_mesh()
    sharding = batch_sharded(mesh)

    def sample(params, key, n):
        start_key, loop_key = jax.random.split(key)
        x_T = jax.random.normal(start_key, (n, *example_shape))
        return sample_loop(
            model,
            params,
            loop_key,
            x_T,
            sampler=sampler,
            steps=steps,
            eta=eta,
            clip=clip,
            sharding=sharding,
        )

    compiled = jax.jit(sample, static_argnums=2, out_shardings=sharding)

    def checked(params, key, n):
        check_batch_size(n, mesh.size, "number of samples")
        return compiled(params, key, n)

    return checked
