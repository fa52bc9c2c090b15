"""Checkpoints with orbax: a pytree of arrays plus a JSON record, every N steps, the last few kept.

A checkpoint is the folder ``<directory>/<step>/`` with two items: ``state`` (any pytree of arrays:
train state, optimizer state, per-step metrics of the epoch in progress) and ``meta`` (JSON: the
config, the step, the PRNG keys). Orbax writes a checkpoint into a temporary folder and renames
it when complete, so a process killed mid-save leaves no half-written checkpoint that
:func:`latest_step` would return; the temporary leftovers are removed when the directory is
opened again. Saves are asynchronous: training goes on while the files are written.

Every checkpoint carries checksums: the SHA-256 of each array (with its dtype and shape) and of
the JSON record itself, computed from the host copy that is saved. :func:`read_meta` and
:func:`restore` verify them, so a checkpoint whose bytes were altered on disk is refused
(:class:`DamagedCheckpoint`) instead of being restored as if good. Orbax's own files carry no
checksums of the array data, which is why they are kept here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np

from vaejax import io

log = logging.getLogger(__name__)


class CheckpointError(Exception):
    """A checkpoint that cannot be read or used; the message names the folder and the fix."""


class DamagedCheckpoint(CheckpointError):
    """A checkpoint whose files are unreadable or fail their checksums; ``step`` is its step."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


SHA256 = "sha256"  # the record's own checksum, over every other field
ARRAYS = "arrays"  # the checksum of each array of the state, by its path


def _path_name(path) -> str:
    """A pytree path as 'a/b/0', the same for a dataclass, a named tuple, a dict or a list of
    the same names (what orbax restores without a target)."""
    parts = []
    for entry in path:
        for attribute in ("key", "name", "idx"):
            if hasattr(entry, attribute):
                parts.append(str(getattr(entry, attribute)))
                break
    return "/".join(parts)


def array_checksums(tree: Any) -> dict[str, str]:
    """The SHA-256 of each array of ``tree`` (its dtype, shape and bytes), by its path."""
    sums = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        a = np.ascontiguousarray(leaf)
        digest = hashlib.sha256(f"{a.dtype.str}{list(a.shape)}".encode())
        digest.update(memoryview(a).cast("B") if a.size else b"")
        sums[_path_name(path)] = digest.hexdigest()
    return sums


def _record_checksum(meta: dict[str, Any]) -> str:
    rest = {k: v for k, v in meta.items() if k != SHA256}
    return hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()


def sealed(meta: dict[str, Any], state: Any) -> dict[str, Any]:
    """``meta`` (as JSON reads it back) with the checksums of ``state``'s arrays and its own."""
    meta = json.loads(json.dumps({**meta, ARRAYS: array_checksums(state)}))
    return {**meta, SHA256: _record_checksum(meta)}


def _ocp():
    import orbax.checkpoint as ocp  # imported lazily: it is slow to import and tests skip it

    # orbax logs every save at INFO, and a failed background save at ERROR before the same
    # error is raised where the save is waited for (and reported there)
    logging.getLogger("absl").setLevel(logging.CRITICAL)
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
    return _manager(io.as_path(directory), keep)


def latest_step(directory: os.PathLike | str) -> int | None:
    """The step of the newest complete checkpoint in ``directory``, or None; creates nothing."""
    directory = io.as_path(directory)
    # No orbax manager for a folder without a step: opening one synchronizes the processes of
    # a multi-process run, and another may be creating this folder right now
    if not directory.is_dir() or not any(p.name.isdigit() for p in directory.iterdir()):
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
            state=ocp.args.StandardSave(host_state),
            meta=ocp.args.JsonSave(sealed(meta, host_state)),
        ),
        force=True,
    )


def wait(manager) -> None:
    """Blocks until every started save is on disk."""
    manager.wait_until_finished()


def close(manager) -> None:
    manager.wait_until_finished()
    manager.close()


def _unreadable(directory: Path, step: int, error: Exception) -> DamagedCheckpoint:
    text = str(error).strip()
    reason = text.splitlines()[0] if text else type(error).__name__
    reason = reason if len(reason) <= 200 else reason[:197] + "..."
    return DamagedCheckpoint(
        f"checkpoint {directory / str(step)} is damaged ({reason}): rerun with "
        f"--damaged_checkpoints set_aside to move it aside and resume from the newest intact "
        f"checkpoint, or pass a new --workdir",
        step,
    )


