"""Resuming a workdir: the files of a run, whether a workdir is fresh, resumable or refused, and
restoring its checkpoint.

A workdir holds ``config.json``, ``metrics.jsonl``, ``timing.jsonl`` and ``checkpoints/``.
:func:`resume_step` decides, before anything is loaded, whether a workdir is fresh, resumable,
or refused (:class:`WorkdirError`), verifying the newest checkpoint's checksums;
:func:`restore_checkpoint` then loads it, once it is checked to belong to this run.

The two JSONL files are the run's journal, and every checkpoint holds the journal up to its
step. On resume the files are rewritten from the checkpoint's copy (:func:`write_journal`), so
they always agree with the newest committed checkpoint, whatever the moment a run died: a line
written after it, a cut last line or the NUL bytes of a crash are replaced by what the
checkpoint vouches for; a fresh start (no checkpoint) starts them empty.
:mod:`vaejax.training.loop` re-exports these names.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Iterable

import jax
from jax.experimental import multihost_utils

from vaejax import io, sharding
from vaejax.training import checkpoints

CHECKPOINTS = "checkpoints"
METRICS = "metrics.jsonl"
TIMING = "timing.jsonl"
CONFIG = "config.json"
DAMAGED = "damaged_checkpoints"  # where --damaged_checkpoints set_aside moves them
JOURNAL_FILES = (METRICS, TIMING)

log = logging.getLogger(__name__)


class WorkdirError(ValueError):
    """A workdir that this command cannot use; the message names the workdir and the fix."""


def _differences(saved: dict[str, Any], config: dict[str, Any], free: Iterable[str]) -> list[str]:
    free = set(free)
    return [
        f"--{k} {saved.get(k)!r} there, {config.get(k)!r} here"
        for k in sorted(set(saved) | set(config))
        if k not in free and saved.get(k) != config.get(k)
    ]


def resume_step(
    workdir: Path, config: dict[str, Any], free: Iterable[str] = (), damaged: str = "stop"
) -> int | None:
    """The checkpoint step to resume ``workdir`` from, or None to start afresh.

    The newest checkpoint is verified against its checksums. A damaged one raises
    :class:`~vaejax.training.checkpoints.DamagedCheckpoint`, or with ``damaged='set_aside'`` is
    moved into ``<workdir>/damaged_checkpoints/`` and the next newest is tried; nothing else
    is written. Raises :class:`WorkdirError` if the workdir is not writable, if its latest
    checkpoint was made with other settings (fields in ``free``, e.g. the number of epochs, may
    change), or if it holds a run without checkpoints made with other settings.
    """
    _check_writable(workdir)
    while (step := checkpoints.latest_step(workdir / CHECKPOINTS)) is not None:
        try:
            saved = checkpoints.read_meta(workdir / CHECKPOINTS, step).get("config", {})
            differences = _differences(saved, config, free)
            if not differences:
                checkpoints.restore(workdir / CHECKPOINTS, step)  # verifies every array
        except checkpoints.DamagedCheckpoint as e:
            if damaged != "set_aside":
                raise
            if jax.process_index() == 0:  # the others found the same damage: they wait
                _set_aside(workdir, e.step)
            if jax.process_count() > 1:
                multihost_utils.sync_global_devices(f"vaejax: set aside checkpoint {e.step}")
            continue
        if differences:
            raise WorkdirError(
                f"workdir {workdir} holds a run with other settings "
                f"({'; '.join(differences)}): rerun with the same flags to resume it, or pass a "
                f"new --workdir"
            )
        return step
    if (workdir / METRICS).exists():  # killed before its first checkpoint: nothing to lose
        _check_unsaved_run(workdir, config, free)
    return None


def _set_aside(workdir: Path, step: int) -> None:
    """Moves damaged checkpoint ``step`` into ``<workdir>/damaged_checkpoints/``."""
    target = workdir / DAMAGED / str(step)
    n = 1
    while target.exists():
        target, n = workdir / DAMAGED / f"{step}.{n}", n + 1
    target.parent.mkdir(exist_ok=True)
    if io.is_local(workdir):
        shutil.move(workdir / CHECKPOINTS / str(step), target)
    else:
        (workdir / CHECKPOINTS / str(step)).rename(target)
    log.warning("checkpoint %d is damaged: moved it to %s", step, target)


def _check_writable(workdir: Path) -> None:
    """Raises :class:`WorkdirError` unless ``workdir``, or its nearest existing parent, is a
    writable folder (a remote workdir is tried by the workdir lock instead)."""
    if not io.is_local(workdir):
        return
    existing = workdir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not _writable(existing):
        raise WorkdirError(
            f"workdir {workdir} is not writable ({existing} is not a writable "
            f"folder): pass --workdir to a writable folder"
        )


def _check_unsaved_run(workdir: Path, config: dict[str, Any], free: Iterable[str]) -> None:
    """Raises :class:`WorkdirError` if the run in ``workdir`` (metrics, no checkpoint) was made
    with other settings than ``config``, or its ``config.json`` is unreadable."""
    try:
        saved = json.loads((workdir / CONFIG).read_text())
    except (OSError, ValueError):
        saved = None
    if not isinstance(saved, dict) or _differences(saved, config, free):
        raise WorkdirError(
            f"workdir {workdir} already holds a run (metrics.jsonl) with "
            f"other settings and no checkpoint: pass a new --workdir, or "
            f"delete that folder to start again"
        )


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


def write_journal(workdir: Path, journal: dict[str, list[dict[str, Any]]]) -> None:
    """Rewrites ``metrics.jsonl`` and ``timing.jsonl`` as ``journal`` holds them (atomically)."""
    for name in JOURNAL_FILES:
        lines = "".join(io.jsonl_line(r) for r in journal.get(name, []))
        io.atomic_write_bytes(workdir / name, lines.encode())


def restore_checkpoint(
    workdir: Path,
    start_step: int,
    keys: dict[str, list[int]],
    epochs: int,
    total: int,
    like: tuple[Any, Any],
    mesh,
) -> tuple[Any, Any, dict[str, list[dict[str, Any]]]]:
    """(train state, epoch metrics buffer, journal) of checkpoint ``start_step``, the arrays
    shaped as ``like`` and replicated over ``mesh``, once it is checked to belong to this run
    (its random ``keys``, a step within the ``total`` steps of ``epochs``)."""
    ckpt_dir = workdir / CHECKPOINTS
    meta = checkpoints.read_meta(ckpt_dir, start_step)
    if meta.get("keys") != keys:
        raise WorkdirError(
            f"checkpoint {ckpt_dir / str(start_step)} was made with other "
            f"random keys than this seed gives: pass a new --workdir"
        )
    if start_step > total:
        raise WorkdirError(
            f"workdir {workdir} holds a run already at step {start_step}, "
            f"past the {total} steps of --epochs {epochs}: raise --epochs"
        )
    state, buffer = like
    restored = checkpoints.restore(
        ckpt_dir, start_step, {"train_state": state, "epoch_metrics": buffer}
    )
    state, buffer = sharding.put_replicated(
        (restored["train_state"], restored["epoch_metrics"]), mesh
    )
    journal = meta.get("journal", {})
    return state, buffer, {name: list(journal.get(name, [])) for name in JOURNAL_FILES}
