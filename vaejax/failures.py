"""The one line a command prints when the machine stops it: a signal, or a full disk.

Both name what was kept in the workdir and how to go on; nothing committed is lost in either
case (checkpoints are committed by a rename, every other file is written under a temporary name
first, and the journal is rewritten from the newest checkpoint on resume).
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from vaejax import stopping
from vaejax.training import checkpoints
from vaejax.training.resume import CHECKPOINTS

_FULL = (errno.ENOSPC, errno.EDQUOT)
_FULL_TEXT = ("No space left on device", "Disk quota exceeded")


def _saved_checkpoints(workdir: Path | None) -> list[tuple[Path, int]]:
    """(checkpoint folder, newest step) of each run in ``workdir`` (itself, or the runs one
    level down, as in a study of several models)."""
    if workdir is None or not workdir.is_dir():
        return []
    found = []
    for folder in [workdir / CHECKPOINTS, *sorted(workdir.glob(f"*/{CHECKPOINTS}"))]:
        try:
            step = checkpoints.latest_step(folder)
        except Exception:  # noqa: BLE001 - a folder that cannot be read holds nothing usable
            step = None
        if step is not None:
            found.append((folder, step))
    return found


def _kept(workdir: Path | None) -> tuple[str, str]:
    """(what the workdir keeps, what rerunning the same command does)."""
    saved = _saved_checkpoints(workdir)
    if not saved:
        return "nothing was saved yet", "start again"
    if len(saved) == 1:
        folder, step = saved[0]
        return f"checkpoint {step} in {folder} is kept", "resume from it"
    return f"the checkpoints of {len(saved)} runs in {workdir} are kept", "resume from them"


def stopped_line(signum: int, during: str, workdir: Path | None) -> str:
    """'stopped by SIGINT while preparing data; nothing was saved yet: rerun the same command
    to start again'."""
    kept, then = _kept(workdir)
    return (
        f"stopped by {stopping.signal_name(signum)} while {during}; {kept}: rerun the "
        f"same command to {then}"
    )


def _is_disk_full(error: BaseException | None) -> bool:
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if getattr(error, "errno", None) in _FULL or any(t in str(error) for t in _FULL_TEXT):
            return True
        error = error.__cause__ or error.__context__
    return False


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def disk_full_line(error: BaseException, workdir: Path | None) -> str | None:
    """The line for a write that failed on a full disk (or quota), naming the workdir, the free
    space and the space a checkpoint of this run takes; None for any other error."""
    if not _is_disk_full(error):
        return None
    where = workdir if workdir is not None else Path.cwd()
    existing = where
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    saved = _saved_checkpoints(workdir)
    need = max((_folder_bytes(f / str(step)) for f, step in saved), default=0)
    size = f"; a checkpoint of this run takes {need / 2**20:.1f} MB" if need else ""
    kept, then = _kept(workdir)
    return (
        f"no space left on the device of {where} ({free / 2**20:.1f} MB free{size}): free some "
        f"space and rerun the same command to {then} ({kept})"
    )


def file_error_line(error: BaseException, workdir: Path | None) -> str | None:
    """The line for a file the run cannot read or write (e.g. a folder where metrics.jsonl
    should be), naming it and what is kept; None when no error of the chain names a file."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.filename:
            kept, then = _kept(workdir)
            name = error.filename2 or error.filename  # a rename's target, not its temporary
            return (
                f"cannot use {name} ({error.strerror or error}): move it away or "
                f"fix it, then rerun the same command to {then} ({kept})"
            )
        error = error.__cause__ or error.__context__
    return None
