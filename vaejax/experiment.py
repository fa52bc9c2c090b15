"""Training a VAE end to end: the config, the command line, ``train_and_evaluate``.

An experiment script is a config (data) plus :func:`main`::

    CONFIG = VAEConfig(dataset="mnist", model="mlp")
    if __name__ == "__main__":
        main(CONFIG, __doc__)

Every field of :class:`VAEConfig` is a ``--flag`` whose default is the script's config.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vaejax import checkpoints, data, io, latent, loop, models, objectives, training

MODELS = ("mlp", "conv", "burda")
OBJECTIVES = ("elbo", "iwae")


LATENT_PLOTS = ("auto", "on", "off")


def _field(default, help: str, choices: Sequence | None = None, resume: bool = False):
    """A config field; ``resume=True``: it may differ when a run is resumed (it does not change
    what is trained, e.g. the workdir, or extends it, e.g. the epochs)."""
    return dataclasses.field(default=default,
                             metadata={"help": help, "choices": choices, "resume": resume})


def judge_field():
    """The ``classifier_workdir`` field of a generative model's config."""
    return _field("workdirs/classifier_{dataset}", "the classifier (experiments.classifier) "
                  "behind the per-epoch FID / Inception-score analogue / mode coverage",
                  resume=True)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """What every experiment shares: the data, the optimizer, the workdir and its checkpoints.

    An experiment's config subclasses it with its own fields; a subclass may redeclare a field
    to change its default.
    """

    dataset: str = _field("mnist", "dataset", tuple(data.DATASETS))
    batch_size: int = _field(128, "training batch size (a multiple of the device count)")
    epochs: int = _field(10, "training epochs", resume=True)
    learning_rate: float = _field(1e-3, "Adam learning rate")
    adam_eps: float = _field(1e-8, "Adam epsilon")
    seed: int = _field(1, "random seed: initialization, data order, noise")
    train_examples: int = _field(0, "train on the first N training images only (0 = all)")
    eval_batch_size: int = _field(1000, "evaluation batch size (a multiple of the device count)",
                                  resume=True)
    data_dir: str = _field("", "tfds data directory (empty: $TFDS_DATA_DIR or "
                           "~/tensorflow_datasets)", resume=True)
    raw_data_dir: str = _field("", f"folder with the raw IDX .gz files, for offline use "
                               f"(empty: ${data.RAW_DATA_DIR_ENV}, then tfds' manual dir "
                               f"<data_dir>/downloads/manual, then download)", resume=True)
    workdir: str = _field("workdirs/run", "where metrics, images, checkpoints and parameters "
                          "go; rerunning with the same workdir resumes", resume=True)
    checkpoint_every: int = _field(500, "save a checkpoint every N steps (also at the end and "
                                   "on SIGTERM/SIGINT)", resume=True)
    keep_checkpoints: int = _field(3, "keep the N newest checkpoints", resume=True)
    nonfinite: str = _field("stop", "a step with a non-finite loss or gradient: stop (name the "
                            "last good checkpoint) or skip it", training.NONFINITE_POLICIES,
                            resume=True)