class _AbandonedReads(logging.Filter):
    """Drops asyncio's "exception was never retrieved" records of the reads orbax abandons."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "exception was never retrieved" not in str(record.msg).partition("\n")[0]


_ABANDONED_READS = _AbandonedReads()


def _closed_loop(error: BaseException | None) -> bool:
    return isinstance(error, RuntimeError) and str(error) == "Event loop is closed"


def quiet_closed_event_loops() -> None:
    """From now on, drops the echoes of reads and writes that orbax abandoned.

    When one read of a damaged checkpoint fails (or a save fails), orbax closes its event loop
    while other reads or writes of the same files are still in flight; each later reports its
    own failure after the one error line was printed: asyncio's "Future exception was never
    retrieved" log record, or tensorstore's callback into the closed loop, "Event loop is
    closed", through ``sys.excepthook`` or ``sys.unraisablehook`` (from its own threads, even at
    the interpreter's exit). The first failure is the one reported; these echoes are dropped and
    every other error is printed as before. Installing twice is the same as once."""
    logging.getLogger("asyncio").addFilter(_ABANDONED_READS)  # adding it twice is a no-op
    if getattr(sys.excepthook, "quiet_closed_event_loops", False):
        return
    excepthook, unraisablehook = sys.excepthook, sys.unraisablehook

    def on_exception(kind, error, traceback):
        if not _closed_loop(error):
            excepthook(kind, error, traceback)

    def on_unraisable(unraisable):
        if not _closed_loop(unraisable.exc_value):
            unraisablehook(unraisable)

    on_exception.quiet_closed_event_loops = True
    sys.excepthook, sys.unraisablehook = on_exception, on_unraisable


def _restore_items(directory: Path, step: int, **items) -> dict[str, Any]:
    quiet_closed_event_loops()  # before the reads start: their echoes may come at any time
    manager = _manager(directory, read_only=True)
    try:
        return manager.restore(step, args=_ocp().args.Composite(**items))
    except Exception as e:  # orbax raises many kinds for damaged folders
        raise _unreadable(directory, step, e) from None
    finally:
        manager.close()


def _checked_meta(directory: Path, step: int, meta: Any) -> dict[str, Any]:
    if not isinstance(meta, dict):
        raise _unreadable(directory, step, ValueError("its record is not a JSON object"))
    if SHA256 not in meta or ARRAYS not in meta:
        raise CheckpointError(
            f"checkpoint {directory / str(step)} has no checksums (an older vaejax made it): "
            f"pass a new --workdir"
        )
    if meta[SHA256] != _record_checksum(meta):
        raise _unreadable(directory, step, ValueError("its record fails its checksum"))
    return meta


def read_meta(directory: os.PathLike | str, step: int) -> dict[str, Any]:
    """The JSON record of checkpoint ``step``, once its checksum is verified;
    :class:`DamagedCheckpoint` if it is unreadable or altered."""
    directory = io.as_path(directory)
    meta = _restore_items(directory, step, meta=_ocp().args.JsonRestore())["meta"]
    return _checked_meta(directory, step, meta)


def restore(directory: os.PathLike | str, step: int, like: Any = None) -> Any:
    """The ``state`` of checkpoint ``step`` as numpy arrays, shaped as the pytree ``like`` (None:
    as saved, with dicts and lists for the pytree nodes), once every array is verified against
    its checksum.

    A damaged checkpoint (unreadable, or failing its checksums), or one whose arrays differ in
    structure, shape or dtype from ``like``, raises :class:`CheckpointError` naming the
    folder."""
    directory = io.as_path(directory)
    ocp = _ocp()
    target = (
        None if like is None else jax.tree_util.tree_map(lambda a: np.zeros(a.shape, a.dtype), like)
    )
    items = _restore_items(
        directory, step, state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()
    )
    meta = _checked_meta(directory, step, items["meta"])
    restored = jax.tree_util.tree_map(np.asarray, items["state"])
    if target is not None:
        _check_like(directory, step, restored, target)
    sums = array_checksums(restored)
    altered = sorted(
        name
        for name in sums.keys() | meta[ARRAYS].keys()
        if sums.get(name) != meta[ARRAYS].get(name)
    )
    if altered:
        more = f" and {len(altered) - 1} more" if len(altered) > 1 else ""
        raise _unreadable(
            directory, step, ValueError(f"array {altered[0]}{more} fails its checksum")
        )
    return restored


def _check_like(directory: Path, step: int, restored: Any, target: Any) -> None:
    if jax.tree_util.tree_structure(restored) != jax.tree_util.tree_structure(target):
        raise _unreadable(directory, step, ValueError("its arrays have another structure"))
    for (path, a), b in zip(
        jax.tree_util.tree_leaves_with_path(target), jax.tree_util.tree_leaves(restored)
    ):
        if a.shape != b.shape or a.dtype != b.dtype:
            raise _unreadable(
                directory,
                step,
                ValueError(
                    f"{jax.tree_util.keystr(path)} is {b.dtype}{list(b.shape)}, expected "
                    f"{a.dtype}{list(a.shape)}"
                ),
            )
