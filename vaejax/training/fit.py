"""Training any state with any update through the shared loop: :func:`fit_state` of a
:class:`Training`; one model on a per-example loss: :func:`one_model` (its state, update and
evaluation)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import optax

from vaejax import io, objectives, sharding
from vaejax.training import loop, step, stream
from vaejax.training.job import Job, RunKeys, TrainSettings  # noqa: F401  (RunKeys re-exported)

Describe = Callable[[dict[str, float]], str]
Pictures = Callable[[int, Any], None]  # (epoch, state on the device(s)) -> None
Finish = Callable[[Any], Any]  # state on the device(s) -> the host pytree of Run.init_params


class Training(NamedTuple):
    """What a run hands the shared loop, built by keyword: the initial ``state`` (made from the
    run's ``init_params``; its optimizer, schedule and EMA included), the ``update``, the
    on-device ``preprocess``, the training ``data``, the end-of-epoch ``evaluation``, the
    ``description`` and ``parameters`` of the start line; optionally the ``pictures`` written
    after every epoch, the ``finish`` that turns the final state into the saved parameters
    (and draws the final pictures), and ``settings`` other than the config's."""

    state: Any  # the initial train state (host or device arrays)
    update: step.Update  # (state, batch, key) -> (state, metrics)
    preprocess: step.Preprocess  # (raw batch, key) -> batch, on the device
    data: Any  # pytree of host arrays with a leading example axis
    evaluation: loop.EndOfEpoch  # (epoch, state, train terms) -> (record, console text)
    description: str  # the model, optimizer and objective, for the start line
    parameters: int  # trained parameters, for the start line
    pictures: Pictures | None = None  # on the writer, after every epoch
    finish: Finish | None = None  # None: the host copy of ``state.params``
    settings: TrainSettings | None = None  # None: read from the config


def fit_state(training: Training, settings: TrainSettings, job: Job):
    """Trains ``training.state`` with ``training.update`` through the shared loop
    (:mod:`vaejax.training.loop`: whole epochs compiled on the device, checkpoints, resume,
    signals, the non-finite guard): the machinery under every experiment, one model or two
    players. ``job`` says where, from which checkpoint, with which keys and on which mesh; the
    caller holds the workdir's lock.

    The training data are placed on the device(s) or streamed from the host as
    ``settings.data_on_device`` says (:mod:`vaejax.training.stream`); ``training.evaluation``
    runs after every epoch (and before the first, on a fresh start), then ``training.pictures``
    on the writer. Returns ``(state on the device(s), last metrics record)``.
    """
    runner, state, train_data, streamed = _placed(settings, training, job)
    trainer = loop.start(
        runner,
        state,
        train_data,
        job=job,
        settings=settings,
        end_of_epoch=_end_of_epoch(training),
        stream=streamed,
    )
    return trainer.drive(trainer.compile())


def _placed(settings: TrainSettings, training: Training, job: Job):
    """(runner, state on the devices, train data on the devices or None, the streamed reader or
    None), as ``settings.data_on_device`` places the data (:mod:`vaejax.training.stream`)."""
    update, preprocess, train_data, mesh = (
        training.update,
        training.preprocess,
        training.data,
        job.mesh,
    )
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
        return runner, sharding.put_replicated(training.state, mesh), placed, None
    runner = stream.make_streamed_runner(update, preprocess, **common)
    reader = stream.Streamed(train_data, runner, job.keys.data, mesh)
    return runner, sharding.put_replicated(training.state, mesh), None, reader


def _end_of_epoch(training: Training) -> loop.EndOfEpoch:
    """The loop's end of an epoch: ``training.evaluation``, then ``training.pictures`` on the
    writer after a trained epoch; the count of skipped non-finite steps added to the text."""
    writer = loop.is_writer()

    def end_of_epoch(epoch: int, state, train_terms):
        record, text = training.evaluation(epoch, state, train_terms)
        if writer and epoch > 0 and training.pictures is not None:
            training.pictures(epoch, state)
        skipped = (train_terms or {}).get("skipped_steps", 0)
        return record, text + (f"  ({skipped} non-finite steps skipped)" if skipped else "")

    return end_of_epoch


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

    def training(self, **rest) -> Training:
        """The :class:`Training` of this model: its state, update and evaluation, with
        ``rest`` (preprocess, data, description, parameters, ...) by keyword."""
        return Training(state=self.state, update=self.update, evaluation=self.end_of_epoch, **rest)


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
    mesh=None,
) -> OneModel:
    """The train state, update and end-of-epoch evaluation of one model trained on
    ``batch_mean(per_example)`` with ``optimizer``; after every epoch ``per_example`` is averaged
    over ``test_data`` (a pytree of host arrays)."""
    mesh = mesh or sharding.data_mesh()
    evaluate = step.make_evaluator(
        per_example, eval_preprocess, batch_size=eval_batch_size, mesh=mesh
    )
    num_test = len(jax.tree_util.tree_leaves(test_data)[0])
    test_data = sharding.put_row_sharded(test_data, mesh)  # on N devices: 1/N of the rows each

    def end_of_epoch(epoch: int, state, train_terms):
        terms = evaluate(state.params, test_data, eval_key, num_test)
        test_terms = {k: float(v) for k, v in terms.items()}
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
