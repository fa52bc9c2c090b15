"""The VAE experiments (``experiments.vae_mnist``, ``vae_fashion_mnist``, ``burda_mnist``): the
config and the Run.

An experiment script is a config (data) plus :func:`main`::

    CONFIG = VAEConfig(dataset="mnist", model="mlp")
    if __name__ == "__main__":
        main(CONFIG, __doc__)

Every field of :class:`VAEConfig` is a ``--flag`` whose default is the script's config.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from vaejax import data, io, models, objectives
from vaejax.errors import ConfigError, MemoryFlags
from vaejax.evaluation import judge, latent
from vaejax.runs.base import Data, Run, Training, register
from vaejax.runs.config import (
    Applies,
    RunConfig,
    applies_when,
    check_image_size,
    check_positive,
    config_field,
    data_spec,
    image_shape,
    in_dtype,
    load_data,
    validate_run,
)
from vaejax.runs.trained import TrainedAutoencoder
from vaejax.training.fit import RunKeys, one_model
from vaejax.training.schedules import adam_of


def _model_builders():
    """--model name -> f(config, (S, S, C)) -> the model; a new VAE model is one line here."""
    return {
        "mlp": lambda c, shape: models.mlp_vae(c.latent_dim, (c.hidden_dim,), shape),
        "conv": lambda c, shape: models.conv_vae(c.latent_dim, image_shape=shape),
        "burda": lambda c, shape: models.burda_vae(c.latent_dim, shape),
        "burda2": lambda c, shape: models.burda_two_layer_vae(c.latent_dim, shape),
    }


MODELS = tuple(_model_builders())
TWO_LAYER_MODELS = ("burda2",)  # two stochastic layers: their own ELBO


OBJECTIVES = ("elbo", "iwae")


LATENT_PLOTS = ("auto", "on", "off")


@dataclasses.dataclass(frozen=True)
class VAEConfig(RunConfig):
    """Every setting of a VAE run. Defaults: pytorch/examples ``vae/main.py`` on MNIST."""

    model: str = config_field(
        "mlp",
        "mlp: pytorch/examples 784-400-latent VAE; conv: Foster's "
        "convolutional VAE on 32x32 images; burda: Burda et al.'s 784-200-200 "
        "(tanh)-latent VAE; burda2: their two stochastic layers, 784-200-200-[100]-100-100-"
        "[latent] (tanh)",
        MODELS,
    )
    objective: str = config_field(
        "elbo",
        "training objective: elbo (the VAE) or iwae (the "
        "importance-weighted bound with --iwae_samples draws)",
        OBJECTIVES,
    )
    iwae_samples: int = config_field(
        50, "draws of z per image of the iwae objective (k)", applies=applies_when(objective="iwae")
    )
    latent_dim: int = config_field(20, "size of the latent code z")
    hidden_dim: int = config_field(
        400, "width of the hidden layer of the mlp model", applies=applies_when(model="mlp")
    )
    likelihood: str = config_field(
        "bernoulli",
        "pixel likelihood p(x|z): bernoulli (cross-entropy) "
        "or gaussian with fixed variance (squared error)",
        objectives.LIKELIHOODS,
    )
    gaussian_variance: float = config_field(
        1.0, "variance of the gaussian likelihood", applies=applies_when(likelihood="gaussian")
    )
    beta: float = config_field(1.0, "weight of the KL term (1 = the ELBO)")
    binarization: str = config_field(
        "none",
        "pixels: none (grey in [0,1]), dynamic (a fresh "
        "Bernoulli draw every visit), static (one fixed draw) or dequantize ((x + u) / 256, "
        "u ~ U[0,1) drawn every visit: likelihoods of 8-bit data in bits/dim; needs --likelihood "
        "gaussian)",
        data.BINARIZATIONS,
    )
    workdir: str = config_field(
        "workdirs/vae_mnist",
        "where metrics, images, checkpoints and "
        "parameters go; rerunning with the same workdir resumes",
        resume=True,
    )
    latent_plots: str = config_field(
        "auto",
        "latent_space.png (posterior means of the test set) and "
        "latent_manifold.png (decoded grid of z): on, off, or auto (on "
        "for --latent_dim 2)",
        LATENT_PLOTS,
        resume=True,
    )
    perceptual_weight: float = config_field(
        0.0,
        "weight of a perceptual reconstruction term: squared "
        "distance between the classifier's conv maps of x and of "
        "its reconstruction (0 = off)",
    )
    classifier_workdir: str = config_field(
        "workdirs/classifier_{dataset}",
        "the classifier (experiments.classifier) of --perceptual_weight",
        resume=True,
        applies=Applies(
            lambda config: config.perceptual_weight > 0,
            "with a --perceptual_weight above 0",
            ("perceptual_weight",),
        ),
    )

    @property
    def resolved_image_size(self) -> int:
        """The side of the images the model sees (see :func:`model_shape`)."""
        return model_shape(self)[0]


def model_shape(config: VAEConfig) -> tuple[int, int, int]:
    """(S, S, C) of the model's images: ``--image_size``, else the data's size (the conv model
    pads 28x28 data to Foster's 32x32); C from the data."""
    return image_shape(config, 32 if config.model == "conv" else None)


def validate(config: VAEConfig, num_devices: int) -> None:
    """Raises :class:`ConfigError` for the first setting that cannot work."""
    check_positive(
        config, "batch_size", "latent_dim", "hidden_dim", "gaussian_variance", "iwae_samples"
    )
    validate_run(config, num_devices)
    if config.latent_plots == "on" and config.latent_dim != 2:
        raise ConfigError(
            f"--latent_plots on draws 2-D latent codes, but --latent_dim is "
            f"{config.latent_dim}: pass --latent_dim 2, or --latent_plots off"
        )
    if not config.beta >= 0 or not np.isfinite(config.beta):
        raise ConfigError(f"--beta must be >= 0, got {config.beta}")
    if config.objective == "iwae" and config.beta != 1:
        raise ConfigError(
            f"--objective iwae bounds the likelihood itself: it takes no --beta "
            f"(got {config.beta}); drop --beta"
        )
    if config.model == "conv":
        check_image_size(model_shape(config)[0], lambda size: size % 8 == 0, "the conv model")
    if config.binarization == "dequantize" and config.likelihood == "bernoulli":
        raise ConfigError(
            "--binarization dequantize makes continuous pixels, which a Bernoulli likelihood "
            "does not describe: pass --likelihood gaussian"
        )
    if not config.perceptual_weight >= 0 or not np.isfinite(config.perceptual_weight):
        raise ConfigError(f"--perceptual_weight must be >= 0, got {config.perceptual_weight}")
    if config.perceptual_weight and config.model == "burda2":
        raise ConfigError("--perceptual_weight takes a one-layer VAE: drop it for --model burda2")
    if config.perceptual_weight and config.objective == "iwae":
        raise ConfigError(
            "--perceptual_weight adds to the ELBO, not to the iwae bound: drop it "
            "or use --objective elbo"
        )


def build_model(config: VAEConfig):
    return _model_builders()[config.model](config, model_shape(config))


def format_terms(terms: dict[str, float], beta: float) -> str:
    """'-ELBO 105.50 (rec 80.75 + kl 24.75)', or with beta != 1 the loss and its weighting, or
    for the IWAE objective '-L_k 98.10 (-ELBO 101.20)'; a perceptual term and the loss with it
    follow the terms."""
    if "negative_iwae_bound" in terms:
        return f"-L_k {terms['negative_iwae_bound']:.2f} (-ELBO {terms['negative_elbo']:.2f})"
    perceptual = (
        f"; perceptual {terms['perceptual']:.1f}, loss {terms['loss']:.2f}"
        if "perceptual" in terms
        else ""
    )
    if beta == 1:
        return (
            f"-ELBO {terms['negative_elbo']:.2f} (rec {terms['reconstruction']:.2f} + "
            f"kl {terms['kl']:.2f}{perceptual})"
        )
    return (
        f"loss {terms['loss']:.2f} (rec {terms['reconstruction']:.2f} + {beta:g} x kl "
        f"{terms['kl']:.2f}; -ELBO {terms['negative_elbo']:.2f}{perceptual})"
    )


class _ImageWriter:
    """Writes the per-epoch reconstruction and sample grids of a VAE."""

    def __init__(
        self,
        model: models.VAE,
        test_images: np.ndarray,
        image_size: int,
        sample_key: jax.Array,
        latent_dim: int,
    ):
        self.preview = data.make_batch_preprocessor(image_size)(test_images[:8], None)
        self.decode = jax.jit(
            lambda p, z: jax.nn.sigmoid(model.apply({"params": p}, z, method="decode"))
        )
        self.encode_mean = jax.jit(lambda p, x: model.apply({"params": p}, x, method="encode")[0])
        self.fixed_z = jax.random.normal(sample_key, (64, latent_dim))

    def write(self, workdir: Path, epoch: int, params) -> None:
        recon = self.decode(params, self.encode_mean(params, self.preview))
        io.save_image_grid(
            workdir / f"reconstruction_{epoch}.png",
            np.concatenate([np.asarray(self.preview), np.asarray(recon)]),
            columns=8,
        )
        io.save_image_grid(
            workdir / f"sample_{epoch}.png",
            np.asarray(self.decode(params, self.fixed_z)),
            columns=8,
        )


def _wants_latent_plots(config: VAEConfig) -> bool:
    return config.latent_plots == "on" or (config.latent_plots == "auto" and config.latent_dim == 2)


@register
class VAERun(Run):
    """A VAE trained on the ELBO (or beta-ELBO, or the IWAE bound), evaluated on the test set
    every epoch.

    Writes ``config.json``, ``metrics.jsonl`` (one line per epoch, epoch 0 = before training; a
    function of the seed and the flags alone), ``timing.jsonl``, ``reconstruction_<epoch>.png``
    (8 test images over their reconstructions from the posterior mean), ``sample_<epoch>.png``
    (64 decodes of fixed z ~ N(0, I)), ``checkpoints/<step>/``, at the end ``params.msgpack`` and,
    for a 2-D latent space, ``latent_space.png`` and ``latent_manifold.png``.
    """

    kind = "vae"
    Config = VAEConfig
    memory_flags = MemoryFlags(("batch_size", "eval_batch_size"), ("latent_dim", "hidden_dim"))

    def validate(self, num_devices: int) -> None:
        validate(self.config, num_devices)

    def load_data(self) -> Data:
        config = self.config
        if config.perceptual_weight:  # before the data: a missing classifier fails fast
            judge.load(config.classifier_workdir, config.dataset)
        train, test = load_data(config, config.binarization, config.resolved_image_size)
        return Data(train, test, data_spec(config))

    def build(self) -> models.VAE:
        return in_dtype(self.config, build_model(self.config))

    def init_params(self, model: models.VAE, key: jax.Array):
        return jax.jit(model.init)(key, jnp.zeros((1, *model_shape(self.config))), key)["params"]

    def preprocessor(self, size: int, train: bool):
        """The device-side pixels of ``--binarization`` (test images: drawn with each
        evaluation batch's key, the same every epoch)."""
        binarization = self.config.binarization
        return data.make_batch_preprocessor(
            size, train and binarization == "dynamic", binarization == "dequantize"
        )

    def per_example(self, model: models.VAE):
        config = self.config
        dims = int(np.prod(model_shape(config)))
        return objectives.with_bits_per_dim(
            self._per_example(model), dims, config.binarization == "dequantize"
        )

    def _per_example(self, model: models.VAE):
        config = self.config
        if config.objective == "iwae":
            return objectives.iwae_per_example(
                model, config.iwae_samples, config.likelihood, config.gaussian_variance
            )
        if config.model in TWO_LAYER_MODELS:  # stochastic layers of its own: a one-draw ELBO
            return objectives.two_layer_elbo_per_example(
                model,
                likelihood=config.likelihood,
                beta=config.beta,
                variance=config.gaussian_variance,
            )
        return objectives.vae_per_example(
            model,
            likelihood=config.likelihood,
            beta=config.beta,
            variance=config.gaussian_variance,
            perceptual=judge.perceptual_loss(judge.load(config.classifier_workdir, config.dataset))
            if config.perceptual_weight
            else None,
            perceptual_weight=config.perceptual_weight,
        )

    def training(self, data_: Data, keys: RunKeys, mesh) -> Training:
        config = self.config
        size = config.resolved_image_size
        model = self.build()
        params = self.init_params(model, keys.init)
        images = _ImageWriter(model, data_.test.images, size, keys.sample, config.latent_dim)
        trained = one_model(
            params,
            self.per_example(model),
            adam_of(config, len(data_.train.images)),
            test_data=data_.test.images,
            eval_preprocess=self.preprocessor(size, train=False),
            eval_batch_size=config.eval_batch_size,
            eval_key=keys.eval,
            describe=lambda terms: format_terms(terms, config.beta),
            mesh=mesh,
        )
        objective = (
            f"IWAE bound, k = {config.iwae_samples}"
            if config.objective == "iwae"
            else "ELBO"
            if config.beta == 1
            else f"beta-ELBO, beta {config.beta:g}"
        )
        return Training(
            state=trained.state,
            update=trained.update,
            preprocess=self.preprocessor(size, train=True),
            data=data_.train.images,
            evaluation=trained.end_of_epoch,
            description=f"{config.model} VAE, {objective}, binarization {config.binarization}",
            parameters=models.count_params(params),
            pictures=lambda epoch, state: images.write(
                self.workdir, epoch, jax.device_get(state.params)
            ),
            finish=lambda state: self._finish(jax.device_get(state.params), images, data_),
        )

    def _finish(self, params, images: _ImageWriter, data_: Data):
        """The final parameters; on the writer, for a 2-D latent space, the latent plots."""
        config = self.config
        if self.writer and _wants_latent_plots(config):
            size = config.resolved_image_size
            z = images.encode_mean(
                params, data.make_batch_preprocessor(size)(data_.test.images, None)
            )
            io.save_latent_scatter(
                self.workdir / "latent_space.png",
                np.asarray(z),
                data_.test.labels,
                data_.spec.class_names,
                f"{config.dataset} test set, posterior means",
            )
            io.save_image_grid(
                self.workdir / "latent_manifold.png",
                np.asarray(images.decode(params, latent.normal_quantile_grid(20))),
                columns=20,
            )
        return params

    def summary(self, record: dict) -> str:
        return (
            f"test -ELBO {record['test_negative_elbo']:.2f} nats/image "
            f"({record['test_bits_per_dim']:.3f} bits/dim)"
        )

    def trained(self, model: models.VAE, params) -> TrainedAutoencoder:
        return TrainedAutoencoder(
            self.kind,
            self.config,
            params,
            model,
            self.workdir,
            image_size=self.config.resolved_image_size,
            is_vae=True,
            latent_dim=self.config.latent_dim,
        )
