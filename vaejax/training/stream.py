"""Where the training data live: on the device(s) for the whole run, or streamed from the host.

``--data_on_device auto|on|off`` chooses (:func:`data_on_device`). ``on`` places the training
set on every device once, and each compiled stretch gathers its batches there
(:func:`vaejax.training.step.make_epoch_runner`). ``off`` streams: host threads (a grain
``MapDataset`` of steps read with ``ReadOptions(num_threads, prefetch_buffer_size)``) gather the
rows of the coming batches from a random-access source, a step at a time, and keep
:data:`PREFETCH_EXAMPLES` examples ahead, and each
stretch of at most :data:`CHUNK_STEPS` steps gets a block [K, batch, ...] sharded along the
batch axis, so a device holds only its part of the batches in flight: memory that shrinks as
devices are added. Each process reads only the rows of its own devices.

Both take the same batches: the rows of step ``i`` of an epoch are row ``i`` of
``runner.order(data_key, epoch)`` (a function of the seed and the epoch) whichever way they
travel, so a streamed run trains the same parameters as an on-device one. The loader's position
is the training step, which every checkpoint holds: a resumed run rebuilds the reader at that
row of that epoch's order, so kill and resume stay exact.

``auto`` keeps the data on the devices when one device's share (all of them on one device,
1/N of the rows on each of N devices: :func:`vaejax.sharding.put_row_sharded`) takes at most
:data:`DEVICE_BUDGET_FRACTION` of the smallest device's memory (an accelerator's
``bytes_limit``; on a CPU, the machine's memory), else streams.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vaejax.sharding import DATA_AXIS, batch_sharded, data_mesh, replicated
from vaejax.training import step

PLACEMENTS = ("auto", "on", "off")
DEVICE_BUDGET_FRACTION = 0.25
CHUNK_STEPS = 8  # steps per streamed block: the most a stretch takes between two host looks
READ_THREADS = 8
PREFETCH_EXAMPLES = 4096


def tree_bytes(tree) -> int:
    return sum(np.asarray(leaf).nbytes for leaf in jax.tree_util.tree_leaves(tree))


def device_memory(device) -> int:
    """Bytes of memory of ``device``: its allocator's limit, or the machine's memory (CPU)."""
    stats = None
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - a backend without memory statistics
        stats = None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def data_on_device(setting: str, train_data, mesh: Mesh) -> bool:
    """Whether the training data go on the device(s) (see the module docstring)."""
    if setting not in PLACEMENTS:
        raise ValueError(f"data_on_device must be one of {', '.join(PLACEMENTS)}, got {setting!r}")
    if setting != "auto":
        return setting == "on"
    budget = DEVICE_BUDGET_FRACTION * min(device_memory(d) for d in mesh.devices.flat)
    return tree_bytes(train_data) / mesh.size <= budget


def _is_arrays(source) -> bool:
    return isinstance(source, (np.ndarray, jax.Array, dict, tuple, list))


def num_examples(source) -> int:
    """Examples in ``source``: a pytree of arrays with a leading example axis, or a
    random-access source (``len``, and ``source[i]`` the pytree of example ``i``, e.g.
    :class:`vaejax.data.records.RecordSource`)."""
    return len(jax.tree_util.tree_leaves(source)[0]) if _is_arrays(source) else len(source)


class _Steps:
    """A random-access view of the batches of ``rows`` [steps, width] of ``source`` (see
    :func:`num_examples`; a record source may read several rows at once with ``__getitems__``):
    item ``i`` is the pytree of the examples ``rows[i]``, stacked.

    One item per step rather than per example: gathering a step's rows at once (one fancy index
    of each array, or one loop over a record source) keeps the reader's per-item cost in Python
    from limiting it to a few ten thousand images per second."""

    def __init__(self, source, rows: np.ndarray):
        self.source, self.rows = source, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        rows = self.rows[i]
        if _is_arrays(self.source):
            return jax.tree_util.tree_map(lambda a: np.asarray(a[rows]), self.source)
        if hasattr(self.source, "__getitems__"):
            examples = self.source.__getitems__(rows)
        else:
            examples = [self.source[int(row)] for row in rows]
        return jax.tree_util.tree_map(lambda *parts: np.stack(parts), *examples)


def make_streamed_runner(
    update: step.Update,
    preprocess: step.Preprocess | None,
    *,
    batch_size: int,
    num_examples: int,
    mesh: Mesh | None = None,
    nonfinite: str = "stop",
) -> step.EpochRunner:
    """The :class:`~vaejax.training.step.EpochRunner` of data streamed from the host.

    The same epochs, steps, keys and batches as
    :func:`~vaejax.training.step.make_epoch_runner`: ``order`` is the same
    function, but the host gathers the batches. ``run(state, metrics, block, block_start,
    base_key, epoch, start, stop)`` takes a block of batches [K, batch_size, ...] whose first
    batch is step ``block_start`` of the epoch, sharded over the devices along the batch axis
    (each device holds its part of every batch), and runs steps ``start, ..., stop - 1``, all
    within the block. The block's K is fixed by its first use (one compilation)."""
    on_device = step.make_epoch_runner(
        update,
        preprocess,
        batch_size=batch_size,
        num_examples=num_examples,
        mesh=mesh,
        nonfinite=nonfinite,
    )
    mesh = mesh or data_mesh()
    skip_nonfinite = nonfinite == "skip"
    take_step = step.step_body(update, preprocess, mesh)
    sharding = batch_sharded(mesh)

    def guarded_step(state, block_start, block, base_key, global_step, i):
        raw = jax.tree_util.tree_map(
            lambda a: jax.lax.with_sharding_constraint(a[i - block_start], sharding), block
        )
        new_state, metrics = take_step(state, raw, base_key, global_step)
        finite = step.all_finite(metrics)
        if skip_nonfinite:
            new_state = jax.lax.cond(finite, lambda: new_state, lambda: state)
        return new_state, {**metrics, "finite": finite}

    steps, out = on_device.steps_per_epoch, replicated(mesh)
    return on_device._replace(
        new_metrics=jax.jit(step.metrics_buffer(guarded_step, steps, None), out_shardings=out),
        run=jax.jit(
            step.stretch_loop(guarded_step, steps, skip_nonfinite),
            donate_argnums=(0, 1),
            out_shardings=out,
        ),
    )