@dataclasses.dataclass(frozen=True)
class VAEConfig(RunConfig):
    """Every setting of a VAE run. Defaults: pytorch/examples ``vae/main.py`` on MNIST."""

    model: str = _field("mlp", "mlp: pytorch/examples 784-400-latent VAE; conv: Foster's "
                        "convolutional VAE on 32x32 images; burda: Burda et al.'s 784-200-200 "
                        "(tanh)-latent VAE", MODELS)
    objective: str = _field("elbo", "training objective: elbo (the VAE) or iwae (the "
                            "importance-weighted bound with --iwae_samples draws)", OBJECTIVES)
    iwae_samples: int = _field(50, "draws of z per image of the iwae objective (k)")
    latent_dim: int = _field(20, "size of the latent code z")
    hidden_dim: int = _field(400, "width of the hidden layer of the mlp model")
    likelihood: str = _field("bernoulli", "pixel likelihood p(x|z): bernoulli (cross-entropy) "
                             "or gaussian with fixed variance (squared error)",
                             objectives.LIKELIHOODS)
    gaussian_variance: float = _field(1.0, "variance of the gaussian likelihood")
    beta: float = _field(1.0, "weight of the KL term (1 = the ELBO)")
    binarization: str = _field("none", "pixels: none (grey in [0,1]), dynamic (a fresh "
                               "Bernoulli draw every visit) or static (one fixed draw)",
                               data.BINARIZATIONS)
    image_size: int = _field(0, "pad images to this size: 28 (none) or 32; 0 = the model's "
                             "own (mlp 28, conv 32)")
    workdir: str = _field("workdirs/vae_mnist", "where metrics, images, checkpoints and "
                          "parameters go; rerunning with the same workdir resumes", resume=True)
    latent_plots: str = _field("auto", "latent_space.png (posterior means of the test set) and "
                               "latent_manifold.png (decoded grid of z): on, off, or auto (on "
                               "for --latent_dim 2)", LATENT_PLOTS, resume=True)
    perceptual_weight: float = _field(0.0, "weight of a perceptual reconstruction term: squared "
                                      "distance between the classifier's conv maps of x and of "
                                      "its reconstruction (0 = off)")
    classifier_workdir: str = _field("workdirs/classifier_{dataset}", "the classifier "
                                     "(experiments.classifier) of --perceptual_weight",
                                     resume=True)

    @property
    def resolved_image_size(self) -> int:
        return self.image_size or (32 if self.model == "conv" else 28)


class ConfigError(ValueError):
    """A setting that cannot work; the message names the fix."""


def check_positive(config, *names: str) -> None:
    """Raises :class:`ConfigError` unless each named field is > 0 (and finite)."""
    for name in names:
        value = getattr(config, name)
        if not value > 0 or not np.isfinite(value):
            kind = "a positive number" if isinstance(value, float) else "positive"
            raise ConfigError(f"--{name} must be {kind}, got {value}")


def validate_run(config: RunConfig, num_devices: int) -> None:
    """Raises :class:`ConfigError` for the first shared setting that cannot work (and for any
    field of a subclass outside its choices)."""
    check_positive(config, "batch_size", "epochs", "eval_batch_size", "checkpoint_every",
                   "keep_checkpoints", "learning_rate", "adam_eps")
    if not 0 <= config.seed < 2**31:
        raise ConfigError(f"--seed must be between 0 and {2**31 - 1}, got {config.seed}")
    for field in dataclasses.fields(config):
        choices = field.metadata.get("choices")
        if choices and getattr(config, field.name) not in choices:
            raise ConfigError(f"--{field.name} must be one of {', '.join(choices)}, "
                              f"got {getattr(config, field.name)!r}")
    n_available = data.dataset_spec(config.dataset).num_examples["train"]
    if not 0 <= config.train_examples <= n_available:
        raise ConfigError(f"--train_examples must be between 0 (all) and {n_available}, "
                          f"got {config.train_examples}")
    for name in ("batch_size", "eval_batch_size"):
        try:
            training.check_batch_size(getattr(config, name), num_devices, f"--{name}")
        except ValueError as e:
            raise ConfigError(str(e)) from None
    n_train = config.train_examples or n_available
    if config.batch_size > n_train:
        raise ConfigError(f"--batch_size {config.batch_size} exceeds the {n_train} training "
                          f"images: lower it or raise --train_examples")


