"""An exponential moving average of the parameters, as a wrapper of any update."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from vaejax.training import step


class DiffusionState(NamedTuple):
    train: step.TrainState
    ema_params: Any  # Ho et al. sample from an EMA of the weights (decay 0.9999)


def ema_rate(decay: float, step: jax.Array) -> jax.Array:
    """min(decay, (1 + step) / (10 + step)): the average forgets the early, random weights."""
    step = step.astype(jnp.float32)
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def with_ema(update: step.Update, decay: float) -> step.Update:
    """``update`` on ``state.train``, then the EMA of the new parameters (decay 0: EMA = them)."""

    def ema_update(state: DiffusionState, batch, key):
        train_state, metrics = update(state.train, batch, key)
        rate = ema_rate(decay, train_state.step)
        ema = jax.tree_util.tree_map(
            lambda e, p: rate * e + (1.0 - rate) * p, state.ema_params, train_state.params
        )
        return DiffusionState(train_state, ema), metrics

    return ema_update