class Streamed:
    """The training data streamed from the host: ``block(epoch, start, stop)`` places steps
    ``start .. stop - 1`` of ``epoch`` on the devices as one block (see the module)."""

    def __init__(self, source, runner, data_key: jax.Array, mesh: Mesh, chunk: int = CHUNK_STEPS):
        self.source, self.runner, self.data_key, self.mesh = source, runner, data_key, mesh
        self.chunk = min(chunk, runner.steps_per_epoch)
        self.sharding = NamedSharding(mesh, PartitionSpec(None, DATA_AXIS))
        self.columns = _local_columns(mesh, runner.batch_size)
        self.epoch = self.next_step = None  # the reader's position: (epoch, step of the epoch)
        self.reader, self.kept, self.first_kept = None, [], 0  # batches read, from first_kept
        self.ahead = None  # ((epoch, start), block) placed by prefetch

    def _open(self, epoch: int, start: int) -> None:
        """A reader of this process's rows of ``epoch`` from step ``start``, reading ahead."""
        import grain

        order = np.asarray(jax.device_get(self.runner.order(self.data_key, epoch)))
        steps = _Steps(self.source, order[start:, self.columns])
        ahead = max(self.chunk, -(-PREFETCH_EXAMPLES // len(self.columns)))
        options = grain.ReadOptions(num_threads=READ_THREADS, prefetch_buffer_size=ahead)
        dataset = grain.MapDataset.source(steps)
        self.reader = iter(dataset.to_iter_dataset(options))
        self.epoch, self.next_step = epoch, start

    def local_batches(self, epoch: int, start: int, stop: int) -> list:
        """This process's parts of the batches of steps ``start .. stop - 1`` (host arrays).
        Batches read ahead of an earlier call are kept until a later step is asked for."""
        if self.epoch != epoch or not (self.first_kept <= start <= self.next_step):
            self._open(epoch, start)
            self.kept, self.first_kept = [], start
        while self.next_step < stop:
            self.kept.append(next(self.reader))
            self.next_step += 1
        self.kept = self.kept[start - self.first_kept :]
        self.first_kept = start
        return self.kept[: stop - start]

    def block(self, epoch: int, start: int, stop: int):
        """Steps ``start .. stop - 1`` of ``epoch`` as a block [chunk, batch, ...] on the devices:
        the block of ``chunk`` steps from ``start`` (those after ``stop`` read ahead for the next
        stretch), padded with zeros past the epoch's end; the one :meth:`prefetch` placed, when
        it starts there."""
        ahead, self.ahead = self.ahead, None
        if ahead is not None and ahead[0] == (epoch, start):
            return ahead[1]
        return self._read_block(epoch, start)

    def prefetch(self, epoch: int, start: int) -> None:
        """Places the block from step ``start`` of ``epoch`` now, while the devices still run the
        stretch before it (its host work and copy overlap with that stretch)."""
        if start < self.runner.steps_per_epoch:
            self.ahead = ((epoch, start), self._read_block(epoch, start))

    def _read_block(self, epoch: int, start: int):
        stop = min(start + self.chunk, self.runner.steps_per_epoch)
        batches = self.local_batches(epoch, start, stop)
        pad = self.chunk - len(batches)
        local = jax.tree_util.tree_map(
            lambda *parts: np.concatenate(
                [np.stack(parts), np.zeros((pad, *parts[0].shape), parts[0].dtype)]
            ),
            *batches,
        )
        return jax.tree_util.tree_map(self._place, local)

    def _place(self, local: np.ndarray) -> jax.Array:
        shape = (local.shape[0], self.runner.batch_size, *local.shape[2:])
        return jax.make_array_from_process_local_data(self.sharding, local, shape)

    def example_block(self) -> Any:
        """A block of zeros on the devices, to compile the stretch before any data are read."""
        first = _Steps(self.source, np.zeros((1, len(self.columns)), np.int64))[0]
        return jax.tree_util.tree_map(
            lambda a: self._place(np.zeros((self.chunk, *a.shape), a.dtype)), first
        )


def _local_columns(mesh: Mesh, batch_size: int) -> np.ndarray:
    """The positions within a batch that this process's devices hold (a contiguous range when
    the mesh lists each process's devices together, as :func:`vaejax.sharding.data_mesh`
    does)."""
    devices = list(mesh.devices.flat)
    per_device = batch_size // len(devices)
    mine = [i for i, d in enumerate(devices) if d.process_index == jax.process_index()]
    return np.concatenate([np.arange(i * per_device, (i + 1) * per_device) for i in mine])
