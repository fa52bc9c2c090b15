"""Learning-rate schedules, as optax schedules of the optimizer's update count.

- ``constant``: the peak rate throughout.
- ``cosine``: from the peak down to 0 along half a cosine over the run's steps after the
  warmup (Loshchilov & Hutter, SGDR, ICLR 2017, without restarts).
- ``burda``: Burda, Grosse and Salakhutdinov's staged decay (Importance Weighted Autoencoders,
  ICLR 2016, section 5): pass i = 0, 1, ..., 7 lasts 3^i epochs at peak * 10^(-i/7), 3,280
  epochs in all; a run that goes on keeps the last rate.

Any of them may start with a linear warmup from 0 to the peak over ``warmup_steps`` updates; the
schedule proper then starts at the end of the warmup. ``constant`` without a warmup is the plain
float, so that such a run's optimizer state is that of ``optax.adam(peak)``.
"""

from __future__ import annotations

import optax

SCHEDULES = ("constant", "cosine", "burda")
BURDA_PASSES = 8  # i = 0..7


def burda_boundaries(steps_per_epoch: int, passes: int = BURDA_PASSES) -> list[int]:
    """The update counts at which Burda et al.'s pass i + 1 begins, i = 0..passes-2: the
    cumulative 3^0 + ... + 3^i epochs in updates."""
    boundaries, epochs = [], 0
    for i in range(passes - 1):
        epochs += 3**i
        boundaries.append(epochs * steps_per_epoch)
    return boundaries


def burda_schedule(peak: float, steps_per_epoch: int) -> optax.Schedule:
    """peak * 10^(-i/7) during pass i (3^i epochs of ``steps_per_epoch`` updates each)."""
    factor = 10.0 ** (-1.0 / 7.0)  # piecewise_constant_schedule multiplies at each boundary
    return optax.piecewise_constant_schedule(
        peak, {boundary: factor for boundary in burda_boundaries(steps_per_epoch)}
    )


def learning_rate(
    name: str,
    peak: float,
    *,
    steps_per_epoch: int,
    total_steps: int,
    warmup_steps: int = 0,
) -> float | optax.Schedule:
    """The learning rate of schedule ``name`` for optax (a float for a constant rate without
    warmup, else a schedule of the update count). ``total_steps`` (updates of the whole run)
    sets the cosine's length; ``steps_per_epoch`` the staged decay's passes."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown learning-rate schedule {name!r}: use one of {SCHEDULES}")
    if name == "constant" and not warmup_steps:
        return peak
    after_warmup = {
        "constant": lambda: optax.constant_schedule(peak),
        "cosine": lambda: optax.cosine_decay_schedule(peak, max(total_steps - warmup_steps, 1)),
        "burda": lambda: burda_schedule(peak, steps_per_epoch),
    }[name]()
    if not warmup_steps:
        return after_warmup
    warmup = optax.linear_schedule(0.0, peak, warmup_steps)
    return optax.join_schedules([warmup, after_warmup], [warmup_steps])


def every_nth(rate: float | optax.Schedule, n: int) -> float | optax.Schedule:
    """``rate`` for an optimizer that updates ``n`` times per training step (a GAN's critic):
    its update count c is step c // n of the schedule."""
    if n == 1 or not callable(rate):
        return rate
    return lambda count: rate(count // n)


def describe(name: str, warmup_steps: int = 0) -> str:
    """The schedule in words for a run's start line ('' for a constant rate without warmup)."""
    text = {
        "constant": "constant",
        "cosine": "cosine decay to 0",
        "burda": "Burda et al.'s decay, x 10^(-1/7) after 1, 3, 9, ... epochs",
    }[name]
    if not warmup_steps:
        return "" if name == "constant" else f"; learning rate: {text}"
    return f"; learning rate: {text} after {warmup_steps} warmup steps"


def learning_rate_of(config, num_train: int, *, batch_size=None, epochs=None, peak=None):
    """The optax learning rate of a run's config (``--lr_schedule``, ``--warmup_steps``,
    ``--learning_rate``, ``--batch_size``, ``--epochs``) for ``num_train`` training images:
    steps of ``batch_size`` images (default the config's), the cosine over ``epochs``, peak
    ``peak`` (each argument given overrides the config's field)."""
    per_epoch = max(num_train // (batch_size or config.batch_size), 1)
    return learning_rate(
        config.lr_schedule,
        config.learning_rate if peak is None else peak,
        steps_per_epoch=per_epoch,
        total_steps=(epochs or config.epochs) * per_epoch,
        warmup_steps=config.warmup_steps,
    )


def adam_of(config, num_train: int, *, eps=None, **overrides) -> optax.GradientTransformation:
    """Adam at the learning rate of a run's config (:func:`learning_rate_of`, whose keyword
    overrides it takes) with the config's ``adam_eps`` (or ``eps``): the optimizer of every
    single-model run."""
    rate = learning_rate_of(config, num_train, **overrides)
    return optax.adam(rate, eps=config.adam_eps if eps is None else eps)
