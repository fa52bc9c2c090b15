"""``experiments.evaluate_likelihood``: the test NLL of a finished run (a VAE, or any kind that
offers ``likelihood_bounds``) as the papers report it, -L_K with K = 5000 by default (the bound
is :mod:`vaejax.objectives.likelihood`, its evaluation over a dataset
:mod:`vaejax.evaluation.likelihood`), written to ``likelihood_<K>.json`` in the run's workdir.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vaejax import data, io
from vaejax.errors import ConfigError, MemoryFlags
from vaejax.runs.base import Study, register
from vaejax.runs.config import config_field, load_data
from vaejax.runs.load import load_run
from vaejax.runs.trained import TrainedRun
from vaejax.training.loop import WorkdirError


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """Settings of ``experiments.evaluate_likelihood``."""

    workdir: str = config_field(
        "workdirs/vae_mnist",
        "a finished VAE run (config.json and "
        "params.msgpack, as written by vae_mnist / vae_fashion_mnist)",
    )
    samples: int = config_field(5000, "K, draws of z per test image (Burda et al. report K = 5000)")
    batch_size: int = config_field(100, "test images per compiled call")
    chunk_size: int = config_field(100, "draws per image held in memory at once")
    test_examples: int = config_field(
        0, "evaluate N test images drawn at random by --seed (0 = all)"
    )
    seed: int = config_field(0, "seed of the draws")
    data_dir: str = config_field("", "tfds data directory (empty: the run's own)")
    raw_data_dir: str = config_field("", "folder with the raw IDX .gz files (empty: the run's own)")


def read_likelihood_run(workdir: Path) -> TrainedRun:
    """The finished run in ``workdir`` (:func:`~vaejax.runs.load.load_run`), which must offer
    ``likelihood_bounds``; one-line errors."""
    trained = load_run(workdir)
    if "likelihood_bounds" not in trained.operations:
        raise WorkdirError(
            f"{workdir} holds a {trained.kind} run, which has no likelihood (it offers "
            f"{', '.join(trained.operations) or 'nothing'}): pass the workdir of a VAE run "
            f"(vae_mnist, vae_fashion_mnist or burda_mnist)"
        )
    return trained


def _validate(config: EvaluateConfig) -> None:
    """Raises :class:`~vaejax.errors.ConfigError` for the first setting that cannot work."""
    for name in ("samples", "batch_size", "chunk_size"):
        if getattr(config, name) <= 0:
            raise ConfigError(f"--{name} must be positive, got {getattr(config, name)}")
    if config.test_examples < 0 or not 0 <= config.seed < 2**31:
        raise ConfigError("--test_examples must be >= 0 and --seed in 0..2^31-1")


class Protocol(NamedTuple):
    """How a run saw its data, as the likelihood is evaluated under it: the pixels'
    ``binarization`` (none, dynamic, static, dequantize) and what it was trained on."""

    binarization: str
    objective: str

    @classmethod
    def of(cls, run_config) -> Protocol:
        """A config's protocol; a kind without binarization or objective flags: 'none' and its
        loss."""
        return cls(
            getattr(run_config, "binarization", "none"), getattr(run_config, "objective", "loss")
        )


def _announce(
    config: EvaluateConfig, trained: TrainedRun, protocol: Protocol, workdir: Path, images: int
) -> None:
    """Prints what is evaluated, and a note when the run's pixels are not binarized."""
    run_config = trained.config
    print(
        f"vaejax: {trained.description} from {workdir} ({run_config.epochs} epochs, objective "
        f"{protocol.objective}), {run_config.dataset} test set, {images:,} images, "
        f"binarization {protocol.binarization}, K = {config.samples}, "
        f"{jax.devices()[0].platform}"
    )
    if protocol.binarization == "none":
        print(
            "note: grey pixels under a Bernoulli likelihood are not a distribution over the "
            "images; the papers' numbers use binarized MNIST (--binarization dynamic|static)"
        )


