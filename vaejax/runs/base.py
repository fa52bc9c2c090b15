"""The Run protocol, the registry of run kinds, and the one driver that runs them all.

A :class:`Run` is one kind of experiment. It declares its config dataclass and hands the driver
a :class:`~vaejax.training.fit.Training`: the initial train state (made from its
``init_params``; its own optimizer, schedule and EMA included), the update, the on-device
preprocessing, the training data, the end-of-epoch evaluation, the pictures and how the final
state becomes the saved parameters. :func:`execute` does the rest for every kind: it locks the
workdir, decides once whether to resume, loads the data and trains through the shared loop
(:func:`vaejax.training.fit.fit_state`: compiled epochs, checkpoints, exact resume, signals,
the non-finite guard)::

    @register
    class MyRun(Run):
        kind = "my_model"
        Config = MyConfig

        def build(self): ...                        # the model (from self.config alone)
        def init_params(self, model, key): ...      # the pytree saved as params.msgpack
        def training(self, data, keys, mesh): ...   # -> Training
        def trained(self, model, params): ...       # -> what load_run returns (sample, ...)

A kind that trains several models or none (the autoencoder studies, likelihood evaluation,
sample quality) is a :class:`Study`: the driver loads its data and calls its ``study(data)``;
the models it trains go through :func:`execute` each, in workdirs of their own.

``config.json`` records the run's ``kind`` and the ``run`` class (``module:QualName``), so that
:func:`vaejax.runs.load.load_run` rebuilds any finished run, one defined outside this package
included.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, ClassVar, NamedTuple

import jax

from vaejax import data as datasets
from vaejax import errors, faults, io, sharding, stopping
from vaejax.errors import ConfigError
from vaejax.runs.config import data_spec, load_data, resumable_fields, validate_run
from vaejax.training import loop, schedules
from vaejax.training.fit import Training, fit_state, training_summary
from vaejax.training.job import Job, RunKeys, TrainSettings
from vaejax.training.workdir_lock import workdir_lock

_REGISTRY: dict[str, type[Run]] = {}
RUN_FIELDS = ("kind", "run")  # what config.json holds besides the config's fields


class Data(NamedTuple):
    """The data of a run: uint8 splits after the binarization protocol, and the dataset's spec."""

    train: datasets.ImageSplit
    test: datasets.ImageSplit
    spec: datasets.DatasetSpec


class Run:
    """One kind of experiment: a config and the hooks :func:`execute` calls (see the module).

    ``memory_flags`` names the flags that set its batches and its model's size, for the line
    that a run out of memory prints; ``sampling_options`` the keyword arguments its
    :meth:`trained` takes (from :func:`~vaejax.runs.load.load_run`)."""

    kind: ClassVar[str]
    Config: ClassVar[type]
    memory_flags: ClassVar[errors.MemoryFlags] = errors.MemoryFlags(
        ("batch_size", "eval_batch_size")
    )
    sampling_options: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config, workdir: Path | str | None = None):
        self.config = config
        self.workdir = io.as_path(workdir) if workdir is not None else None
        self.writer = loop.is_writer()  # this process writes the files (process 0)
        self.started = time.perf_counter()  # for the closing line's "whole run" time

    # -- every kind
    def log(self, text: str) -> None:
        """Prints ``text`` on the writing process (process 0) only."""
        if self.writer:
            print(text, flush=True)

    def validate(self, num_devices: int) -> None:
        """Raises :class:`~vaejax.errors.ConfigError` for the first setting that cannot work."""
        validate_run(self.config, num_devices)

    def keys(self) -> RunKeys:
        """The run's keys (initialization, data order, steps, evaluation, pictures)."""
        return RunKeys.of(jax.random.key(self.config.seed))

    def record(self) -> dict[str, Any]:
        """What ``config.json`` and every checkpoint hold: the config's fields, the kind, the
        Run class; as JSON reads it back (tuples as lists), so that a resumed run compares like
        with like."""
        return json_record(
            {**dataclasses.asdict(self.config), "kind": self.kind, "run": _qualified(type(self))}
        )

    # -- kinds that train
    def load_data(self) -> Data:
        train, test = load_data(self.config)
        return Data(train, test, data_spec(self.config))

    def build(self):
        """The model (a flax module or a bundle of them), from ``self.config`` alone."""
        raise NotImplementedError(f"{type(self).__name__} does not build a model")

    def init_params(self, model, key: jax.Array):
        """Fresh parameters in the layout saved as ``params.msgpack`` (the template of
        :func:`~vaejax.runs.load.load_run`)."""
        raise NotImplementedError(f"{type(self).__name__} has no parameters")

    def param_shapes(self, model):
        """The shapes and dtypes (``jax.ShapeDtypeStruct``) of :meth:`init_params`' pytree,
        traced only: nothing is allocated."""
        return jax.eval_shape(lambda: self.init_params(model, jax.random.key(0)))

    def training(self, data: Data, keys: RunKeys, mesh) -> Training:
        """What the shared loop trains (see :class:`~vaejax.training.fit.Training`), starting
        from :meth:`init_params`' pytree."""
        raise NotImplementedError(f"{type(self).__name__} does not train")

    def summary(self, record: dict) -> str:
        """The result part of the closing line, e.g. 'test -ELBO 105.54 nats/image'."""
        return ""

    def conclude(self, record: dict | None) -> None:
        """Called on every process after the parameters are saved, with the last metrics
        record (None when nothing was evaluated): a kind's closing files. Default: nothing."""

    # -- using a finished run
    def trained(self, model, params):
        """What :func:`~vaejax.runs.load.load_run` returns for this kind."""
        raise NotImplementedError(f"{type(self).__name__} cannot be loaded")


