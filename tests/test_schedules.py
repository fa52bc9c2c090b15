"""Learning-rate schedules against their closed forms, and their wiring into the runs."""

from __future__ import annotations

import math

import numpy as np
import optax
import pytest

from vaejax.runs.vae import VAEConfig
from vaejax.training import schedules


def _burda_rate(peak: float, epoch: int) -> float:
    """Burda et al.'s rate in epoch ``epoch`` (0-based), found by walking the passes."""
    start = 0
    for i in range(8):
        if epoch < start + 3**i:
            return peak * 10 ** (-i / 7)
        start += 3**i
    return peak * 10 ** (-7 / 7)  # after the 3,280 epochs: the last pass's rate


def test_burda_passes_last_3_to_the_i_epochs_at_a_tenth_to_the_i_over_7():
    per_epoch = 3
    rate = schedules.learning_rate("burda", 1e-3, steps_per_epoch=per_epoch, total_steps=1)
    assert schedules.burda_boundaries(1) == [1, 4, 13, 40, 121, 364, 1093]
    assert sum(3**i for i in range(8)) == 3280
    epochs = [*range(0, 130), 363, 364, 1092, 1093, 3279, 3280, 5000]
    for epoch in epochs:
        for position in (0, per_epoch - 1):
            got = float(rate(epoch * per_epoch + position))
            assert got == pytest.approx(_burda_rate(1e-3, epoch), rel=1e-6), epoch


def test_cosine_follows_half_a_cosine_after_a_linear_warmup():
    peak, warmup, total = 2e-3, 10, 110
    rate = schedules.learning_rate(
        "cosine", peak, steps_per_epoch=11, total_steps=total, warmup_steps=warmup
    )
    for step in range(0, 130):
        if step < warmup:
            expected = peak * step / warmup
        else:
            t = min(step - warmup, total - warmup) / (total - warmup)
            expected = peak * 0.5 * (1 + math.cos(math.pi * t))
        assert float(rate(step)) == pytest.approx(expected, rel=1e-5, abs=peak * 1e-6), step


def test_constant_without_warmup_is_the_plain_rate_and_with_one_reaches_it_exactly():
    assert schedules.learning_rate("constant", 1e-3, steps_per_epoch=5, total_steps=50) == 1e-3
    rate = schedules.learning_rate(
        "constant", 1e-3, steps_per_epoch=5, total_steps=50, warmup_steps=4
    )
    values = np.array([float(rate(s)) for s in range(8)], np.float32)
    expected = np.float32([0, 0.25e-3, 0.5e-3, 0.75e-3, 1e-3, 1e-3, 1e-3, 1e-3])
    np.testing.assert_allclose(values, expected, rtol=1e-6)
    assert values[4] == np.float32(1e-3)  # after the warmup: exactly the rate, not close to it
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'step'"):
        schedules.learning_rate("step", 1e-3, steps_per_epoch=1, total_steps=1)


def test_a_critic_with_n_updates_per_step_follows_the_steps():
    rate = schedules.learning_rate("burda", 1.0, steps_per_epoch=2, total_steps=1)
    critic = schedules.every_nth(rate, 5)
    for count in range(0, 60):
        assert float(critic(count)) == float(rate(count // 5))
    assert schedules.every_nth(0.5, 5) == 0.5


def test_runs_count_steps_of_their_batch_size_and_epochs():
    config = VAEConfig(batch_size=10, epochs=4, lr_schedule="burda", learning_rate=1e-3)
    rate = schedules.learning_rate_of(
        config, 35
    )  # 3 steps per epoch; the ragged 5 images are dropped
    assert float(rate(2)) == pytest.approx(1e-3)
    assert float(rate(3)) == pytest.approx(1e-3 * 10 ** (-1 / 7))  # epoch 1: pass 1
    assert float(rate(12)) == pytest.approx(1e-3 * 10 ** (-2 / 7))  # epoch 4: pass 2
    cosine = schedules.learning_rate_of(
        VAEConfig(batch_size=10, epochs=4, lr_schedule="cosine"), 35
    )
    assert float(cosine(6)) == pytest.approx(1e-3 * 0.5)  # half of 12 steps
    assert float(cosine(12)) == 0.0


def test_adam_under_a_schedule_takes_the_steps_the_closed_form_says():
    """Adam on f(w) = w, built by hand and from a run's config: with a schedule, each update is
    -rate(t) * sign (Adam's first step is -lr for any gradient; with a constant gradient every
    step is)."""
    rate = schedules.learning_rate("cosine", 0.1, steps_per_epoch=1, total_steps=6)
    config = VAEConfig(batch_size=4, epochs=6, lr_schedule="cosine", learning_rate=0.1)
    expected = [-0.1 * 0.5 * (1 + math.cos(math.pi * t / 6)) for t in range(6)]
    for tx in (optax.adam(rate, eps=0.0), schedules.adam_of(config, 4, eps=0.0)):
        state = tx.init(np.float32(0.0))
        steps = []
        for _ in range(6):
            updates, state = tx.update(np.float32(1.0), state)
            steps.append(float(updates))
        np.testing.assert_allclose(steps, expected, rtol=1e-4)  # float32 Adam
