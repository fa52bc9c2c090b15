"""The conditional VAE: draw a chosen class from the prior.

Encoder and decoder both see the one-hot label (:class:`vaejax.models.ConditionalVAE`); the
training objective is the conditional negative ELBO of log p(x | label), in nats per image.
Sampling a class ``c`` decodes z ~ N(0, I) with label ``c``; holding z fixed while changing the
label keeps the style (slant, thickness) and changes the class.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from vaejax import data, io, models, objectives
from vaejax.data.preprocess import with_labels
from vaejax.runs import config as run_config
from vaejax.runs.config import (
    RunConfig,
    _field,
    check_positive,
    resumable_fields,
    validate_run,
)
from vaejax.runs.vae import _format_terms
from vaejax.training.fit import RunKeys, TrainSettings, fit


@dataclasses.dataclass(frozen=True)
class CVAEConfig(RunConfig):
    """Settings of ``experiments.cvae_mnist``."""

    latent_dim: int = _field(2, "size of the latent code z")
    hidden_dim: int = _field(512, "width of the hidden layer of encoder and decoder")
    samples_per_class: int = _field(10, "columns of class_samples.png (one fixed z each)",
                                    resume=True)
    workdir: str = _field("workdirs/cvae_mnist", "where metrics, pictures and checkpoints go; "
                          "rerunning with the same workdir resumes", resume=True)


def validate(config: CVAEConfig, num_devices: int) -> None:
    check_positive(config, "batch_size", "latent_dim", "hidden_dim", "samples_per_class")
    validate_run(config, num_devices)


def class_grid(model: models.ConditionalVAE, params, z: jax.Array, num_classes: int) -> jax.Array:
    """Decodes every code of ``z`` [M, latent] with every label: images [num_classes * M, H, W,
    1] in [0, 1], row ``c`` holding class ``c`` (so a column shares one z)."""
    labels = jnp.repeat(jnp.arange(num_classes), z.shape[0])
    codes = jnp.tile(z, (num_classes, 1))
    return jax.nn.sigmoid(model.apply({"params": params}, codes, labels, method="decode"))


def restyle(model: models.ConditionalVAE, params, x: jax.Array, labels: jax.Array,
            num_classes: int) -> jax.Array:
    """Encodes images x [M, H, W, 1] with their labels and decodes each posterior mean with
    every label: [M * (num_classes + 1), H, W, 1], per row the image then its classes 0..n-1."""
    mean, _ = model.apply({"params": params}, x, labels, method="encode")
    decoded = class_grid(model, params, mean, num_classes)  # [classes * M, ...]
    decoded = decoded.reshape(num_classes, x.shape[0], *x.shape[1:]).swapaxes(0, 1)
    return jnp.concatenate([x[:, None], decoded], axis=1).reshape(-1, *x.shape[1:])


def run(config: CVAEConfig, workdir: Path) -> dict:
    """Trains the conditional VAE; writes the files of :func:`~vaejax.experiment.fit`,
    ``class_samples_<epoch>.png`` (rows = classes, columns = fixed z ~ N(0, I)), at the end
    ``class_samples.png`` and ``restyle.png`` (test images, each followed by its posterior mean
    decoded as every class). Returns the last metrics record."""
    run_start = time.perf_counter()
    train, test, spec, writer, log = run_config.start(config, validate)
    num_classes = spec.num_classes
    keys = RunKeys.of(jax.random.key(config.seed))
    model = models.mlp_cvae(config.latent_dim, (config.hidden_dim,), num_classes)
    params = model.init(keys.init, jnp.zeros((1, 28, 28, 1)), jnp.zeros((1,), jnp.int32),
                        keys.init)["params"]
    log(f"vaejax: conditional VAE ({models.count_params(params):,} parameters, latent "
        f"{config.latent_dim}) on {config.dataset}, {len(train.images):,} training images")
    fixed_z = jax.random.normal(keys.sample, (config.samples_per_class, config.latent_dim))
    grid = jax.jit(lambda p: class_grid(model, p, fixed_z, num_classes))

    def after_epoch(epoch, p):
        io.save_image_grid(workdir / f"class_samples_{epoch}.png", np.asarray(grid(p)),
                           columns=config.samples_per_class)

    plain = data.make_batch_preprocessor(28)
    labels = test.labels.astype(np.int32)
    params, record = fit(
        workdir, config_record=dataclasses.asdict(config),
        free_fields=resumable_fields(CVAEConfig), settings=TrainSettings.of(config),
        params=params, per_example=objectives.cvae_per_example(model),
        train_data=(train.images, train.labels.astype(np.int32)),
        test_data=(test.images, labels), preprocess=with_labels(plain),
        eval_preprocess=with_labels(plain), keys=keys,
        describe=lambda terms: _format_terms(terms, 1.0), after_epoch=after_epoch)
    if writer:
        io.save_image_grid(workdir / "class_samples.png", np.asarray(grid(params)),
                           columns=config.samples_per_class)
        firsts = [int(np.flatnonzero(labels == c)[0]) for c in range(num_classes)]
        io.save_image_grid(workdir / "restyle.png", np.asarray(restyle(
            model, params, plain(test.images[firsts], None), labels[firsts], num_classes)),
            columns=num_classes + 1)
    if record is not None:
        log(f"done: test -ELBO {record['test_negative_elbo']:.2f} nats/image (conditional on "
            f"the label); whole run {time.perf_counter() - run_start:.1f} s; outputs in {workdir}")
    return record
