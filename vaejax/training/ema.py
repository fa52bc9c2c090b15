"""An exponential moving average of the parameters, as a wrapper of any update."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from vaejax.training import step


class EMAState(NamedTuple):
    """A training state and an exponential moving average of (some of) its parameters: Ho et
    al. sample their DDPM from one (decay 0.9999), Yazici et al. 2019 their GANs' generators."""

    train: Any
    ema_params: Any


def ema_rate(decay: float, step: jax.Array) -> jax.Array:
    """min(decay, (1 + step) / (10 + step)): the average forgets the early, random weights."""
    step = step.astype(jnp.float32)
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def with_ema(
    update: step.Update,
    decay: float,
    tracked: Callable[[Any], step.TrainState] = lambda train: train,
) -> step.Update:
    """``update`` on ``state.train``, then the EMA of ``tracked(new state.train)``'s parameters,
    the rate by that :class:`~vaejax.training.TrainState`'s step (decay 0: EMA = them)."""

    def ema_update(state: EMAState, batch, key):
        train_state, metrics = update(state.train, batch, key)
        followed = tracked(train_state)
        rate = ema_rate(decay, followed.step)
        ema = jax.tree_util.tree_map(
            lambda e, p: rate * e + (1.0 - rate) * p, state.ema_params, followed.params
        )
        return EMAState(train_state, ema), metrics

    return ema_update
