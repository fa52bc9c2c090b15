"""Drawing and timing diffusion samples; the noising and denoising strips."""

from __future__ import annotations

import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vaejax.objectives.diffusion import Diffusion, Schedule, q_sample
from vaejax.objectives.sampling import sample_loop


def sampling_rate(sample, params, key: jax.Array, n: int) -> tuple[np.ndarray, dict[str, float]]:
    """Compiles ``sample(params, key, n)`` (a :class:`~vaejax.objectives.sampling.ChunkedSampler`)
    ahead of time, then runs it once: (images, {'compile_seconds', 'seconds',
    'samples_per_second'}), compilation excluded."""
    start = time.perf_counter()
    compiled = sample.compile(params, key, n)
    compiled_at = time.perf_counter()
    images = np.asarray(compiled(params, key))
    seconds = time.perf_counter() - compiled_at
    return images, {
        "compile_seconds": compiled_at - start,
        "seconds": seconds,
        "samples_per_second": n / seconds,
    }


def to_unit(x: jax.Array) -> jax.Array:
    """Model space [-1, 1] -> pixels in [0, 1] (clipped)."""
    return jnp.clip((x + 1.0) / 2.0, 0.0, 1.0)


def sample_any_count(sample, params, key: jax.Array, n: int, devices: int) -> np.ndarray:
    """n images from a sharded ``sample(params, key, n)``: n rounded up to a multiple of the
    device count, the extra images dropped."""
    return np.asarray(sample(params, key, -(-n // devices) * devices))[:n]


def strip_timesteps(timesteps: int, frames: int = 10) -> np.ndarray:
    """``frames`` timesteps from 0 to T-1, evenly spread (the strips' columns after x_0)."""
    return np.round(np.linspace(0, timesteps - 1, frames)).astype(np.int32)


def noising_strip(
    schedule: Schedule, x0: jax.Array, key: jax.Array, times: np.ndarray
) -> jax.Array:
    """One image x0 [H, W, C] and its x_t [len(times), H, W, C] under one noise draw."""
    noise = jax.random.normal(key, x0.shape)
    x_t = q_sample(
        schedule,
        jnp.broadcast_to(x0, (len(times), *x0.shape)),
        jnp.asarray(times),
        jnp.broadcast_to(noise, (len(times), *x0.shape)),
    )
    return jnp.concatenate([x0[None], x_t])


def denoising_strip(
    model: Diffusion, params, key: jax.Array, shape: Sequence[int], times: np.ndarray
) -> jax.Array:
    """One ancestral DDPM trajectory: x_T then x_{t-1} after each step t in ``times`` (reversed),
    [len(times) + 1, *shape]; the last frame is the sample x_0 (after step 0)."""
    start_key, loop_key = jax.random.split(key)
    x_T = jax.random.normal(start_key, (1, *shape))
    _, trajectory = sample_loop(
        model, params, loop_key, x_T, sampler="ddpm", clip=1.0, keep_trajectory=True
    )
    after = trajectory[::-1][:, 0]  # after[t]: the state after step t
    return jnp.concatenate([x_T, after[np.asarray(times)[::-1]]])
