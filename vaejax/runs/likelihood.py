"""``experiments.evaluate_likelihood``: the test NLL of a finished VAE run as the papers report
it, -L_K with K = 5000 by default (the bound is :mod:`vaejax.objectives.likelihood`, its
evaluation over a dataset :mod:`vaejax.evaluation.likelihood`), written to
``likelihood_<K>.json`` in the run's workdir.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from vaejax import data, io
from vaejax.errors import ConfigError
from vaejax.evaluation.likelihood import evaluate_bounds
from vaejax.runs.base import Run, register
from vaejax.runs.config import config_field, load_data
from vaejax.runs.load import load_run
from vaejax.runs.vae import VAEConfig
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


def read_vae_run(workdir: Path):
    """(VAEConfig, model, host params) of the finished VAE run in ``workdir``
    (:func:`~vaejax.runs.load.load_run`); one-line errors."""
    trained = load_run(workdir)
    if not isinstance(trained.config, VAEConfig):
        raise WorkdirError(
            f"{workdir} holds a {trained.kind} run, not a VAE: pass the workdir of "
            f"vae_mnist, vae_fashion_mnist or burda_mnist"
        )
    return trained.config, trained.model, trained.params


def _validate(config: EvaluateConfig) -> None:
    """Raises :class:`~vaejax.errors.ConfigError` for the first setting that cannot work."""
    for name in ("samples", "batch_size", "chunk_size"):
        if getattr(config, name) <= 0:
            raise ConfigError(f"--{name} must be positive, got {getattr(config, name)}")
    if config.test_examples < 0 or not 0 <= config.seed < 2**31:
        raise ConfigError("--test_examples must be >= 0 and --seed in 0..2^31-1")


def _announce(config: EvaluateConfig, run_config: VAEConfig, workdir: Path, images: int) -> None:
    """Prints what is evaluated, and a note when the run's pixels are not binarized."""
    print(
        f"vaejax: {run_config.model} VAE from {workdir} ({run_config.epochs} epochs, objective "
        f"{run_config.objective}), {run_config.dataset} test set, {images:,} images, "
        f"binarization {run_config.binarization}, K = {config.samples}, "
        f"{jax.devices()[0].platform}"
    )
    if run_config.binarization == "none":
        print(
            "note: grey pixels under a Bernoulli likelihood are not a distribution over the "
            "images; the papers' numbers use binarized MNIST (--binarization dynamic|static)"
        )


def _model_inputs(images, run_config: VAEConfig, seed: int, dequantized: bool):
    """(images, preprocess) for :func:`evaluate_bounds`: dequantized 8-bit images get one fixed
    draw of the noise, from the seed."""
    size = run_config.resolved_image_size
    if not dequantized:
        return images, data.make_batch_preprocessor(size)
    noisy = np.asarray(data.dequantize(jax.random.key(seed + 1), jnp.asarray(images)))
    return noisy, lambda x, _: data.pad_images(jnp.asarray(x), size)


def bits_per_dim(nats: float, dims: int, dequantized: bool) -> float:
    """A bound in nats per image as bits per dimension (see
    :func:`vaejax.objectives.with_bits_per_dim`)."""
    return (nats + (dims * np.log(256.0) if dequantized else 0.0)) / (dims * np.log(2.0))


def run(config: EvaluateConfig, workdir: Path) -> dict:
    """Evaluates the run in ``workdir`` on its test set (under the run's binarization protocol):
    the K-sample ELBO estimate and -L_K with its standard error over the test images, in nats per
    image. Prints them with the time taken; writes ``likelihood_<K>.json`` into the workdir."""
    _validate(config)
    run_config, model, params = read_vae_run(workdir)
    run_config = dataclasses.replace(
        run_config,
        data_dir=config.data_dir or run_config.data_dir,
        raw_data_dir=config.raw_data_dir or run_config.raw_data_dir,
    )
    _, test = load_data(run_config, run_config.binarization)
    images = data.draw(test, config.test_examples, config.seed).images
    _announce(config, run_config, workdir, len(images))
    dequantized = run_config.binarization == "dequantize"
    images, preprocess = _model_inputs(images, run_config, config.seed, dequantized)
    start = time.perf_counter()
    bounds = evaluate_bounds(
        model,
        params,
        images,
        preprocess,
        jax.random.key(config.seed),
        config.samples,
        config.batch_size,
        config.chunk_size,
        run_config.likelihood,
        run_config.gaussian_variance,
    )
    seconds = time.perf_counter() - start
    n = len(images)
    result = {
        "workdir": str(workdir),
        "samples": config.samples,
        "test_examples": n,
        "binarization": run_config.binarization,
        "objective": run_config.objective,
        "epochs": run_config.epochs,
        "test_negative_elbo": float(-bounds["elbo"].mean()),
        "test_nll": float(-bounds["iwae"].mean()),
        "test_nll_standard_error": float(bounds["iwae"].std(ddof=1) / np.sqrt(n)) if n > 1 else 0,
        "test_bits_per_dim": bits_per_dim(
            float(-bounds["iwae"].mean()),
            int(np.prod(images.shape[1:3])) * images.shape[3],
            dequantized,
        ),
        "seconds": seconds,
        "device": jax.devices()[0].device_kind,
        "seed": config.seed,
    }
    io.atomic_write_bytes(
        workdir / f"likelihood_{config.samples}.json", json.dumps(result, indent=2).encode()
    )
    print(
        f"test -ELBO {result['test_negative_elbo']:.2f}, test NLL (-L_{config.samples}) "
        f"{result['test_nll']:.2f} ± {result['test_nll_standard_error']:.2f} nats/image "
        f"(standard error over the images), {result['test_bits_per_dim']:.3f} bits/dim; "
        f"{seconds:.1f} s ({n / seconds:,.1f} img/s)"
    )
    return result


@register
class LikelihoodRun(Run):
    """Evaluates a finished VAE run's likelihood (trains nothing)."""

    kind = "likelihood"
    Config = EvaluateConfig

    def validate(self, num_devices: int) -> None:
        pass  # checked by run()

    def execute(self):
        return run(self.config, self.workdir)
