"""Sampling a trained denoiser.

**Sampling** (:func:`make_sampler`): ancestral DDPM sampling over all T steps, x_{t-1} ~
q(x_{t-1} | x_t, x0_hat) with x0_hat predicted from eps_theta; or DDIM over a subsequence of
``steps`` timesteps, deterministic for ``eta = 0`` (eta = 1 over all T steps is DDPM). Each is a
``lax.scan`` over timesteps, batched, the batch sharded over the devices, run as compiled calls
of at most :data:`CHUNK_STEPS` steps each: a signal reaches Python only between calls into XLA,
so a run stops within one chunk (a few seconds on a CPU), not after the whole reverse process
(minutes there for T = 1,000).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vaejax.objectives.diffusion import Diffusion, Schedule, posterior, predict_x0
from vaejax.sharding import batch_sharded, check_batch_size, data_mesh

SAMPLERS = ("ddpm", "ddim")
CHUNK_STEPS = 50  # reverse steps per compiled call of make_sampler's samplers


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


def reverse_steps(timesteps: int, sampler: str, steps: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(t, t_next) int32 [S] of every step of ``sampler`` in the order they run: t descending,
    t_next the timestep the step reaches (-1: the data). ``steps``: DDIM's (0 = T)."""
    if sampler == "ddpm":
        times = np.arange(timesteps, dtype=np.int32)
    elif sampler == "ddim":
        times = ddim_timesteps(timesteps, steps or timesteps)
    else:
        raise ValueError(f"unknown sampler {sampler!r}: use one of {', '.join(SAMPLERS)}")
    previous = np.concatenate([[-1], times[:-1]]).astype(np.int32)
    return times[::-1].copy(), previous[::-1].copy()


def _scan_steps(model, params, key, x, pairs, *, sampler, eta, clip, constrain, keep_trajectory):
    """The steps ``pairs`` = (t, t_next) [S] from x; returns (x, trajectory or None)."""

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

    return jax.lax.scan(body, constrain(x), pairs)


def _constrainer(sharding):
    if sharding is None:
        return lambda x: x
    return lambda x: jax.lax.with_sharding_constraint(x, sharding)


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
    pairs = reverse_steps(model.schedule.timesteps, sampler, steps)
    x, trajectory = _scan_steps(
        model,
        params,
        key,
        x_T,
        pairs,
        sampler=sampler,
        eta=eta,
        clip=clip,
        constrain=_constrainer(sharding),
        keep_trajectory=keep_trajectory,
    )
    return (x, trajectory) if keep_trajectory else x


@dataclasses.dataclass(frozen=True)
class ChunkedSampler:
    """``sampler(params, key, n) -> [n, ...]``: x_T from ``start(key, n)`` (with the steps'
    key), each chunk of ``chunks`` ((t, t_next) pairs) by ``step(params, key, x, pairs)``, then
    ``finish(x)`` when given; every one a jitted function, so each chunk is one compiled call."""

    start: Callable
    step: Callable
    chunks: tuple[tuple[np.ndarray, np.ndarray], ...]
    finish: Callable | None
    devices: int

    def __call__(self, params, key: jax.Array, n: int) -> jax.Array:
        check_batch_size(n, self.devices, "number of samples")
        return self._run(self.start, lambda pairs: self.step, self.finish, params, key, n)

    def compile(self, params, key: jax.Array, n: int) -> Callable[[Any, jax.Array], jax.Array]:
        """The same sampler for ``n`` samples with its programs compiled now (``x_T`` is drawn
        once to lower them): ``run(params, key)``, which compiles nothing."""
        check_batch_size(n, self.devices, "number of samples")
        start = self.start.lower(key, n).compile()
        x, loop_key = start(key)
        steps = {}
        for pairs in self.chunks:
            if len(pairs[0]) not in steps:
                steps[len(pairs[0])] = self.step.lower(params, loop_key, x, pairs).compile()
        finish = self.finish.lower(x).compile() if self.finish else None
        return lambda params, key: self._run(
            lambda key, n: start(key), lambda pairs: steps[len(pairs[0])], finish, params, key, n
        )

    def _run(self, start, step_for, finish, params, key, n):
        x, loop_key = start(key, n)
        for pairs in self.chunks:
            before, x = x, step_for(pairs)(params, loop_key, x, pairs)
            # calls return before their work is done: waiting for the chunk before this one
            # returns to Python (and its signal handlers) once per chunk, one chunk queued
            before.block_until_ready()
        return finish(x) if finish else x


def make_sampler(
    model: Diffusion,
    example_shape: Sequence[int],
    *,
    sampler: str = "ddpm",
    steps: int = 0,
    eta: float = 0.0,
    clip: float | None = None,
    mesh=None,
    chunk_steps: int = CHUNK_STEPS,
    finish: Callable[[jax.Array], jax.Array] | None = None,
) -> ChunkedSampler:
    """``sample(params, key, n) -> x_0 [n, *example_shape]`` (or ``finish(x_0)``): x_T ~
    N(0, I) and the steps' noise from ``key``, then the steps of :func:`sample_loop` (the same
    samples), run as compiled calls of ``chunk_steps`` steps; the batch sharded over ``mesh``
    (default: all devices; n must split evenly). The same key gives the same samples on any
    number of devices."""
    mesh = mesh or data_mesh()
    sharding = batch_sharded(mesh)
    constrain = _constrainer(sharding)
    times, previous = reverse_steps(model.schedule.timesteps, sampler, steps)
    options = dict(sampler=sampler, eta=eta, clip=clip, constrain=constrain)

    def start(key, n):
        start_key, loop_key = jax.random.split(key)
        return constrain(jax.random.normal(start_key, (n, *example_shape))), loop_key

    def step(params, key, x, pairs):  # at most two programs: full chunks and the last
        return _scan_steps(model, params, key, x, pairs, keep_trajectory=False, **options)[0]

    return ChunkedSampler(
        start=jax.jit(start, static_argnums=1),
        step=jax.jit(step, out_shardings=sharding),
        chunks=tuple(
            (times[i : i + chunk_steps], previous[i : i + chunk_steps])
            for i in range(0, len(times), chunk_steps)
        ),
        finish=jax.jit(finish, out_shardings=sharding) if finish else None,
        devices=mesh.size,
    )
