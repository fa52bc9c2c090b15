"""Checkpoints with orbax: a pytree of arrays plus a JSON record, every N steps, the last few kept.

A checkpoint is the folder ``<directory>/<step>/`` with two items: ``state`` (any pytree of arrays:
train state, optimizer state, per-step metrics of the epoch in progress) and ``meta`` (JSON: the
config, the step, the PRNG keys). Orbax writes a checkpoint into a temporary folder and renames
it when complete, so a process killed mid-save leaves no half-written checkpoint that
:func:`latest_step` would return; the temporary leftovers are removed when the directory is
opened again. Saves are asynchronous: training goes on while the files are written.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

log = logging.getLogger(__name__)


class CheckpointError(Exception):
    """A checkpoint that cannot be read or used; the message names the folder and the fix."""


def _ocp():
    import orbax.checkpoint as ocp  # imported lazily: it is slow to import and tests skip it

    logging.getLogger("absl").setLevel(logging.ERROR)  # orbax logs every save at INFO
    return ocp


def _manager(directory: Path, keep: int | None = None, read_only: bool = False):
    directory = directory.absolute()  # orbax refuses relative paths (e.g. the default workdir)
    ocp = _ocp()
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        create=not read_only,
        read_only=read_only,
        cleanup_tmp_directories=not read_only,
        enable_async_checkpointing=not read_only,
    )
    return ocp.CheckpointManager(directory, options=options, item_names=("state", "meta"))


def open_checkpoints(directory: os.PathLike | str, keep: int):
    """A checkpoint manager writing into ``directory`` (created; leftovers of interrupted saves
    removed) that keeps the ``keep`` newest checkpoints. Close it with :func:`close`."""
    return _manager(Path(directory), keep)


def latest_step(directory: os.PathLike | str) -> int | None:
    """The step of the newest complete checkpoint in ``directory``, or None; creates nothing."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    manager = _manager(directory, read_only=True)
    try:
        return manager.latest_step()
    finally:
        manager.close()


def save(manager, step: int, state: Any, meta: dict[str, Any]) -> None:
    """Starts saving ``state`` (a pytree of arrays, copied to the host first, so it may be
    donated right after) and ``meta`` (JSON) as checkpoint ``step``; returns before the files
    are written. Every process calls it; orbax writes each array once."""
    ocp = _ocp()
    host_state = jax.tree_util.tree_map(np.asarray, jax.device_get(state))
    manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(host_state), meta=ocp.args.JsonSave(meta)
        ),
        force=True,
    )


def wait(manager) -> None:
    """Blocks until every started save is on disk."""
    manager.wait_until_finished()


def close(manager) -> None:
    manager.wait_until_finished()
    manager.close()


def _unreadable(directory: Path, step: int, error: Exception) -> CheckpointError:
    text = str(error).strip()
    reason = text.splitlines()[0][:200] if text else type(error).__name__
    return CheckpointError(
        f"checkpoint {directory / str(step)} cannot be restored ({reason}): move that folder "
        f"away to resume from an earlier checkpoint, or pass a new --workdir"
    )


def read_meta(directory: os.PathLike | str, step: int) -> dict[str, Any]:
    """The JSON record of checkpoint ``step``; :class:`CheckpointError` if it is unreadable."""
    directory = Path(directory)
    ocp = _ocp()
    manager = _manager(directory, read_only=True)
    try:
        restored = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        meta = restored["meta"]
    except Exception as e:  # orbax raises many kinds for damaged folders
        raise _unreadable(directory, step, e) from None
    finally:
        manager.close()
    if not isinstance(meta, dict):
        raise _unreadable(directory, step, ValueError("its meta record is not a JSON object"))
    return meta


def restore(directory: os.PathLike | str, step: int, like: Any = None) -> Any:
    """The ``state`` of checkpoint ``step`` as numpy arrays, shaped as the pytree ``like`` (None:
    as saved, with dicts and lists for the pytree nodes).

    A damaged checkpoint, or one whose arrays differ in structure, shape or dtype from ``like``,
    raises :class:`CheckpointError` naming the folder."""
    directory = Path(directory)
    ocp = _ocp()
    target = (
        None if like is None else jax.tree_util.tree_map(lambda a: np.zeros(a.shape, a.dtype), like)
    )
    manager = _manager(directory, read_only=True)
    try:
        restored = manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))
        )["state"]
    except Exception as e:
        raise _unreadable(directory, step, e) from None
    finally:
        manager.close()
    if target is None:
        return jax.tree_util.tree_map(np.asarray, restored)
    got = jax.tree_util.tree_structure(restored)
    want = jax.tree_util.tree_structure(target)
    if got != want:
        raise _unreadable(directory, step, ValueError("its arrays have another structure"))
    for (path, a), b in zip(
        jax.tree_util.tree_leaves_with_path(target), jax.tree_util.tree_leaves(restored)
    ):
        b = np.asarray(b)
        if a.shape != b.shape or a.dtype != b.dtype:
            raise _unreadable(
                directory,
                step,
                ValueError(
                    f"{jax.tree_util.keystr(path)} is {b.dtype}{list(b.shape)}, expected "
                    f"{a.dtype}{list(a.shape)}"
                ),
            )
    return jax.tree_util.tree_map(np.asarray, restored)
