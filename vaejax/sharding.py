"""Devices: the 1-D ``data`` mesh, its shardings, placing pytrees on it, and gathering batches
from a dataset whose rows are split over it."""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


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
    """Places a pytree (state, dataset) in full on every device of ``mesh``.

    With several processes every process passes the same values; each places its own copy
    (``jax.device_put`` would first compare the values across processes, seconds for a dataset).
    """
    sharding = replicated(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def put(leaf):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return jax.device_put(leaf, sharding)
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree_util.tree_map(put, tree)


def rows_per_device(num_rows: int, mesh: Mesh) -> int:
    """Rows each device holds of a dataset placed by :func:`put_row_sharded`."""
    return -(-num_rows // mesh.size)


def put_row_sharded(tree, mesh: Mesh):
    """Places a pytree of host arrays with a leading example axis split over the devices of
    ``mesh``: device ``d`` holds rows ``d * R .. (d + 1) * R - 1`` (R = :func:`rows_per_device`;
    the last device's rows past the end are zeros, never read). Each process reads only the rows
    of its own devices (memory-mapped arrays stay on disk otherwise)."""
    sharding = batch_sharded(mesh)

    def put(leaf):
        host = leaf if isinstance(leaf, np.ndarray) else np.asarray(leaf)
        n = host.shape[0]
        padded = rows_per_device(n, mesh) * mesh.size

        def rows(index):
            start, stop = index[0].start or 0, index[0].stop or padded
            part = np.asarray(host[start : min(stop, n)])
            if stop > n:
                fill = np.zeros((stop - max(start, n), *host.shape[1:]), host.dtype)
                part = np.concatenate([part, fill])
            return part

        return jax.make_array_from_callback((padded, *host.shape[1:]), sharding, rows)

    return jax.tree_util.tree_map(put, tree)


def gather_rows(mesh: Mesh):
    """``gather(data, rows) -> batch``: the examples ``rows`` [B] (global row numbers, the same
    on every device) of ``data`` placed by :func:`put_row_sharded`, as a batch split over the
    devices like :func:`batch_sharded`. Each device picks the requested rows it holds (zeros for
    the others) and one reduce-scatter sums them into each device's part of the batch: exact,
    since every row has exactly one holder, and the only traffic is the batch itself."""

    def local(data, rows):
        held = jax.tree_util.tree_leaves(data)[0].shape[0]
        offset = rows - jax.lax.axis_index(DATA_AXIS) * held
        mine = (offset >= 0) & (offset < held)
        safe = jnp.where(mine, offset, 0)

        def pick(a):
            picked = a[safe]
            mask = mine.reshape(-1, *([1] * (a.ndim - 1)))
            picked = jnp.where(mask, picked, jnp.zeros((), a.dtype))
            return jax.lax.psum_scatter(picked, DATA_AXIS, scatter_dimension=0, tiled=True)

        return jax.tree_util.tree_map(pick, data)

    return jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(PartitionSpec(DATA_AXIS), PartitionSpec()),
        out_specs=PartitionSpec(DATA_AXIS),
    )


def batch_splitter(mesh: Mesh, batch_size: int) -> Callable:
    """``split(data, n) -> (batches, masks)``: the first n rows of ``data`` (replicated or split
    by rows) as zero-padded batches [batches, batch_size, ...] and masks [batches, batch_size] of
    the real rows, each device holding its part of every batch (for evaluations)."""

    @functools.partial(
        jax.jit, static_argnums=1, out_shardings=NamedSharding(mesh, PartitionSpec(None, DATA_AXIS))
    )
    def split_batches(data, n):
        batches = -(-n // batch_size)

        def split(a):
            a = jnp.pad(a[:n], [(0, batches * batch_size - n)] + [(0, 0)] * (a.ndim - 1))
            return a.reshape(batches, batch_size, *a.shape[1:])

        masks = (jnp.arange(batches * batch_size) < n).reshape(batches, batch_size)
        return jax.tree_util.tree_map(split, data), masks

    return split_batches
