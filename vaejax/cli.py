"""The command line of every experiment: flags from the config dataclass, one-line errors.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import jax

from vaejax import data
from vaejax.errors import ConfigError
from vaejax.runs.config import RunConfig
from vaejax.runs.vae import train_and_evaluate
from vaejax.training import checkpoints, loop


class _OneLineParser(argparse.ArgumentParser):
    """Reports a bad command line in one line (argparse prints its whole usage first)."""

    def error(self, message):
        self.exit(2, f"error: {message} (see --help)\n")


def build_parser(defaults: RunConfig, description: str | None = None,
                 prog: str | None = None) -> argparse.ArgumentParser:
    """A parser with one ``--flag`` per config field, defaulting to ``defaults``."""
    parser = _OneLineParser(prog=prog, description=description,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    for field in dataclasses.fields(defaults):
        default = getattr(defaults, field.name)
        shown = f" (default: {default})" if default != "" else ""
        parser.add_argument(f"--{field.name}", type=type(default), default=default,
                            choices=field.metadata.get("choices"),
                            help=field.metadata["help"] + shown,
                            metavar=None if field.metadata.get("choices") else
                            field.name.upper())
    _add_launch_flags(parser)
    return parser


LAUNCH_FLAGS = ("distributed", "coordinator_address", "num_processes", "process_id")


def _add_launch_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "multi-process runs (jax.distributed; run the same command in every process)")
    group.add_argument("--distributed", action="store_true",
                       help="call jax.distributed.initialize() first; on a Cloud TPU slice (or "
                            "under SLURM) it finds the other processes by itself")
    group.add_argument("--coordinator_address", default="", metavar="HOST:PORT",
                       help="address of process 0, elsewhere (implies --distributed)")
    group.add_argument("--num_processes", type=int, default=0, metavar="N",
                       help="number of processes, with --coordinator_address")
    group.add_argument("--process_id", type=int, default=-1, metavar="I",
                       help="this process's index 0..N-1, with --coordinator_address")


def initialize_distributed(coordinator_address: str = "", num_processes: int = 0,
                           process_id: int = -1) -> None:
    """``jax.distributed.initialize`` with the given settings (the unset ones auto-detected)."""
    if coordinator_address and (num_processes <= 0 or not 0 <= process_id < num_processes):
        raise ConfigError("--coordinator_address needs --num_processes N (N >= 1) and "
                          "--process_id between 0 and N-1")
    jax.distributed.initialize(coordinator_address=coordinator_address or None,
                               num_processes=num_processes or None,
                               process_id=process_id if process_id >= 0 else None)


def resolve_workdir(config) -> Path:
    """``config.workdir`` with each ``{field}`` replaced by that field's value, e.g.
    'workdirs/gan_{dataset}_{loss}' -> 'workdirs/gan_mnist_bce'."""
    workdir = config.workdir
    for field in dataclasses.fields(config):
        workdir = workdir.replace("{" + field.name + "}", str(getattr(config, field.name)))
    return Path(workdir)


def main(defaults: RunConfig, description: str | None = None,
         argv: Sequence[str] | None = None, prog: str | None = None,
         run: Callable[[Any, Path], Any] | None = None) -> int:
    """Parses flags over ``defaults`` and calls ``run(config, workdir)`` (default
    :func:`train_and_evaluate`). Exit status: 0 done; 2 a user error (flags,
    data, workdir, checkpoint: one line on stderr, nothing written); 3 training diverged; 128 +
    the signal number when stopped by SIGTERM/SIGINT after saving a checkpoint."""
    args = vars(build_parser(defaults, description, prog).parse_args(argv))
    launch = {name: args.pop(name) for name in LAUNCH_FLAGS}
    config = dataclasses.replace(defaults, **args)
    logging.getLogger("absl").setLevel(logging.ERROR)  # tfds' advice on OpenCV and the like
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("vaejax: %(message)s"))
    package_log = logging.getLogger("vaejax")
    package_log.setLevel(logging.INFO)
    package_log.addHandler(handler)
    try:
        if launch.pop("distributed") or launch["coordinator_address"]:
            initialize_distributed(**launch)
        (run or train_and_evaluate)(config, resolve_workdir(config))
    except (ConfigError, data.DataError, loop.WorkdirError, checkpoints.CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except loop.Diverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except loop.Interrupted as e:
        print(f"vaejax: {e}", file=sys.stderr)
        return 128 + e.signum
    finally:
        package_log.removeHandler(handler)
    return 0
