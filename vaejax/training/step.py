"""One training machinery for every model: updates, compiled steps, whole-epoch loops, sharding.

The pieces compose like optax transformations:

- An **update** is a pure function ``update(state, batch, key) -> (state, metrics)``.
  :func:`gradient_update` makes one from a loss ``loss_fn(params, batch, key) -> (loss, metrics)``
  and an optax optimizer. A two-player model (a GAN) writes its update as two gradient updates
  on the two halves of its state, each through its own loss and optimizer, and hands that
  function to the same step factories; a diffusion model is just another loss.
- :func:`make_train_step` compiles an update for a Python loop over host batches;
  :func:`make_epoch_runner` compiles a whole epoch, or any stretch of it (permutation,
  gathering, preprocessing, every step, a finiteness guard), into one loop over a dataset that
  lives on the device(s).
- Both shard the batch over a 1-D ``data`` mesh of all devices and replicate the state, so one
  device and eight run the same code. Keys depend only on (seed, step), and the data order only
  on (seed, epoch): a run is reproducible, the compiled loop and the Python loop take the same
  steps, and a run stopped at any step resumes exactly (:mod:`vaejax.training.loop`).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from vaejax.data.preprocess import Preprocess
from vaejax.sharding import (
    batch_sharded,
    batch_splitter,
    check_batch_size,
    data_mesh,
    gather_rows,
    replicated,
)

Update = Callable[[Any, Any, jax.Array], tuple[Any, dict[str, jax.Array]]]


class TrainState(NamedTuple):
    """What one optimizer trains: step count (int32 scalar), parameters and optimizer state."""

    step: jax.Array
    params: Any
    opt_state: Any


def create_train_state(params, optimizer: optax.GradientTransformation) -> TrainState:
    return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))


def gradient_update(loss_fn: Callable, optimizer: optax.GradientTransformation) -> Update:
    """An update taking one optimizer step on ``loss_fn(params, batch, key) -> (loss, metrics)``.

    The returned metrics are ``loss_fn``'s plus ``loss`` and ``grad_norm`` (the global L2 norm
    of the gradient).
    """

    def update(state: TrainState, batch, key):
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, key)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, **metrics, "grad_norm": optax.tree.norm(grads)}
        return TrainState(state.step + 1, params, opt_state), metrics

    return update


def step_key(base_key: jax.Array, step) -> jax.Array:
    """The key of training step ``step``: a function of (base key, step) only."""
    return jax.random.fold_in(base_key, step)


def epoch_permutation(data_key: jax.Array, epoch, num_examples: int) -> jax.Array:
    """The order of the examples in ``epoch``: a function of (data key, epoch) only."""
    return jax.random.permutation(jax.random.fold_in(data_key, epoch), num_examples)


def _identity_preprocess(batch, key):
    del key
    return batch


def step_body(update: Update, preprocess: Preprocess | None, mesh: Mesh):
    """``body(state, raw_batch, base_key, step)``: preprocess with one half of the step key,
    update with the other. Shared by the Python-loop step and the epoch loop."""
    preprocess = preprocess or _identity_preprocess
    sharding = batch_sharded(mesh)

    def body(state, raw_batch, base_key, step):
        data_key, update_key = jax.random.split(step_key(base_key, step))
        batch = preprocess(raw_batch, data_key)
        batch = jax.tree_util.tree_map(
            lambda a: jax.lax.with_sharding_constraint(a, sharding), batch
        )
        return update(state, batch, update_key)

    return body


def make_train_step(
    update: Update, preprocess: Preprocess | None = None, mesh: Mesh | None = None
) -> Callable:
    """A compiled ``train_step(state, raw_batch, base_key, step) -> (state, metrics)``.

    ``state`` is donated (its buffers are reused for the result: do not touch it afterwards).
    ``raw_batch`` (a pytree of arrays with a leading batch axis) is sharded over the ``data``
    axis; the state stays replicated. For loops in Python, e.g. when data do not fit on the device.
    """
    mesh = mesh or data_mesh()
    compiled = jax.jit(
        step_body(update, preprocess, mesh), donate_argnums=0, out_shardings=replicated(mesh)
    )
    sharding = batch_sharded(mesh)

    def train_step(state, raw_batch, base_key, step):
        check_batch_size(len(jax.tree_util.tree_leaves(raw_batch)[0]), mesh.size)
        return compiled(state, jax.device_put(raw_batch, sharding), base_key, step)

    return train_step


NONFINITE_POLICIES = ("stop", "skip")


class NonFiniteError(RuntimeError):
    """A training step produced a non-finite loss, metric or gradient."""

    def __init__(self, step: int):
        super().__init__(f"non-finite loss or gradient at step {step}")
        self.step = step


def all_finite(tree) -> jax.Array:
    """True iff every floating-point number in ``tree`` is finite (a scalar bool)."""
    leaves = [
        jnp.all(jnp.isfinite(a))
        for a in jax.tree_util.tree_leaves(tree)
        if jnp.issubdtype(jnp.result_type(a), jnp.inexact)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


class EpochRunner(NamedTuple):
    """Compiled pieces that run an epoch, or any stretch of one, on data held by the device(s).

    - ``order(data_key, epoch)``: the epoch's batches of example indices, [steps_per_epoch,
      batch_size] int32, from :func:`epoch_permutation`.
    - ``new_metrics(state, data)``: an empty per-step metrics buffer for one epoch: each metric
      of the update as [steps_per_epoch], plus ``finite`` (bool: all the step's metrics, e.g.
      its loss and gradient norm, were finite).
    - ``run(state, metrics, data, order, base_key, epoch, start, stop) -> (state, metrics,
      position)``: steps ``start, ..., stop - 1`` of ``epoch`` in one compiled loop (``start``
      and ``stop`` are traced: any stretch, no recompilation), each step's metrics written into
      its slot of the buffer. ``position`` is where it stopped: ``stop``, or under the ``stop``
      policy the first non-finite step, whose update is in the returned state: discard it.
      Under ``skip`` a non-finite step's update is not applied. ``state`` and ``metrics`` are
      donated.

    Steps run in stretches give bit-for-bit the same result as the whole epoch at once: that is
    what lets a run stop anywhere (checkpoint, preemption) and resume exactly.
    Calling the runner, ``runner(state, data, data_key, base_key, epoch)``, runs a whole epoch and
    returns ``(state, metrics)``, raising :class:`NonFiniteError` under the ``stop`` policy.
    """

    steps_per_epoch: int
    batch_size: int
    order: Callable
    new_metrics: Callable
    run: Callable

    def __call__(self, state, data, data_key, base_key, epoch):
        metrics = self.new_metrics(state, data)
        state, metrics, position = self.run(
            state,
            metrics,
            data,
            self.order(data_key, epoch),
            base_key,
            epoch,
            0,
            self.steps_per_epoch,
        )
        if int(position) < self.steps_per_epoch:
            raise NonFiniteError(epoch * self.steps_per_epoch + int(position))
        return state, metrics


def make_epoch_runner(
    update: Update,
    preprocess: Preprocess | None,
    *,
    batch_size: int,
    num_examples: int,
    mesh: Mesh | None = None,
    nonfinite: str = "stop",
    rows_sharded: bool = False,
) -> EpochRunner:
    """Compiles ``update`` into an :class:`EpochRunner` over ``num_examples`` examples.

    Each epoch visits ``num_examples // batch_size`` batches of a fresh permutation; the ragged
    remainder is **dropped** (a different remainder every epoch, so every example is seen equally
    often on average, and every step has the same shape). Global step ``epoch * steps_per_epoch
    + i`` keys step ``i``. The data are a pytree of arrays with ``num_examples`` rows already on
    the device(s): in full on each (:func:`~vaejax.sharding.put_replicated`), or with
    ``rows_sharded`` split over them (:func:`~vaejax.sharding.put_row_sharded`: each device holds
    1/N of the rows, and each step gathers its batch with one reduce-scatter; the same batches,
    bit for bit). Batches are gathered, preprocessed and stepped on inside one compiled loop.

    Every step checks that its metrics (the loss, the gradient norm: a non-finite parameter
    shows in the next step's loss) are finite. ``nonfinite="stop"`` ends the stretch at the
    first step that is not (the caller discards the state); ``"skip"`` keeps the old state for
    that step and goes on with the next batch (``finite`` False marks it). Skipping costs a
    select between the old and the new state on every step (about 10% of an MLP VAE step on a
    CPU); stopping costs nothing measurable.
    """
    if nonfinite not in NONFINITE_POLICIES:
        raise ValueError(f"nonfinite must be one of {NONFINITE_POLICIES}, got {nonfinite!r}")
    mesh = mesh or data_mesh()
    check_batch_size(batch_size, mesh.size)
    steps = num_examples // batch_size
    if steps == 0:
        raise ValueError(f"batch size {batch_size} exceeds the {num_examples} training examples")
    skip_nonfinite = nonfinite == "skip"
    guarded_step = _guarded_step(update, preprocess, mesh, skip_nonfinite, rows_sharded)

    def order_fn(data_key, epoch):
        order = epoch_permutation(data_key, epoch, num_examples)[: steps * batch_size]
        return order.reshape(steps, batch_size).astype(jnp.int32)

    out = replicated(mesh)
    return EpochRunner(
        steps_per_epoch=steps,
        batch_size=batch_size,
        order=jax.jit(order_fn, out_shardings=out),
        new_metrics=jax.jit(metrics_buffer(guarded_step, steps, batch_size), out_shardings=out),
        run=jax.jit(
            stretch_loop(guarded_step, steps, skip_nonfinite),
            donate_argnums=(0, 1),
            out_shardings=out,
        ),
    )


def metrics_buffer(guarded_step: Callable, steps: int, batch_size: int | None) -> Callable:
    """``new_metrics(state, data)``: an epoch's per-step metrics buffer of ``guarded_step``,
    zeros with a leading axis of ``steps``. ``batch_size`` None: ``data`` is a streamed block
    (:func:`vaejax.training.stream.make_streamed_runner`)."""

    def new_metrics(state, data):
        order = (
            jnp.zeros((), jnp.int32)
            if batch_size is None
            else jnp.zeros((steps, batch_size), jnp.int32)
        )
        shapes = jax.eval_shape(guarded_step, state, order, data, jax.random.key(0), 0, 0)[1]
        return {k: jnp.zeros((steps, *v.shape), v.dtype) for k, v in shapes.items()}

    return new_metrics


def _guarded_step(
    update: Update,
    preprocess: Preprocess | None,
    mesh: Mesh,
    skip_nonfinite: bool,
    rows_sharded: bool = False,
) -> Callable:
    """``guarded_step(state, order, data, base_key, global_step, i) -> (state, metrics)``:
    gathers batch ``order[i]`` of ``data`` (replicated, or split by rows), takes the step, and
    adds ``finite`` to its metrics; with ``skip_nonfinite`` a non-finite step leaves the state
    as it was."""
    step = step_body(update, preprocess, mesh)
    index_sharding = batch_sharded(mesh)
    gather = gather_rows(mesh) if rows_sharded else None

    def guarded_step(state, order, data, base_key, global_step, i):
        if gather is not None:
            raw = gather(data, order[i])
        else:
            idx = jax.lax.with_sharding_constraint(order[i], index_sharding)
            raw = jax.tree_util.tree_map(lambda a: a[idx], data)
        new_state, metrics = step(state, raw, base_key, global_step)
        finite = all_finite(metrics)
        if skip_nonfinite:
            new_state = jax.lax.cond(finite, lambda: new_state, lambda: state)
        return new_state, {**metrics, "finite": finite}

    return guarded_step


def stretch_loop(guarded_step: Callable, steps: int, skip_nonfinite: bool) -> Callable:
    """:attr:`EpochRunner.run` (before compilation): steps ``start, ..., stop - 1`` of an epoch
    of ``steps`` steps in one ``while_loop``, halting at a non-finite step unless skipping."""

    def run(state, metrics, data, order, base_key, epoch, start, stop):
        def cond(carry):
            i, _, _, halted = carry
            return (i < stop) & ~halted

        def body(carry):
            i, state, metrics, _ = carry
            state, step_metrics = guarded_step(state, order, data, base_key, epoch * steps + i, i)
            metrics = jax.tree_util.tree_map(lambda buf, v: buf.at[i].set(v), metrics, step_metrics)
            halted = jnp.array(False) if skip_nonfinite else ~step_metrics["finite"]
            return jnp.where(halted, i, i + 1), state, metrics, halted

        position, state, metrics, _ = jax.lax.while_loop(
            cond, body, (jnp.asarray(start, jnp.int32), state, metrics, jnp.array(False))
        )
        return state, metrics, position

    return run


def make_evaluator(
    per_example: Callable,
    preprocess: Preprocess | None = None,
    *,
    batch_size: int = 1000,
    mesh: Mesh | None = None,
) -> Callable:
    """``evaluate(params, data, key, num_examples=None) -> {metric: mean over all examples}``.

    ``per_example(params, batch, key)`` returns a dict of [B] arrays. Every example counts once:
    the last batch is padded and the padding masked out. ``data``: replicated, or split by rows
    (:func:`~vaejax.sharding.put_row_sharded`; ``num_examples`` leaves its padding out). Each
    device holds its part of every batch; batch ``b`` uses ``fold_in(key, b)``. One compiled
    call per batch, so a signal stops an evaluation within a batch's time.
    """
    mesh = mesh or data_mesh()
    check_batch_size(batch_size, mesh.size, "evaluation batch size")
    preprocess = preprocess or _identity_preprocess
    sharding = batch_sharded(mesh)

    split_batches = batch_splitter(mesh, batch_size)

    @functools.partial(jax.jit, donate_argnums=4, out_shardings=replicated(mesh))
    def add_batch(params, stacked, masks, key, totals, b):
        raw, mask = jax.tree_util.tree_map(
            lambda a: jax.lax.with_sharding_constraint(a[b], sharding), (stacked, masks)
        )
        batch_key = jax.random.fold_in(key, b)
        terms = per_example(params, preprocess(raw, batch_key), batch_key)
        sums = {k: jnp.sum(jnp.where(mask, v, 0.0)) for k, v in terms.items()}
        return jax.tree_util.tree_map(jnp.add, totals, sums)

    def evaluate(params, data, key, num_examples=None):
        n = num_examples or jax.tree_util.tree_leaves(data)[0].shape[0]
        stacked, masks = split_batches(data, n)
        first = jax.eval_shape(
            lambda: per_example(
                params, preprocess(jax.tree_util.tree_map(lambda a: a[0], stacked), key), key
            )
        )
        totals = jax.device_put({k: np.zeros((), np.float32) for k in first}, replicated(mesh))
        for b in range(masks.shape[0]):  # waiting for each: a signal is seen in between
            totals = jax.block_until_ready(
                add_batch(params, stacked, masks, key, totals, np.int32(b))
            )
        return {k: v / n for k, v in totals.items()}

    return evaluate


def mean_metrics(metrics: dict[str, jax.Array]) -> dict[str, float]:
    """Per-step metrics [steps] -> each metric's mean over the finite steps, as Python floats,
    plus ``skipped_steps`` (the non-finite steps). Blocks until computed.

    ``metrics`` is an :class:`EpochRunner` buffer (with ``finite``) or any dict of [steps] arrays.
    """
    host = {k: np.asarray(v) for k, v in jax.device_get(metrics).items()}
    finite = host.pop("finite", None)
    if finite is None:
        return {k: float(np.mean(v)) for k, v in host.items()}
    means = {
        k: float(np.mean(v[finite])) if finite.any() else float("nan") for k, v in host.items()
    }
    return {**means, "skipped_steps": int(np.sum(~finite))}
