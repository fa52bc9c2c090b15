"""One training machinery for every model: updates, compiled steps, whole-epoch scans, sharding.

The pieces compose like optax transformations:

- An **update** is a pure function ``update(state, batch, key) -> (state, metrics)``.
  :func:`gradient_update` makes one from a loss ``loss_fn(params, batch, key) -> (loss, metrics)``
  and an optax optimizer. A two-player model (a GAN) writes its update as two gradient updates
  on the two halves of its state, each through its own loss and optimizer, and hands that
  function to the same step factories; a diffusion model is just another loss.
- :func:`make_train_step` compiles an update for a Python loop over host batches;
  :func:`make_epoch_runner` compiles a whole epoch (permutation, gathering, preprocessing and
  every step) into one ``lax.scan`` over a dataset that lives on the device(s).
- Both shard the batch over a 1-D ``data`` mesh of all devices and replicate the state, so one
  device and eight run the same code. Keys depend only on (seed, step), and the data order only
  on (seed, epoch): a run is reproducible, and the scan and the Python loop take the same steps.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"

Update = Callable[[Any, Any, jax.Array], tuple[Any, dict[str, jax.Array]]]
Preprocess = Callable[[Any, jax.Array], Any]


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
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, batch, key)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, **metrics, "grad_norm": optax.tree.norm(grads)}
        return TrainState(state.step + 1, params, opt_state), metrics

    return update


# ---------------------------------------------------------------------------------------------
# Keys


def step_key(base_key: jax.Array, step) -> jax.Array:
    """The key of training step ``step``: a function of (base key, step) only."""
    return jax.random.fold_in(base_key, step)


def epoch_permutation(data_key: jax.Array, epoch, num_examples: int) -> jax.Array:
    """The order of the examples in ``epoch``: a function of (data key, epoch) only."""
    return jax.random.permutation(jax.random.fold_in(data_key, epoch), num_examples)


# ---------------------------------------------------------------------------------------------
# Devices


def data_mesh(devices=None) -> Mesh:
    """A 1-D mesh named ``data`` over ``devices`` (default: all devices)."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the ``data`` axis."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(batch_size: int, num_devices: int, what: str = "batch size") -> None:
    """Raises ValueError unless ``batch_size`` splits evenly over ``num_devices`` devices."""
    n = num_devices
    if batch_size <= 0 or batch_size % n:
        lower = max(n, batch_size // n * n)
        raise ValueError(
            f"{what} {batch_size} does not split over {n} devices: use a multiple of {n}, "
            f"e.g. {lower} or {lower + n}"
        )


def put_replicated(tree, mesh: Mesh):
    """Places a pytree (state, dataset) in full on every device of ``mesh``."""
    return jax.device_put(tree, replicated(mesh))


def _identity_preprocess(batch, key):
    del key
    return batch


def _step_body(update: Update, preprocess: Preprocess | None, mesh: Mesh):
    """``body(state, raw_batch, base_key, step)``: preprocess with one half of the step key,
    update with the other. Shared by the Python-loop step and the scan."""
    preprocess = preprocess or _identity_preprocess
    sharding = batch_sharded(mesh)

    def body(state, raw_batch, base_key, step):
        data_key, update_key = jax.random.split(step_key(base_key, step))
        batch = preprocess(raw_batch, data_key)
        batch = jax.tree_util.tree_map(
            lambda a: jax.lax.with_sharding_constraint(a, sharding), batch)
        return update(state, batch, update_key)

    return body


def make_train_step(update: Update, preprocess: Preprocess | None = None,
                    mesh: Mesh | None = None) -> Callable:
    """A compiled ``train_step(state, raw_batch, base_key, step) -> (state, metrics)``.

    ``state`` is donated (its buffers are reused for the result: do not touch it afterwards).
    ``raw_batch`` (a pytree of arrays with a leading batch axis) is sharded over the ``data``
    axis; the state stays replicated. For loops in Python, e.g. when data do not fit on the device.
    """
    mesh = mesh or data_mesh()
    compiled = jax.jit(_step_body(update, preprocess, mesh), donate_argnums=0,
                       out_shardings=replicated(mesh))
    sharding = batch_sharded(mesh)

    def train_step(state, raw_batch, base_key, step):
        check_batch_size(len(jax.tree_util.tree_leaves(raw_batch)[0]), mesh.size)
        return compiled(state, jax.device_put(raw_batch, sharding), base_key, step)

    return train_step


def make_epoch_runner(update: Update, preprocess: Preprocess | None, *, batch_size: int,
                      num_examples: int, mesh: Mesh | None = None,
                      on_progress: Callable[[int], None] | None = None,
                      progress_every: int = 20) -> Callable:
    """A compiled ``run_epoch(state, data, data_key, base_key, epoch) -> (state, metrics)``.

    ``data`` is a pytree of arrays with ``num_examples`` rows, already on the device(s)
    (:func:`put_replicated`). Each epoch visits ``num_examples // batch_size`` batches of a fresh
    permutation; the ragged remainder is **dropped** (a different remainder every epoch, so every
    example is seen equally often on average, and every step has the same shape). Global step
    ``epoch * steps_per_epoch + i`` keys step ``i``. ``metrics`` holds each metric per step,
    [steps_per_epoch]. ``state`` is donated.

    ``on_progress(steps_done)``, if given, is called from the device every ``progress_every``
    steps and after the last (a host callback; it may run more than once per report on several
    devices, so it should set, not increment).
    """
    mesh = mesh or data_mesh()
    check_batch_size(batch_size, mesh.size)
    steps = num_examples // batch_size
    if steps == 0:
        raise ValueError(f"batch size {batch_size} exceeds the {num_examples} training examples")
    body = _step_body(update, preprocess, mesh)
    index_sharding = batch_sharded(mesh)

    def run_epoch(state, data, data_key, base_key, epoch):
        order = epoch_permutation(data_key, epoch, num_examples)[: steps * batch_size]
        order = order.reshape(steps, batch_size)
        first_step = epoch * steps

        def scan_step(state, i):
            idx = jax.lax.with_sharding_constraint(order[i], index_sharding)
            raw = jax.tree_util.tree_map(lambda a: a[idx], data)
            state, metrics = body(state, raw, base_key, first_step + i)
            if on_progress is not None:
                done = i + 1
                jax.lax.cond((done % progress_every == 0) | (done == steps),
                             lambda: jax.debug.callback(on_progress, done), lambda: None)
            return state, metrics

        return jax.lax.scan(scan_step, state, jnp.arange(steps))

    run_epoch = jax.jit(run_epoch, donate_argnums=0, out_shardings=replicated(mesh))
    run_epoch.steps_per_epoch = steps
    return run_epoch


def make_evaluator(per_example: Callable, preprocess: Preprocess | None = None, *,
                   batch_size: int = 1000, mesh: Mesh | None = None) -> Callable:
    """A compiled ``evaluate(params, data, key) -> {metric: mean over all examples}``.

    ``per_example(params, batch, key)`` returns a dict of [B] arrays. Every example counts once:
    the last batch is padded and the padding masked out. Batches are sharded over the devices;
    batch ``b`` uses ``fold_in(key, b)``.
    """
    mesh = mesh or data_mesh()
    check_batch_size(batch_size, mesh.size, "evaluation batch size")
    preprocess = preprocess or _identity_preprocess
    sharding = batch_sharded(mesh)

    def evaluate(params, data, key):
        n = jax.tree_util.tree_leaves(data)[0].shape[0]
        batches = -(-n // batch_size)
        pad = batches * batch_size - n

        def split_batches(a):
            a = jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1))
            return a.reshape(batches, batch_size, *a.shape[1:])

        stacked = jax.tree_util.tree_map(split_batches, data)
        masks = (jnp.arange(batches * batch_size) < n).reshape(batches, batch_size)

        def scan_batch(totals, inputs):
            b, raw, mask = inputs
            raw, mask = jax.tree_util.tree_map(
                lambda a: jax.lax.with_sharding_constraint(a, sharding), (raw, mask))
            batch_key = jax.random.fold_in(key, b)
            terms = per_example(params, preprocess(raw, batch_key), batch_key)
            sums = {k: jnp.sum(jnp.where(mask, v, 0.0)) for k, v in terms.items()}
            return jax.tree_util.tree_map(jnp.add, totals, sums), None

        first = jax.eval_shape(lambda: per_example(
            params, preprocess(jax.tree_util.tree_map(lambda a: a[0], stacked), key), key))
        zeros = {k: jnp.zeros((), jnp.float32) for k in first}
        totals, _ = jax.lax.scan(scan_batch, zeros, (jnp.arange(batches), stacked, masks))
        return {k: v / n for k, v in totals.items()}

    return jax.jit(evaluate, out_shardings=replicated(mesh))


def mean_metrics(metrics: dict[str, jax.Array]) -> dict[str, float]:
    """Per-step metrics [steps] -> their means as Python floats (blocks until computed)."""
    return {k: float(np.mean(np.asarray(v))) for k, v in jax.device_get(metrics).items()}