def validate(config: VAEConfig, num_devices: int) -> None:
    """Raises :class:`ConfigError` for the first setting that cannot work."""
    check_positive(config, "batch_size", "latent_dim", "hidden_dim", "gaussian_variance",
                   "iwae_samples")
    validate_run(config, num_devices)
    if config.latent_plots == "on" and config.latent_dim != 2:
        raise ConfigError(f"--latent_plots on draws 2-D latent codes, but --latent_dim is "
                          f"{config.latent_dim}: pass --latent_dim 2, or --latent_plots off")
    if not config.beta >= 0 or not np.isfinite(config.beta):
        raise ConfigError(f"--beta must be >= 0, got {config.beta}")
    if config.objective == "iwae" and config.beta != 1:
        raise ConfigError(f"--objective iwae bounds the likelihood itself: it takes no --beta "
                          f"(got {config.beta}); drop --beta")
    if config.image_size not in (0, 28, 32):
        raise ConfigError(f"--image_size must be 28 or 32 (or 0 for the model's own), "
                          f"got {config.image_size}")
    if config.model == "conv" and config.resolved_image_size != 32:
        raise ConfigError("the conv model needs 32x32 images: drop --image_size or pass 32")
    if not config.perceptual_weight >= 0 or not np.isfinite(config.perceptual_weight):
        raise ConfigError(f"--perceptual_weight must be >= 0, got {config.perceptual_weight}")
    if config.perceptual_weight and config.objective == "iwae":
        raise ConfigError("--perceptual_weight adds to the ELBO, not to the iwae bound: drop it "
                          "or use --objective elbo")


def build_model(config: VAEConfig) -> models.VAE:
    size = config.resolved_image_size
    if config.model == "mlp":
        return models.mlp_vae(config.latent_dim, (config.hidden_dim,), (size, size, 1))
    if config.model == "burda":
        return models.burda_vae(config.latent_dim, (size, size, 1))
    return models.conv_vae(config.latent_dim)


def resumable_fields(config_class: type = VAEConfig) -> tuple[str, ...]:
    """Fields of ``config_class`` that may change when a run is resumed."""
    return tuple(f.name for f in dataclasses.fields(config_class) if f.metadata.get("resume"))


def load_data(config: RunConfig, binarization: str = "none"
              ) -> tuple[data.ImageSplit, data.ImageSplit]:
    """Train and test splits as uint8 arrays, after the host side of the binarization protocol."""
    kwargs = dict(data_dir=config.data_dir or None, raw_data_dir=config.raw_data_dir or None)
    train = data.load_split(config.dataset, "train", **kwargs)
    test = data.load_split(config.dataset, "test", **kwargs)
    if config.train_examples:
        train = data.ImageSplit(train.images[: config.train_examples],
                                train.labels[: config.train_examples])
    return (data.apply_binarization_protocol(train, binarization, train=True),
            data.apply_binarization_protocol(test, binarization, train=False))


def _format_terms(terms: dict[str, float], beta: float) -> str:
    """'-ELBO 105.50 (rec 80.75 + kl 24.75)', or with beta != 1 the loss and its weighting, or
    for the IWAE objective '-L_k 98.10 (-ELBO 101.20)'; a perceptual term and the loss with it
    follow the terms."""
    if "negative_iwae_bound" in terms:
        return f"-L_k {terms['negative_iwae_bound']:.2f} (-ELBO {terms['negative_elbo']:.2f})"
    perceptual = (f"; perceptual {terms['perceptual']:.1f}, loss {terms['loss']:.2f}"
                  if "perceptual" in terms else "")
    if beta == 1:
        return (f"-ELBO {terms['negative_elbo']:.2f} (rec {terms['reconstruction']:.2f} + "
                f"kl {terms['kl']:.2f}{perceptual})")
    return (f"loss {terms['loss']:.2f} (rec {terms['reconstruction']:.2f} + {beta:g} x kl "
            f"{terms['kl']:.2f}; -ELBO {terms['negative_elbo']:.2f}{perceptual})")


class _ImageWriter:
    """Writes the per-epoch reconstruction and sample grids of a VAE."""

    def __init__(self, model: models.VAE, test_images: np.ndarray, image_size: int,
                 sample_key: jax.Array, latent_dim: int):
        self.preview = data.make_batch_preprocessor(image_size)(test_images[:8], None)
        self.decode = jax.jit(
            lambda p, z: jax.nn.sigmoid(model.apply({"params": p}, z, method="decode")))
        self.encode_mean = jax.jit(lambda p, x: model.apply({"params": p}, x, method="encode")[0])
        self.fixed_z = jax.random.normal(sample_key, (64, latent_dim))

    def write(self, workdir: Path, epoch: int, params) -> None:
        recon = self.decode(params, self.encode_mean(params, self.preview))
        io.save_image_grid(workdir / f"reconstruction_{epoch}.png",
                           np.concatenate([np.asarray(self.preview), np.asarray(recon)]),
                           columns=8)
        io.save_image_grid(workdir / f"sample_{epoch}.png",
                           np.asarray(self.decode(params, self.fixed_z)), columns=8)


