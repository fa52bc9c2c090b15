"""The autoencoder family of the lectures, trained side by side: what their experiments share.

An experiment here trains a plain autoencoder and/or a VAE of the same family on the same images,
each in its own sub-workdir through the driver (:func:`vaejax.runs.base.execute`: so each has
checkpoints, resume and ``metrics.jsonl``), then studies them. Two families (``--model``):

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

from vaejax import data, io, models, objectives
from vaejax.errors import MemoryFlags
from vaejax.runs.base import Data, Run, Training, execute, json_record, register
from vaejax.runs.config import (
    RunConfig,
    check_image_size,
    check_positive,
    config_field,
    data_spec,
    image_shape,
    in_dtype,
    validate_run,
)
from vaejax.runs.trained import TrainedAutoencoder
from vaejax.training.fit import RunKeys, TrainSettings, one_model
from vaejax.training.schedules import adam_of

MODELS = ("mlp", "conv")


MLP_HIDDEN = (256, 128)


@dataclasses.dataclass(frozen=True)
class AEConfig(RunConfig):
    """Settings of an autoencoder-family experiment (the shared ones plus the model)."""

    model: str = config_field(
        "mlp",
        "mlp: the dense 784-256-128-latent autoencoder (28x28); conv: "
        "Foster's convolutional autoencoder (32x32)",
        MODELS,
    )
    latent_dim: int = config_field(2, "size of the latent code z")
    loss: str = config_field(
        "bce",
        "the autoencoder's reconstruction loss: bce (binary cross-entropy) "
        "or mse (squared error), on sigmoid outputs, summed over pixels",
        objectives.RECONSTRUCTION_LOSSES,
    )


def validate_ae(config: AEConfig, num_devices: int) -> None:
    """Raises :class:`~vaejax.errors.ConfigError` for the first setting that cannot work."""
    check_positive(config, "batch_size", "latent_dim")
    validate_run(config, num_devices)
    if config.model == "conv":
        check_image_size(image_size(config), lambda size: size % 8 == 0, "the conv model")


def model_shape(config: AEConfig) -> tuple[int, int, int]:
    """(S, S, C) of the family's images: the data's (the conv models pad 28x28 to 32x32) or
    ``--image_size``."""
    return image_shape(config, 32 if config.model == "conv" else None)


def image_size(config: AEConfig) -> int:
    return model_shape(config)[0]


def build_autoencoder(config: AEConfig) -> models.Autoencoder:
    shape = model_shape(config)
    if config.model == "conv":
        return models.conv_autoencoder(config.latent_dim, image_shape=shape)
    return models.mlp_autoencoder(config.latent_dim, MLP_HIDDEN, shape)


def build_vae(config: AEConfig) -> models.VAE:
    shape = model_shape(config)
    if config.model == "conv":
        return models.conv_vae(config.latent_dim, image_shape=shape)
    return models.mlp_vae(config.latent_dim, MLP_HIDDEN, shape)


def vae_beta(config: AEConfig) -> float:
    """Foster's weighting for his conv VAE (by the pixels of one channel: 2.048 at 32x32); the
    plain ELBO for the dense one."""
    return objectives.foster_beta(image_size(config) ** 2) if config.model == "conv" else 1.0


@flax.struct.dataclass
class TrainedModel:
    """A trained model of the family and how to use it on uint8 images [N, H, W, C]. A pytree
    whose only leaves are the parameters, so it can be passed into jitted functions."""

    params: Any
    kind: str = flax.struct.field(pytree_node=False)  # "ae" or "vae"
    module: Any = flax.struct.field(pytree_node=False)
    image_size: int = flax.struct.field(pytree_node=False)

    def prepare(self, images: np.ndarray) -> jax.Array:
        """uint8 [N, H, W, C] -> float32 [N, S, S, C] in [0, 1] (28x28 padded to a 32-pixel
        model's size)."""
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
    return np.concatenate(
        [
            np.asarray(fn(model, jax.tree_util.tree_map(lambda a, i=i: a[i : i + batch_size], x)))
            for i in range(0, n, batch_size)
        ]
    )


def encode_images(model: TrainedModel, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Codes [N, latent] (float32, host) of uint8 images [N, H, W, C]."""
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


def train_family_member(
    kind: str,
    config: AEConfig,
    workdir: Path,
    train_images: np.ndarray,
    test_images: np.ndarray,
    key: jax.Array,
    *,
    settings: TrainSettings | None = None,
    preprocess: Callable | None = None,
    eval_preprocess: Callable | None = None,
) -> TrainedModel:
    """Trains the ``kind`` ("ae" or "vae") of ``config.model`` on uint8 images in ``workdir``
    through the shared driver (resuming it if it holds this run), with keys from ``key``.

    ``preprocess``/``eval_preprocess`` default to scaling and padding; a denoising autoencoder
    passes ones that return ``(corrupted, clean)`` pairs. ``settings`` default to the config's.
    """
    member = MEMBER_RUNS[kind](
        config,
        workdir,
        images=(train_images, test_images),
        key=key,
        settings=settings,
        preprocess=preprocess,
        eval_preprocess=eval_preprocess,
    )
    params = execute(member).params
    return TrainedModel(
        params=params, kind=kind, module=member.build(), image_size=image_size(config)
    )


class AutoencoderMember(Run):
    """A plain autoencoder: trained as part of an autoencoder-family experiment, in its own
    sub-workdir (``part``), on images and a key the experiment hands it; or on its own, from
    its config's dataset and seed (``vaejax.train_and_evaluate(AEConfig(...), workdir)``).
    Registered so that :func:`~vaejax.runs.load.load_run` reads it."""

    kind = "autoencoder"
    Config = AEConfig
    memory_flags = MemoryFlags(("batch_size", "eval_batch_size"), ("latent_dim",))

    def __init__(
        self,
        config: AEConfig,
        workdir: Path | str | None = None,
        *,
        images: tuple[np.ndarray, np.ndarray] | None = None,
        key: jax.Array | None = None,
        settings: TrainSettings | None = None,
        preprocess: Callable | None = None,
        eval_preprocess: Callable | None = None,
    ):
        super().__init__(config, workdir)
        self.images, self.key, self.settings = images, key, settings
        self.preprocess, self.eval_preprocess = preprocess, eval_preprocess

    def validate(self, num_devices: int) -> None:
        if self.images is None:  # else the experiment validated its config
            validate_ae(self.config, num_devices)

    def keys(self) -> RunKeys:
        return super().keys() if self.key is None else RunKeys.of(self.key)

    def record(self) -> dict[str, Any]:
        return json_record(
            {
                **dataclasses.asdict(self.config),
                "part": self.workdir.name,
                "kind": self.kind,
                "run": f"{__name__}:{type(self).__name__}",
            }
        )

    def load_data(self) -> Data:
        if self.images is None:
            return super().load_data()
        train, test = self.images
        return Data(
            data.ImageSplit(train, None),
            data.ImageSplit(test, None),
            data_spec(self.config),
        )

    def per_example(self, model) -> tuple[objectives.PerExampleFn, str]:
        return (
            objectives.autoencoder_per_example(model, self.config.loss),
            f"{self.config.model} autoencoder ({self.config.loss} loss)",
        )

    def training(self, data_: Data, keys: RunKeys, mesh) -> Training:
        config = self.config
        settings = self.settings or TrainSettings.of(config)
        model = self.build()
        params = self.init_params(model, keys.init)
        per_example, what = self.per_example(model)
        plain = data.make_batch_preprocessor(image_size(config))
        trained = one_model(
            params,
            per_example,
            adam_of(
                config,
                len(data_.train.images),
                eps=settings.adam_eps,
                batch_size=settings.batch_size,
                epochs=settings.epochs,
                peak=settings.learning_rate,
            ),
            test_data=data_.test.images,
            eval_preprocess=self.eval_preprocess or plain,
            eval_batch_size=settings.eval_batch_size,
            eval_key=keys.eval,
            describe=_describe,
            mesh=mesh,
        )
        return Training(
            state=trained.state,
            update=trained.update,
            preprocess=self.preprocess or plain,
            data=data_.train.images,
            evaluation=trained.end_of_epoch,
            description=f"{what}, latent {config.latent_dim}",
            parameters=models.count_params(params),
            pictures=self.reconstruction_pictures(model, data_.test.images[:8]),
            settings=settings,
        )

    def reconstruction_pictures(self, model, images: np.ndarray) -> Callable[[int, Any], None]:
        """``reconstruction_<epoch>.png``, the first 8 test images (top) over their
        reconstructions (a VAE's through its posterior mean)."""

        def write(epoch: int, state) -> None:
            trained = self.trained(model, jax.device_get(state.params))
            pictures = np.concatenate([trained.prepare(images), trained.reconstruct(images)])
            io.save_image_grid(self.workdir / f"reconstruction_{epoch}.png", pictures, columns=8)

        return write

    def summary(self, record: dict) -> str:
        if "test_negative_elbo" in record:
            return f"test -ELBO {record['test_negative_elbo']:.2f} nats/image"
        return f"test loss {record['test_loss']:.2f}"

    def build(self) -> models.Autoencoder:
        return in_dtype(self.config, build_autoencoder(self.config))

    def init_params(self, model, key: jax.Array):
        return jax.jit(model.init)(key, jnp.zeros((1, *model_shape(self.config))))["params"]

    def trained(self, model, params) -> TrainedAutoencoder:
        return TrainedAutoencoder(
            self.kind,
            self.config,
            params,
            model,
            self.workdir,
            image_size=image_size(self.config),
            is_vae=False,
            latent_dim=self.config.latent_dim,
        )


class FamilyVAEMember(AutoencoderMember):
    """The VAE of an autoencoder-family experiment (the same layers with a Gaussian head)."""

    kind = "family_vae"

    def build(self) -> models.VAE:
        return in_dtype(self.config, build_vae(self.config))

    def per_example(self, model) -> tuple[objectives.PerExampleFn, str]:
        beta = vae_beta(self.config)
        return (
            objectives.vae_per_example(model, beta=beta),
            f"{self.config.model} VAE (beta {beta:g})",
        )

    def init_params(self, model, key: jax.Array):
        return jax.jit(model.init)(key, jnp.zeros((1, *model_shape(self.config))), key)["params"]

    def trained(self, model, params) -> TrainedAutoencoder:
        return dataclasses.replace(super().trained(model, params), is_vae=True)


MEMBER_RUNS = {"ae": register(AutoencoderMember), "vae": register(FamilyVAEMember)}
