"""The conditional VAE: draw a chosen class from the prior.

Encoder and decoder both see the one-hot label (:class:`vaejax.models.ConditionalVAE`); the
training objective is the conditional negative ELBO of log p(x | label), in nats per image.
Sampling a class ``c`` decodes z ~ N(0, I) with label ``c``; holding z fixed while changing the
label keeps the style (slant, thickness) and changes the class.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from vaejax import data, io, models, objectives
from vaejax.data.preprocess import with_labels
from vaejax.errors import MemoryFlags
from vaejax.runs.base import Data, Run, Training, register
from vaejax.runs.config import (
    RunConfig,
    check_positive,
    config_field,
    data_spec,
    image_shape,
    in_dtype,
    require_labels,
    validate_run,
)
from vaejax.runs.trained import TrainedRun
from vaejax.runs.vae import format_terms
from vaejax.training.fit import RunKeys, one_model
from vaejax.training.schedules import adam_of


@dataclasses.dataclass(frozen=True)
class CVAEConfig(RunConfig):
    """Settings of ``experiments.cvae_mnist``."""

    latent_dim: int = config_field(2, "size of the latent code z")
    hidden_dim: int = config_field(512, "width of the hidden layer of encoder and decoder")
    samples_per_class: int = config_field(
        10, "columns of class_samples.png (one fixed z each)", resume=True
    )
    workdir: str = config_field(
        "workdirs/cvae_mnist",
        "where metrics, pictures and checkpoints go; rerunning with the same workdir resumes",
        resume=True,
    )


def validate(config: CVAEConfig, num_devices: int) -> None:
    check_positive(config, "batch_size", "latent_dim", "hidden_dim", "samples_per_class")
    validate_run(config, num_devices)
    require_labels(config, "the conditional VAE")


def class_grid(model: models.ConditionalVAE, params, z: jax.Array, num_classes: int) -> jax.Array:
    """Decodes every code of ``z`` [M, latent] with every label: images [num_classes * M, H, W,
    C] in [0, 1], row ``c`` holding class ``c`` (so a column shares one z)."""
    labels = jnp.repeat(jnp.arange(num_classes), z.shape[0])
    codes = jnp.tile(z, (num_classes, 1))
    return jax.nn.sigmoid(model.apply({"params": params}, codes, labels, method="decode"))


def restyle(
    model: models.ConditionalVAE, params, x: jax.Array, labels: jax.Array, num_classes: int
) -> jax.Array:
    """Encodes images x [M, H, W, C] with their labels and decodes each posterior mean with
    every label: [M * (num_classes + 1), H, W, C], per row the image then its classes 0..n-1."""
    mean, _ = model.apply({"params": params}, x, labels, method="encode")
    decoded = class_grid(model, params, mean, num_classes)  # [classes * M, ...]
    decoded = decoded.reshape(num_classes, x.shape[0], *x.shape[1:]).swapaxes(0, 1)
    return jnp.concatenate([x[:, None], decoded], axis=1).reshape(-1, *x.shape[1:])


@register
class CVAERun(Run):
    """The conditional VAE. Writes the files of every training run,
    ``class_samples_<epoch>.png`` (rows = classes, columns = fixed z ~ N(0, I)), at the end
    ``class_samples.png`` and ``restyle.png`` (test images, each followed by its posterior mean
    decoded as every class)."""

    kind = "cvae"
    Config = CVAEConfig
    memory_flags = MemoryFlags(("batch_size", "eval_batch_size"), ("latent_dim", "hidden_dim"))

    def validate(self, num_devices: int) -> None:
        validate(self.config, num_devices)

    def build(self) -> models.ConditionalVAE:
        num_classes = data_spec(self.config).num_classes
        model = models.mlp_cvae(
            self.config.latent_dim, (self.config.hidden_dim,), num_classes, image_shape(self.config)
        )
        return in_dtype(self.config, model)

    def init_params(self, model: models.ConditionalVAE, key: jax.Array):
        x = jnp.zeros((1, *image_shape(self.config)))
        return jax.jit(model.init)(key, x, jnp.zeros((1,), jnp.int32), key)["params"]

    def training(self, data_: Data, keys: RunKeys, mesh) -> Training:
        config, workdir = self.config, self.workdir
        model = self.build()
        params = self.init_params(model, keys.init)
        fixed_z = jax.random.normal(keys.sample, (config.samples_per_class, config.latent_dim))
        grid = jax.jit(lambda p: class_grid(model, p, fixed_z, model.num_classes))

        def pictures(epoch, state):
            io.save_image_grid(
                workdir / f"class_samples_{epoch}.png",
                np.asarray(grid(jax.device_get(state.params))),
                columns=config.samples_per_class,
            )

        plain = data.make_batch_preprocessor(image_shape(config)[0])
        trained = one_model(
            params,
            objectives.cvae_per_example(model),
            adam_of(config, len(data_.train.images)),
            test_data=(data_.test.images, data_.test.labels.astype(np.int32)),
            eval_preprocess=with_labels(plain),
            eval_batch_size=config.eval_batch_size,
            eval_key=keys.eval,
            describe=lambda terms: format_terms(terms, 1.0),
            mesh=mesh,
        )
        return Training(
            state=trained.state,
            update=trained.update,
            preprocess=with_labels(plain),
            data=(data_.train.images, data_.train.labels.astype(np.int32)),
            evaluation=trained.end_of_epoch,
            description=f"conditional VAE, latent {config.latent_dim}",
            parameters=models.count_params(params),
            pictures=pictures,
            finish=lambda state: self._finish(
                jax.device_get(state.params), model, grid, plain, data_.test
            ),
        )

    def _finish(self, params, model, grid, plain, test: data.ImageSplit):
        """The final parameters; on the writer ``class_samples.png`` and ``restyle.png``."""
        if self.writer:
            num_classes, labels = model.num_classes, test.labels.astype(np.int32)
            io.save_image_grid(
                self.workdir / "class_samples.png",
                np.asarray(grid(params)),
                columns=self.config.samples_per_class,
            )
            firsts = [int(np.flatnonzero(labels == c)[0]) for c in range(num_classes)]
            restyled = restyle(
                model, params, plain(test.images[firsts], None), labels[firsts], num_classes
            )
            io.save_image_grid(
                self.workdir / "restyle.png", np.asarray(restyled), columns=num_classes + 1
            )
        return params

    def summary(self, record: dict) -> str:
        return (
            f"test -ELBO {record['test_negative_elbo']:.2f} nats/image (conditional on the label)"
        )

    def trained(self, model: models.ConditionalVAE, params) -> TrainedRun:
        """``sample(key, n)``: image i is of class i mod the number of classes."""

        @functools.partial(jax.jit, static_argnums=1)
        def sample(key, n):
            z = jax.random.normal(key, (n, self.config.latent_dim))
            labels = jnp.arange(n) % model.num_classes
            return jax.nn.sigmoid(model.apply({"params": params}, z, labels, method="decode"))

        return TrainedRun(self.kind, self.config, params, model, self.workdir, sample)
