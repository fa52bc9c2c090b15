"""TensorBoard event files of a run, written with tensorboardX (no TensorFlow).

The event file in a workdir is a view of its journal, never a second record: ``metrics.jsonl``
stays the source of truth. Each epoch's record becomes

- a scalar per number, at the record's ``step``: ``train_loss`` as ``train/loss``, ``test_fid``
  as ``test/fid``, any other key as itself; a nested dict's keys are joined with ``/``;
- a histogram per list of numbers (bucket i holds entry i: the class histogram of a GAN's
  samples);
- an image per picture of that epoch in the workdir (``<name>_<epoch>.png``: ``sample_3.png``,
  ``reconstruction_3.png``), tagged ``<name>``;
- the numbers of its ``timing.jsonl`` line as ``timing/<key>``;

and the config goes in once, as text. When a run starts or resumes, the event files are written
anew from the journal its checkpoint holds, so a resumed run's events equal an uninterrupted
run's (wall times aside), and nothing a killed run wrote past its checkpoint survives.

Only the process that writes files (process 0) keeps an :class:`EventLog`. Workdirs in an object
store get the file written locally and copied up whole at each flush.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import PIL.Image

from vaejax import io
from vaejax.training.resume import METRICS, TIMING

EVENT_FILES = "events.out.tfevents.*"
PICTURE = re.compile(r"(?P<name>[a-z][a-z_]*?)_(?P<epoch>\d+)\.png")
COUNTERS = ("epoch", "step")  # the record's place, not a metric


def scalar_tag(key: str) -> str:
    """The TensorBoard tag of a metrics key: ``train_``/``test_`` prefixes become groups."""
    for group in ("train", "test"):
        if key.startswith(group + "_"):
            return f"{group}/{key[len(group) + 1 :]}"
    return key


def _numbers(record: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(tag, number or list of numbers) of every metric in ``record``, nested dicts flattened."""
    for key, value in record.items():
        if not prefix and key in COUNTERS:
            continue
        tag = f"{prefix}/{key}" if prefix else scalar_tag(key)
        if isinstance(value, dict):
            yield from _numbers(value, tag)
        elif _is_number(value):
            yield tag, float(value)
        elif isinstance(value, list) and value and all(_is_number(v) for v in value):
            yield tag, [float(v) for v in value]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def epoch_pictures(workdir: os.PathLike | str, epoch: int) -> list[tuple[str, Path]]:
    """(name, path) of every ``<name>_<epoch>.png`` in ``workdir``, by name."""
    found = []
    for path in io.as_path(workdir).glob(f"*_{epoch}.png"):
        match = PICTURE.fullmatch(path.name)
        if match and int(match["epoch"]) == epoch:
            found.append((match["name"], path))
    return sorted(found)


class EventLog:
    """The event file of one workdir: :meth:`rewrite` it from a journal, then :meth:`add` each
    epoch, :meth:`flush` after it and :meth:`close` at the end."""

    def __init__(self, workdir: os.PathLike | str):
        # tensorboardX's synchronous writer: its SummaryWriter queues events to a thread, and
        # its flush() does not wait for them
        from tensorboardX.event_file_writer import EventsWriter

        self.workdir = io.as_path(workdir)
        self.local = io.is_local(self.workdir)
        for old in self.workdir.glob(EVENT_FILES):
            old.unlink()
        self.folder = Path(self.workdir) if self.local else Path(tempfile.mkdtemp("vaejax-events"))
        self.writer = EventsWriter(str(self.folder / "events"))

    def _write(self, summary, step: int) -> None:
        from tensorboardX.proto.event_pb2 import Event

        self.writer.write_event(Event(wall_time=time.time(), step=step, summary=summary))

    def rewrite(self, config: dict[str, Any], journal: dict[str, list[dict[str, Any]]]) -> None:
        """The config, then every epoch ``journal`` holds (its metrics and timing lines)."""
        self._write(_summary().text("config", _config_text(config)), 0)
        timing = {line["epoch"]: line for line in journal.get(TIMING, [])}
        for record in journal.get(METRICS, []):
            self.add(record, timing.get(record["epoch"]))
        self.flush()

    def add(self, record: dict[str, Any], timing: dict[str, Any] | None) -> None:
        """One epoch: the numbers of its metrics ``record``, its pictures, its ``timing``."""
        step = int(record["step"])
        for tag, value in _numbers(record):
            self._number(tag, value, step)
        for name, path in epoch_pictures(self.workdir, int(record["epoch"])):
            self._picture(name, path, step)
        for tag, value in _numbers(timing or {}):
            if isinstance(value, float):
                self._write(_summary().scalar(f"timing/{tag}", value), step)

    def _number(self, tag: str, value, step: int) -> None:
        if isinstance(value, float):
            self._write(_summary().scalar(tag, value), step)
            return
        counts = np.asarray(value)
        centres = np.arange(counts.size, dtype=np.float64)
        # bucket i spans [i - 1/2, i + 1/2]; tensorboard's reader drops the empty buckets at
        # either end and stretches the outer ones to min and max, so those are set to fit
        filled = np.flatnonzero(counts) if counts.any() else np.arange(counts.size)
        first, last = int(filled[0]), int(filled[-1])
        histogram = _summary().histogram_raw(
            tag,
            min=first - 0.5,
            max=last + 0.5,
            num=float(counts.sum()),
            sum=float(counts @ centres),
            sum_squares=float(counts @ centres**2),
            bucket_limits=(centres[first : last + 1] + 0.5).tolist(),
            bucket_counts=counts[first : last + 1].tolist(),
        )
        self._write(histogram, step)

    def _picture(self, name: str, path, step: int) -> None:
        with path.open("rb") as f, PIL.Image.open(f) as picture:
            pixels = np.asarray(picture.convert("RGB"))
        self._write(_summary().image(name, pixels, dataformats="HWC"), step)

    def flush(self) -> None:
        """Writes what was added; copies the file up to an object-store workdir."""
        self.writer.flush()
        if not self.local:
            for path in self.folder.glob(EVENT_FILES):
                io.atomic_write_bytes(self.workdir / path.name, path.read_bytes())

    def close(self) -> None:
        self.flush()
        self.writer.close()
        if not self.local:
            shutil.rmtree(self.folder, ignore_errors=True)


def _summary():
    from tensorboardX import summary

    return summary


def _config_text(config: dict[str, Any]) -> str:
    """The config as a markdown code block (TensorBoard renders text as markdown)."""
    lines = json.dumps(config, indent=2, sort_keys=True).splitlines()
    return "\n".join("    " + line for line in lines)
