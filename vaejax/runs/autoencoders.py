"""The autoencoder family of the lectures, trained side by side: what their experiments share.

An experiment here trains a plain autoencoder and/or a VAE of the same family on the same images,
each in its own sub-workdir through :func:`vaejax.experiment.fit` (so each has checkpoints,
resume and ``metrics.jsonl``), then studies them. Two families (``--model``):

- ``mlp``: the lectures' dense autoencoder, 784-256-128-latent with a mirrored decoder, on 28x28
  images; its VAE has the same layers with a (mean, log-variance) head, trained on the ELBO.
- ``conv``: Foster's convolutional autoencoder and VAE (Generative Deep Learning, 2nd ed., ch. 3)
  on 32x32 images; the VAE is trained on Foster's loss, the negative ELBO with beta = 2.048
  (:func:`vaejax.objectives.foster_beta`).

The autoencoder's loss is ``--loss`` (bce or mse on sigmoid outputs); the VAE always uses the
Bernoulli likelihood, so its numbers are nats per image.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np

from vaejax import data, models, objectives
from vaejax.runs.base import RUN_FIELDS, Run, register
from vaejax.runs.config import (
    RunConfig,
    _field,
    check_positive,
    resumable_fields,
    validate_run,
)
from vaejax.runs.trained import TrainedAutoencoder
from vaejax.training.fit import RunKeys, TrainSettings, fit

MODELS = ("mlp", "conv")


MLP_HIDDEN = (256, 128)


@dataclasses.dataclass(frozen=True)
class AEConfig(RunConfig):
    """Settings of an autoencoder-family experiment (the shared ones plus the model)."""

    model: str = _field("mlp", "mlp: the dense 784-256-128-latent autoencoder (28x28); conv: "
                        "Foster's convolutional autoencoder (32x32)", MODELS)
    latent_dim: int = _field(2, "size of the latent code z")
    loss: str = _field("bce", "the autoencoder's reconstruction loss: bce (binary cross-entropy) "
                       "or mse (squared error), on sigmoid outputs, summed over pixels",
                       objectives.RECONSTRUCTION_LOSSES)


def validate_ae(config: AEConfig, num_devices: int) -> None:
    """Raises :class:`~vaejax.experiment.ConfigError` for the first setting that cannot work."""
    check_positive(config, "batch_size", "latent_dim")
    validate_run(config, num_devices)


def image_size(model: str) -> int:
    return 32 if model == "conv" else 28


def build_autoencoder(model: str, latent_dim: int) -> models.Autoencoder:
    if model == "conv":
        return models.conv_autoencoder(latent_dim)
    return models.mlp_autoencoder(latent_dim, MLP_HIDDEN)


def build_vae(model: str, latent_dim: int) -> models.VAE:
    if model == "conv":
        return models.conv_vae(latent_dim)
    return models.mlp_vae(latent_dim, MLP_HIDDEN)


def vae_beta(model: str) -> float:
    """Foster's weighting for his conv VAE; the plain ELBO for the dense one."""
    return objectives.foster_beta(32 * 32) if model == "conv" else 1.0


@flax.struct.dataclass
class TrainedModel:
    """A trained model of the family and how to use it on uint8 images [N, 28, 28, 1]. A pytree
    whose only leaves are the parameters, so it can be passed into jitted functions."""

    params: Any
    kind: str = flax.struct.field(pytree_node=False)  # "ae" or "vae"
    module: Any = flax.struct.field(pytree_node=False)
    image_size: int = flax.struct.field(pytree_node=False)

    def prepare(self, images: np.ndarray) -> jax.Array:
        """uint8 [N, 28, 28, 1] -> float32 [N, S, S, 1] in [0, 1], padded to the model's size."""
        return data.make_batch_preprocessor(self.image_size)(jnp.asarray(images), None)

    def encode(self, x: jax.Array) -> jax.Array:
        """Prepared images [N, S, S, 1] -> codes [N, latent] (the posterior mean for a VAE)."""
        z = self.module.apply({"params": self.params}, x, method="encode")
        return z[0] if self.kind == "vae" else z

    def decode(self, z: jax.Array) -> jax.Array:
        """Codes [N, latent] -> images [N, S, S, 1] in [0, 1] (sigmoid of the logits)."""
        return jax.nn.sigmoid(self.module.apply({"params": self.params}, z, method="decode"))


def map_batches(fn: Callable, model: TrainedModel, x, batch_size: int = 1000) -> np.ndarray:
    """``fn(model, batch)`` over the leading axis of ``x`` (a pytree of host arrays) in batches,
    concatenated on the host: bounds device memory for whole datasets. Compiled once per batch
    shape (at most two)."""
    fn = jax.jit(fn)
    n = len(jax.tree_util.tree_leaves(x)[0])
    return np.concatenate([
        np.asarray(fn(model, jax.tree_util.tree_map(lambda a: a[i:i + batch_size], x)))
        for i in range(0, n, batch_size)])


