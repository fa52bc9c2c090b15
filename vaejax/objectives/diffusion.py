"""Denoising diffusion (DDPM, Ho et al. 2020) and its fast deterministic sampler (DDIM, Song et al.
2021).

**Indexing.** Arrays over timesteps have T entries; index ``t`` in 0..T-1 is the paper's step
t + 1. ``alpha_bars[t]`` is the product of ``1 - betas[s]`` for s <= t; "step -1" is the data,
with alpha_bar = 1.

**Forward process.** q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I); in closed form
q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I) (:func:`q_sample`,
:func:`marginal_moments`); its posterior q(x_{t-1} | x_t, x_0) = N(mu, beta_tilde_t I) with

    mu = beta_t sqrt(alpha_bar_{t-1}) / (1 - alpha_bar_t) x_0
         + (1 - alpha_bar_{t-1}) sqrt(alpha_t) / (1 - alpha_bar_t) x_t,
    beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t      (:func:`posterior`).

**Schedules.** ``linear``: beta from 1e-4 to 0.02 over T = 1000 (Ho et al.); ``cosine``:
alpha_bar_t = f(t) / f(0), f(t) = cos^2((t / T + s) / (1 + s) pi / 2), s = 0.008, betas clipped
at 0.999 (Nichol & Dhariwal 2021).

**Model.** A denoiser eps_theta(x_t, t) predicts the noise of x_t = sqrt(alpha_bar_t) x_0 +
sqrt(1 - alpha_bar_t) eps; it is trained on ||eps - eps_theta(x_t, t)||^2 with t uniform
(Ho et al.'s L_simple, :func:`noise_prediction_loss`), through the same per-example objective
and step machinery as every other model. :class:`vaejax.models.unet.UNet` is a small U-Net for
images; :class:`vaejax.models.unet.MLPDenoiser` a tiny one for points in the plane.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vaejax.objectives import vae as objectives

SCHEDULES = ("linear", "cosine")


class Schedule(NamedTuple):
    """A variance schedule: float32 arrays [T] (index t = the paper's step t + 1), each computed in
    float64 first (1 - alpha_bar_t near t = 0 is 1e-4: float32 would keep 3 digits of it)."""

    betas: jax.Array
    alpha_bars: jax.Array  # prod_{s <= t} (1 - beta_s)
    one_minus_alpha_bars: jax.Array
    posterior_x0_weights: jax.Array  # beta_t sqrt(alpha_bar_{t-1}) / (1 - alpha_bar_t)
    posterior_xt_weights: jax.Array  # (1 - alpha_bar_{t-1}) sqrt(1 - beta_t) / (1 - alpha_bar_t)
    # beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t
    posterior_variances: jax.Array

    @property
    def timesteps(self) -> int:
        return self.betas.shape[0]


def _schedule_of_betas(betas: np.ndarray) -> Schedule:
    betas = np.asarray(betas, np.float64)
    log_alpha_bars = np.cumsum(np.log1p(-betas))
    alpha_bars = np.exp(log_alpha_bars)
    one_minus = -np.expm1(log_alpha_bars)
    alpha_bars_before = np.concatenate([[1.0], alpha_bars[:-1]])
    one_minus_before = np.concatenate([[0.0], one_minus[:-1]])
    arrays = (
        betas,
        alpha_bars,
        one_minus,
        betas * np.sqrt(alpha_bars_before) / one_minus,
        one_minus_before * np.sqrt(1.0 - betas) / one_minus,
        one_minus_before / one_minus * betas,
    )
    return Schedule(*(jnp.asarray(a, jnp.float32) for a in arrays))


def linear_schedule(
    timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02
) -> Schedule:
    """Ho et al.'s schedule: betas evenly spaced from ``beta_start`` to ``beta_end`` (their values
    are for T = 1000)."""
    return _schedule_of_betas(np.linspace(beta_start, beta_end, timesteps))


def scaled_linear_schedule(timesteps: int, max_beta: float = 0.999) -> Schedule:
    """Ho et al.'s linear schedule for any T: both ends scaled by 1000 / T (as Nichol & Dhariwal
    do), so that alpha_bar_T stays near 0 (4e-5 at T = 1000, 2e-5 at T = 100: x_T is noise,
    whatever T); betas capped at ``max_beta``. At T = 1000 it is Ho et al.'s exactly."""
    scale = 1000 / timesteps
    betas = np.linspace(1e-4 * scale, 0.02 * scale, timesteps)
    return _schedule_of_betas(np.minimum(betas, max_beta))


