"""``load_run``: any finished run, rebuilt from its workdir, ready to use."""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from pathlib import Path

import jax
import numpy as np

from vaejax import io
from vaejax.runs.base import RUN_FIELDS, run_class
from vaejax.runs.trained import TrainedRun
from vaejax.training.loop import CONFIG, WorkdirError

PARAMS = "params.msgpack"


def _as_tuple(value, element: type):
    """A tuple field's value from JSON: a list, or the comma-separated string that runs of
    older versions recorded ('1,2,2'); anything else as it is."""
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, str) and element in (int, float, str):
        try:
            return tuple(element(part.strip()) for part in value.split(",") if part.strip())
        except ValueError:
            return value
    return value


def config_from_record(config_class: type, record: dict):
    """The ``config_class`` of a ``config.json`` record (its other keys left out), JSON's lists
    back as the config's tuples. TypeError when the record does not fit."""
    hints = typing.get_type_hints(config_class)
    kwargs = {}
    for field in dataclasses.fields(config_class):
        if field.name not in record or field.name in RUN_FIELDS:
            continue
        value, hint = record[field.name], hints.get(field.name)
        tuple_types = [h for h in (hint, *typing.get_args(hint)) if typing.get_origin(h) is tuple]
        if tuple_types:
            value = _as_tuple(value, (typing.get_args(tuple_types[0]) or (None,))[0])
        kwargs[field.name] = value
    return config_class(**kwargs)


def load_run(workdir: os.PathLike | str, **options) -> TrainedRun:
    """The trained model of the finished run in ``workdir`` (any kind), with its config and
    parameters (the EMA weights where the run keeps them) and the methods of its kind:
    ``sample(key, n)`` for generative kinds, ``encode``/``decode``/``reconstruct`` for the
    autoencoder kinds, ``log_likelihood(x, key, k)`` for VAEs. ``options`` go to the kind's
    loader where it takes them (its ``Run.sampling_options``: a diffusion run takes
    ``sampler="ddpm"|"ddim"`` and ``steps``); a kind ignores the others, so that one call
    serves runs of every kind.

    Raises :class:`~vaejax.training.loop.WorkdirError` (one line, naming the fix) when the
    workdir holds no finished run or its files are damaged.
    """
    workdir = Path(workdir)
    config_path, params_path = workdir / CONFIG, workdir / PARAMS
    if not config_path.is_file() or not params_path.is_file():
        raise WorkdirError(
            f"{workdir} holds no finished run ({CONFIG} and {PARAMS}): train one "
            f"there first, e.g. python -m experiments.vae_mnist --workdir "
            f"{workdir}"
        )
    try:
        record = json.loads(config_path.read_text())
        kind = record["kind"]
    except (ValueError, KeyError, TypeError) as e:
        raise WorkdirError(
            f"{config_path} names no run kind ({type(e).__name__}: {e}): it was "
            f"written by an older vaejax; retrain into a new --workdir"
        ) from None
    try:
        cls = run_class(kind, record.get("run"))
    except KeyError:
        raise WorkdirError(
            f"{workdir} holds a run of kind {kind!r}, which is not registered "
            f"(and {record.get('run')!r} cannot be imported): import the module "
            f"that defines it first"
        ) from None
    try:
        config = config_from_record(cls.Config, record)
    except TypeError as e:
        raise WorkdirError(
            f"{config_path} does not fit {cls.Config.__name__} ({e}): retrain into a new --workdir"
        ) from None
    run = cls(config, workdir)
    model = run.build()
    template = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), run.param_shapes(model))
    try:
        params = io.load_params(params_path, template)
    except Exception as e:  # one line, nothing lost
        raise WorkdirError(
            f"{params_path} is damaged or belongs to another model "
            f"({type(e).__name__}): retrain, or resume the run to rewrite it"
        ) from None
    taken = {name: value for name, value in options.items() if name in cls.sampling_options}
    return run.trained(model, params, **taken)