class Study(Run):
    """A kind that trains several models or none: :func:`execute` validates its config, loads
    its data (:meth:`load_data`; override it to load none, or other data) and returns what
    :meth:`study` returns. The models it trains go through :func:`execute` each, in workdirs
    of their own (e.g. ``<workdir>/class_1/vae``)."""

    def study(self, data: Data | None) -> Any:
        """Runs the study on ``data``; writes its files into ``self.workdir`` on the writer;
        returns its record."""
        raise NotImplementedError(f"{type(self).__name__} has no study")


def json_record(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` as JSON writes and reads it: tuples become lists (as in ``config.json`` and the
    checkpoints' metadata)."""
    return json.loads(json.dumps(record))


def register(cls: type[Run]) -> type[Run]:
    """Class decorator: adds a Run to the registry under its ``kind``."""
    other = _REGISTRY.get(cls.kind)
    if other is not None and other is not cls and _qualified(other) != _qualified(cls):
        raise ValueError(f"run kind {cls.kind!r} is taken by {_qualified(other)}")
    _REGISTRY[cls.kind] = cls
    return cls


def _qualified(cls: type) -> str:
    """'module:QualName'; a class of a module run with ``python -m`` gets that module's name."""
    module = cls.__module__
    if module == "__main__":
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        module = spec.name if spec is not None else module
    return f"{module}:{cls.__qualname__}"


def registered_kinds() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def run_class(kind: str, qualified: str | None = None) -> type[Run]:
    """The Run of ``kind``; ``qualified`` ('module:QualName', from config.json) is imported if
    the kind is not registered yet (a Run defined outside vaejax). Raises KeyError."""
    if kind not in _REGISTRY and qualified:
        module, _, name = qualified.partition(":")
        try:
            cls = importlib.import_module(module)
            for part in name.split("."):
                cls = getattr(cls, part)
        except (ImportError, AttributeError):
            pass
        else:
            register(cls)
    return _REGISTRY[kind]


def run_for_config(config) -> type[Run]:
    """The Run whose ``Config`` is the type of ``config``."""
    for cls in _REGISTRY.values():
        if type(config) is cls.Config:
            return cls
    raise KeyError(f"no run kind takes a {type(config).__name__}")


def train_and_evaluate(config, workdir: Path | str) -> Any:
    """Runs the experiment of ``config`` (the registered Run whose ``Config`` is its type) into
    ``workdir`` through :func:`execute`: trains, evaluates every epoch, writes everything;
    returns the last metrics record (a study: its record)."""
    return execute(run_for_config(config)(config, workdir)).record


def memory_flags(config) -> errors.MemoryFlags:
    """The memory flags of the Run of ``config`` (none for a config no Run takes)."""
    try:
        return run_for_config(config).memory_flags
    except KeyError:
        return errors.NO_FLAGS


def free_fields(run: Run) -> tuple[str, ...]:
    """Fields that may differ when a run is resumed (the kind and Run: older runs lack them)."""
    return (*resumable_fields(type(run.config)), *RUN_FIELDS)


class Phase:
    """``with Phase(log, "preparing data"):`` says what the run is doing (also to the line a
    signal prints) and how long it took; ``fault`` names its fault point
    (:mod:`vaejax.faults`)."""

    def __init__(self, log: Callable[[str], None], label: str, fault: str = ""):
        self.log, self.label, self.fault = log, label, fault

    def __enter__(self):
        self.start = time.perf_counter()
        self.activity = stopping.activity(self.label)
        self.activity.__enter__()
        if self.fault:
            faults.point(self.fault)
        return self

    def __exit__(self, *error):
        self.activity.__exit__(*error)
        if error[0] is None:
            self.seconds = time.perf_counter() - self.start
            if self.seconds > 1.0:
                self.log(f"vaejax: {self.label}: {self.seconds:.1f} s")


def start_line(run: Run, training: Training, data: Data, mesh, start_step: int | None) -> str:
    """The first line every training run prints (the config of a kind that trains is a
    :class:`~vaejax.runs.config.RunConfig`)."""
    resumed = "starting" if start_step is None else f"resuming from step {start_step}"
    config = run.config
    rate = schedules.describe(config.lr_schedule, config.warmup_steps)
    return (
        f"vaejax: {run.kind}: {training.description} ({training.parameters:,} parameters) on "
        f"{run.config.dataset} ({len(data.train.images):,} train / "
        f"{len(data.test.images):,} test images); {mesh.size} "
        f"{jax.devices()[0].platform} device(s) in {jax.process_count()} process(es)"
        f"{rate}; {resumed}"
    )


def check_model_fits(run: Run) -> None:
    """Raises :class:`ConfigError` when the parameters ``run`` initializes, twice over (they
    and an optimizer state at least their size, on each device), exceed a device's memory. A
    model that size would otherwise fill the memory page by page, each array fitting on its
    own, until the kernel kills the process with no line. Nothing is allocated here."""
    need = sum(
        leaf.size * leaf.dtype.itemsize
        for leaf in jax.tree_util.tree_leaves(run.param_shapes(run.build()))
    )
    line = errors.model_too_large_line(2 * need, run.memory_flags)
    if line:
        raise ConfigError(line)


class Outcome(NamedTuple):
    """What :func:`execute` returns: the last metrics ``record`` (a study: its record) and the
    saved host ``params`` (the layout of ``init_params``; None for a study)."""

    record: Any
    params: Any = None


def execute(run: Run) -> Outcome:
    """Runs ``run`` into its workdir, holding the workdir's lock: a :class:`Study` studies its
    data; any other kind trains through the shared loop (resuming the workdir when it holds
    this run from a checkpoint decided here, once, before anything is loaded), saves
    ``params.msgpack`` and prints one closing line.

    Raises :class:`~vaejax.errors.ConfigError`, :class:`~vaejax.data.DataError`,
    :class:`~vaejax.training.loop.WorkdirError` or
    :class:`~vaejax.training.checkpoints.CheckpointError` before anything is written;
    :class:`~vaejax.training.loop.Diverged` or :class:`~vaejax.training.loop.Interrupted`.
    """
    with workdir_lock(run.workdir):
        mesh = sharding.data_mesh()
        run.validate(mesh.size)
        if isinstance(run, Study):
            return Outcome(run.study(_load_data(run)))
        run_start = time.perf_counter()
        job, plan = _plan(run, mesh)
        settings = plan.settings or TrainSettings.of(run.config)
        state, last = fit_state(plan, settings, job)
        return _conclude(run, plan, state, last, settings, job, run_start)


def _load_data(run: Run) -> Data:
    with Phase(run.log, "preparing data", fault="preparing_data"):
        return run.load_data()


def _plan(run: Run, mesh) -> tuple[Job, Training]:
    """Where ``run`` trains (the checkpoint to resume from is decided first, before anything is
    loaded) and what it trains; prints the start line."""
    record = run.record()
    damaged = run.config.damaged_checkpoints
    start_step = loop.resume_step(run.workdir, record, free_fields(run), damaged)
    data = _load_data(run)
    check_model_fits(run)
    keys = run.keys()
    plan = run.training(data, keys, mesh)
    run.log(start_line(run, plan, data, mesh, start_step))
    return Job(run.workdir, record, start_step, keys, mesh), plan


def _conclude(
    run: Run, plan: Training, state, last, settings: TrainSettings, job: Job, run_start: float
) -> Outcome:
    """After training: the final pictures, ``params.msgpack``, the kind's closing files and
    the closing line."""
    with Phase(run.log, "drawing the final pictures", fault="final_pictures"):
        saved = plan.finish(state) if plan.finish else jax.device_get(state.params)
    if run.writer:
        with stopping.activity("writing the parameters"):
            io.save_params(job.workdir / "params.msgpack", saved)
    run.conclude(last)
    if last is not None:
        result = run.summary(last)
        epochs = f"{settings.epochs} epoch{'s' * (settings.epochs != 1)}"
        trained = training_summary(job.workdir, settings.batch_size, after_step=job.start_step)
        run.log(
            f"done: {result + '; ' if result else ''}{epochs}; {trained}; whole run "
            f"{time.perf_counter() - run_start:.1f} s; outputs in {job.workdir}"
        )
    return Outcome(last, saved)
