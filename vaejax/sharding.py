"""Devices: the 1-D ``data`` mesh, its shardings, and placing pytrees on it."""

from __future__ import annotations

import jax
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