def cosine_schedule(
    timesteps: int = 1000, offset: float = 0.008, max_beta: float = 0.999
) -> Schedule:
    """Nichol & Dhariwal's schedule: alpha_bar follows cos^2, betas clipped at ``max_beta``."""
    steps = np.arange(timesteps + 1, dtype=np.float64) / timesteps
    f = np.cos((steps + offset) / (1.0 + offset) * np.pi / 2) ** 2
    return _schedule_of_betas(np.minimum(1.0 - f[1:] / f[:-1], max_beta))


def make_schedule(name: str, timesteps: int) -> Schedule:
    if name == "linear":
        return scaled_linear_schedule(timesteps)
    if name == "cosine":
        return cosine_schedule(timesteps)
    raise ValueError(f"unknown schedule {name!r}: use one of {', '.join(SCHEDULES)}")


def _per_example(values: jax.Array, t: jax.Array, like: jax.Array) -> jax.Array:
    """values[t] [B] shaped to broadcast against ``like`` [B, ...]."""
    return values[t].reshape(t.shape + (1,) * (like.ndim - t.ndim))


def marginal_moments(schedule: Schedule, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(sqrt(alpha_bar_t), 1 - alpha_bar_t): x_t | x_0 has mean ``scale * x_0`` and this
    variance."""
    return jnp.sqrt(schedule.alpha_bars[t]), schedule.one_minus_alpha_bars[t]


def q_sample(schedule: Schedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise; x0, noise [B, ...], t [B]."""
    return (
        jnp.sqrt(_per_example(schedule.alpha_bars, t, x0)) * x0
        + jnp.sqrt(_per_example(schedule.one_minus_alpha_bars, t, x0)) * noise
    )


def q_step(schedule: Schedule, x_before: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    """One forward step: x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) noise."""
    beta = _per_example(schedule.betas, t, x_before)
    return jnp.sqrt(1.0 - beta) * x_before + jnp.sqrt(beta) * noise


def posterior(
    schedule: Schedule, x0: jax.Array, x_t: jax.Array, t: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Mean [B, ...] and variance [B, 1, ...] of q(x_{t-1} | x_t, x_0) (module docstring); at
    t = 0 the mean is x_0 and the variance 0."""
    mean = (
        _per_example(schedule.posterior_x0_weights, t, x0) * x0
        + _per_example(schedule.posterior_xt_weights, t, x0) * x_t
    )
    return mean, _per_example(schedule.posterior_variances, t, x0)


def predict_x0(schedule: Schedule, x_t: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    """The x_0 that ``noise`` would have made x_t from: (x_t - sqrt(1 - alpha_bar_t) noise) /
    sqrt(alpha_bar_t)."""
    return (x_t - jnp.sqrt(_per_example(schedule.one_minus_alpha_bars, t, x_t)) * noise) / jnp.sqrt(
        _per_example(schedule.alpha_bars, t, x_t)
    )


class Diffusion(NamedTuple):
    """A denoiser module and its schedule."""

    denoiser: nn.Module
    schedule: Schedule

    def init(self, key: jax.Array, example_shape: Sequence[int]):
        """Parameters for inputs of ``example_shape`` (one example, e.g. (28, 28, 1))."""
        x = jnp.zeros((1, *example_shape))
        return jax.jit(self.denoiser.init)(key, x, jnp.zeros((1,), jnp.int32))["params"]

    def predict_noise(self, params, x_t: jax.Array, t: jax.Array) -> jax.Array:
        return self.denoiser.apply({"params": params}, x_t, t)


def noise_prediction_loss(model: Diffusion) -> objectives.PerExampleFn:
    """``f(params, x0, key) -> {'loss': [B]}``: the mean squared error per dimension between the
    noise eps ~ N(0, I) and eps_theta(x_t, t), t uniform over 0..T-1 (Ho et al.'s L_simple)."""

    def per_example(params, x0, key):
        t_key, noise_key = jax.random.split(key)
        t = jax.random.randint(t_key, x0.shape[:1], 0, model.schedule.timesteps)
        noise = jax.random.normal(noise_key, x0.shape, x0.dtype)
        predicted = model.predict_noise(params, q_sample(model.schedule, x0, t, noise), t)
        return {"loss": jnp.mean((predicted - noise) ** 2, axis=tuple(range(1, x0.ndim)))}

    return per_example