def _wants_latent_plots(config: VAEConfig) -> bool:
    return config.latent_plots == "on" or (config.latent_plots == "auto"
                                           and config.latent_dim == 2)


class RunKeys(NamedTuple):
    """The independent random streams of a run, each a function of one key alone."""

    init: jax.Array
    data: jax.Array  # the data order
    step: jax.Array  # per-step keys (noise, binarization, corruption)
    eval: jax.Array
    sample: jax.Array  # fixed samples for the pictures

    @classmethod
    def of(cls, key: jax.Array) -> "RunKeys":
        return cls(*(jax.random.fold_in(key, i) for i in range(5)))


class TrainSettings(NamedTuple):
    """The optimizer and loop settings of one model's training (from a :class:`RunConfig`)."""

    batch_size: int
    epochs: int
    learning_rate: float
    adam_eps: float
    eval_batch_size: int
    checkpoint_every: int
    keep_checkpoints: int
    nonfinite: str

    @classmethod
    def of(cls, config: RunConfig, **overrides) -> "TrainSettings":
        return cls(**{**{name: getattr(config, name) for name in cls._fields}, **overrides})


Describe = Callable[[dict[str, float]], str]
AfterEpoch = Callable[[int, Any], None]


def fit_state(workdir: Path, *, config_record: dict[str, Any], free_fields: Sequence[str],
              settings: TrainSettings, state, update: training.Update, train_data,
              preprocess: training.Preprocess, keys: RunKeys, end_of_epoch: loop.EndOfEpoch,
              mesh=None):
    """Trains any ``state`` with any ``update`` through the shared loop (:func:`vaejax.loop.train`:
    whole epochs compiled on the device, checkpoints, resume, signals, non-finite guard): the
    machinery under every experiment, one model or two players.

    ``train_data`` is a pytree of host arrays with a leading example axis; ``preprocess(raw_batch,
    key)`` runs on the device in each step; ``end_of_epoch(epoch, state, train_terms) -> (record,
    text)`` evaluates (see :func:`vaejax.loop.train`; skipped non-finite steps are added to its
    text). A workdir already holding this run resumes it (``free_fields`` may differ). Returns
    ``(state on the device(s), last metrics record)``.
    """
    mesh = mesh or training.data_mesh()
    start_step = loop.resume_step(workdir, config_record, free_fields)
    runner = training.make_epoch_runner(
        update, preprocess, batch_size=settings.batch_size,
        num_examples=len(jax.tree_util.tree_leaves(train_data)[0]), mesh=mesh,
        nonfinite=settings.nonfinite)
    state, train_data = training.put_replicated((state, train_data), mesh)

    def end_of_epoch_with_skips(epoch: int, state, train_terms):
        record, text = end_of_epoch(epoch, state, train_terms)
        skipped = (train_terms or {}).get("skipped_steps", 0)
        return record, text + (f"  ({skipped} non-finite steps skipped)" if skipped else "")

    return loop.train(
        runner, state, train_data, data_key=keys.data, base_key=keys.step,
        epochs=settings.epochs, workdir=workdir, config=config_record, start_step=start_step,
        checkpoint_every=settings.checkpoint_every, keep_checkpoints=settings.keep_checkpoints,
        end_of_epoch=end_of_epoch_with_skips, mesh=mesh)


