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
and step machinery as every other model. :class:`UNet` is a small U-Net for images;
:class:`MLPDenoiser` a tiny one for points in the plane.

**Sampling** (:func:`make_sampler`): ancestral DDPM sampling over all T steps, x_{t-1} ~
q(x_{t-1} | x_t, x0_hat) with x0_hat predicted from eps_theta; or DDIM over a subsequence of
``steps`` timesteps, deterministic for ``eta = 0`` (eta = 1 over all T steps is DDPM). Each is one
compiled ``lax.scan`` over timesteps, batched, the batch sharded over the devices.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vaejax import data, io, models, objectives, training
from vaejax.experiment import (
    ConfigError,
    RunConfig,
    RunKeys,
    TrainSettings,
    _field,
    check_positive,
    fit_state,
    judge_field,
    resumable_fields,
    train_and_test_record,
    validate_run,
)
from vaejax.layers import Conv2D

SCHEDULES = ("linear", "cosine")
SAMPLERS = ("ddpm", "ddim")


# ---------------------------------------------------------------------------------------------
# Schedules and the forward process


class Schedule(NamedTuple):
    """A variance schedule: float32 arrays [T] (index t = the paper's step t + 1), each computed in
    float64 first (1 - alpha_bar_t near t = 0 is 1e-4: float32 would keep 3 digits of it)."""

    betas: jax.Array
    alpha_bars: jax.Array  # prod_{s <= t} (1 - beta_s)
    one_minus_alpha_bars: jax.Array
    posterior_x0_weights: jax.Array  # beta_t sqrt(alpha_bar_{t-1}) / (1 - alpha_bar_t)
    posterior_xt_weights: jax.Array  # (1 - alpha_bar_{t-1}) sqrt(1 - beta_t) / (1 - alpha_bar_t)
    posterior_variances: jax.Array  # beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t

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
    arrays = (betas, alpha_bars, one_minus, betas * np.sqrt(alpha_bars_before) / one_minus,
              one_minus_before * np.sqrt(1.0 - betas) / one_minus,
              one_minus_before / one_minus * betas)
    return Schedule(*(jnp.asarray(a, jnp.float32) for a in arrays))


def linear_schedule(timesteps: int = 1000, beta_start: float = 1e-4,
                    beta_end: float = 0.02) -> Schedule:
    """Ho et al.'s schedule: betas evenly spaced from ``beta_start`` to ``beta_end``."""
    return _schedule_of_betas(np.linspace(beta_start, beta_end, timesteps))


def cosine_schedule(timesteps: int = 1000, offset: float = 0.008,
                    max_beta: float = 0.999) -> Schedule:
    """Nichol & Dhariwal's schedule: alpha_bar follows cos^2, betas clipped at ``max_beta``."""
    steps = np.arange(timesteps + 1, dtype=np.float64) / timesteps
    f = np.cos((steps + offset) / (1.0 + offset) * np.pi / 2) ** 2
    return _schedule_of_betas(np.minimum(1.0 - f[1:] / f[:-1], max_beta))


def make_schedule(name: str, timesteps: int) -> Schedule:
    if name == "linear":
        return linear_schedule(timesteps)
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
    return (jnp.sqrt(_per_example(schedule.alpha_bars, t, x0)) * x0
            + jnp.sqrt(_per_example(schedule.one_minus_alpha_bars, t, x0)) * noise)


