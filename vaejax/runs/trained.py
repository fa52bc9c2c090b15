"""Trained models as :func:`~vaejax.runs.load.load_run` returns them: the methods of each kind.

Images go in as uint8 in 0..255 or floats in [0, 1], NHWC at the data's size (28x28x1 for MNIST);
a model that works on padded images (the conv models: 32x32) pads them itself. Images come out
as float32 host arrays in [0, 1], NHWC at the model's size.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from vaejax import data, models
from vaejax.evaluation.likelihood import evaluate_bounds

Sampler = Callable[[jax.Array, int], Any]  # (key, n) -> images [n, H, W, C] in [0, 1]


def unit_images(images) -> jax.Array:
    """uint8 0..255 or floats in [0, 1] -> float32 in [0, 1]."""
    images = jnp.asarray(images)
    if images.dtype == jnp.uint8:
        return images.astype(jnp.float32) / 255.0
    return images.astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """A finished run: its ``kind``, ``config`` (the config dataclass), ``params`` (host
    pytree; the EMA weights where the run keeps them), ``model`` and ``workdir``."""

    kind: str
    config: Any
    params: Any
    model: Any
    workdir: Path
    sampler: Sampler | None = None
    sampling: str = ""  # how it samples, where a kind has several ways (e.g. 'ddim50')

    @property
    def num_params(self) -> int:
        return models.count_params(self.params)

    @property
    def operations(self) -> tuple[str, ...]:
        """What this trained model can do, e.g. ('sample',) or ('encode', 'decode',
        'reconstruct', 'sample', 'log_likelihood', 'likelihood_bounds')."""
        return ("sample",) if self.sampler is not None else ()

    def __getattr__(self, name: str):
        """An operation this kind lacks: one line naming those it has."""
        if name.startswith("_"):
            raise AttributeError(name)
        offers = ", ".join(self.operations) or "none of sample, encode, decode"
        raise AttributeError(f"a {self.kind} run has no {name!r}: it offers {offers}")

    @property
    def description(self) -> str:
        """What it is, for the lines that name it: 'mlp VAE', 'gan run'."""
        return f"{self.kind} run"

    @property
    def label(self) -> str:
        """What draws its samples, for tables: the kind, or its sampler ('ddim50')."""
        return self.sampling or self.kind

    def sample(self, key: jax.Array, n: int) -> np.ndarray:
        """``n`` generated images [n, H, W, C], float32 in [0, 1], from ``key``."""
        if self.sampler is None:
            raise TypeError(
                f"a {self.kind} run does not generate images: it offers "
                f"{', '.join(self.operations) or 'no operation'}"
            )
        return np.asarray(self.sampler(key, n), np.float32)


@dataclasses.dataclass(frozen=True)
class TrainedAutoencoder(TrainedRun):
    """An autoencoder (``is_vae`` False) or VAE: encode, decode, reconstruct; a VAE also samples
    from its prior and bounds the likelihood."""

    image_size: int = 28
    is_vae: bool = False
    latent_dim: int = 2

    @property
    def description(self) -> str:
        return f"{self.config.model} {'VAE' if self.is_vae else 'autoencoder'}"

    @property
    def operations(self) -> tuple[str, ...]:
        codes = ("encode", "decode", "reconstruct")  # and with a prior, a VAE's
        return (*codes, "sample", "log_likelihood", "likelihood_bounds") if self.is_vae else codes

    def prepare(self, images) -> jax.Array:
        """Images -> float32 [N, S, S, C] in [0, 1] at the model's size (zero-padded)."""
        return data.pad_images(unit_images(images), self.image_size)

    def encode(self, images) -> np.ndarray:
        """Codes [N, latent] of images (a VAE's posterior mean)."""
        return np.asarray(_encode(self.model, self.params, self.prepare(images), self.is_vae))

    def decode(self, z) -> np.ndarray:
        """Images [N, S, S, C] in [0, 1] (the sigmoid of the decoder's logits) of codes z."""
        return np.asarray(_decode(self.model, self.params, jnp.asarray(z, jnp.float32)))

    def reconstruct(self, images) -> np.ndarray:
        """decode(encode(images)): [N, S, S, C] in [0, 1]."""
        return self.decode(self.encode(images))

    def sample(self, key: jax.Array, n: int) -> np.ndarray:
        """A VAE's decodes of n draws z ~ N(0, I)."""
        if not self.is_vae:
            raise TypeError("a plain autoencoder has no prior to sample from: use a VAE")
        return self.decode(jax.random.normal(key, (n, self.latent_dim)))

    def log_likelihood(
        self, images, key: jax.Array, k: int = 5000, batch_size: int = 100, chunk_size: int = 100
    ) -> np.ndarray:
        """The K-sample importance-weighted lower bound on log p(x) of each image [N] (nats per
        image), under the run's pixel likelihood. Binarized data give the papers' numbers."""
        batch_size = min(batch_size, len(images))
        return self.likelihood_bounds(images, key, k, batch_size, chunk_size)["iwae"]

    def likelihood_bounds(
        self,
        images,
        key: jax.Array,
        k: int = 5000,
        batch_size: int = 100,
        chunk_size: int = 100,
        progress: bool = False,
    ) -> dict[str, np.ndarray]:
        """{'elbo', 'iwae'}: the K-draw ELBO estimate and the importance-weighted bound L_K on
        log p(x) of each image [N], in nats per image (images: uint8, or floats in [0, 1] such
        as dequantized ones); ``batch_size`` images per compiled call, ``chunk_size`` draws
        held at once."""
        if not self.is_vae:
            raise TypeError("a plain autoencoder has no likelihood: use a VAE")
        config = self.config
        images = np.asarray(images)
        bounds = evaluate_bounds(
            self.model,
            self.params,
            images,
            lambda x, _: self.prepare(x),
            key,
            k,
            batch_size,
            chunk_size,
            getattr(config, "likelihood", "bernoulli"),
            getattr(config, "gaussian_variance", 1.0),
            progress=progress,
        )
        return {name: np.asarray(bound) for name, bound in bounds.items()}


def _encode(model, params, x, is_vae: bool):
    z = model.apply({"params": params}, x, method="encode")
    return z[0] if is_vae else z


def _decode(model, params, z):
    return jax.nn.sigmoid(model.apply({"params": params}, z, method="decode"))


_encode = jax.jit(_encode, static_argnums=(0, 3))
_decode = jax.jit(_decode, static_argnums=0)
