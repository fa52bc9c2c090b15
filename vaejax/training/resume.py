"""Resuming a workdir: the files of a run, whether a workdir is fresh, resumable or refused, and
restoring its checkpoint.

A workdir holds ``config.json``, ``metrics.jsonl``, ``timing.jsonl`` and ``checkpoints/``.
:func:`resume_step` decides, before anything is loaded or written, whether a workdir is fresh,
resumable, or refused (:class:`WorkdirError`); :func:`restore_checkpoint` then loads the chosen
checkpoint, once it is checked to belong to this run, and drops the JSONL lines written after
it. :mod:`vaejax.training.loop` re-exports these names.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

from vaejax import io, sharding
from vaejax.training import checkpoints

CHECKPOINTS = "checkpoints"
METRICS = "metrics.jsonl"
TIMING = "timing.jsonl"
CONFIG = "config.json"


class WorkdirError(ValueError):
    """A workdir that this command cannot use; the message names the workdir and the fix."""


def _differences(saved: dict[str, Any], config: dict[str, Any], free: Iterable[str]) -> list[str]:
    free = set(free)
    return [
        f"--{k} {saved.get(k)!r} there, {config.get(k)!r} here"
        for k in sorted(set(saved) | set(config))
        if k not in free and saved.get(k) != config.get(k)
    ]


def resume_step(workdir: Path, config: dict[str, Any], free: Iterable[str] = ()) -> int | None:
    """The checkpoint step to resume ``workdir`` from, or None to start afresh; writes nothing.

    Raises :class:`WorkdirError` if the workdir is not writable, if its latest checkpoint was
    made with other settings (fields in ``free``, e.g. the number of epochs, may change), or if
    it holds a run without checkpoints made with other settings. A damaged checkpoint raises
    :class:`~vaejax.training.checkpoints.CheckpointError`.
    """
    _check_writable(workdir)
    step = checkpoints.latest_step(workdir / CHECKPOINTS)
    if step is not None:
        saved = checkpoints.read_meta(workdir / CHECKPOINTS, step).get("config", {})
        differences = _differences(saved, config, free)
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


def _check_writable(workdir: Path) -> None:
    """Raises :class:`WorkdirError` unless ``workdir``, or its nearest existing parent, is a
    writable folder."""
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


def _keep_lines_up_to(path: Path, step: int) -> None:
    """Drops the JSONL lines written after checkpoint ``step`` (they will be written again)."""
    if path.exists():
        kept = [r for r in io.read_jsonl(path) if r.get("step", 0) <= step]
        io.atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in kept).encode())


def restore_checkpoint(
    workdir: Path,
    start_step: int,
    keys: dict[str, list[int]],
    epochs: int,
    total: int,
    like: tuple[Any, Any],
    mesh,
    writer: bool,
) -> tuple[Any, Any]:
    """(train state, epoch metrics buffer) of checkpoint ``start_step``, shaped as ``like`` and
    replicated over ``mesh``, once it is checked to belong to this run (its random ``keys``, a
    step within the ``total`` steps of ``epochs``); the JSONL lines written after it are dropped
    (on the ``writer``)."""
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
    if writer:
        _keep_lines_up_to(workdir / METRICS, start_step)
        _keep_lines_up_to(workdir / TIMING, start_step)
    return state, buffer