def encode_images(model: TrainedModel, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Codes [N, latent] (float32, host) of uint8 images [N, 28, 28, 1]."""
    return map_batches(lambda m, x: m.encode(m.prepare(x)), model, images, batch_size)


@jax.jit
def _decode(model: TrainedModel, z: jax.Array) -> jax.Array:
    return model.decode(z)


def decode_codes(model: TrainedModel, z) -> np.ndarray:
    """Images [N, S, S, 1] in [0, 1] (host) decoded from codes [N, latent]; compiled once per
    model and shape."""
    return np.asarray(_decode(model, jnp.asarray(z, jnp.float32)))


def _describe(terms: dict[str, float]) -> str:
    if "negative_elbo" in terms:
        return f"-ELBO {terms['negative_elbo']:.2f}"
    return f"loss {terms['loss']:.2f}"


def train_family_member(kind: str, config: AEConfig, workdir: Path, train_images: np.ndarray,
                        test_images: np.ndarray, key: jax.Array, *,
                        settings: TrainSettings | None = None,
                        preprocess: Callable | None = None,
                        eval_preprocess: Callable | None = None,
                        log: Callable[[str], None] = print) -> TrainedModel:
    """Trains the ``kind`` ("ae" or "vae") of ``config.model`` on uint8 images in ``workdir``
    (resuming it if it holds this run), with keys from ``key``.

    ``preprocess``/``eval_preprocess`` default to scaling and padding; a denoising autoencoder
    passes ones that return ``(corrupted, clean)`` pairs. ``settings`` default to the config's.
    """
    size = image_size(config.model)
    keys = RunKeys.of(key)
    x0 = jnp.zeros((1, size, size, 1))
    if kind == "ae":
        module = build_autoencoder(config.model, config.latent_dim)
        params = module.init(keys.init, x0)["params"]
        per_example = objectives.autoencoder_per_example(module, config.loss)
        what = f"{config.model} autoencoder ({config.loss} loss)"
    else:
        module = build_vae(config.model, config.latent_dim)
        params = module.init(keys.init, x0, keys.init)["params"]
        per_example = objectives.vae_per_example(module, beta=vae_beta(config.model))
        what = f"{config.model} VAE (beta {vae_beta(config.model):g})"
    plain = data.make_batch_preprocessor(size)
    log(f"{kind}: {what}, {models.count_params(params):,} parameters, latent {config.latent_dim}, "
        f"{len(train_images):,} training images -> {workdir}")
    member = MEMBER_RUNS[kind]
    params, _ = fit(
        workdir, config_record={**dataclasses.asdict(config), "part": workdir.name,
                                "kind": member.kind, "run": f"{__name__}:{member.__name__}"},
        free_fields=(*resumable_fields(type(config)), *RUN_FIELDS), settings=settings or TrainSettings.of(config),
        params=params, per_example=per_example, train_data=train_images, test_data=test_images,
        preprocess=preprocess or plain, eval_preprocess=eval_preprocess or plain, keys=keys,
        describe=_describe)
    return TrainedModel(params=params, kind=kind, module=module, image_size=size)


class AutoencoderMember(Run):
    """A plain autoencoder trained as part of an autoencoder-family experiment (its own
    sub-workdir); registered so that :func:`~vaejax.runs.load.load_run` reads it."""

    kind = "autoencoder"
    Config = AEConfig

    def build(self) -> models.Autoencoder:
        return build_autoencoder(self.config.model, self.config.latent_dim)

    def init_params(self, model, key: jax.Array):
        size = image_size(self.config.model)
        return model.init(key, jnp.zeros((1, size, size, 1)))["params"]

    def trained(self, model, params) -> TrainedAutoencoder:
        return TrainedAutoencoder(self.kind, self.config, params, model, self.workdir,
                                  image_size=image_size(self.config.model), is_vae=False,
                                  latent_dim=self.config.latent_dim)


class FamilyVAEMember(AutoencoderMember):
    """The VAE of an autoencoder-family experiment (the same layers with a Gaussian head)."""

    kind = "family_vae"

    def build(self) -> models.VAE:
        return build_vae(self.config.model, self.config.latent_dim)

    def init_params(self, model, key: jax.Array):
        size = image_size(self.config.model)
        return model.init(key, jnp.zeros((1, size, size, 1)), key)["params"]

    def trained(self, model, params) -> TrainedAutoencoder:
        return dataclasses.replace(super().trained(model, params), is_vae=True)


MEMBER_RUNS = {"ae": register(AutoencoderMember), "vae": register(FamilyVAEMember)}
