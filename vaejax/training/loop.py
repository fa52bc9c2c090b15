"""The training loop every experiment shares: resume, checkpoints, signals, non-finite guards.

:func:`train` drives an :class:`~vaejax.training.step.EpochRunner` through ``epochs`` epochs in
stretches of steps (about a second each), and between stretches

- writes one ``metrics.jsonl`` line per epoch (from the experiment's ``end_of_epoch``) and one
  ``timing.jsonl`` line (seconds, images/second: kept apart so that ``metrics.jsonl`` depends
  only on the seed and the command);
- saves a checkpoint (:mod:`vaejax.training.checkpoints`) every ``checkpoint_every`` steps and
  at the end;
- on SIGTERM or SIGINT saves a checkpoint and raises :class:`Interrupted`;
- on a non-finite step (under the runner's ``stop`` policy) raises :class:`Diverged` naming
  the last good checkpoint; every checkpoint is checked on the host before it is written, so
  nothing non-finite is ever saved.

A checkpoint holds the train state, the per-step metrics of the epoch in progress, the config
and the PRNG keys. Data order and keys depend only on (seed, step), so a run resumed from any
checkpoint takes exactly the steps an uninterrupted run takes: the same parameters bit for bit,
the same ``metrics.jsonl``. :func:`resume_step` decides, before anything is loaded or written,
whether a workdir is fresh, resumable, or refused.

Several processes (``jax.distributed``) run the same loop; they agree on when to stop, save
checkpoints together, and only process 0 writes the other files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import jax
import numpy as np

from vaejax import io, sharding
from vaejax.training import checkpoints
from vaejax.training.step import EpochRunner, mean_metrics

CHECKPOINTS = "checkpoints"
METRICS = "metrics.jsonl"
TIMING = "timing.jsonl"
CONFIG = "config.json"
STRETCH_SECONDS = 1.0  # how often the host looks at signals, progress and checkpoints


class WorkdirError(ValueError):
    """A workdir that this command cannot use; the message names the workdir and the fix."""


class Interrupted(Exception):
    """Training stopped on a signal after saving a checkpoint; ``signum`` is the signal."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


class Diverged(Exception):
    """A training step was non-finite; the message names the step and the last good checkpoint."""


def is_writer() -> bool:
    """Whether this process writes files (process 0; the only one without jax.distributed)."""
    return jax.process_index() == 0


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
    existing = workdir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not _writable(existing):
        raise WorkdirError(
            f"workdir {workdir} is not writable ({existing} is not a writable "
            f"folder): pass --workdir to a writable folder"
        )
    fix = "rerun with the same flags to resume it, or pass a new --workdir"
    step = checkpoints.latest_step(workdir / CHECKPOINTS)
    if step is not None:
        saved = checkpoints.read_meta(workdir / CHECKPOINTS, step).get("config", {})
        differences = _differences(saved, config, free)
        if differences:
            raise WorkdirError(
                f"workdir {workdir} holds a run with other settings "
                f"({'; '.join(differences)}): {fix}"
            )
        return step
    if (workdir / METRICS).exists():  # killed before its first checkpoint: nothing to lose
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
    return None


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


def _keep_lines_up_to(path: Path, step: int) -> None:
    """Drops the JSONL lines written after checkpoint ``step`` (they will be written again)."""
    if path.exists():
        kept = [r for r in io.read_jsonl(path) if r.get("step", 0) <= step]
        io.atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in kept).encode())


class _StopFlag:
    """Set by SIGTERM/SIGINT while installed; a second signal of the same kind acts as usual."""

    def __init__(self):
        self.signum: int | None = None

    def handle(self, signum, frame):
        del frame
        self.signum = signum
        signal.signal(signum, signal.SIG_DFL)


def _agree(signum: int | None, stretch: int) -> tuple[int | None, int]:
    """What all processes go on with (each calls this at the same step): a signal any of them
    received, and the shortest next stretch (a collective loop must run the same steps on all)."""
    if jax.process_count() == 1:
        return signum, stretch
    from jax.experimental import multihost_utils

    gathered = np.asarray(
        multihost_utils.process_allgather(np.array([signum or 0, stretch], np.int32))
    ).reshape(-1, 2)
    return int(gathered[:, 0].max()) or None, int(gathered[:, 1].min())