def train_and_test_record(epoch: int, train_terms: dict | None, test_terms: dict,
                          describe: Describe) -> tuple[dict, str]:
    """An epoch's metrics record ({train_*, test_*}) and console line ('epoch   3  train ..  test
    ..'; no train part before the first epoch)."""
    record = {**{f"train_{k}": v for k, v in (train_terms or {}).items()},
              **{f"test_{k}": v for k, v in test_terms.items()}}
    train = f"  train {describe(train_terms)}" if train_terms is not None else ""
    return record, f"epoch {epoch:3d}{train}  test {describe(test_terms)}"


def fit(workdir: Path, *, config_record: dict[str, Any], free_fields: Sequence[str],
        settings: TrainSettings, params, per_example: objectives.PerExampleFn, train_data,
        test_data, preprocess: training.Preprocess, eval_preprocess: training.Preprocess,
        keys: RunKeys, describe: Describe, after_epoch: AfterEpoch | None = None,
        mesh=None) -> tuple[Any, dict[str, Any] | None]:
    """Trains ``params`` on ``batch_mean(per_example)`` with Adam (:func:`fit_state`) and
    evaluates ``per_example`` on ``test_data`` after every epoch: every one-model experiment.

    ``train_data``/``test_data`` are pytrees of host arrays with a leading example axis (images,
    or e.g. ``(images, labels)``); ``preprocess`` runs in training, ``eval_preprocess`` in
    evaluation. ``describe(terms)`` formats a metrics dict for the console; ``after_epoch(epoch,
    host_params)`` runs on the writing process after each epoch (pictures). Writes
    ``config.json`` (``config_record``), ``metrics.jsonl``, ``timing.jsonl``, ``checkpoints/``
    and at the end ``params.msgpack`` into ``workdir``. Returns ``(host params, last metrics
    record)``.
    """
    mesh = mesh or training.data_mesh()
    optimizer = optax.adam(settings.learning_rate, eps=settings.adam_eps)
    evaluate = training.make_evaluator(per_example, eval_preprocess,
                                       batch_size=settings.eval_batch_size, mesh=mesh)
    test_data = training.put_replicated(test_data, mesh)
    writer = loop.is_writer()

    def end_of_epoch(epoch: int, state, train_terms):
        test_terms = {k: float(v) for k, v in evaluate(state.params, test_data,
                                                        keys.eval).items()}
        if writer and epoch > 0 and after_epoch is not None:
            after_epoch(epoch, jax.device_get(state.params))
        return train_and_test_record(epoch, train_terms, test_terms, describe)

    state, record = fit_state(
        workdir, config_record=config_record, free_fields=free_fields, settings=settings,
        state=training.create_train_state(params, optimizer),
        update=training.gradient_update(objectives.batch_mean(per_example), optimizer),
        train_data=train_data, preprocess=preprocess, keys=keys, end_of_epoch=end_of_epoch,
        mesh=mesh)
    params = jax.device_get(state.params)
    if writer:
        io.save_params(workdir / "params.msgpack", params)
    return params, record


def training_summary(workdir: Path, batch_size: int) -> str:
    """'training 28.2 s (21,300 img/s)' from ``timing.jsonl`` (only the steps this workdir's
    runs took; empty if none)."""
    timing = io.read_jsonl(workdir / loop.TIMING) if (workdir / loop.TIMING).exists() else []
    seconds = sum(t.get("seconds", 0.0) for t in timing)
    trained = sum(t.get("steps", 0) for t in timing)
    rate = f" ({trained * batch_size / seconds:,.0f} img/s)" if seconds else ""
    return f"training {seconds:.1f} s{rate}"


