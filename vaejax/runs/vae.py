"""Training a VAE end to end: the config, the command line, ``train_and_evaluate``.

An experiment script is a config (data) plus :func:`main`::

    CONFIG = VAEConfig(dataset="mnist", model="mlp")
    if __name__ == "__main__":
        main(CONFIG, __doc__)

Every field of :class:`VAEConfig` is a ``--flag`` whose default is the script's config.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vaejax import data, io, models, objectives, sharding
from vaejax.errors import ConfigError
from vaejax.evaluation import judge, latent
from vaejax.runs.config import (
    RunConfig,
    _field,
    check_positive,
    load_data,
    resumable_fields,
    validate_run,
)
from vaejax.training import loop
from vaejax.training.fit import RunKeys, TrainSettings, fit, training_summary

MODELS = ("mlp", "conv", "burda")


OBJECTIVES = ("elbo", "iwae")


LATENT_PLOTS = ("auto", "on", "off")


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
    mesh = sharding.data_mesh()
    validate(config, mesh.size)
    config_record = dataclasses.asdict(config)
    start_step = loop.resume_step(workdir, config_record, resumable_fields(VAEConfig))  # before loading

    perceptual = None
    if config.perceptual_weight:

        perceptual = judge.perceptual_loss(
            judge.load(config.classifier_workdir, config.dataset))
    start = time.perf_counter()
    train, test = load_data(config, config.binarization)
    data_seconds = time.perf_counter() - start
    writer = loop.is_writer()

    keys = RunKeys.of(jax.random.key(config.seed))
    size = config.resolved_image_size
    model = build_model(config)
    params = model.init(keys.init, jnp.zeros((1, size, size, 1)), keys.init)["params"]
    if config.objective == "iwae":

        per_example = objectives.iwae_per_example(model, config.iwae_samples, config.likelihood,
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
        workdir, config_record=config_record, free_fields=resumable_fields(VAEConfig),
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
