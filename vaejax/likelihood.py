"""Log-likelihood estimates of VAEs as the papers report them: the importance-weighted bound.

For an image x, an encoder q(z | x) = N(mean, diag(exp(log_var))) and K draws z_k ~ q,

    L_K(x) = log (1/K) sum_k p(x | z_k) p(z_k) / q(z_k | x)        (nats)

is a lower bound on log p(x); L_1 is the ELBO, E[L_K] does not decrease with K and tends to
log p(x) as K grows (Burda, Grosse and Salakhutdinov, ICLR 2016). Papers report -L_5000 on the
test set as the "test NLL". :func:`importance_weighted_bound` streams the K draws in chunks, so
K = 5000 needs the memory of one chunk; the same function is the IWAE training objective with a
small K (:func:`iwae_per_example`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from vaejax import data, io, objectives
from vaejax.experiment import _field


def importance_weighted_bound(key: jax.Array, log_likelihood_fn: Callable[[jax.Array], jax.Array],
                              mean: jax.Array, log_var: jax.Array, num_samples: int,
                              chunk_size: int = 100) -> dict[str, jax.Array]:
    """L_K and the K-sample ELBO estimate per image, each [B] in nats.

    ``log_likelihood_fn(z [S, B, D]) -> log p(x | z) [S, B]`` (the decoder and the images
    inside; S draws per image: run the decoder on all S * B codes as one batch);
    ``mean``/``log_var`` [B, D] define q(z | x). Draws ``num_samples`` z per image in chunks of
    ``chunk_size`` (one ``lax.scan`` step each; chunk c uses ``fold_in(key, c)``), accumulating
    logsumexp as it goes, so memory is that of one chunk. Returns ``{"iwae": L_K, "elbo": mean
    of the K log weights}`` (the latter an unbiased, low-variance estimate of the ELBO).
    """
    if num_samples < 1 or chunk_size < 1:
        raise ValueError(f"num_samples and chunk_size must be positive, got {num_samples}, "
                         f"{chunk_size}")
    chunk_size = min(chunk_size, num_samples)
    num_chunks = -(-num_samples // chunk_size)
    std = jnp.exp(0.5 * log_var)

    def log_weight(z):
        return (log_likelihood_fn(z) + objectives.standard_normal_log_density(z)
                - objectives.diagonal_normal_log_density(z, mean, log_var))

    def chunk(carry, c):
        total, weight_sum = carry
        eps = jax.random.normal(jax.random.fold_in(key, c), (chunk_size, *mean.shape), mean.dtype)
        log_w = log_weight(mean + std * eps)  # [chunk, B]
        valid = (c * chunk_size + jnp.arange(chunk_size) < num_samples)[:, None]
        total = jnp.logaddexp(total, jax.nn.logsumexp(jnp.where(valid, log_w, -jnp.inf), axis=0))
        return (total, weight_sum + jnp.sum(jnp.where(valid, log_w, 0.0), axis=0)), None

    start = (jnp.full(mean.shape[:1], -jnp.inf, mean.dtype), jnp.zeros(mean.shape[:1], mean.dtype))
    (total, weight_sum), _ = jax.lax.scan(chunk, start, jnp.arange(num_chunks))
    return {"iwae": total - np.log(num_samples), "elbo": weight_sum / num_samples}


def vae_bound(model, params, x: jax.Array, key: jax.Array, num_samples: int,
              chunk_size: int = 100, likelihood: str = "bernoulli", variance: float = 1.0
              ) -> dict[str, jax.Array]:
    """:func:`importance_weighted_bound` of a :class:`vaejax.models.VAE` on images x [B, ...]."""
    mean, log_var = model.apply({"params": params}, x, method="encode")

    def log_likelihood_fn(z):  # [S, B, D] -> [S, B]: one decoder call on S * B codes
        logits = model.apply({"params": params}, z.reshape(-1, z.shape[-1]), method="decode")
        images = jnp.broadcast_to(x, (z.shape[0], *x.shape)).reshape(logits.shape)
        return objectives.log_likelihood(images, logits, likelihood, variance).reshape(
            z.shape[:2])

    return importance_weighted_bound(key, log_likelihood_fn, mean, log_var, num_samples,
                                     chunk_size)


def iwae_per_example(model, num_samples: int, likelihood: str = "bernoulli",
                     variance: float = 1.0) -> objectives.PerExampleFn:
    """The IWAE objective (Burda et al.) as a per-example function for the shared step
    machinery: ``loss`` = -L_K [B] with K = ``num_samples`` reparameterized draws (one chunk),
    plus ``negative_iwae_bound`` (= loss) and ``negative_elbo`` (from the same draws)."""

    def per_example(params, x, key):
        bound = vae_bound(model, params, x, key, num_samples, num_samples, likelihood, variance)
        return {"loss": -bound["iwae"], "negative_iwae_bound": -bound["iwae"],
                "negative_elbo": -bound["elbo"]}

    return per_example


def evaluate_bounds(model, params, images: np.ndarray, preprocess: Callable, key: jax.Array,
                    num_samples: int, batch_size: int = 100, chunk_size: int = 100,
                    likelihood: str = "bernoulli", variance: float = 1.0,
                    progress: bool = True) -> dict[str, np.ndarray]:
    """L_K and the K-sample ELBO of every image of ``images`` (uint8, host): ``{"iwae": [N],
    "elbo": [N]}`` float64 on the host. Batch ``b`` uses ``fold_in(key, b)``; shows a progress
    bar with images/second when ``progress``."""
    from tqdm.auto import tqdm

    @jax.jit
    def batch_bounds(params, raw, batch_key):
        return vae_bound(model, params, preprocess(raw, None), batch_key, num_samples,
                         chunk_size, likelihood, variance)

    out = {"iwae": [], "elbo": []}
    start = time.perf_counter()
    with tqdm(total=len(images), desc=f"L_{num_samples}", unit="img", disable=not progress,
              dynamic_ncols=True) as bar:
        for b, i in enumerate(range(0, len(images), batch_size)):
            bounds = batch_bounds(params, images[i:i + batch_size], jax.random.fold_in(key, b))
            for name in out:
                out[name].append(np.asarray(bounds[name], np.float64))
            bar.update(len(out["iwae"][-1]))
            bar.set_postfix(img_s=f"{bar.n / (time.perf_counter() - start):,.1f}")
    return {name: np.concatenate(values) for name, values in out.items()}


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """Settings of ``experiments.evaluate_likelihood``."""

    workdir: str = _field("workdirs/vae_mnist", "a finished VAE run (config.json and "
                          "params.msgpack, as written by vae_mnist / vae_fashion_mnist)")
    samples: int = _field(5000, "K, draws of z per test image (Burda et al. report K = 5000)")
    batch_size: int = _field(100, "test images per compiled call")
    chunk_size: int = _field(100, "draws per image held in memory at once")
    test_examples: int = _field(0, "evaluate the first N test images only (0 = all)")
    seed: int = _field(0, "seed of the draws")
    data_dir: str = _field("", "tfds data directory (empty: the run's own)")
    raw_data_dir: str = _field("", "folder with the raw IDX .gz files (empty: the run's own)")


def read_vae_run(workdir: Path):
    """(VAEConfig, host params) of the finished run in ``workdir``; one-line errors."""
    from flax import serialization

    from vaejax.experiment import VAEConfig, build_model
    from vaejax.loop import WorkdirError

    config_path, params_path = workdir / "config.json", workdir / "params.msgpack"
    if not config_path.is_file() or not params_path.is_file():
        raise WorkdirError(f"{workdir} holds no finished VAE run (config.json and params.msgpack):"
                           f" train one first, e.g. python -m experiments.vae_mnist --workdir "
                           f"{workdir}")
    try:
        record = json.loads(config_path.read_text())
        names = {f.name for f in dataclasses.fields(VAEConfig)}
        config = VAEConfig(**{k: v for k, v in record.items() if k in names})
    except (ValueError, TypeError) as e:
        raise WorkdirError(f"{config_path} is not a VAE run's config ({e}): pass the workdir of "
                           f"vae_mnist or vae_fashion_mnist") from None
    model = build_model(config)
    size = config.resolved_image_size
    key = jax.random.key(0)
    template = model.init(key, jnp.zeros((1, size, size, 1)), key)["params"]
    try:
        params = serialization.from_bytes(template, params_path.read_bytes())
    except Exception as e:
        raise WorkdirError(f"{params_path} is damaged or belongs to another model "
                           f"({type(e).__name__}): retrain, or resume the run to rewrite it")
    return config, model, params


def run(config: EvaluateConfig, workdir: Path) -> dict:
    """Evaluates the run in ``workdir`` on its test set (under the run's binarization protocol):
    the K-sample ELBO estimate and -L_K with its standard error over the test images, in nats per
    image. Prints them with the time taken; writes ``likelihood_<K>.json`` into the workdir."""
    from vaejax.experiment import ConfigError, load_data

    for name in ("samples", "batch_size", "chunk_size"):
        if getattr(config, name) <= 0:
            raise ConfigError(f"--{name} must be positive, got {getattr(config, name)}")
    if config.test_examples < 0 or not 0 <= config.seed < 2**31:
        raise ConfigError("--test_examples must be >= 0 and --seed in 0..2^31-1")
    run_config, model, params = read_vae_run(workdir)
    run_config = dataclasses.replace(run_config, data_dir=config.data_dir or run_config.data_dir,
                                     raw_data_dir=config.raw_data_dir or run_config.raw_data_dir)
    _, test = load_data(run_config, run_config.binarization)
    images = test.images[: config.test_examples or None]
    print(f"vaejax: {run_config.model} VAE from {workdir} ({run_config.epochs} epochs, objective "
          f"{run_config.objective}), {run_config.dataset} test set, {len(images):,} images, "
          f"binarization {run_config.binarization}, K = {config.samples}, "
          f"{jax.devices()[0].platform}")
    if run_config.binarization == "none":
        print("note: grey pixels under a Bernoulli likelihood are not a distribution over the "
              "images; the papers' numbers use binarized MNIST (--binarization dynamic|static)")
    start = time.perf_counter()
    bounds = evaluate_bounds(
        model, params, images, data.make_batch_preprocessor(run_config.resolved_image_size),
        jax.random.key(config.seed), config.samples, config.batch_size, config.chunk_size,
        run_config.likelihood, run_config.gaussian_variance)
    seconds = time.perf_counter() - start
    n = len(images)
    result = {
        "workdir": str(workdir), "samples": config.samples, "test_examples": n,
        "binarization": run_config.binarization, "objective": run_config.objective,
        "epochs": run_config.epochs, "test_negative_elbo": float(-bounds["elbo"].mean()),
        "test_nll": float(-bounds["iwae"].mean()),
        "test_nll_standard_error": float(bounds["iwae"].std(ddof=1) / np.sqrt(n)) if n > 1 else 0,
        "seconds": seconds, "device": jax.devices()[0].device_kind, "seed": config.seed}
    io.atomic_write_bytes(workdir / f"likelihood_{config.samples}.json",
                          json.dumps(result, indent=2).encode())
    print(f"test -ELBO {result['test_negative_elbo']:.2f}, test NLL (-L_{config.samples}) "
          f"{result['test_nll']:.2f} ± {result['test_nll_standard_error']:.2f} nats/image "
          f"(standard error over the images); {seconds:.1f} s ({n / seconds:,.1f} img/s)")
    return result