def bits_per_dim(nats: float, dims: int, dequantized: bool) -> float:
    """A bound in nats per image as bits per dimension (see
    :func:`vaejax.objectives.with_bits_per_dim`)."""
    return (nats + (dims * np.log(256.0) if dequantized else 0.0)) / (dims * np.log(2.0))


def evaluate(config: EvaluateConfig, workdir: Path) -> dict:
    """Evaluates the run in ``workdir`` on its test set (under the run's binarization protocol):
    the K-sample ELBO estimate and -L_K with its standard error over the test images, in nats per
    image. Prints them with the time taken; writes ``likelihood_<K>.json`` into the workdir."""
    _validate(config)
    trained = read_likelihood_run(workdir)
    protocol = Protocol.of(trained.config)
    run_config = dataclasses.replace(
        trained.config,
        data_dir=config.data_dir or trained.config.data_dir,
        raw_data_dir=config.raw_data_dir or trained.config.raw_data_dir,
    )
    _, test = load_data(run_config, protocol.binarization)
    images = data.draw(test, config.test_examples, config.seed).images
    _announce(config, trained, protocol, workdir, len(images))
    if protocol.binarization == "dequantize":  # one fixed draw of the noise, from the seed
        images = np.asarray(data.dequantize(jax.random.key(config.seed + 1), jnp.asarray(images)))
    start = time.perf_counter()
    bounds = trained.likelihood_bounds(
        images,
        jax.random.key(config.seed),
        config.samples,
        config.batch_size,
        config.chunk_size,
        progress=True,
    )
    seconds = time.perf_counter() - start
    result = _result(config, workdir, run_config, protocol, bounds, images, seconds)
    io.atomic_write_bytes(
        workdir / f"likelihood_{config.samples}.json", json.dumps(result, indent=2).encode()
    )
    print(
        f"test -ELBO {result['test_negative_elbo']:.2f}, test NLL (-L_{config.samples}) "
        f"{result['test_nll']:.2f} ± {result['test_nll_standard_error']:.2f} nats/image "
        f"(standard error over the images), {result['test_bits_per_dim']:.3f} bits/dim; "
        f"{seconds:.1f} s ({len(images) / seconds:,.1f} img/s)"
    )
    return result


def _result(
    config: EvaluateConfig, workdir: Path, run_config, protocol: Protocol, bounds, images, seconds
) -> dict:
    """The record of ``likelihood_<K>.json``."""
    n = len(images)
    return {
        "workdir": str(workdir),
        "samples": config.samples,
        "test_examples": n,
        "binarization": protocol.binarization,
        "objective": protocol.objective,
        "epochs": run_config.epochs,
        "test_negative_elbo": float(-bounds["elbo"].mean()),
        "test_nll": float(-bounds["iwae"].mean()),
        "test_nll_standard_error": float(bounds["iwae"].std(ddof=1) / np.sqrt(n)) if n > 1 else 0,
        "test_bits_per_dim": bits_per_dim(
            float(-bounds["iwae"].mean()),
            int(np.prod(images.shape[1:3])) * images.shape[3],
            protocol.binarization == "dequantize",
        ),
        "seconds": seconds,
        "device": jax.devices()[0].device_kind,
        "seed": config.seed,
    }


@register
class LikelihoodRun(Study):
    """Evaluates the likelihood of a finished run of any kind that offers
    ``likelihood_bounds`` (trains nothing)."""

    kind = "likelihood"
    Config = EvaluateConfig
    memory_flags = MemoryFlags(("batch_size",))

    def validate(self, num_devices: int) -> None:
        pass  # checked by study()

    def load_data(self) -> None:
        return None  # the evaluated run's test set, in study()

    def study(self, data_: None) -> dict:
        """The likelihood of the finished run in ``self.workdir`` (see :func:`evaluate`)."""
        return evaluate(self.config, self.workdir)
