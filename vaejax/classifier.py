"""A small LeNet-style classifier per dataset: the feature extractor of the sample-quality metrics.

No Inception network can be downloaded here, so FID and the Inception score are computed the
same way with this network in its place (:mod:`vaejax.sample_quality`, :mod:`vaejax.quality`):
its penultimate layer (128 ReLU units) gives the features of the Fréchet distance, its softmax
the class probabilities of the score, and its conv maps the perceptual loss of the VAE
experiments. The numbers compare models with each other under one trained classifier; they are
not comparable with Inception-based numbers in papers.

Architecture (LeCun et al. 1998, widened): conv 5x5 16 -> ReLU -> max-pool 2 -> conv 5x5 32 ->
ReLU -> max-pool 2 -> dense 128 -> ReLU (the features) -> dense 10. 'SAME' convolutions on
28x28x1 images in [0, 1].
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from pathlib import Path
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vaejax import data, io, models
from vaejax.autoencoders import start
from vaejax.experiment import (
    ConfigError,
    RunConfig,
    RunKeys,
    TrainSettings,
    _field,
    check_positive,
    fit,
    resumable_fields,
    validate_run,
)
from vaejax.layers import Conv2D

SUMMARY = "classifier.json"


class Activations(NamedTuple):
    """What the classifier computes for images [B, 28, 28, 1]."""

    conv1: jax.Array  # [B, 14, 14, 16] after ReLU and pooling
    conv2: jax.Array  # [B, 7, 7, 32]
    features: jax.Array  # [B, hidden] the penultimate layer (FID's features)
    logits: jax.Array  # [B, num_classes]


class LeNet(nn.Module):
    """images [B, 28, 28, 1] in [0, 1] -> :class:`Activations`."""

    num_classes: int = 10
    channels: tuple[int, int] = (16, 32)
    hidden_dim: int = 128

    @nn.compact
    def __call__(self, x):
        h1 = nn.max_pool(nn.relu(Conv2D(self.channels[0], 5)(x)), (2, 2), (2, 2))
        h2 = nn.max_pool(nn.relu(Conv2D(self.channels[1], 5)(h1)), (2, 2), (2, 2))
        features = nn.relu(nn.Dense(self.hidden_dim)(h2.reshape(x.shape[0], -1)))
        return Activations(h1, h2, features, nn.Dense(self.num_classes)(features))


def per_example(model: LeNet):
    """``f(params, (images, labels), key) -> {"loss": cross-entropy [B] (nats), "error": [B]
    (1 if the arg-max is wrong)}``."""

    def terms(params, batch, key):
        del key
        images, labels = batch
        logits = model.apply({"params": params}, images).logits
        return {"loss": optax.softmax_cross_entropy_with_integer_labels(logits, labels),
                "error": (jnp.argmax(logits, -1) != labels).astype(jnp.float32)}

    return terms


@dataclasses.dataclass(frozen=True)
class ClassifierConfig(RunConfig):
    """Settings of ``experiments.classifier``."""

    epochs: int = _field(10, "training epochs", resume=True)
    hidden_dim: int = _field(128, "width of the penultimate layer (the FID features)")
    shift: int = _field(0, "augmentation: move each training image by up to N pixels along "
                        "each axis (0 = off)")
    workdir: str = _field("workdirs/classifier_{dataset}", "where the classifier goes "
                          "({dataset} is replaced); the sample-quality metrics read it from "
                          "there", resume=True)


def validate(config: ClassifierConfig, num_devices: int) -> None:
    check_positive(config, "batch_size", "hidden_dim")
    if not 0 <= config.shift <= 8:
        raise ConfigError(f"--shift must be between 0 and 8 pixels, got {config.shift}")
    validate_run(config, num_devices)


def random_shift(key: jax.Array, images: jax.Array, max_shift: int) -> jax.Array:
    """Each image [B, H, W, C] moved by its own whole-pixel offset in [-max_shift, max_shift]
    along each axis, the uncovered border filled with 0 (background)."""
    if max_shift == 0:
        return images
    height, width = images.shape[1:3]
    padded = jnp.pad(images, [(0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)])
    offsets = jax.random.randint(key, (images.shape[0], 2), 0, 2 * max_shift + 1)
    crop = lambda image, offset: jax.lax.dynamic_slice(
        image, (offset[0], offset[1], 0), (height, width, image.shape[-1]))
    return jax.vmap(crop)(padded, offsets)


def make_preprocessor(max_shift: int = 0):
    """``(images uint8, labels) -> (images in [0, 1], labels)``, randomly shifted in training."""
    to_unit = data.make_batch_preprocessor(28)

    def preprocess(batch, key):
        images, labels = batch
        images = to_unit(images, key)
        return (images if key is None else random_shift(key, images, max_shift)), labels

    return preprocess


def run(config: ClassifierConfig, workdir: Path) -> dict:
    """Trains the classifier on ``config.dataset``; writes the files of
    :func:`~vaejax.experiment.fit` and ``classifier.json`` (dataset, test accuracy, sizes).
    Returns the summary."""
    run_start = time.perf_counter()
    train, test, spec, writer, log = start(config, validate)
    keys = RunKeys.of(jax.random.key(config.seed))
    model = LeNet(spec.num_classes, hidden_dim=config.hidden_dim)
    params = model.init(keys.init, jnp.zeros((1, 28, 28, 1)))["params"]
    log(f"vaejax: LeNet-style classifier ({models.count_params(params):,} parameters) on "
        f"{config.dataset}, {len(train.images):,} training images")
    describe = lambda t: f"cross-entropy {t['loss']:.4f}  accuracy {1 - t['error']:.2%}"
    params, record = fit(
        workdir, config_record=dataclasses.asdict(config),
        free_fields=resumable_fields(ClassifierConfig), settings=TrainSettings.of(config),
        params=params, per_example=per_example(model),
        train_data=(train.images, train.labels.astype(np.int32)),
        test_data=(test.images, test.labels.astype(np.int32)),
        preprocess=make_preprocessor(config.shift), eval_preprocess=make_preprocessor(), keys=keys,
        describe=describe)
    summary = {"dataset": config.dataset, "num_classes": spec.num_classes,
               "hidden_dim": config.hidden_dim, "epochs": config.epochs,
               "test_accuracy": 1.0 - record["test_error"] if record else None}
    if writer:
        io.atomic_write_bytes(workdir / SUMMARY, (json.dumps(summary, indent=2) + "\n").encode())
    log(f"done: test accuracy {summary['test_accuracy']:.2%} on {config.dataset}; whole run "
        f"{time.perf_counter() - run_start:.1f} s; outputs in {workdir}")
    return summary


# ---------------------------------------------------------------------------------------------
# Using a trained classifier


@dataclasses.dataclass(frozen=True)
class TrainedClassifier:
    model: LeNet
    params: dict
    dataset: str
    test_accuracy: float


def load(workdir: str | Path, dataset: str) -> TrainedClassifier:
    """The classifier trained by ``experiments.classifier`` in ``workdir`` ('{dataset}' is
    replaced). Raises ConfigError, naming the command that makes one, if there is none or it was
    trained on another dataset."""
    workdir = Path(str(workdir).replace("{dataset}", dataset))
    make = (f"python -m experiments.classifier --dataset {dataset} --workdir {workdir}")
    summary_path, params_path = workdir / SUMMARY, workdir / "params.msgpack"
    if not summary_path.is_file() or not params_path.is_file():
        raise ConfigError(f"no trained classifier in {workdir}: train one with `{make}`")
    try:
        summary = json.loads(summary_path.read_text())
        model = LeNet(summary["num_classes"], hidden_dim=summary["hidden_dim"])
        target = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                                   jnp.zeros((1, 28, 28, 1)))["params"])
        params = io.load_params(params_path, jax.tree_util.tree_map(
            lambda s: np.zeros(s.shape, s.dtype), target))
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"the classifier in {workdir} is unreadable ({e}): retrain it with "
                          f"`{make}` into a new --workdir") from None
    if summary["dataset"] != dataset:
        raise ConfigError(f"the classifier in {workdir} was trained on {summary['dataset']}, "
                          f"not {dataset}: pass --classifier_workdir of a {dataset} classifier")
    return TrainedClassifier(model, params, dataset, summary["test_accuracy"])


def activations(classifier: TrainedClassifier, images, batch_size: int = 1000) -> Activations:
    """Activations of images [N, 28, 28, 1] in [0, 1] (host or device arrays), as host arrays,
    computed in batches of ``batch_size``."""
    apply = _compiled_apply(classifier.model)
    parts = [apply(classifier.params, jnp.asarray(images[i: i + batch_size], jnp.float32))
             for i in range(0, len(images), batch_size)]
    return Activations(*(np.concatenate([np.asarray(getattr(p, f)) for p in parts])
                         for f in Activations._fields))


@functools.lru_cache(maxsize=None)
def _compiled_apply(model: LeNet):
    """One compiled forward pass per architecture (flax modules hash by their fields)."""
    return jax.jit(lambda params, x: model.apply({"params": params}, x))


def crop_padded(images):
    """Images [N, 32, 32, C] zero-padded from 28x28 (a 32x32 model's) -> their 28x28 center;
    other sizes unchanged. numpy or jax arrays."""
    return images[:, 2:30, 2:30] if images.shape[1] == 32 else images


def perceptual_distance(classifier: TrainedClassifier, x: jax.Array, y: jax.Array) -> jax.Array:
    """Sum over both conv layers' maps of the squared difference between the activations of
    images ``x`` and ``y`` [B, 28, 28, 1] in [0, 1] (32x32 padded images: the 28x28 center):
    [B]. Differentiable in both; 0 where x = y."""
    x, y = crop_padded(x), crop_padded(y)
    a = classifier.model.apply({"params": classifier.params}, x)
    b = classifier.model.apply({"params": classifier.params}, y)
    return sum(jnp.sum(jnp.square(p - q).reshape(x.shape[0], -1), axis=1)
               for p, q in ((a.conv1, b.conv1), (a.conv2, b.conv2)))


def perceptual_loss(classifier: TrainedClassifier):
    """``(x, x_hat) -> [B]``: :func:`perceptual_distance` under ``classifier`` (fixed weights)."""
    return lambda x, x_hat: perceptual_distance(classifier, x, x_hat)
