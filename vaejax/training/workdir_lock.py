"""One run per workdir: an exclusive lock held for as long as a command uses its workdir.

The lock is ``fcntl.flock`` on ``<workdir>/.lock`` (process ``i > 0`` of a multi-process run
locks ``.lock.<i>``, so the processes of one run do not exclude each other, while a second run
is refused by every process). The kernel releases it when its process dies, however it dies, so
a lock left by a dead process never blocks a rerun; ``flock`` also works on NFS (as a POSIX
lock). The file names the holder (process id, host, start time, command) for the refusal line.
The file is never deleted: deleting a lock file lets two processes each lock a different file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

import jax
import numpy as np
from jax.experimental import multihost_utils

from vaejax import io
from vaejax.training.resume import WorkdirError

_HELD: set[str] = set()  # workdirs this process holds: taking one again is a no-op


def lock_name() -> str:
    index = jax.process_index()
    return ".lock" if index == 0 else f".lock.{index}"


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"process {info['pid']} on {info['host']} (since {info['since']}: {info['command']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _created_folders(workdir: Path) -> list[Path]:
    """Creates ``workdir`` and its missing parents; returns those it created, deepest first."""
    if workdir.exists() and not workdir.is_dir():
        raise WorkdirError(f"workdir {workdir} is a file, not a folder: pass another --workdir")
    missing = []
    folder = workdir
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _not_writable(workdir, e) from None
    return missing


def _not_writable(workdir: Path, error: OSError) -> WorkdirError:
    return WorkdirError(
        f"workdir {workdir} is not writable ({error.strerror}): pass --workdir to a writable folder"
    )


def _open_locked(path: Path) -> tuple[int | None, int]:
    """(fd holding the lock, or None and an fd to read the holder from)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None, fd
        try:  # the file locked must still be the one at ``path``
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd, fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _agree(locked: bool) -> bool:
    """Whether every process of the run holds its lock."""
    if jax.process_count() == 1:
        return locked
    return bool(np.asarray(multihost_utils.process_allgather(np.array(locked))).all())


@contextlib.contextmanager
def workdir_lock(workdir) -> Iterator[None]:
    """Holds the lock of ``workdir`` (created if missing) while the block runs; raises
    :class:`~vaejax.training.resume.WorkdirError` naming the holder when another process holds
    it. A workdir this call created and the block left empty is removed again."""
    workdir = io.as_path(workdir)
    key = str(workdir.absolute())
    if key in _HELD:
        yield
        return
    if not io.is_local(workdir):
        with _remote_lock(workdir, key):
            yield
        return
    created = _created_folders(workdir)
    path = workdir / lock_name()
    try:
        fd, read_fd = _open_locked(path)
    except OSError as e:
        raise _not_writable(workdir, e) from None
    try:
        if fd is None:
            holder = _holder(read_fd)
        if not _agree(fd is not None):
            raise WorkdirError(
                f"workdir {workdir} is in use by "
                f"{holder if fd is None else 'another run (see the other processes)'}: wait for "
                f"it to end or stop it, or pass another --workdir"
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_record()).encode(), 0)
        _HELD.add(key)
        try:
            yield
        finally:
            _HELD.discard(key)
            _remove_if_unused(created, path)
    finally:
        os.close(read_fd)


def _record() -> dict[str, object]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(getattr(sys, "orig_argv", sys.argv))[:300],
    }


@contextlib.contextmanager
def _remote_lock(workdir, key: str) -> Iterator[None]:
    """The lock of a workdir in an object store (``gs://...``): a ``.lock`` object naming its
    holder, written when the run starts and deleted when it ends. Object stores have no
    ``flock``: two runs starting at the same moment can both pass, and a run killed with
    SIGKILL leaves its lock behind (the refusal says to delete it). Any failure to reach the
    store (no gcsfs, no credentials) is one :class:`WorkdirError`."""
    path = workdir / lock_name()
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        held = path.exists()
        holder = json.loads(path.read_text() or "{}") if held else None
    except Exception as e:  # noqa: BLE001 - no gcsfs, no credentials (google.auth's own errors)
        raise _unreachable(workdir, e) from None
    if not _agree(not held):
        who = (
            f"process {holder.get('pid')} on {holder.get('host')} (since {holder.get('since')}: "
            f"{holder.get('command')})"
            if isinstance(holder, dict) and holder
            else "another run"
        )
        raise WorkdirError(
            f"workdir {workdir} is in use by {who}: wait for it to end, or, if it is no longer "
            f"running, delete {path} and rerun"
        )
    path.write_text(json.dumps(_record()))
    _HELD.add(key)
    try:
        yield
    finally:
        _HELD.discard(key)
        with contextlib.suppress(Exception):
            path.unlink()


def _unreachable(workdir, error: Exception) -> WorkdirError:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return WorkdirError(
        f"cannot use workdir {workdir} ({type(error).__name__}: {reason}): "
        f"{io.object_store_fix('--workdir')}"
    )


def _remove_if_unused(created: list[Path], path: Path) -> None:
    """Removes the folders this lock created if nothing but the lock file went into them
    (still holding the lock)."""
    if created and [p.name for p in created[0].iterdir()] == [path.name]:
        path.unlink()
        for folder in created:
            with contextlib.suppress(OSError):
                folder.rmdir()