def q_step(schedule: Schedule, x_before: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    """One forward step: x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) noise."""
    beta = _per_example(schedule.betas, t, x_before)
    return jnp.sqrt(1.0 - beta) * x_before + jnp.sqrt(beta) * noise


def posterior(schedule: Schedule, x0: jax.Array, x_t: jax.Array, t: jax.Array
              ) -> tuple[jax.Array, jax.Array]:
    """Mean [B, ...] and variance [B, 1, ...] of q(x_{t-1} | x_t, x_0) (module docstring); at
    t = 0 the mean is x_0 and the variance 0."""
    mean = (_per_example(schedule.posterior_x0_weights, t, x0) * x0
            + _per_example(schedule.posterior_xt_weights, t, x0) * x_t)
    return mean, _per_example(schedule.posterior_variances, t, x0)


def predict_x0(schedule: Schedule, x_t: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    """The x_0 that ``noise`` would have made x_t from: (x_t - sqrt(1 - alpha_bar_t) noise) /
    sqrt(alpha_bar_t)."""
    return ((x_t - jnp.sqrt(_per_example(schedule.one_minus_alpha_bars, t, x_t)) * noise)
            / jnp.sqrt(_per_example(schedule.alpha_bars, t, x_t)))


# ---------------------------------------------------------------------------------------------
# Denoisers


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
        scale, shift = jnp.split(nn.Dense(2 * self.channels)(nn.swish(embedding))[:, None, None],
                                 2, axis=-1)
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
    level's channels, the level's skip concatenated, a residual block; GroupNorm, swish and a zero-initialized 3x3
    conv out. The timestep enters every residual block through a sinusoidal embedding and a
    2-layer MLP (width 4 x ``channels``). H and W must halve evenly ``len(multipliers) - 1`` times
    (28 -> 14 -> 7 for three levels). No attention layers (Ho et al. have one at 16x16): at
    7x7 it buys little on MNIST and costs CPU time. The convolutions are :class:`vaejax.layers.Conv2D`
    (flax's, with a backward pass that stays fast inside the epoch loop on CPU).
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
                jnp.concatenate([h, skip], axis=-1), embedding)
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


# ---------------------------------------------------------------------------------------------
# Sampling


def ddim_timesteps(timesteps: int, steps: int) -> np.ndarray:
    """``steps`` timesteps evenly spread over 0..T-1, increasing, last = T - 1."""
    if not 1 <= steps <= timesteps:
        raise ValueError(f"sampling steps must lie in 1..{timesteps}, got {steps}")
    return np.unique(np.round(np.linspace(0, timesteps - 1, steps)).astype(np.int32))


def _step_noise(key: jax.Array, t: jax.Array, like: jax.Array) -> jax.Array:
    return jax.random.normal(jax.random.fold_in(key, t), like.shape, like.dtype)


def ddpm_step(schedule: Schedule, x_t: jax.Array, t: jax.Array, noise_hat: jax.Array,
              noise: jax.Array, clip: float | None = None) -> jax.Array:
    """One ancestral step: x_{t-1} = mu(x0_hat, x_t) + sqrt(beta_tilde_t) noise, x0_hat from the
    predicted noise (clipped to [-clip, clip] when given). t is a scalar here."""
    t_batch = jnp.full(x_t.shape[:1], t)
    x0 = predict_x0(schedule, x_t, t_batch, noise_hat)
    if clip is not None:
        x0 = jnp.clip(x0, -clip, clip)
    mean, variance = posterior(schedule, x0, x_t, t_batch)
    return mean + jnp.sqrt(variance) * noise


def ddim_step(schedule: Schedule, x_t: jax.Array, t: jax.Array, t_next: jax.Array,
              noise_hat: jax.Array, noise: jax.Array, eta: float = 0.0,
              clip: float | None = None) -> jax.Array:
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
    sigma = eta * jnp.sqrt(one_minus_next / one_minus * (one_minus - one_minus_next)
                           / alpha_bar_next)
    direction = jnp.sqrt(jnp.maximum(one_minus_next - sigma ** 2, 0.0)) * noise_hat
    return jnp.sqrt(alpha_bar_next) * x0 + direction + sigma * noise


def sample_loop(model: Diffusion, params, key: jax.Array, x_T: jax.Array, *,
                sampler: str = "ddpm", steps: int = 0, eta: float = 0.0,
                clip: float | None = None, keep_trajectory: bool = False, sharding=None):
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
    constrain = (lambda x: jax.lax.with_sharding_constraint(x, sharding)) if sharding else (
        lambda x: x)

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


def make_sampler(model: Diffusion, example_shape: Sequence[int], *, sampler: str = "ddpm",
                 steps: int = 0, eta: float = 0.0, clip: float | None = None,
                 mesh=None) -> Callable[[Any, jax.Array, int], jax.Array]:
    """A compiled ``sample(params, key, n) -> x_0 [n, *example_shape]``: x_T ~ N(0, I) and the
    steps' noise from ``key``, then :func:`sample_loop`; the batch sharded over ``mesh``
    (default: all devices; n must split evenly). The same key gives the same samples on any
    number of devices."""
    mesh = mesh or training.data_mesh()
    sharding = training.batch_sharded(mesh)

    def sample(params, key, n):
        start_key, loop_key = jax.random.split(key)
        x_T = jax.random.normal(start_key, (n, *example_shape))
        return sample_loop(model, params, loop_key, x_T, sampler=sampler, steps=steps, eta=eta,
                           clip=clip, sharding=sharding)

    compiled = jax.jit(sample, static_argnums=2, out_shardings=sharding)

    def checked(params, key, n):
        training.check_batch_size(n, mesh.size, "number of samples")
        return compiled(params, key, n)

    return checked


def sampling_rate(sample, params, key: jax.Array, n: int) -> tuple[np.ndarray, dict[str, float]]:
    """Compiles the jitted ``sample(params, key, n)`` ahead of time, then runs it once:
    (images, {'compile_seconds', 'seconds', 'samples_per_second'}), compilation excluded."""
    start = time.perf_counter()
    compiled = sample.lower(params, key, n).compile()
    compiled_at = time.perf_counter()
    images = np.asarray(compiled(params, key))
    seconds = time.perf_counter() - compiled_at
    return images, {"compile_seconds": compiled_at - start, "seconds": seconds,
                    "samples_per_second": n / seconds}


# ---------------------------------------------------------------------------------------------
# Training state: the optimizer's state and an exponential moving average of the parameters


class DiffusionState(NamedTuple):
    train: training.TrainState
    ema_params: Any  # Ho et al. sample from an EMA of the weights (decay 0.9999)


def ema_rate(decay: float, step: jax.Array) -> jax.Array:
    """min(decay, (1 + step) / (10 + step)): the average forgets the early, random weights."""
    step = step.astype(jnp.float32)
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def with_ema(update: training.Update, decay: float) -> training.Update:
    """``update`` on ``state.train``, then the EMA of the new parameters (decay 0: EMA = them)."""

    def ema_update(state: DiffusionState, batch, key):
        train_state, metrics = update(state.train, batch, key)
        rate = ema_rate(decay, train_state.step)
        ema = jax.tree_util.tree_map(lambda e, p: rate * e + (1.0 - rate) * p,
                                     state.ema_params, train_state.params)
        return DiffusionState(train_state, ema), metrics

    return ema_update


def optimizer(learning_rate: float, warmup_steps: int, clip_norm: float, adam_eps: float
              ) -> optax.GradientTransformation:
    """Ho et al.'s: gradients clipped to global norm ``clip_norm``, Adam with a linear warmup."""
    rate = (optax.linear_schedule(0.0, learning_rate, warmup_steps) if warmup_steps else
            learning_rate)
    return optax.chain(optax.clip_by_global_norm(clip_norm), optax.adam(rate, eps=adam_eps))


# ---------------------------------------------------------------------------------------------
# The experiment: experiments.ddpm_mnist

@dataclasses.dataclass(frozen=True)
class DDPMConfig(RunConfig):
    """Settings of ``experiments.ddpm_mnist``. Defaults: Ho et al.'s schedule and loss, a small
    U-Net."""

    epochs: int = _field(20, "training epochs", resume=True)
    learning_rate: float = _field(1e-3, "Adam learning rate (after the warmup)")
    warmup_steps: int = _field(200, "linear learning-rate warmup from 0 (0 = none)")
    clip_norm: float = _field(1.0, "clip gradients to this global L2 norm")
    ema_decay: float = _field(0.999, "decay of the parameters' moving average that samples "
                              "(0 = sample with the trained parameters)")
    schedule: str = _field("linear", "variance schedule: linear (1e-4..0.02) or cosine",
                           SCHEDULES)
    timesteps: int = _field(1000, "diffusion steps T")
    channels: int = _field(32, "U-Net channels at full resolution")
    multipliers: str = _field("1,2,2", "U-Net channel multiplier per resolution level "
                              "(comma-separated; each level after the first halves H and W)")
    image_size: int = _field(28, "28 (MNIST as is) or 32 (padded)")
    sampler: str = _field("ddim", "sampler of the per-epoch grids and scores", SAMPLERS,
                          resume=True)
    sampling_steps: int = _field(50, "DDIM steps (the ddpm sampler always takes all T)",
                                 resume=True)
    eta: float = _field(0.0, "DDIM noise: 0 deterministic, 1 = DDPM's posterior variance",
                        resume=True)
    classifier_workdir: str = judge_field()
    eval_samples: int = _field(1000, "samples scored by the classifier after every epoch (0 = "
                               "no scoring)", resume=True)
    final_samples: int = _field(64, "images of the final samples_ddpm.png / samples_ddim.png, "
                                "whose sampling speed is reported", resume=True)
    workdir: str = _field("workdirs/ddpm_{dataset}", "where metrics, sample grids, strips and "
                          "checkpoints go ({dataset} is replaced); rerunning with the same "
                          "workdir resumes", resume=True)

    def parsed_multipliers(self) -> tuple[int, ...]:
        try:
            values = tuple(int(part) for part in self.multipliers.split(","))
        except ValueError:
            values = ()
        if not values or min(values) < 1:
            raise ConfigError(f"--multipliers must be comma-separated positive integers, e.g. "
                              f"1,2,2, got {self.multipliers!r}")
        return values


def validate(config: DDPMConfig, num_devices: int) -> None:
    check_positive(config, "timesteps", "channels", "clip_norm", "sampling_steps",
                   "final_samples")
    validate_run(config, num_devices)
    for name in ("warmup_steps", "eval_samples"):
        if getattr(config, name) < 0:
            raise ConfigError(f"--{name} must be >= 0, got {getattr(config, name)}")
    if not 0 <= config.ema_decay < 1:
        raise ConfigError(f"--ema_decay must lie in [0, 1), got {config.ema_decay}")
    if not 0 <= config.eta <= 1:
        raise ConfigError(f"--eta must lie in [0, 1], got {config.eta}")
    if config.image_size not in (28, 32):
        raise ConfigError(f"--image_size must be 28 or 32, got {config.image_size}")
    if config.sampling_steps > config.timesteps:
        raise ConfigError(f"--sampling_steps {config.sampling_steps} exceeds --timesteps "
                          f"{config.timesteps}")
    levels = len(config.parsed_multipliers())
    if config.image_size % 2 ** (levels - 1):
        raise ConfigError(f"{levels} U-Net levels halve the image {levels - 1} times, which "
                          f"{config.image_size} does not allow: use fewer --multipliers")
    if config.channels % 8:
        raise ConfigError(f"--channels must be a multiple of 8 (GroupNorm's 8 groups), got "
                          f"{config.channels}")
    for name in ("eval_samples", "final_samples"):
        try:
            training.check_batch_size(getattr(config, name) or num_devices, num_devices,
                                      f"--{name}")
        except ValueError as e:
            raise ConfigError(str(e)) from None


def build(config: DDPMConfig) -> Diffusion:
    return Diffusion(UNet(config.channels, config.parsed_multipliers()),
                     make_schedule(config.schedule, config.timesteps))


def to_unit(x: jax.Array) -> jax.Array:
    """Model space [-1, 1] -> pixels in [0, 1] (clipped)."""
    return jnp.clip((x + 1.0) / 2.0, 0.0, 1.0)


def image_sampler(model: Diffusion, config: DDPMConfig, sampler: str | None = None,
                  steps: int | None = None, mesh=None):
    """The jitted ``sample(params, key, n) -> images [n, S, S, 1] in [0, 1]`` of a run (x_0
    predictions clipped to [-1, 1] on the way)."""
    shape = (config.image_size, config.image_size, 1)
    sample = make_sampler(model, shape, sampler=sampler or config.sampler,
                          steps=config.sampling_steps if steps is None else steps,
                          eta=config.eta, clip=1.0, mesh=mesh)
    return jax.jit(lambda params, key, n: to_unit(sample(params, key, n)), static_argnums=2)


def sample_any_count(sample, params, key: jax.Array, n: int, devices: int) -> np.ndarray:
    """n images from a sharded ``sample(params, key, n)``: n rounded up to a multiple of the
    device count, the extra images dropped."""
    return np.asarray(sample(params, key, -(-n // devices) * devices))[:n]


def strip_timesteps(timesteps: int, frames: int = 10) -> np.ndarray:
    """``frames`` timesteps from 0 to T-1, evenly spread (the strips' columns after x_0)."""
    return np.round(np.linspace(0, timesteps - 1, frames)).astype(np.int32)


def noising_strip(schedule: Schedule, x0: jax.Array, key: jax.Array, times: np.ndarray
                  ) -> jax.Array:
    """One image x0 [H, W, C] and its x_t [len(times), H, W, C] under one noise draw."""
    noise = jax.random.normal(key, x0.shape)
    x_t = q_sample(schedule, jnp.broadcast_to(x0, (len(times), *x0.shape)), jnp.asarray(times),
                   jnp.broadcast_to(noise, (len(times), *x0.shape)))
    return jnp.concatenate([x0[None], x_t])


def denoising_strip(model: Diffusion, params, key: jax.Array, shape: Sequence[int],
                    times: np.ndarray) -> jax.Array:
    """One ancestral DDPM trajectory: x_T then x_{t-1} after each step t in ``times`` (reversed),
    [len(times) + 1, *shape]; the last frame is the sample x_0 (after step 0)."""
    start_key, loop_key = jax.random.split(key)
    x_T = jax.random.normal(start_key, (1, *shape))
    _, trajectory = sample_loop(model, params, loop_key, x_T, sampler="ddpm", clip=1.0,
                                keep_trajectory=True)
    after = trajectory[::-1][:, 0]  # after[t]: the state after step t
    return jnp.concatenate([x_T, after[np.asarray(times)[::-1]]])


def _describe(terms: dict[str, float]) -> str:
    return f"noise MSE {terms['loss']:.4f}"


def run(config: DDPMConfig, workdir: Path) -> dict:
    """Trains the DDPM of ``config`` (:func:`~vaejax.experiment.fit_state`: metrics.jsonl,
    timing.jsonl, checkpoints, resume). Every epoch: the test noise MSE, ``samples_<epoch>.png``
    (64 fixed x_T through ``--sampler``) and, with a classifier, the FID / IS analogues of
    ``eval_samples`` samples. At the end: ``params.msgpack`` ({'params', 'ema'}),
    ``samples_ddpm.png`` (all T steps) and ``samples_ddim.png`` (``--sampling_steps``) with their
    samples/s, ``noising.png`` and ``denoising.png``. Returns the last metrics record."""
    from vaejax import quality
    from vaejax.autoencoders import start
    from vaejax.gan import to_tanh_range

    run_start = time.perf_counter()
    train, test, spec, writer, log = start(config, validate)
    keys = RunKeys.of(jax.random.key(config.seed))
    model = build(config)
    shape = (config.image_size, config.image_size, 1)
    params = model.init(keys.init, shape)
    tx = optimizer(config.learning_rate, config.warmup_steps, config.clip_norm, config.adam_eps)
    per_example = noise_prediction_loss(model)
    preprocess = to_tanh_range(data.make_batch_preprocessor(config.image_size))
    mesh = training.data_mesh()
    evaluate = training.make_evaluator(per_example, preprocess,
                                       batch_size=config.eval_batch_size, mesh=mesh)
    test_images = training.put_replicated(test.images, mesh)
    judge = quality.epoch_judge(config, train.images, log)
    log(f"vaejax: DDPM ({config.schedule} schedule, T = {config.timesteps}; U-Net "
        f"{config.channels} x ({config.multipliers}), {models.count_params(params):,} "
        f"parameters) on {config.dataset}, {len(train.images):,} training images; Adam "
        f"{config.learning_rate:g}, EMA {config.ema_decay:g}; per-epoch samples: "
        f"{config.sampler}" + (f" {config.sampling_steps} steps" if config.sampler == "ddim"
                               else f" {config.timesteps} steps"))
    # pictures and scores: each process samples on its own devices, from host weights (a sampler
    # sharded over every process would need all of them, while only process 0 writes)
    local_mesh = training.data_mesh(jax.local_devices())
    sample = image_sampler(model, config, mesh=local_mesh)
    fixed_key = keys.sample

    def end_of_epoch(epoch: int, state: DiffusionState, train_terms):
        test_terms = {k: float(v) for k, v in evaluate(state.ema_params, test_images,
                                                        keys.eval).items()}
        record, text = train_and_test_record(epoch, train_terms, test_terms, _describe)
        if epoch == 0:
            return record, text
        ema = jax.device_get(state.ema_params)
        if judge is not None:
            scores, scored = quality.judge_epoch(
                judge, lambda key, n: sample_any_count(sample, ema, key, n, local_mesh.size),
                keys.eval, config.eval_samples, spec.num_classes)
            record.update(scores)
            text += scored
        if writer:
            grid = sample_any_count(sample, ema, fixed_key, 64, local_mesh.size)
            io.save_image_grid(workdir / f"samples_{epoch}.png", grid, 8)
        return record, text

    settings = TrainSettings.of(config)
    state, record = fit_state(
        workdir, config_record=dataclasses.asdict(config),
        free_fields=resumable_fields(DDPMConfig), settings=settings,
        state=DiffusionState(training.create_train_state(params, tx),
                             jax.tree_util.tree_map(np.array, params)),  # own buffers: donated
        update=with_ema(training.gradient_update(objectives.batch_mean(per_example), tx),
                        config.ema_decay),
        train_data=train.images, preprocess=preprocess, keys=keys, end_of_epoch=end_of_epoch,
        mesh=mesh)
    saved = {"params": jax.device_get(state.train.params), "ema": jax.device_get(
        state.ema_params)}
    ema = saved["ema"]
    if writer:
        io.save_params(workdir / "params.msgpack", saved)
        rates = {}
        for name, steps in (("ddpm", config.timesteps), ("ddim", config.sampling_steps)):
            images, rates[name] = sampling_rate(image_sampler(model, config, name, steps,
                                                              local_mesh),
                                                ema, fixed_key, config.final_samples)
            io.save_image_grid(workdir / f"samples_{name}.png", images, 8)
            log(f"vaejax: {name} sampling, {steps} steps: {config.final_samples} images in "
                f"{rates[name]['seconds']:.1f} s = {rates[name]['samples_per_second']:.2f} "
                f"samples/s (compiling {rates[name]['compile_seconds']:.1f} s)")
        io.atomic_write_bytes(workdir / "sampling_speed.json", (json.dumps(
            {"devices": local_mesh.size, "platform": jax.devices()[0].platform, "samples":
             config.final_samples, **rates}, indent=2) + "\n").encode())
        times = strip_timesteps(config.timesteps)
        x0 = preprocess(jnp.asarray(test.images[:1]), keys.eval)[0]
        io.save_image_grid(workdir / "noising.png", np.asarray(to_unit(noising_strip(
            model.schedule, x0, keys.eval, times))), len(times) + 1)
        strip = jax.jit(lambda p, key: denoising_strip(model, p, key, shape, times))
        io.save_image_grid(workdir / "denoising.png",
                           np.asarray(to_unit(strip(ema, fixed_key))), len(times) + 1)
    log(f"done: {config.epochs} epochs; whole run {time.perf_counter() - run_start:.1f} s; "
        f"outputs in {workdir}")
    return record
