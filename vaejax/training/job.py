"""What a training run is given besides its model: its keys, its settings and its place.

- :class:`RunKeys`: the run's independent random streams, each a function of the seed alone;
- :class:`TrainSettings`: the batch size, epochs, optimizer and checkpoint settings of one
  training (read from any config with these fields);
- :class:`Job`: where it runs: the workdir, the record ``config.json`` holds, the checkpoint it
  resumes from (decided once, with the workdir locked, before anything is loaded), the keys and
  the device mesh.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import jax
from jax.sharding import Mesh


class RunKeys(NamedTuple):
    """The independent random streams of a run, each a function of one key alone."""

    init: jax.Array
    data: jax.Array  # the data order
    step: jax.Array  # per-step keys (noise, binarization, corruption)
    eval: jax.Array
    sample: jax.Array  # fixed samples for the pictures

    @classmethod
    def of(cls, key: jax.Array) -> RunKeys:
        return cls(*(jax.random.fold_in(key, i) for i in range(5)))


class TrainSettings(NamedTuple):
    """The optimizer and loop settings of one model's training (read from any config with these
    fields)."""

    batch_size: int
    epochs: int
    learning_rate: float
    adam_eps: float
    eval_batch_size: int
    checkpoint_every: int
    keep_checkpoints: int
    nonfinite: str
    data_on_device: str = "auto"  # see vaejax.training.stream

    @classmethod
    def of(cls, config: Any, **overrides) -> TrainSettings:
        fields = {
            name: getattr(config, name)
            for name in cls._fields
            if hasattr(config, name) or name not in cls._field_defaults
        }
        return cls(**{**fields, **overrides})


class Job(NamedTuple):
    """Where a training runs: its ``workdir`` (locked by this process), the ``record`` that
    ``config.json`` and every checkpoint hold, the checkpoint step it resumes from
    (:func:`vaejax.training.resume.resume_step`; None: a fresh start), its keys and its mesh."""

    workdir: Path
    record: dict[str, Any]
    start_step: int | None
    keys: RunKeys
    mesh: Mesh