@contextlib.contextmanager
def _stop_on_signals():
    flag = _StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag  # signals reach only the main thread
        return
    previous = {s: signal.signal(s, flag.handle) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield flag
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _key_record(keys: dict[str, jax.Array]) -> dict[str, list[int]]:
    return {name: np.asarray(jax.random.key_data(k)).ravel().tolist() for name, k in keys.items()}


EndOfEpoch = Callable[[int, Any, "dict[str, float] | None"], "tuple[dict[str, Any], str]"]


def train(
    runner: EpochRunner,
    state,
    data,
    *,
    data_key: jax.Array,
    base_key: jax.Array,
    epochs: int,
    workdir: Path,
    config: dict[str, Any],
    start_step: int | None,
    checkpoint_every: int,
    keep_checkpoints: int,
    end_of_epoch: EndOfEpoch,
    mesh=None,
):
    """Trains ``state`` for ``epochs`` epochs of ``data``, resuming from checkpoint ``start_step``
    (from :func:`resume_step`) if not None; returns ``(state, last metrics record)``.

    ``end_of_epoch(epoch, state, train_terms) -> (record, text)`` evaluates after each epoch (and
    with epoch 0 and ``train_terms`` None before training); ``record`` (JSON) goes to
    ``metrics.jsonl`` with ``epoch`` and ``step`` added, ``text`` to the console. Every process
    calls it; it must write files only on :func:`is_writer`.
    """
    from tqdm.auto import tqdm

    mesh = mesh or sharding.data_mesh()
    writer = is_writer()
    total = epochs * runner.steps_per_epoch
    keys = _key_record({"data": data_key, "step": base_key})
    buffer = runner.new_metrics(state, data)
    if start_step is not None:
        state, buffer = _restore(workdir, start_step, keys, epochs, total, (state, buffer), mesh)
    step = start_step or 0
    if writer:  # only now: the data are loaded and the checkpoint, if any, restored
        workdir.mkdir(parents=True, exist_ok=True)
        io.atomic_write_bytes(workdir / CONFIG, (json.dumps(config, indent=2) + "\n").encode())

    start = time.perf_counter()
    order = runner.order(data_key, step // runner.steps_per_epoch)
    run = runner.run.lower(state, buffer, data, order, base_key, 0, 0, 1).compile()
    compile_seconds = time.perf_counter() - start

    loop = _Loop(
        runner=runner,
        run=run,
        data=data,
        data_key=data_key,
        base_key=base_key,
        order=order,
        state=state,
        buffer=buffer,
        step=step,
        total=total,
        workdir=workdir,
        config=config,
        keys=keys,
        checkpoint_every=checkpoint_every,
        end_of_epoch=end_of_epoch,
        manager=checkpoints.open_checkpoints(workdir / CHECKPOINTS, keep_checkpoints),
        saved_step=start_step,
        writer=writer,
        say=tqdm.write if writer else (lambda text: None),
    )
    loop.bar = tqdm(
        total=total,
        initial=step,
        desc="training",
        unit="step",
        dynamic_ncols=True,
        disable=not writer,
    )
    try:
        loop.begin(start_step is None, compile_seconds)
        with _stop_on_signals() as stop:
            loop.train(stop)
    finally:
        loop.bar.close()
        checkpoints.close(loop.manager)
    return loop.state, loop.record


def _restore(
    workdir: Path,
    start_step: int,
    keys: dict[str, list[int]],
    epochs: int,
    total: int,
    like: tuple[Any, Any],
    mesh,
) -> tuple[Any, Any]:
    """(train state, epoch metrics buffer) of checkpoint ``start_step``, shaped as ``like`` and
    replicated over ``mesh``, once it is checked to belong to this run; the JSONL lines written
    after it are dropped (process 0)."""
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
    if is_writer():
        _keep_lines_up_to(workdir / METRICS, start_step)
        _keep_lines_up_to(workdir / TIMING, start_step)
    return state, buffer


@dataclasses.dataclass(eq=False)
class _Loop:
    """One call of :func:`train` between its stretches: the state and the epoch's per-step
    metrics buffer (both donated to each stretch), the step reached, the files and checkpoints
    it writes (files on process 0 only), the last metrics record."""

    runner: EpochRunner
    run: Callable  # the compiled runner.run
    data: Any
    data_key: jax.Array
    base_key: jax.Array
    order: jax.Array  # the epoch's batches of example indices
    state: Any
    buffer: Any
    step: int
    total: int
    workdir: Path
    config: dict[str, Any]
    keys: dict[str, list[int]]
    checkpoint_every: int
    end_of_epoch: EndOfEpoch
    manager: Any  # the checkpoint manager
    saved_step: int | None
    writer: bool
    say: Callable[[str], None]
    bar: Any = None
    record: dict[str, Any] | None = None

    def append(self, name: str, record: dict[str, Any]) -> None:
        if self.writer:
            io.append_jsonl(self.workdir / name, record)

    def diverged(self, at: int, what: str) -> Diverged:
        checkpoints.wait(self.manager)
        return Diverged(
            f"{what} at step {at}, so training stopped there; last good checkpoint: step "
            f"{self.manager.latest_step()} in {self.workdir / CHECKPOINTS}. Rerun the same "
            f"command with --nonfinite skip to resume from it skipping such steps, or lower "
            f"--learning_rate in a new --workdir"
        )

    def save(self, at: int) -> None:
        """Saves checkpoint ``at``, once the state is checked on the host to be finite."""
        host = jax.device_get({"train_state": self.state, "epoch_metrics": self.buffer})
        if not all(
            np.all(np.isfinite(a))
            for a in jax.tree_util.tree_leaves(host["train_state"])
            if np.issubdtype(np.asarray(a).dtype, np.inexact)
        ):
            raise self.diverged(at, "the parameters or optimizer state became non-finite")
        checkpoints.save(
            self.manager, at, host, {"config": self.config, "step": at, "keys": self.keys}
        )
        self.saved_step = at

    def begin(self, fresh: bool, compile_seconds: float) -> None:
        """A fresh run's epoch-0 record and checkpoint; or, resuming a finished run, its last
        record."""
        if fresh:
            record, text = self.end_of_epoch(0, self.state, None)
            self.record = {"epoch": 0, "step": 0, **record}
            self.append(METRICS, self.record)
            self.append(TIMING, {"epoch": 0, "step": 0, "compile_seconds": compile_seconds})
            self.say(text)
            self.save(0)
        elif self.step == self.total:
            epochs = self.total // self.runner.steps_per_epoch
            self.say(
                f"workdir {self.workdir} holds a finished run of {epochs} epochs: nothing to train"
            )
            self.record = (
                (io.read_jsonl(self.workdir / METRICS) or [None])[-1] if self.writer else None
            )

    def train(self, stop: _StopFlag) -> None:
        """Runs stretches to the last step; between them ends epochs, saves checkpoints, and
        stops on a signal any process received (raising :class:`Interrupted`)."""
        per_epoch = self.runner.steps_per_epoch
        stretch, epoch_seconds, epoch_steps = 10, 0.0, 0  # timing of this process's steps
        while self.step < self.total:
            reached, seconds = self.stretch(stretch)
            taken = reached - self.step
            epoch_seconds += seconds
            epoch_steps += taken
            stretch = max(1, min(per_epoch, round(taken / max(seconds, 1e-6) * STRETCH_SECONDS)))
            signum, stretch = _agree(stop.signum, stretch)
            self.bar.update(taken)
            self.step = reached
            if reached % per_epoch == 0:
                self.end_epoch(reached // per_epoch, epoch_steps, epoch_seconds)
                epoch_seconds, epoch_steps = 0.0, 0
            if reached % self.checkpoint_every == 0 or reached == self.total:
                self.save(reached)
            if signum is not None:
                raise self.interrupted(signum)

    def stretch(self, length: int) -> tuple[int, float]:
        """Runs at most ``length`` steps, never past the epoch's end or the next checkpoint;
        returns (the step reached, seconds). Raises :class:`Diverged` at a non-finite step."""
        per_epoch = self.runner.steps_per_epoch
        epoch, position = divmod(self.step, per_epoch)
        if position == 0:
            self.order = self.runner.order(self.data_key, epoch)
        end = min(
            (epoch + 1) * per_epoch,
            self.step + length,
            (self.step // self.checkpoint_every + 1) * self.checkpoint_every,
        )
        began = time.perf_counter()
        self.state, self.buffer, reached = self.run(
            self.state,
            self.buffer,
            self.data,
            self.order,
            self.base_key,
            epoch,
            position,
            end - epoch * per_epoch,
        )
        reached = epoch * per_epoch + int(reached)  # waits for the stretch
        seconds = time.perf_counter() - began
        if reached < end:  # the state holds the non-finite step: never saved
            raise self.diverged(reached, "a non-finite loss or gradient")
        return reached, seconds

    def end_epoch(self, epoch: int, steps: int, seconds: float) -> None:
        """The epoch's ``metrics.jsonl`` and ``timing.jsonl`` lines and console line."""
        record, text = self.end_of_epoch(epoch, self.state, mean_metrics(self.buffer))
        self.record = {"epoch": epoch, "step": self.step, **record}
        self.append(METRICS, self.record)
        rate = steps * self.runner.batch_size / seconds
        self.append(
            TIMING,
            {
                "epoch": epoch,
                "step": self.step,
                "steps": steps,
                "seconds": seconds,
                "images_per_second": rate,
            },
        )
        self.bar.set_postfix(img_s=f"{rate:,.0f}")
        self.say(f"{text}  {rate:,.0f} img/s  {seconds:.2f} s")

    def interrupted(self, signum: int) -> Interrupted:
        """Saves the current step (unless just saved), waits for the files: the error to raise."""
        if self.saved_step != self.step:
            self.save(self.step)
        checkpoints.wait(self.manager)
        return Interrupted(
            signum,
            (
                f"stopped by {signal.Signals(signum).name} at step {self.step} of {self.total}; "
                f"checkpoint saved in {self.workdir / CHECKPOINTS}: rerun the same command to "
                f"resume"
            ),
        )
