"""``load_run``: any finished run, rebuilt from its workdir, ready to use."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import jax
import numpy as np

from vaejax import io
from vaejax.runs.base import RUN_FIELDS, run_class
from vaejax.runs.trained import TrainedRun
from vaejax.training.loop import CONFIG, WorkdirError

PARAMS = "params.msgpack"


def load_run(workdir: os.PathLike | str, **options) -> TrainedRun:
    """The trained model of the finished run in ``workdir`` (any kind), with its config and
    parameters (the EMA weights where the run keeps them) and the methods of its kind:
    ``sample(key, n)`` for generative kinds, ``encode``/``decode``/``reconstruct`` for the
    autoencoder kinds, ``log_likelihood(x, key, k)`` for VAEs. ``options`` go to the kind's
    loader (a diffusion run takes ``sampler="ddpm"|"ddim"`` and ``steps``).

    Raises :class:`~vaejax.training.loop.WorkdirError` (one line, naming the fix) when the
    workdir holds no finished run or its files are damaged.
    """
    workdir = Path(workdir)
    config_path, params_path = workdir / CONFIG, workdir / PARAMS
    if not config_path.is_file() or not params_path.is_file():
        raise WorkdirError(f"{workdir} holds no finished run ({CONFIG} and {PARAMS}): train one "
                           f"there first, e.g. python -m experiments.vae_mnist --workdir "
                           f"{workdir}")
    try:
        record = json.loads(config_path.read_text())
        kind = record["kind"]
    except (ValueError, KeyError, TypeError) as e:
        raise WorkdirError(f"{config_path} names no run kind ({type(e).__name__}: {e}): it was "
                           f"written by an older vaejax; retrain into a new --workdir") from None
    try:
        cls = run_class(kind, record.get("run"))
    except KeyError:
        raise WorkdirError(f"{workdir} holds a run of kind {kind!r}, which is not registered "
                           f"(and {record.get('run')!r} cannot be imported): import the module "
                           f"that defines it first") from None
    names = {f.name for f in dataclasses.fields(cls.Config)}
    try:
        config = cls.Config(**{k: v for k, v in record.items()
                               if k in names and k not in RUN_FIELDS})
    except TypeError as e:
        raise WorkdirError(f"{config_path} does not fit {cls.Config.__name__} ({e}): retrain "
                           f"into a new --workdir") from None
    run = cls(config, workdir)
    model = run.build()
    template = jax.tree_util.tree_map(
        lambda s: np.zeros(s.shape, s.dtype),
        jax.eval_shape(lambda: run.init_params(model, jax.random.key(0))))
    try:
        params = io.load_params(params_path, template)
    except Exception as e:  # one line, nothing lost
        raise WorkdirError(f"{params_path} is damaged or belongs to another model "
                           f"({type(e).__name__}): retrain, or resume the run to rewrite it"
                           ) from None
    return run.trained(model, params, **options)
