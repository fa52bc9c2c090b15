"""Training any state with any update through the shared loop: :func:`fit_state`; one model on a
per-example loss: :func:`one_model` (its state, update and evaluation)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import jax
import optax

from vaejax import io, objectives, sharding
from vaejax.training import loop, step, stream
from vaejax.training.workdir_lock import workdir_lock


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


Describe = Callable[[dict[str, float]], str]


AfterEpoch = Callable[[int, Any], None]


def fit_state(
    workdir: Path,
    *,
    config_record: dict[str, Any],
    free_fields: Sequence[str],
    settings: TrainSettings,
    state,
    update: step.Update,
    train_data,
    preprocess: step.Preprocess,
    keys: RunKeys,
    end_of_epoch: loop.EndOfEpoch,
    mesh=None,
):
    """Trains any ``state`` with any ``update`` through the shared loop (:func:`vaejax.loop.train`:
    whole epochs compiled on the device, checkpoints, resume, signals, non-finite guard): the
    machinery under every experiment, one model or two players.

    ``train_data`` is a pytree of host arrays with a leading example axis, placed on the
    device(s) or streamed from the host as ``settings.data_on_device`` says
    (:mod:`vaejax.training.stream`); ``preprocess(raw_batch,
    key)`` runs on the device in each step; ``end_of_epoch(epoch, state, train_terms) -> (record,
    text)`` evaluates (see :func:`vaejax.loop.train`; skipped non-finite steps are added to its
    text). A workdir already holding this run resumes it (``free_fields`` may differ). Returns
    ``(state on the device(s), last metrics record)``.
    """
    mesh = mesh or sharding.data_mesh()
    with workdir_lock(workdir):  # held (by this process) from the first look at the workdir
        start_step = loop.resume_step(
            workdir, config_record, free_fields, config_record.get("damaged_checkpoints", "stop")
        )
        runner, state, train_data, streamed = _placed(
            settings, state, update, preprocess, train_data, keys, mesh
        )
        return loop.train(
            runner,
            state,
            train_data,
            data_key=keys.data,
            base_key=keys.step,
            epochs=settings.epochs,
            workdir=workdir,
            config=config_record,
            start_step=start_step,
            checkpoint_every=settings.checkpoint_every,
            keep_checkpoints=settings.keep_checkpoints,
            end_of_epoch=_with_skips(end_of_epoch),
            mesh=mesh,
            stream=streamed,
        )


def _placed(settings: TrainSettings, state, update, preprocess, train_data, keys, mesh):
    """(runner, state on the devices, train data on the devices or None, the streamed reader or
    None), as ``settings.data_on_device`` places the data (:mod:`vaejax.training.stream`)."""
    resident = stream.data_on_device(settings.data_on_device, train_data, mesh)
    common = dict(
        batch_size=settings.batch_size,
        num_examples=len(jax.tree_util.tree_leaves(train_data)[0]),
        mesh=mesh,
        nonfinite=settings.nonfinite,
    )
    if resident:
        # rows split over the devices (1/N on each); one device gathers its batch directly
        runner = step.make_epoch_runner(update, preprocess, rows_sharded=mesh.size > 1, **common)
        placed = sharding.put_row_sharded(train_data, mesh)
        return runner, sharding.put_replicated(state, mesh), placed, None
    runner = stream.make_streamed_runner(update, preprocess, **common)
    reader = stream.Streamed(train_data, runner, keys.data, mesh)
    return runner, sharding.put_replicated(state, mesh), None, reader


def _with_skips(end_of_epoch: loop.EndOfEpoch) -> loop.EndOfEpoch:
    """``end_of_epoch`` with the count of skipped non-finite steps added to its text."""

    def end_of_epoch_with_skips(epoch: int, state, train_terms):
        record, text = end_of_epoch(epoch, state, train_terms)
        skipped = (train_terms or {}).get("skipped_steps", 0)
        return record, text + (f"  ({skipped} non-finite steps skipped)" if skipped else "")

    return end_of_epoch_with_skips


def train_and_test_record(
    epoch: int, train_terms: dict | None, test_terms: dict, describe: Describe
) -> tuple[dict, str]:
    """An epoch's metrics record ({train_*, test_*}) and console line ('epoch   3  train ..  test
    ..'; no train part before the first epoch)."""
    record = {
        **{f"train_{k}": v for k, v in (train_terms or {}).items()},
        **{f"test_{k}": v for k, v in test_terms.items()},
    }
    train = f"  train {describe(train_terms)}" if train_terms is not None else ""
    return record, f"epoch {epoch:3d}{train}  test {describe(test_terms)}"


class OneModel(NamedTuple):
    """One model trained on a per-example loss and evaluated on test data every epoch."""

    state: step.TrainState
    update: step.Update
    end_of_epoch: loop.EndOfEpoch


def one_model(
    params,
    per_example: objectives.PerExampleFn,
    optimizer: optax.GradientTransformation,
    *,
    test_data,
    eval_preprocess: step.Preprocess,
    eval_batch_size: int,
    eval_key: jax.Array,
    describe: Describe,
    after_epoch: AfterEpoch | None = None,
    mesh=None,
) -> OneModel:
    """The train state, update and end-of-epoch evaluation of one model trained on
    ``batch_mean(per_example)`` with ``optimizer``; after every epoch ``per_example`` is averaged
    over ``test_data`` (a pytree of host arrays) and ``after_epoch(epoch, host params)`` runs on
    the writing process (pictures)."""
    mesh = mesh or sharding.data_mesh()
    evaluate = step.make_evaluator(
        per_example, eval_preprocess, batch_size=eval_batch_size, mesh=mesh
    )
    num_test = len(jax.tree_util.tree_leaves(test_data)[0])
    test_data = sharding.put_row_sharded(test_data, mesh)  # on N devices: 1/N of the rows each
    writer = loop.is_writer()

    def end_of_epoch(epoch: int, state, train_terms):
        terms = evaluate(state.params, test_data, eval_key, num_test)
        test_terms = {k: float(v) for k, v in terms.items()}
        if writer and epoch > 0 and after_epoch is not None:
            after_epoch(epoch, jax.device_get(state.params))
        return train_and_test_record(epoch, train_terms, test_terms, describe)

    return OneModel(
        step.create_train_state(params, optimizer),
        step.gradient_update(objectives.batch_mean(per_example), optimizer),
        end_of_epoch,
    )


def training_summary(workdir: Path, batch_size: int, after_step: int | None = None) -> str:
    """'training 28.2 s (21,300 img/s)' from ``timing.jsonl``: the epochs that ended after
    checkpoint ``after_step`` (this command's, when it resumed from there; None: all of them),
    or 'nothing left to train'."""
    timing = io.read_jsonl(workdir / loop.TIMING) if (workdir / loop.TIMING).exists() else []
    timing = [t for t in timing if after_step is None or t.get("step", 0) > after_step]
    seconds = sum(t.get("seconds", 0.0) for t in timing)
    trained = sum(t.get("steps", 0) for t in timing)
    if not trained:
        return "nothing left to train"
    rate = f" ({trained * batch_size / seconds:,.0f} img/s)" if seconds else ""
    return f"training {seconds:.1f} s{rate}"