def train_and_evaluate(config: VAEConfig, workdir: os.PathLike | str) -> dict[str, Any]:
    """Trains the VAE of ``config``, evaluates it every epoch, writes everything into ``workdir``.

    Writes ``config.json``, ``metrics.jsonl`` (one line per epoch, epoch 0 = before training; a
    function of the seed and the flags alone), ``timing.jsonl``, ``reconstruction_<epoch>.png``
    (8 test images over their reconstructions from the posterior mean), ``sample_<epoch>.png``
    (64 decodes of fixed z ~ N(0, I)), ``checkpoints/<step>/``, at the end ``params.msgpack`` and,
    for a 2-D latent space, ``latent_space.png`` and ``latent_manifold.png``. A workdir with
    checkpoints is resumed (see :mod:`vaejax.loop`). Returns the last epoch's metrics line.

    Raises :class:`ConfigError`, :class:`~vaejax.data.DataError`,
    :class:`~vaejax.loop.WorkdirError` or :class:`~vaejax.checkpoints.CheckpointError` (nothing
    written), :class:`~vaejax.loop.Diverged` or :class:`~vaejax.loop.Interrupted`.
    """
    run_start = time.perf_counter()
    workdir = Path(workdir)
    mesh = training.data_mesh()
    validate(config, mesh.size)
    config_record = dataclasses.asdict(config)
    start_step = loop.resume_step(workdir, config_record, resumable_fields())  # before loading

    perceptual = None
    if config.perceptual_weight:
        from vaejax import classifier  # it imports this module

        perceptual = classifier.perceptual_loss(
            classifier.load(config.classifier_workdir, config.dataset))
    start = time.perf_counter()
    train, test = load_data(config, config.binarization)
    data_seconds = time.perf_counter() - start
    writer = loop.is_writer()

    keys = RunKeys.of(jax.random.key(config.seed))
    size = config.resolved_image_size
    model = build_model(config)
    params = model.init(keys.init, jnp.zeros((1, size, size, 1)), keys.init)["params"]
    if config.objective == "iwae":
        from vaejax import likelihood  # it imports this module

        per_example = likelihood.iwae_per_example(model, config.iwae_samples, config.likelihood,
                                                  config.gaussian_variance)
    else:
        per_example = objectives.vae_per_example(
            model, likelihood=config.likelihood, beta=config.beta,
            variance=config.gaussian_variance, perceptual=perceptual,
            perceptual_weight=config.perceptual_weight)
    images = _ImageWriter(model, test.images, size, keys.sample, config.latent_dim)

    log = print if writer else (lambda text: None)
    resumed = "" if start_step is None else f"; resuming from step {start_step}"
    objective = (f"IWAE bound, k = {config.iwae_samples}" if config.objective == "iwae" else
                 "ELBO" if config.beta == 1 else f"beta-ELBO, beta {config.beta:g}")
    log(f"vaejax: {config.model} VAE, {objective} ({models.count_params(params):,} parameters) on "
        f"{config.dataset} ({len(train.images):,} train / {len(test.images):,} test images, "
        f"binarization {config.binarization}), {mesh.size} {jax.devices()[0].platform} "
        f"device(s) in {jax.process_count()} process(es); data {data_seconds:.1f} s{resumed}")

    params, record = fit(
        workdir, config_record=config_record, free_fields=resumable_fields(),
        settings=TrainSettings.of(config), params=params, per_example=per_example,
        train_data=train.images, test_data=test.images,
        preprocess=data.make_batch_preprocessor(size, config.binarization == "dynamic"),
        eval_preprocess=data.make_batch_preprocessor(size), keys=keys,
        describe=lambda terms: _format_terms(terms, config.beta),
        after_epoch=lambda epoch, p: images.write(workdir, epoch, p), mesh=mesh)

    if writer and _wants_latent_plots(config):
        z = images.encode_mean(params, data.make_batch_preprocessor(size)(test.images, None))
        io.save_latent_scatter(workdir / "latent_space.png", np.asarray(z), test.labels,
                               data.dataset_spec(config.dataset).class_names,
                               f"{config.dataset} test set, posterior means")
        io.save_image_grid(workdir / "latent_manifold.png",
                           np.asarray(images.decode(params, latent.normal_quantile_grid(20))), columns=20)
    if record is not None:
        log(f"done: test -ELBO {record['test_negative_elbo']:.2f} nats/image after "
            f"{config.epochs} epochs; {training_summary(workdir, config.batch_size)}, whole run "
            f"{time.perf_counter() - run_start:.1f} s; outputs in {workdir}")
    return record


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
