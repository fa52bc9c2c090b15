"""The training loop every experiment shares: resume, checkpoints, signals, non-finite guards.

:func:`start` opens the loop of one training; its ``drive`` runs an
:class:`~vaejax.training.step.EpochRunner` through ``settings.epochs`` epochs in stretches of
steps (about a second each), and between stretches

- writes one ``metrics.jsonl`` line per epoch (from the experiment's ``end_of_epoch``), one
  ``timing.jsonl`` line (seconds, images/second: kept apart so that ``metrics.jsonl`` depends
  only on the seed and the command) and their TensorBoard events (:mod:`.summaries`);
- saves a checkpoint (:mod:`vaejax.training.checkpoints`) every ``checkpoint_every`` steps and
  at the end;
- on SIGTERM, SIGINT or SIGHUP saves a checkpoint and raises :class:`Interrupted`
  (:mod:`vaejax.stopping`; a signal during an evaluation stops it at once, keeping the
  checkpoints already committed);
- on a non-finite step (under the runner's ``stop`` policy) raises :class:`Diverged` naming
  the last good checkpoint; nothing non-finite is ever saved.

A checkpoint holds the train state, the per-step metrics of the epoch in progress, the config,
the PRNG keys and the journal (the lines of ``metrics.jsonl`` and ``timing.jsonl`` so far), with
checksums. Data order and keys depend only on (seed, step), so a run resumed from any
checkpoint takes exactly the steps an uninterrupted run takes: the same parameters bit for bit,
the same ``metrics.jsonl``. :func:`resume_step` decides, before anything is loaded or written,
whether a workdir is fresh, resumable, or refused (:mod:`vaejax.training.resume`).

Several processes (``jax.distributed``) run the same loop; they agree on when to stop, save
checkpoints together, and only process 0 writes the other files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from vaejax import faults, io, stopping
from vaejax.stopping import Interrupted  # noqa: F401  (re-exported)
from vaejax.training import checkpoints, summaries
from vaejax.training.job import Job, TrainSettings
from vaejax.training.resume import (  # noqa: F401  (WorkdirError, resume_step: re-exported)
    CHECKPOINTS,
    CONFIG,
    METRICS,
    TIMING,
    WorkdirError,
    restore_checkpoint,
    resume_step,
    write_journal,
)
from vaejax.training.step import EpochRunner, mean_metrics

STRETCH_SECONDS = 1.0  # how often the host looks at signals, progress and checkpoints
COMPILE_NOTICE_SECONDS = 1.0  # a longer compile of the training stretch is reported


class Diverged(Exception):
    """A training step was non-finite; the message names the step and the last good checkpoint."""


def is_writer() -> bool:
    """Whether this process writes files (process 0; the only one without jax.distributed)."""
    return jax.process_index() == 0


def _agree(signum: int | None, stretch: int) -> tuple[int | None, int]:
    """What all processes go on with (each calls this at the same step): a signal any of them
    received, and the shortest next stretch (a collective loop must run the same steps on all)."""
    if jax.process_count() == 1:
        return signum, stretch
    gathered = np.asarray(
        multihost_utils.process_allgather(np.array([signum or 0, stretch], np.int32))
    ).reshape(-1, 2)
    return int(gathered[:, 0].max()) or None, int(gathered[:, 1].min())


def _key_record(keys: dict[str, jax.Array]) -> dict[str, list[int]]:
    return {name: np.asarray(jax.random.key_data(k)).ravel().tolist() for name, k in keys.items()}


EndOfEpoch = Callable[[int, Any, "dict[str, float] | None"], "tuple[dict[str, Any], str]"]


def start(
    runner: EpochRunner,
    state,
    data,
    *,
    job: Job,
    settings: TrainSettings,
    end_of_epoch: EndOfEpoch,
    stream=None,
) -> _Loop:
    """The loop of one training (``settings.epochs`` epochs of ``data`` as ``job`` says),
    opened: the checkpoint ``job.start_step`` restored (if not None) and, on the writer,
    ``config.json`` and the journal written. Then :meth:`_Loop.compile` and
    :meth:`_Loop.drive` train it and return ``(state, last metrics record)``.

    ``end_of_epoch(epoch, state, train_terms) -> (record, text)`` evaluates after each epoch (and
    with epoch 0 and ``train_terms`` None before training); ``record`` (JSON) goes to
    ``metrics.jsonl`` with ``epoch`` and ``step`` added, ``text`` to the console. Every process
    calls it; it must write files only on :func:`is_writer`.

    With ``stream`` (a :class:`vaejax.training.stream.Streamed` and a runner of
    :func:`~vaejax.training.stream.make_streamed_runner`), ``data`` is None and each stretch
    gets its block of batches from the host. The caller holds the workdir's lock
    (:mod:`vaejax.training.workdir_lock`).
    """
    if stream is not None:
        data = stream.example_block()
    loop = _Loop(
        runner=runner,
        data=data,
        stream=stream,
        state=state,
        buffer=runner.new_metrics(state, data),
        job=job,
        settings=settings,
        end_of_epoch=end_of_epoch,
        step=job.start_step or 0,
        saved_step=job.start_step,
    )
    loop.open()
    return loop


@dataclasses.dataclass(eq=False)
class _Loop:
    """One training between its stretches: the state and the epoch's per-step metrics buffer
    (both donated to each stretch), the step reached, the files and checkpoints it writes
    (files on process 0 only), the last metrics record."""

    runner: EpochRunner
    data: Any
    stream: Any  # a vaejax.training.stream.Streamed, or None: data on the device(s)
    state: Any
    buffer: Any
    job: Job
    settings: TrainSettings
    end_of_epoch: EndOfEpoch
    step: int
    saved_step: int | None
    journal: dict[str, list[dict[str, Any]]] = dataclasses.field(
        default_factory=lambda: {METRICS: [], TIMING: []}
    )  # the lines of metrics.jsonl and timing.jsonl
    writer: bool = dataclasses.field(default_factory=is_writer)
    run: Callable | None = None  # the compiled runner.run (:meth:`compile`)
    order: jax.Array | None = None  # the epoch's batches of example indices
    manager: Any = None  # the checkpoint manager (:meth:`drive`)
    events: Any = None  # the writer's summaries.EventLog, rewritten from the journal (:meth:`open`)
    bar: Any = None
    record: dict[str, Any] | None = None

    @property
    def workdir(self) -> Path:
        return self.job.workdir

    @property
    def total(self) -> int:
        return self.settings.epochs * self.runner.steps_per_epoch

    @property
    def keys(self) -> dict[str, list[int]]:
        """The keys a checkpoint records (and a resume checks): the data order's and the steps'."""
        return _key_record({"data": self.job.keys.data, "step": self.job.keys.step})

    def open(self) -> None:
        """Restores the checkpoint of the step to resume from (if any); the writer then writes
        ``config.json`` and the journal that checkpoint vouches for (empty when fresh)."""
        if self.saved_step is not None:
            with stopping.activity(f"restoring checkpoint {self.saved_step}"):
                restored = restore_checkpoint(
                    self.workdir,
                    self.saved_step,
                    self.keys,
                    self.settings.epochs,
                    self.total,
                    (self.state, self.buffer),
                    self.job.mesh,
                )
            self.state, self.buffer, self.journal = restored
        if self.writer:  # only now: the data are loaded and the checkpoint, if any, restored
            config = (json.dumps(self.job.record, indent=2) + "\n").encode()
            io.atomic_write_bytes(self.workdir / CONFIG, config)
            write_journal(self.workdir, self.journal)
            self.events = summaries.EventLog(self.workdir)
            self.events.rewrite(self.job.record, self.journal)

    def compile(self) -> float:
        """Compiles the training stretch for the epoch of the current step; returns the seconds
        it took, which the writer prints when over :data:`COMPILE_NOTICE_SECONDS`."""
        start = time.perf_counter()
        with stopping.activity("compiling the training step"):
            faults.point("compile")
            self.order = self.runner.order(
                self.job.keys.data, self.step // self.runner.steps_per_epoch
            )
            if self.stream is not None:
                self.order = np.int32(0)  # a streamed block's first step
            self.run = self.runner.run.lower(
                self.state, self.buffer, self.data, self.order, self.job.keys.step, 0, 0, 1
            ).compile()
        seconds = time.perf_counter() - start
        if self.writer and seconds > COMPILE_NOTICE_SECONDS:
            print(f"vaejax: compiling the training step: {seconds:.1f} s", flush=True)
        return seconds

    def drive(self, compile_seconds: float) -> tuple[Any, dict[str, Any] | None]:
        """Opens the checkpoints and the bar, then :meth:`begin`, :meth:`train`: (state, record)."""
        self.manager = checkpoints.open_checkpoints(
            self.workdir / CHECKPOINTS, self.settings.keep_checkpoints
        )
        self.bar = tqdm(
            total=self.total,
            initial=self.step,
            desc="training",
            unit="step",
            dynamic_ncols=True,
            **({} if self.writer else {"disable": True}),  # TQDM_DISABLE=1 also hides it
        )
        try:
            self.begin(self.job.start_step is None, compile_seconds)
            with stopping.flagged() as stop:
                self.train(stop)
        finally:
            self.bar.close()
            with stopping.deferred(), stopping.activity("committing the last checkpoint"):
                checkpoints.close(self.manager)  # the saves started, whatever comes
                if self.events:
                    self.events.close()
        return self.state, self.record

    def say(self, text: str) -> None:
        """Prints ``text`` above the progress bar, on the writer only."""
        if self.writer:
            tqdm.write(text)

    def evaluate(self, epoch: int, train_terms: dict[str, float] | None) -> tuple[dict, str]:
        """``end_of_epoch`` of the current state, the bar saying ``evaluating`` meanwhile; a stop
        signal meanwhile stops it at once (:class:`Interrupted`: the checkpoints committed
        so far are kept)."""
        self.bar.set_description("evaluating")
        # one process stops at once; several go on to the next stretch, where they agree
        at_once = stopping.raising() if jax.process_count() == 1 else contextlib.nullcontext()
        with at_once, stopping.activity(f"evaluating epoch {epoch}"):
            faults.point("evaluation")
            record, text = self.end_of_epoch(epoch, self.state, train_terms)
        self.bar.set_description("training")
        return record, text

    def append(self, name: str, record: dict[str, Any]) -> None:
        """Adds ``record`` to the journal (saved with the next checkpoint) and its file."""
        self.journal[name].append(record)
        if self.writer:
            io.append_jsonl(self.workdir / name, record)
            if name == TIMING:  # the epoch's last line: its events, with its metrics line's
                self.events.add(self.journal[METRICS][-1], record)
                self.events.flush()
        faults.point(f"{name.partition('.')[0]}_written")

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
        meta = {"config": self.job.record, "step": at, "keys": self.keys, "journal": self.journal}
        with stopping.deferred():
            checkpoints.save(self.manager, at, host, meta)
        self.saved_step = at

    def begin(self, fresh: bool, compile_seconds: float) -> None:
        """A fresh run's epoch-0 record and checkpoint; a finished run's last record."""
        if fresh:
            record, text = self.evaluate(0, None)
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
            self.record = (self.journal[METRICS] or [None])[-1]

    def train(self, stop: stopping.Flag) -> None:
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
            faults.point("stretch")
            signum, stretch = _agree(stop.signum, stretch)
            self.bar.update(taken)
            self.step = reached
            if reached % per_epoch == 0:
                self.end_epoch(reached // per_epoch, epoch_steps, epoch_seconds)
                epoch_seconds, epoch_steps = 0.0, 0
            if reached % self.settings.checkpoint_every == 0 or reached == self.total:
                self.save(reached)
            if signum is not None:
                raise self.interrupted(signum)

    def stretch(self, length: int) -> tuple[int, float]:
        """Runs at most ``length`` steps, never past the epoch's end or the next checkpoint;
        returns (the step reached, seconds). Raises :class:`Diverged` at a non-finite step."""
        per_epoch = self.runner.steps_per_epoch
        epoch, position = divmod(self.step, per_epoch)
        if position == 0 and self.stream is None:
            self.order = self.runner.order(self.job.keys.data, epoch)
        end = min(
            (epoch + 1) * per_epoch,
            self.step + length,
            (self.step // self.settings.checkpoint_every + 1) * self.settings.checkpoint_every,
        )
        began = time.perf_counter()
        data, order = self.data, self.order
        if self.stream is not None:  # this stretch's batches, from the host
            end = min(end, self.step + self.stream.chunk)
            data = self.stream.block(epoch, position, end - epoch * per_epoch)
            order = np.int32(position)
        self.state, self.buffer, reached = self.run(
            self.state,
            self.buffer,
            data,
            order,
            self.job.keys.step,
            epoch,
            position,
            end - epoch * per_epoch,
        )
        if self.stream is not None and end < self.total:  # while the devices run this stretch
            self.stream.prefetch(*divmod(end, per_epoch))
        reached = epoch * per_epoch + int(reached)  # waits for the stretch
        seconds = time.perf_counter() - began
        if reached < end:  # the state holds the non-finite step: never saved
            raise self.diverged(reached, "a non-finite loss or gradient")
        return reached, seconds

    def end_epoch(self, epoch: int, steps: int, seconds: float) -> None:
        """The epoch's ``metrics.jsonl`` and ``timing.jsonl`` lines and console line."""
        record, text = self.evaluate(epoch, mean_metrics(self.buffer))
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
        with stopping.deferred():
            checkpoints.wait(self.manager)
        return Interrupted(
            signum,
            f"stopped by {stopping.signal_name(signum)} at step {self.step} of {self.total}; "
            f"checkpoint {self.step} in {self.workdir / CHECKPOINTS} is kept: rerun the same "
            f"command to resume from it",
        )
