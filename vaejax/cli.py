"""The command line of every experiment: parse the flags, start JAX, run, one-line errors.

:func:`main` parses the typed flags generated from the config dataclass (:mod:`vaejax.flags`,
which this module re-exports), starts ``jax.distributed`` when the launch flags ask for it
(:func:`initialize_distributed`), checks that JAX's backend starts (:func:`check_backend`), then
runs the experiment in its workdir (:func:`resolve_workdir`). Every user error is one line on
stderr, ``error: ...``, exit status 2.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import jax

from vaejax import data, io, stopping
from vaejax.errors import ConfigError, machine_limit_message, missing_module_line
from vaejax.failures import disk_full_line, file_error_line, stopped_line
from vaejax.flags import (
    AUTO,
    LAUNCH_FLAGS,
    CommandLine,
    FlagType,
    build_parser,
    flag_type,
    flag_types,
    parse_command_line,
    parse_config,
    parse_value,
    refusal,
)
from vaejax.runs.base import execute, memory_flags, run_for_config
from vaejax.runs.config import RunConfig, value_text
from vaejax.training import checkpoints, loop
from vaejax.training.workdir_lock import workdir_lock

__all__ = [  # the flag machinery stays importable from here, where it was first
    "AUTO",
    "LAUNCH_FLAGS",
    "CommandLine",
    "FlagType",
    "backend_error",
    "build_parser",
    "check_backend",
    "flag_type",
    "flag_types",
    "initialize_distributed",
    "main",
    "parse_command_line",
    "parse_config",
    "parse_value",
    "refusal",
    "resolve_workdir",
    "use_compilation_cache",
]


def initialize_distributed(
    coordinator_address: str = "", num_processes: int = 0, process_id: int = -1
) -> None:
    """``jax.distributed.initialize`` with the given settings (the unset ones auto-detected)."""
    if coordinator_address and (num_processes <= 0 or not 0 <= process_id < num_processes):
        raise ConfigError(
            "--coordinator_address needs --num_processes N (N >= 1) and "
            "--process_id between 0 and N-1"
        )
    jax.distributed.initialize(
        coordinator_address=coordinator_address or None,
        num_processes=num_processes or None,
        process_id=process_id if process_id >= 0 else None,
    )


def resolve_workdir(config) -> Path:
    """``config.workdir`` with each ``{field}`` replaced by that field's value as the command line
    writes it, e.g. 'workdirs/gan_{dataset}_{loss}' -> 'workdirs/gan_mnist_bce'."""
    workdir = config.workdir
    if not workdir.strip():
        raise ConfigError("--workdir must name a folder, got an empty string")
    for field in dataclasses.fields(config):
        workdir = workdir.replace("{" + field.name + "}", value_text(getattr(config, field.name)))
    return io.as_path(workdir)


_INSTALL = (
    'install the matching jaxlib, e.g. pip install -U "jax[cuda12]" (GPU) or "jax[tpu]" (TPU)'
)


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0].strip()


def backend_error(error: BaseException, plugin_errors: Sequence[str] = ()) -> str:
    """The one line naming the fix for ``error``, raised when JAX's backend could not start
    (``plugin_errors``: what JAX logged about its plugins meanwhile, e.g. a CUDA plugin's)."""
    platforms = os.environ.get("JAX_PLATFORMS", "")
    try:
        platforms = jax.config.jax_platforms or platforms
    except AttributeError:
        pass
    detail = _first_line(str(error))
    detail = re.sub(r"^Unable to initialize backend '[^']*': ", "", detail)
    detail = re.sub(r"\s*\(set JAX_PLATFORMS=.*\)$|\s*\(you may need to .*\)$", "", detail)
    if not detail:  # jax asserts when the platforms asked for are all absent (no GPU: no cuda)
        detail = f"no {platforms or 'usable'} device or plugin found"
    detail = "; ".join([detail.rstrip("."), *plugin_errors])
    if len(detail) > 300:
        detail = detail[:297] + "..."
    if platforms:
        return (
            f"JAX could not start the {platforms} backend ({detail}): {_INSTALL}, or unset "
            f"JAX_PLATFORMS to run on the CPU"
        )
    return (
        f"JAX could not start a backend ({detail}): {_INSTALL}, or reinstall jax and jaxlib "
        f"at one version (pip install -U jax jaxlib), or set JAX_PLATFORMS=cpu"
    )


DETERMINISTIC_GPU = "--xla_gpu_deterministic_ops=true"
COMPILATION_CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"
DEFAULT_COMPILATION_CACHE = "~/.cache/vaejax/xla"


def use_compilation_cache() -> str | None:
    """Keeps XLA's compiled programs between runs in jax's persistent compilation cache: a
    second run of a command loads its training step, evaluation and samplers instead of
    compiling them again (the key holds the program, jax's version and the flags, so a stale
    entry is never used; the results are the same bits). The folder is
    ``$JAX_COMPILATION_CACHE_DIR`` when set (``off``: no cache), else
    :data:`DEFAULT_COMPILATION_CACHE` if it can be written (else none); programs compiled in
    under 0.1 s are not kept. Returns the folder used, or None."""
    folder = os.environ.get(COMPILATION_CACHE_ENV)
    if folder is not None:  # jax reads the variable itself; "off" is ours
        if folder.strip().lower() in ("", "off"):
            jax.config.update("jax_compilation_cache_dir", None)
            return None
        return folder
    folder = Path(DEFAULT_COMPILATION_CACHE).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # a read-only home: compile as without a cache
    if not os.access(folder, os.W_OK):
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
    return str(folder)


def ask_for_deterministic_gpu() -> None:
    """Adds :data:`DETERMINISTIC_GPU` to ``XLA_FLAGS`` unless it sets that option already: XLA's
    GPU kernels otherwise add in an order that changes from run to run (two runs of one command
    on an H200 differ from the first epoch), and exact resume needs the same bits. XLA reads
    the flags when the backend starts, so this must come before it; other backends ignore it."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_gpu_deterministic_ops" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {DETERMINISTIC_GPU}".strip()


class _Held(logging.Handler):
    """Holds the records of JAX's loggers while its backend starts (a plugin that fails to
    initialize logs its traceback there)."""

    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


def check_backend() -> None:
    """Starts JAX's backend (``jax.devices()``); raises :class:`ConfigError` with one line naming
    the install fix when it cannot start (e.g. JAX_PLATFORMS=cuda with a CPU-only jaxlib), with
    no traceback: what JAX logs meanwhile is held back, and passed on when the backend starts."""
    held, jax_log = _Held(), logging.getLogger("jax")
    jax_log.addHandler(held)
    propagate, jax_log.propagate = jax_log.propagate, False
    try:
        jax.devices()
    except Exception as e:  # RuntimeError, or AssertionError when no platform asked for exists
        plugin_errors = [
            f"{_first_line(record.getMessage())}: {_first_line(str(record.exc_info[1]))}"
            for record in held.records
            if record.levelno >= logging.ERROR
            and record.exc_info
            and record.exc_info[1] is not None
        ]
        raise ConfigError(backend_error(e, plugin_errors)) from None
    finally:
        jax_log.removeHandler(held)
        jax_log.propagate = propagate
    for record in held.records:  # started: JAX's warnings go where they would have gone
        logging.getLogger(record.name).handle(record)


def main(
    defaults: RunConfig,
    description: str | None = None,
    argv: Sequence[str] | None = None,
    prog: str | None = None,
    run: Callable[[Any, Path], Any] | None = None,
) -> int:
    """Parses flags over ``defaults`` and runs the experiment: the registered Run whose
    ``Config`` is the type of ``defaults``, through the driver (:func:`vaejax.runs.base.execute`),
    or ``run(config, workdir)`` holding the workdir's lock. Exit status: 0 done; 2 a user error
    or a limit of the machine (flags, data, workdir, checkpoint, disk space: one line on
    stderr, nothing committed lost); 3 training diverged; 128 + the signal number when stopped
    by SIGINT, SIGTERM or SIGHUP (one line: what was saved, how to resume)."""
    config, launch, _ = parse_command_line(defaults, argv, description, prog)
    logging.getLogger("absl").setLevel(logging.ERROR)  # tfds' advice on OpenCV and the like
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("vaejax: %(message)s"))
    package_log = logging.getLogger("vaejax")
    package_log.setLevel(logging.INFO)
    package_log.addHandler(handler)
    propagate, package_log.propagate = package_log.propagate, False  # once, not also via root
    workdir = None
    try:
        checkpoints.quiet_closed_event_loops()
        with stopping.raising():
            ask_for_deterministic_gpu()
            use_compilation_cache()
            if launch.pop("distributed") or launch["coordinator_address"]:
                initialize_distributed(**launch)
            check_backend()  # after jax.distributed.initialize, which must come first
            workdir = resolve_workdir(config)
            if run is None:  # the driver locks the workdir
                execute(run_for_config(config)(config, workdir))
            else:
                with workdir_lock(workdir):
                    run(config, workdir)
    except (ConfigError, data.DataError, loop.WorkdirError, checkpoints.CheckpointError) as e:
        return _fail(f"error: {e}", 2)
    except loop.Diverged as e:
        return _fail(f"error: {e}", 3)
    except stopping.Interrupted as e:
        return _fail(
            f"vaejax: {str(e) or stopped_line(e.signum, e.during, workdir)}", 128 + e.signum
        )
    except Exception as e:  # the machine's limits (memory, disk) and unusable files too
        line = (
            disk_full_line(e, workdir)
            or machine_limit_message(e, memory_flags(config))
            or file_error_line(e, workdir)
            or missing_module_line(e)
        )
        if line is None:  # anything else: as it came
            raise
        return _fail(f"error: {line}", 2)
    finally:
        package_log.removeHandler(handler)
        package_log.propagate = propagate
    return 0


def _fail(line: str, status: int) -> int:
    """Prints ``line`` on stderr (if stderr is still there: a hung-up terminal is not)."""
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:
        pass
    return status
